"""Delivering the notifications whose time has come, to every device with push on."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db import notifications as queries
from service.insights.timing import next_send
from service.push.base import PushMessage, PushProvider

log = structlog.get_logger(__name__)

BATCH = 500


async def deliver_due(ctx: dict[str, Any]) -> int:
    return await deliver(ctx["engine"], ctx["push"], datetime.now(UTC))


async def plan_practice_reminders(ctx: dict[str, Any]) -> int:
    engine: AsyncEngine = ctx["engine"]
    async with engine.begin() as conn:
        await queries.plan_reminders(conn, datetime.now(UTC))
    return 0


async def deliver(engine: AsyncEngine, provider: PushProvider, now: datetime) -> int:
    """Send what is due now; defer what quiet hours or the daily cap hold back."""
    sent = 0
    while True:
        async with engine.begin() as conn:
            due = await queries.lock_due(conn, now, BATCH)
            targets = await queries.push_targets(conn, list({d.user_id for d in due}))
            finished = []
            dead: list[tuple[UUID, UUID]] = []
            sent_today = {d.user_id: d.sent_today for d in due}
            for item in due:
                if item.kind == queries.PRACTICE_REMINDER and item.logged_today:
                    finished.append(queries.Finished(item.user_id, item.dedupe_key, "cancelled", None, "logged today"))
                    continue
                local = now.astimezone(ZoneInfo(item.prefs.timezone))
                quiet = (time.fromisoformat(item.prefs.quiet_start), time.fromisoformat(item.prefs.quiet_end))
                later = next_send(local, *quiet, sent_today=sent_today[item.user_id])
                if later is not None:
                    finished.append(queries.Finished(item.user_id, item.dedupe_key, "planned", later, "deferred"))
                    continue
                devices = targets.get(item.user_id, [])
                if not devices:
                    finished.append(
                        queries.Finished(item.user_id, item.dedupe_key, "undeliverable", None, "no device with push on")
                    )
                    continue
                message = PushMessage.for_kind(item.kind, item.record_id, item.dedupe_key)
                outcomes = [await provider.send(device, message) for device in devices]
                dead += [(item.user_id, d.device_id) for d, o in zip(devices, outcomes, strict=True) if o.token_invalid]
                delivered = sum(outcome.ok for outcome in outcomes)
                status = "sent" if delivered else "failed"
                result = f"{provider.name}: {delivered} of {len(outcomes)} devices"
                finished.append(queries.Finished(item.user_id, item.dedupe_key, status, None, result))
                if delivered:
                    sent_today[item.user_id] += 1
                    sent += 1
            await queries.finish(conn, finished)
            await queries.switch_off_push(conn, dead)
        if len(due) < BATCH:
            return sent
