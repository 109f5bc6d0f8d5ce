"""Alembic's environment: the schema is store/schema.py; the connection comes from migrate.py."""

from alembic import context

from facesearch.store.schema import metadata

connection = context.config.attributes["connection"]
# Batch mode lets SQLite, which cannot ALTER most things, take the same migrations.
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
