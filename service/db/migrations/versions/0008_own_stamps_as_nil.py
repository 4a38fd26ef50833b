"""a record's own stamp as nil

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 03:30:00

In `records.stamps`, a field set at the record's own time on the device of its
newest version (every field of a new record) may now be nil: the row's
`changed_at` and `device_id` say it. Written whole, the stamps were a fifth of
a new record's row. Rows written before stay as they are and are read the same;
the downgrade writes the nils out, as release 0007 reads stamps. The release
with this migration reads nils and writes none (service/db/sync.py,
pack_stamps): the one before it cannot read them; release 0010 writes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from alembic import op

from service.db.rewrite import rewrite
from service.sync.model import Stamp

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_packed = msgspec.msgpack.Encoder(uuid_format="bytes")
_with_nils = msgspec.msgpack.Decoder(dict[str, Stamp | None])


def upgrade() -> None:
    """Nothing to rewrite: stamps written whole are read as they are."""


def downgrade() -> None:
    def write_out(row: Any) -> tuple[Any, ...] | None:
        stamps = _with_nils.decode(row.stamps)
        if None not in stamps.values():
            return None
        own = Stamp(row.changed_at, row.device_id)
        return (None, _packed.encode({field: own if stamp is None else stamp for field, stamp in stamps.items()}))

    rewrite(op.get_bind(), "records", ("user_id", "id"), "stamps, changed_at, device_id", write_out, "stamps = u.b")
