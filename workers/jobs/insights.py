"""Weekly insights for many people at once, each in their own week."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db import insights as queries
from service.insights.weekly import Screening, build

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
    written, after = 0, None
    while True:
        async with engine.begin() as conn:
            page = await queries.people_page(conn, after, CHUNK, only)
            if not page:
                break
            people = [
                queries.Person(user_id, week or last_complete_week(now, timezone), timezone)
                for user_id, timezone in page
            ]
            facts = await queries.facts(conn, people)
            screenings = await queries.screenings(conn, people)
            insights = {
                p.user_id: build(p.week_start, facts.get(p.user_id, []), screenings.get(p.user_id, Screening()))
                for p in people
            }
            written += len(await queries.store(conn, insights))
        after = page[-1][0]
    log.info("insights_computed", written=written)
    return written
