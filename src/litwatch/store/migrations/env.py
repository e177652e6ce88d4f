"""Alembic environment: litwatch runs migrations programmatically on a connection it
passes in `config.attributes["connection"]` (see store.migrate)."""

from alembic import context

from litwatch.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
