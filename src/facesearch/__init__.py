"""facesearch: a face search engine that records where every face came from and can forget it."""

__version__ = "0.1.0"
