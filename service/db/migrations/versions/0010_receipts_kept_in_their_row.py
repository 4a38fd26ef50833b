"""receipts kept in their row

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 00:40:00

A batch's receipt (`sync_batches.results`, sealed) is kept in its row while the
row fits in a page (toast_tuple_target 8160) rather than moved to the TOAST
table once the row passes 2 KB: a receipt of 100 new records is about 7 KB, and
writing it out of line cost Postgres a chunk row and an index entry per 2 KB (an
insert of 7 KB took 23 us in its row against 29 us out of it, in a loop of
3,000). Rows written before are read as they are. The setting takes only a SHARE
UPDATE EXCLUSIVE lock: batches go on writing receipts while it is applied.

From this release on, a receipt's record ids are 16 bytes each rather than 36
characters (service/db/sync.py), which the release before reads alike, and a
record's own stamp is written as nil (service/db/sync.py, pack_stamps), which
release 0008 and later read.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Postgres's largest toast_tuple_target for 8 KB pages: a row up to it is left whole.
_WHOLE_ROW = 8160


def upgrade() -> None:
    op.execute(f"ALTER TABLE sync_batches SET (toast_tuple_target = {_WHOLE_ROW})")


def downgrade() -> None:
    op.execute("ALTER TABLE sync_batches RESET (toast_tuple_target)")
