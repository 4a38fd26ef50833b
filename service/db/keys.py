"""Each person's data key: made with their first private write, read to open their text, destroyed first on erase."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from service.envelope import DataKey, MasterKeys, WrappedKey

_SELECT = "SELECT master_key_id, wrapped FROM data_keys WHERE user_id = $1"
_INSERT = (
    "INSERT INTO data_keys (user_id, master_key_id, wrapped) VALUES ($1, $2, $3) "
    "ON CONFLICT (user_id) DO NOTHING RETURNING user_id"
)


async def load(conn: AsyncConnection, master: MasterKeys, user_id: UUID) -> DataKey | None:
    row = (await conn.exec_driver_sql(_SELECT, (user_id,))).first()
    return master.unwrap(user_id, WrappedKey(row.master_key_id, bytes(row.wrapped))) if row else None


async def read(conn: Any, master: MasterKeys, user_id: UUID) -> DataKey | None:
    """`load` on an asyncpg connection (the sync path's)."""
    row = await conn.fetchrow(_SELECT, user_id)
    return master.unwrap(user_id, WrappedKey(row[0], row[1])) if row else None


async def read_or_create(conn: Any, master: MasterKeys, user_id: UUID, held: WrappedKey | None) -> DataKey:
    """The person's key, made now if they have none; two first writes at once still end with one key.

    On the sync path's asyncpg connection, given the key as the lock statement read it (if any).
    """
    if held is not None:
        return master.unwrap(user_id, held)
    key, wrapped = master.new_data_key(user_id)
    if await conn.fetchval(_INSERT, user_id, wrapped.master_key_id, wrapped.wrapped) is not None:
        return key
    made_meanwhile = await read(conn, master, user_id)
    if made_meanwhile is None:
        raise RuntimeError("a data key was made concurrently but cannot be read")
    return made_meanwhile


async def unheld(conn: AsyncConnection, master: MasterKeys) -> dict[str, int]:
    """People per master key id that wraps data keys but is not in MASTER_KEYS: their text cannot be read."""
    rows = await conn.exec_driver_sql(
        "SELECT master_key_id, count(*) AS people FROM data_keys WHERE master_key_id <> ALL($1::text[]) "
        "GROUP BY master_key_id",
        (master.ids,),
    )
    return {row.master_key_id: row.people for row in rows}


async def destroy(conn: AsyncConnection, user_id: UUID) -> None:
    await conn.exec_driver_sql("DELETE FROM data_keys WHERE user_id = $1", (user_id,))


async def rewrap_page(
    conn: AsyncConnection, master: MasterKeys, after: UUID | None, limit: int
) -> tuple[int, UUID | None]:
    """Re-wrap, under the current master key, up to `limit` keys still wrapped under another.

    Answers how many were re-wrapped and the last person looked at (None when done).
    Rows are locked while re-wrapped, so an erase or a rotation running beside this waits.
    """
    rows = (
        await conn.exec_driver_sql(
            "SELECT user_id, master_key_id, wrapped FROM data_keys WHERE ($1::uuid IS NULL OR user_id > $1) "
            "ORDER BY user_id LIMIT $2 FOR UPDATE",
            (after, limit),
        )
    ).all()
    stale = [row for row in rows if row.master_key_id != master.current_id]
    fresh = [master.rewrap(row.user_id, WrappedKey(row.master_key_id, bytes(row.wrapped))) for row in stale]
    if stale:
        await conn.exec_driver_sql(
            "UPDATE data_keys k SET master_key_id = u.master_key_id, wrapped = u.wrapped, rewrapped_at = now() "
            "FROM unnest($1::uuid[], $2::text[], $3::bytea[]) AS u(user_id, master_key_id, wrapped) "
            "WHERE k.user_id = u.user_id",
            ([row.user_id for row in stale], [w.master_key_id for w in fresh], [w.wrapped for w in fresh]),
        )
    return len(stale), (rows[-1].user_id if len(rows) == limit else None)
