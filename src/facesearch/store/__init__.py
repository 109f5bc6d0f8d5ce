"""Persistence: metadata (SQLAlchemy, SQLite by default) and face crop files."""
