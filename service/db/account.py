"""Reading all of one person's data at once, for their export."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.account import Export, ExportedNotification, ExportedRecord
from schemas.sync import HistoryVersion
from service.db.devices import device_of
from service.db.sync import change_of


async def export(conn: AsyncConnection, user_id: UUID) -> Export | None:
    """Every record with its whole history, devices and notifications: a few statements, not one per record."""
    person = (await conn.exec_driver_sql("SELECT email, created_at FROM users WHERE id = $1", (user_id,))).first()
    if person is None:
        return None
    history: dict[UUID, list[HistoryVersion]] = defaultdict(list)
    for row in await conn.exec_driver_sql(
        "SELECT record_id, version, deleted, data, changed_at, device_id FROM record_versions "
        "WHERE user_id = $1 ORDER BY record_id, version DESC",
        (user_id,),
    ):
        history[row.record_id].append(
            HistoryVersion(
                version=row.version,
                deleted=row.deleted,
                data=row.data,
                changed_at=row.changed_at,
                device_id=row.device_id,
            )
        )
    records = [
        ExportedRecord(record=change_of(row), history=history.get(row.id, []))
        for row in await conn.exec_driver_sql(
            "SELECT id, kind, version, deleted, data, changed_at, updated_at FROM records "
            "WHERE user_id = $1 ORDER BY kind, changed_at",
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
    """Delete the person; every table that holds their data cascades from `users`."""
    await conn.exec_driver_sql("DELETE FROM users WHERE id = $1", (user_id,))
