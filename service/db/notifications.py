"""Queries that plan, move and cancel a person's notifications."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from uuid import UUID

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.preferences import PREFS_SQL, Prefs, prefs_of
from service.push.base import PushOutcome, PushTarget

FOLLOW_UP = "experiment_follow_up"


async def experiments_changed(conn: AsyncConnection, user_id: UUID, after: int, up_to: int) -> list[UUID]:
    """The person's as-if experiments whose last change has a number in (after, up_to]."""
    result = await conn.exec_driver_sql(
        "SELECT id FROM records WHERE user_id = $1 AND seq > $2 AND seq <= $3 AND kind = 'as_if_experiment'",
        (user_id, after, up_to),
    )
    return list(result.scalars())


async def plan_follow_ups(conn: AsyncConnection, user_id: UUID, experiment_ids: Sequence[UUID]) -> None:
    """Bring follow-ups in line with the experiments as they are now.

    A planned experiment with a follow-up time has one planned notification at
    that time; a done, skipped, deleted or unscheduled one has none pending.
    Reading the current state (not the event) makes a re-run, or events
    arriving out of order, change nothing.
    """
    ids = list(experiment_ids)
    await conn.exec_driver_sql(
        "INSERT INTO notifications (user_id, dedupe_key, kind, record_id, due_at, status) "
        "SELECT r.user_id, $3 || ':' || r.id, $3, r.id, "
        "(r.data->>'follow_up_at')::timestamptz, 'planned' FROM records r "
        "WHERE r.user_id = $1 AND r.id = ANY($2::uuid[]) AND r.kind = 'as_if_experiment' AND NOT r.deleted "
        "AND r.data->>'status' = 'planned' AND r.data->>'follow_up_at' IS NOT NULL "
        "ON CONFLICT (user_id, dedupe_key) DO UPDATE SET due_at = excluded.due_at, status = 'planned', "
        "updated_at = now() WHERE notifications.status IN ('planned', 'cancelled') "
        "AND (notifications.due_at, notifications.status) IS DISTINCT FROM (excluded.due_at, 'planned')",
        (user_id, ids, FOLLOW_UP),
    )
    await conn.exec_driver_sql(
        "UPDATE notifications n SET status = 'cancelled', updated_at = now() FROM records r "
        "WHERE n.user_id = $1 AND n.kind = $3 AND n.status = 'planned' "
        "AND r.user_id = $1 AND r.id = n.record_id AND r.id = ANY($2::uuid[]) "
        "AND (r.deleted OR r.data->>'status' <> 'planned' OR r.data->>'follow_up_at' IS NULL)",
        (user_id, ids, FOLLOW_UP),
    )


WEEKLY_READY = "weekly_insight_ready"


async def plan_weekly_ready(conn: AsyncConnection, planned: Sequence[tuple[UUID, date, datetime]]) -> None:
    """One `weekly_insight_ready` per person and week, (user, week_start, due_at); a re-run adds none."""
    if not planned:
        return
    await conn.exec_driver_sql(
        "INSERT INTO notifications (user_id, dedupe_key, kind, due_at, status) "
        "SELECT u, $4 || ':' || w, $4, d, 'planned' FROM unnest($1::uuid[], $2::date[], $3::timestamptz[]) "
        "AS t(u, w, d) ON CONFLICT (user_id, dedupe_key) DO NOTHING",
        ([u for u, _, _ in planned], [w for _, w, _ in planned], [d for _, _, d in planned], WEEKLY_READY),
    )


class Due(msgspec.Struct, frozen=True, kw_only=True):
    """A planned notification whose time has come, with what deciding needs."""

    user_id: UUID
    dedupe_key: str
    kind: str
    record_id: UUID | None
    attempts: int
    prefs: Prefs
    sent_today: int
    logged_today: bool


class Finished(msgspec.Struct, frozen=True, array_like=True):
    user_id: UUID
    dedupe_key: str
    status: str  # sent, planned (deferred), cancelled, undeliverable
    due_at: datetime | None  # the new time of a deferred one
    provider_result: str | None
    tried: bool = False  # a provider was asked (deferrals and cancellations do not count)


_DUE = f"""
WITH due AS (
    SELECT user_id, dedupe_key, kind, record_id, attempts FROM notifications
    WHERE status = 'planned' AND due_at <= $1 ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED
), prefs AS ({PREFS_SQL} WHERE u.id IN (SELECT user_id FROM due))
SELECT d.user_id AS owner, d.dedupe_key, d.kind, d.record_id, d.attempts, p.*,
    (SELECT count(*) FROM notifications s WHERE s.user_id = d.user_id AND s.status = 'sent'
        AND (s.sent_at AT TIME ZONE p.tz)::date = ($1 AT TIME ZONE p.tz)::date) AS sent_today,
    EXISTS (SELECT 1 FROM records r WHERE r.user_id = d.user_id AND NOT r.deleted
        AND r.kind NOT IN ('weekly_insight', 'preferences')
        AND (coalesce(r.data->>'occurred_at', r.data->>'planned_for')::timestamptz AT TIME ZONE p.tz)::date
            = ($1 AT TIME ZONE p.tz)::date) AS logged_today
FROM due d JOIN prefs p ON p.user_id = d.user_id
"""  # noqa: S608 (constant SQL fragments; values are parameters)


