"""history without a foreign key to its owner

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 03:10:00

`record_versions.user_id` loses its foreign key to `users`: checking it cost
Postgres a probe and a lock of the person's row for every version written, a
tenth of writing a batch of new records. A trigger on `users` takes the
cascade's place: deleting a person deletes their history, after the foreign
keys' cascades (triggers fire in name order, and those are named RI_...), so an
erase by this release or the one before is as complete as it was. Why no
version can outlive its person is told beside the table (service/db/tables.py).
The downgrade deletes any history whose person is gone and puts the key back.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # VOLATILE (the default): its DELETE takes a snapshot of its own, after the cascades waited
    # for any batch still writing, and so sees what such a batch committed.
    op.execute(
        """
        CREATE FUNCTION erase_history() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM record_versions WHERE user_id = OLD.id;
            RETURN NULL;
        END $$
        """
    )
    op.execute("CREATE TRIGGER users_erase_history AFTER DELETE ON users FOR EACH ROW EXECUTE FUNCTION erase_history()")
    op.drop_constraint("fk_record_versions_user_id_users", "record_versions", type_="foreignkey")


def downgrade() -> None:
    op.execute("DELETE FROM record_versions v WHERE NOT EXISTS (SELECT FROM users u WHERE u.id = v.user_id)")
    op.create_foreign_key(
        "fk_record_versions_user_id_users", "record_versions", "users", ["user_id"], ["id"], ondelete="CASCADE"
    )
    op.execute("DROP TRIGGER users_erase_history ON users")
    op.execute("DROP FUNCTION erase_history()")
