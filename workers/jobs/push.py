"""Delivering the notifications whose time has come, to every device with push on."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db import notifications as queries
from service.insights.timing import next_send
from service.metrics import WorkerMetrics
from service.push.base import PushMessage, PushOutcome, PushProvider

log = structlog.get_logger(__name__)

BATCH = 500
# A notification the providers could not take is tried again after 1, 3, 9, 27 minutes.
MAX_ATTEMPTS = 5
RETRY_BACKOFF = timedelta(minutes=1)


async def deliver_due(ctx: dict[str, Any]) -> int:
    return await deliver(ctx["engine"], ctx["push"], datetime.now(UTC), ctx.get("metrics"))


async def plan_practice_reminders(ctx: dict[str, Any]) -> int:
    engine: AsyncEngine = ctx["engine"]
    async with engine.begin() as conn:
        await queries.plan_reminders(conn, datetime.now(UTC))
    return 0


async def deliver(
    engine: AsyncEngine, provider: PushProvider, now: datetime, metrics: WorkerMetrics | None = None
) -> int:
    """Send what is due now; defer what quiet hours or the daily cap hold back."""
    sent = 0
    while True:
        async with engine.begin() as conn:
            due = await queries.lock_due(conn, now, BATCH)
            targets = await queries.push_targets(conn, list({d.user_id for d in due}))
            finished = []
            dead: list[tuple[UUID, UUID]] = []
            delivered: list[tuple[UUID, str, UUID, PushOutcome]] = []
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
                delivered += [
                    (item.user_id, item.dedupe_key, d.device_id, o) for d, o in zip(devices, outcomes, strict=True)
                ]
                dead += [(item.user_id, d.device_id) for d, o in zip(devices, outcomes, strict=True) if o.token_invalid]
                result = f"{provider.name}: {sum(o.ok for o in outcomes)} of {len(outcomes)} devices"
                if any(o.ok for o in outcomes):
                    finished.append(queries.Finished(item.user_id, item.dedupe_key, "sent", None, result, tried=True))
                    sent_today[item.user_id] += 1
                    sent += 1
                elif any(o.retryable for o in outcomes) and item.attempts + 1 < MAX_ATTEMPTS:
                    # The provider was busy or unreachable: try again later, never drop.
                    again = now + RETRY_BACKOFF * 3**item.attempts
                    finished.append(
                        queries.Finished(item.user_id, item.dedupe_key, "planned", again, result, tried=True)
                    )
                else:
                    finished.append(queries.Finished(item.user_id, item.dedupe_key, "failed", None, result, tried=True))
            await queries.finish(conn, finished)
            await queries.switch_off_push(conn, dead)
            await queries.record_deliveries(conn, provider.name, delivered)
        if metrics is not None:  # counted once the outcomes are committed
            for *_, outcome in delivered:
                metrics.push_results.labels(outcome.provider or provider.name, outcome.status).inc()
        if len(due) < BATCH:
            return sent
