"""stamps as MessagePack

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 22:00:00

`records.stamps` (who last set each field, and when) becomes MessagePack bytes
instead of jsonb. Only the sync path reads and writes them, whole, and as JSON
they were most of what Postgres parsed for every record a batch writes: a
stamp per field, each a timestamp and a device id in text. Rows go a page at a
time, in key order; the downgrade writes them back as JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from alembic import op

from service.db.rewrite import rewrite
from service.sync.model import Stamp

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The format service/db/sync.py reads: a map of field to [time, device id as 16 bytes].
_packed = msgspec.msgpack.Encoder(uuid_format="bytes")
_unpacked = msgspec.msgpack.Decoder(dict[str, Stamp])
_json = msgspec.json.Encoder()
_from_json = msgspec.json.Decoder(dict[str, Stamp])


def upgrade() -> None:
    op.execute("ALTER TABLE records ADD COLUMN packed_stamps bytea")

    def pack(row: Any) -> tuple[Any, ...]:
        return (None, _packed.encode(_from_json.decode(row.stamps)))

    rewrite(op.get_bind(), "records", ("user_id", "id"), "stamps::text AS stamps", pack, "packed_stamps = u.b")
    op.execute("ALTER TABLE records DROP COLUMN stamps")
    op.execute("ALTER TABLE records RENAME COLUMN packed_stamps TO stamps")
    op.execute("ALTER TABLE records ALTER COLUMN stamps SET NOT NULL")


def downgrade() -> None:
    op.execute("ALTER TABLE records ADD COLUMN json_stamps jsonb")

    def unpack(row: Any) -> tuple[Any, ...]:
        return (_json.encode(_unpacked.decode(row.stamps)).decode(), None)

    rewrite(op.get_bind(), "records", ("user_id", "id"), "stamps", unpack, "json_stamps = u.a::jsonb")
    op.execute("ALTER TABLE records DROP COLUMN stamps")
    op.execute("ALTER TABLE records RENAME COLUMN json_stamps TO stamps")
    op.execute("ALTER TABLE records ALTER COLUMN stamps SET NOT NULL")
