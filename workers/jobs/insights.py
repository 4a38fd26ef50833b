"""Weekly insights for many people at once, each in their own week."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.db import insights as queries
from service.db import notifications
from service.db.preferences import Prefs
from service.insights.timing import EVENING, after_quiet_hours
from service.insights.weekly import Screening, build
from service.metrics import WorkerMetrics

log = structlog.get_logger(__name__)

CHUNK = 1000


def last_complete_week(now: datetime, timezone: str) -> date:
    """The Monday of the last Monday-to-Sunday week that has ended where the person lives."""
    today = now.astimezone(ZoneInfo(timezone)).date()
    return today - timedelta(days=today.weekday() + 7)


async def compute_insights(ctx: dict[str, Any], request: dict[str, Any]) -> int:
    """Compute, now, the insight of a week (default each person's last complete one)
    for one person or everyone; running it twice changes nothing the second time."""
    engine: AsyncEngine = ctx["engine"]
    week = date.fromisoformat(request["week_start"]) if request.get("week_start") else None
    only = UUID(request["user_id"]) if request.get("user_id") else None
    now = datetime.now(UTC)
    written, people, after = 0, 0, None
    while True:
        async with engine.begin() as conn:
            page = await queries.people_page(conn, after, CHUNK, only)
            if not page:
                break
            chosen = [(prefs, week or last_complete_week(now, prefs.timezone)) for prefs in page]
            written += await _compute(conn, chosen, now)
        people += len(page)
        after = page[-1].user_id
    async with engine.begin() as conn:
        await queries.record_run(conn, "requested", people, datetime.now(UTC))
    if metrics := ctx.get("metrics"):
        metrics.observe_insight_run("requested", people)
    log.info("insights_computed", written=written, people=people)
    return written


async def insights_due(ctx: dict[str, Any]) -> int:
    """Every few minutes: the people whose weekly_day evening has come get their week's insight."""
    return await run_due(ctx["engine"], datetime.now(UTC), ctx.get("metrics"))


async def run_due(engine: AsyncEngine, now: datetime, metrics: WorkerMetrics | None = None) -> int:
    async with engine.begin() as conn:
        due = await queries.due(conn, now, EVENING)
        written = sum([await _compute(conn, due[i : i + CHUNK], now) for i in range(0, len(due), CHUNK)])
        await queries.record_run(conn, "due", len(due), datetime.now(UTC))
    if metrics is not None:
        metrics.observe_insight_run("due", len(due))
    if written:
        log.info("insights_due_computed", written=written)
    return written


async def _compute(conn: AsyncConnection, chosen: list[tuple[Prefs, date]], now: datetime) -> int:
    """Compute and store; a newly created insight of a person's latest week plans its push."""
    people = [queries.Person(prefs.user_id, week, prefs.timezone) for prefs, week in chosen]
    facts = await queries.facts(conn, people)
    screenings = await queries.screenings(conn, people)
    insights = {
        p.user_id: build(p.week_start, facts.get(p.user_id, []), screenings.get(p.user_id, Screening())) for p in people
    }
    versions = await queries.store(conn, insights)
    planned = []
    for prefs, week in chosen:
        latest = week >= last_complete_week(now, prefs.timezone)  # older weeks are backfills: no push
        if versions.get(prefs.user_id) == 1 and latest and prefs.insight_push:
            local = now.astimezone(ZoneInfo(prefs.timezone))
            quiet = (time.fromisoformat(prefs.quiet_start), time.fromisoformat(prefs.quiet_end))
            planned.append((prefs.user_id, week, after_quiet_hours(local, *quiet)))
    await notifications.plan_weekly_ready(conn, planned)
    return len(versions)
