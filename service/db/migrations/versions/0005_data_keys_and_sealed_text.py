"""data keys, and free text sealed under them

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 09:00:00

Adds each person's wrapped data key and a `sealed` column beside `data` in
records and record_versions, then encrypts what was stored in plain text:
the private fields of every record and version, and every stored batch
answer. Rows go a page at a time, in key order, with one UPDATE per page.
The downgrade opens them again. Both need the master keys (MASTER_KEYS),
which `kindsync migrate` hands over.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import msgspec
import sqlalchemy as sa
from alembic import context, op

from service.db.rewrite import rewrite
from service.envelope import DataKey, MasterKeys, WrappedKey, split

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_json = msgspec.json.Encoder()


def upgrade() -> None:
    op.create_table(
        "data_keys",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("master_key_id", sa.Text(), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("rewrapped_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_data_keys_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_data_keys")),
    )
    op.add_column("record_versions", sa.Column("sealed", sa.LargeBinary(), nullable=True))
    op.add_column("records", sa.Column("sealed", sa.LargeBinary(), nullable=True))

    keys = _Keys(op.get_bind())

    def seal_row(row: Any) -> tuple[Any, ...] | None:
        plain, private = split(row.data)
        if not private:
            return None
        key = keys.of(row.user_id)
        return (_json.encode(plain).decode(), key.seal(row.record_id, row.data)[1])

    rewrite(
        keys.conn, "records", ("user_id", "id"), "id AS record_id, data", seal_row, "data = u.a::jsonb, sealed = u.b"
    )
    rewrite(
        keys.conn,
        "record_versions",
        ("user_id", "record_id", "version"),
        "data",
        seal_row,
        "data = u.a::jsonb, sealed = u.b",
    )

    def seal_batch(row: Any) -> tuple[Any, ...] | None:
        return (None, keys.of(row.user_id).seal_bytes(b"batch", row.batch_id, bytes(row.results)))

    rewrite(keys.conn, "sync_batches", ("user_id", "batch_id"), "results", seal_batch, "results = u.b")


def downgrade() -> None:
    keys = _Keys(op.get_bind())

    def open_row(row: Any) -> tuple[Any, ...] | None:
        if row.sealed is None:
            return None
        data = keys.of(row.user_id, create=False).open(row.record_id, row.data, bytes(row.sealed))
        return (_json.encode(data).decode(), None)

    rewrite(
        keys.conn,
        "records",
        ("user_id", "id"),
        "id AS record_id, data, sealed",
        open_row,
        "data = u.a::jsonb, sealed = u.b",
    )
    rewrite(
        keys.conn,
        "record_versions",
        ("user_id", "record_id", "version"),
        "data, sealed",
        open_row,
        "data = u.a::jsonb, sealed = u.b",
    )

    def open_batch(row: Any) -> tuple[Any, ...] | None:
        return (None, keys.of(row.user_id, create=False).open_bytes(b"batch", row.batch_id, bytes(row.results)))

    rewrite(keys.conn, "sync_batches", ("user_id", "batch_id"), "results", open_batch, "results = u.b")
    op.drop_column("records", "sealed")
    op.drop_column("record_versions", "sealed")
    op.drop_table("data_keys")


class _Keys:
    """Data keys for the people met while paging, made for those without one."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self._master: MasterKeys | None = context.config.attributes.get("master_keys")
        self._known: dict[UUID, DataKey] = {}

    def of(self, user_id: UUID, *, create: bool = True) -> DataKey:
        if user_id in self._known:
            return self._known[user_id]
        if self._master is None:
            raise RuntimeError("stored text must be re-encrypted: run this migration with `kindsync migrate`")
        row = self.conn.exec_driver_sql(
            "SELECT master_key_id, wrapped FROM data_keys WHERE user_id = $1", (user_id,)
        ).first()
        if row is not None:
            key = self._master.unwrap(user_id, WrappedKey(row.master_key_id, bytes(row.wrapped)))
        elif create:
            key, wrapped = self._master.new_data_key(user_id)
            self.conn.exec_driver_sql(
                "INSERT INTO data_keys (user_id, master_key_id, wrapped) VALUES ($1, $2, $3)",
                (user_id, wrapped.master_key_id, wrapped.wrapped),
            )
        else:
            raise RuntimeError(f"no data key to open the text of person {user_id}")
        self._known[user_id] = key
        return key
