"""Everything kindsync holds about a person, readable, for `GET /v1/account/export`."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from schemas.base import ServerOutput
from schemas.devices import Device
from schemas.sync import Change, HistoryVersion


class ExportedRecord(ServerOutput):
    record: Change
    history: list[HistoryVersion]  # newest first


class ExportedNotification(ServerOutput):
    kind: str
    status: str
    due_at: datetime
    sent_at: datetime | None
    created_at: datetime


class Export(ServerOutput):
    user_id: UUID
    email: str | None
    created_at: datetime
    exported_at: datetime
    records: list[ExportedRecord]
    devices: list[Device]
    notifications: list[ExportedNotification]
