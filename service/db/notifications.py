"""Queries that plan, move and cancel a person's notifications."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

FOLLOW_UP = "experiment_follow_up"


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
