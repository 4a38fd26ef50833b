"""What follows from a person's synced changes."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncEngine

from service.db import notifications


async def on_records_changed(ctx: dict[str, Any], event: dict[str, Any]) -> int:
    """Plan, move or cancel experiment follow-ups; idempotent, so arq may re-run it.

    The event names the change numbers a sync batch took, (after, up_to]: the records still at
    one of those are the ones it changed, and a record changed again since is in a later event,
    so reading them now misses none. Events queued before that form name the records themselves.
    """
    engine: AsyncEngine = ctx["engine"]
    user_id = UUID(event["user_id"])
    async with engine.begin() as conn:
        if "records" in event:
            experiments = [UUID(record_id) for record_id, kind, *_ in event["records"] if kind == "as_if_experiment"]
        else:
            experiments = await notifications.experiments_changed(conn, user_id, event["after"], event["up_to"])
        if experiments:
            await notifications.plan_follow_ups(conn, user_id, experiments)
    return len(experiments)
