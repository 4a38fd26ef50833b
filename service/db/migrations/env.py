"""Alembic environment: always handed a live connection by service.db.migrate."""

from __future__ import annotations

from alembic import context

from service.db.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `kindsync migrate`, which provides the connection")

context.configure(connection=connection, target_metadata=metadata, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
