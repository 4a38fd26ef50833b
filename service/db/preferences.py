"""A person's preferences as the server reads them, with the contract's defaults."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec


class Prefs(msgspec.Struct, frozen=True, kw_only=True):
    """What a person chose about their week and their quiet hours (defaults when unset)."""

    user_id: UUID
    timezone: str
    insight_push: bool
    quiet_start: str
    quiet_end: str


PREFS_SQL = """
SELECT u.id AS user_id, coalesce(p.data->>'timezone', 'UTC') AS tz,
       coalesce(p.data->>'weekly_day', 'sun') AS weekly_day,
       coalesce((p.data->>'insight_push')::bool, true) AS insight_push,
       coalesce(p.data->>'quiet_start', '22:00') AS quiet_start, coalesce(p.data->>'quiet_end', '08:00') AS quiet_end,
       p.data->>'reminder_time' AS reminder_time
FROM users u LEFT JOIN records p ON p.user_id = u.id AND p.id = u.id AND p.kind = 'preferences' AND NOT p.deleted
"""


def prefs_of(row: Any) -> Prefs:
    return Prefs(
        user_id=row.user_id,
        timezone=row.tz,
        insight_push=row.insight_push,
        quiet_start=row.quiet_start,
        quiet_end=row.quiet_end,
    )