async def lock_due(conn: AsyncConnection, now: datetime, limit: int) -> list[Due]:
    """Notifications due by `now`, locked so that two workers never send one twice."""
    rows = await conn.exec_driver_sql(_DUE, (now, limit))
    return [
        Due(
            user_id=row.owner,
            dedupe_key=row.dedupe_key,
            kind=row.kind,
            record_id=row.record_id,
            attempts=row.attempts,
            prefs=prefs_of(row),
            sent_today=row.sent_today,
            logged_today=row.logged_today,
        )
        for row in rows
    ]


async def push_targets(conn: AsyncConnection, users: Sequence[UUID]) -> dict[UUID, list[PushTarget]]:
    rows = await conn.exec_driver_sql(
        "SELECT user_id, id, platform, push_token FROM devices "
        "WHERE user_id = ANY($1::uuid[]) AND push_enabled AND push_token IS NOT NULL ORDER BY id",
        (list(users),),
    )
    targets: dict[UUID, list[PushTarget]] = {}
    for row in rows:
        targets.setdefault(row.user_id, []).append(
            PushTarget(device_id=row.id, platform=row.platform, token=row.push_token)
        )
    return targets


async def finish(conn: AsyncConnection, finished: Sequence[Finished]) -> None:
    if not finished:
        return
    await conn.exec_driver_sql(
        "UPDATE notifications n SET status = f.status, due_at = coalesce(f.due_at, n.due_at), "
        "provider_result = f.result, attempts = n.attempts + f.tried::int, updated_at = now(), "
        "sent_at = CASE WHEN f.status = 'sent' THEN now() ELSE n.sent_at END "
        "FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::bool[]) "
        "AS f(user_id, dedupe_key, status, due_at, result, tried) "
        "WHERE n.user_id = f.user_id AND n.dedupe_key = f.dedupe_key",
        (
            [f.user_id for f in finished],
            [f.dedupe_key for f in finished],
            [f.status for f in finished],
            [f.due_at for f in finished],
            [f.provider_result for f in finished],
            [f.tried for f in finished],
        ),
    )


PRACTICE_REMINDER = "practice_reminder"


async def plan_reminders(conn: AsyncConnection, now: datetime) -> None:
    """Today's practice reminder for each person who turned them on, while its time is still ahead."""
    await conn.exec_driver_sql(
        f"WITH prefs AS ({PREFS_SQL} WHERE p.data->>'reminders_enabled' = 'true' "  # noqa: S608
        "AND p.data->>'reminder_time' IS NOT NULL), "
        "local AS (SELECT user_id, tz, ($1::timestamptz AT TIME ZONE tz)::date AS today, reminder_time FROM prefs) "
        "INSERT INTO notifications (user_id, dedupe_key, kind, due_at, status) "
        "SELECT user_id, $2 || ':' || today, $2, (today + reminder_time::time) AT TIME ZONE tz, 'planned' "
        "FROM local WHERE (today + reminder_time::time) AT TIME ZONE tz > $1 "
        "ON CONFLICT (user_id, dedupe_key) DO NOTHING",
        (now, PRACTICE_REMINDER),
    )


async def switch_off_push(conn: AsyncConnection, dead: Sequence[tuple[UUID, UUID]]) -> None:
    """Devices whose token a provider called invalid get no more pushes, at once."""
    if not dead:
        return
    await conn.exec_driver_sql(
        "UPDATE devices d SET push_enabled = false FROM unnest($1::uuid[], $2::uuid[]) AS t(user_id, device_id) "
        "WHERE d.user_id = t.user_id AND d.id = t.device_id",
        ([u for u, _ in dead], [d for _, d in dead]),
    )


async def record_deliveries(
    conn: AsyncConnection, provider: str, outcomes: Sequence[tuple[UUID, str, UUID, PushOutcome]]
) -> None:
    """(user, dedupe key, device, outcome) for each device a push was sent to; `provider` unless a router named one."""
    if not outcomes:
        return
    await conn.exec_driver_sql(
        "INSERT INTO deliveries (user_id, dedupe_key, device_id, status, provider, detail) "
        "SELECT u, k, d, s, p, x FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::text[], "
        "$6::text[]) AS t(u, k, d, s, x, p) ON CONFLICT (user_id, dedupe_key, device_id) DO UPDATE SET "
        "status = excluded.status, provider = excluded.provider, detail = excluded.detail, "
        "attempts = deliveries.attempts + 1, updated_at = now()",
        (
            [u for u, _, _, _ in outcomes],
            [k for _, k, _, _ in outcomes],
            [d for _, _, d, _ in outcomes],
            [o.status for _, _, _, o in outcomes],
            [o.detail for _, _, _, o in outcomes],
            [o.provider or provider for _, _, _, o in outcomes],
        ),
    )
