"""The server: a FastAPI app over the service, with a JSON API and server-rendered pages."""
