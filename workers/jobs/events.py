"""What follows from a person's synced changes."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncEngine

from service.db import notifications


async def on_records_changed(ctx: dict[str, Any], event: dict[str, Any]) -> int:
    """Plan, move or cancel experiment follow-ups; idempotent, so arq may re-run it."""
    engine: AsyncEngine = ctx["engine"]
    experiments = [UUID(record_id) for record_id, kind, *_ in event["records"] if kind == "as_if_experiment"]
    if experiments:
        async with engine.begin() as conn:
            await notifications.plan_follow_ups(conn, UUID(event["user_id"]), experiments)
    return len(experiments)
