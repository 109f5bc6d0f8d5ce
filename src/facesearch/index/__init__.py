"""Vector indexes: the FAISS index used in production and a NumPy reference."""
