"""Alembic's environment: migrations run on the connection :meth:`tasks.store.Store.migrate` hands over."""

from alembic import context

from tasks.store import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite alters a table by copying it: Alembic's batch mode does that.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
