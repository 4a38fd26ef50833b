"""Reading all of one person's data at once, for their export."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.account import Export, ExportedNotification, ExportedRecord
from schemas.sync import HistoryVersion
from service.db import keys as data_keys
from service.db.devices import device_of
from service.db.sync import CHANGE_COLUMNS, VERSION_COLUMNS, change_of, history_version
from service.envelope import MasterKeys


async def export(conn: AsyncConnection, master_keys: MasterKeys, user_id: UUID) -> Export | None:
    """Every record with its whole history, devices and notifications: a few statements, not one per record."""
    person = (await conn.exec_driver_sql("SELECT email, created_at FROM users WHERE id = $1", (user_id,))).first()
    if person is None:
        return None
    key = await data_keys.load(conn, master_keys, user_id)
    history: dict[UUID, list[HistoryVersion]] = defaultdict(list)
    for row in await conn.exec_driver_sql(
        f"SELECT {VERSION_COLUMNS} FROM record_versions v WHERE v.user_id = $1 ORDER BY v.record_id, v.version DESC",  # noqa: S608
        (user_id,),
    ):
        history[row.record_id].append(history_version(row, key))
    records = [
        ExportedRecord(record=change_of(row, key), history=history.get(row.id, []))
        for row in await conn.exec_driver_sql(
            f"SELECT {CHANGE_COLUMNS} FROM records WHERE user_id = $1 ORDER BY kind, changed_at",  # noqa: S608
            (user_id,),
        )
    ]
    devices = [
        device_of(row)
        for row in await conn.exec_driver_sql(
            "SELECT id, platform, push_enabled, app_version, locale, timezone, last_seen_at FROM devices "
            "WHERE user_id = $1 ORDER BY created_at",
            (user_id,),
        )
    ]
    notifications = [
        ExportedNotification(
            kind=row.kind, status=row.status, due_at=row.due_at, sent_at=row.sent_at, created_at=row.created_at
        )
        for row in await conn.exec_driver_sql(
            "SELECT kind, status, due_at, sent_at, created_at FROM notifications WHERE user_id = $1 ORDER BY due_at",
            (user_id,),
        )
    ]
    return Export(
        user_id=user_id,
        email=person.email,
        created_at=person.created_at,
        exported_at=datetime.now(UTC),
        records=records,
        devices=devices,
        notifications=notifications,
    )


async def erase(conn: AsyncConnection, user_id: UUID) -> None:
    """Delete the person; every table that holds their data cascades from `users`, and their
    history goes with them by a trigger (migration 0009; tables.py, record_versions).

    Destroy their data key (keys.destroy) in an earlier transaction, so their text is unreadable first.
    """
    await conn.exec_driver_sql("DELETE FROM users WHERE id = $1", (user_id,))
