"""Alembic environment. The registry always passes an open connection in
config.attributes["connection"] (see store.database.alembic_config), so no alembic.ini and
no URL lookup are involved."""

from __future__ import annotations

from alembic import context

from modelforge_registry.store.orm import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through modelforge_registry.store.database (it passes a connection)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    compare_type=True,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
