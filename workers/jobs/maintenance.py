"""Housekeeping: keep tables from growing with what nobody can use any more."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from service import outbox
from service.db import accounts
from service.db import sync as sync_queries
from service.settings import Settings

log = structlog.get_logger(__name__)

# A revoked session is kept a day so a late re-use is still recognised.
REVOKED_SESSION_GRACE = timedelta(days=1)


async def purge_expired_sessions(ctx: dict[str, Any]) -> int:
    """Delete ended sign-in sessions; safe to run any number of times."""
    engine: AsyncEngine = ctx["engine"]
    async with engine.begin() as conn:
        removed = await accounts.purge_expired_sessions(conn, REVOKED_SESSION_GRACE)
    log.info("sessions_purged", count=removed)
    return removed


async def purge_tombstones(ctx: dict[str, Any]) -> int:
    """Forget deletions every active device has seen, once older than the retention.

    A device that has not synced within the retention gets `cursor-expired`
    and starts over, so it cannot miss a purged deletion.
    """
    engine: AsyncEngine = ctx["engine"]
    settings: Settings = ctx["settings"]
    retention = timedelta(days=settings.tombstone_retention_days)
    async with engine.begin() as conn:
        records = await sync_queries.purge_tombstones(conn, retention)
        batches = await sync_queries.purge_batches(conn, retention)
    log.info("tombstones_purged", records=records, batches=batches)
    return records


# Published events are kept a day, for looking into what happened.
PUBLISHED_EVENTS_KEPT = timedelta(days=1)


async def prune_outbox(ctx: dict[str, Any]) -> int:
    engine: AsyncEngine = ctx["engine"]
    async with engine.begin() as conn:
        removed = await outbox.prune(conn, PUBLISHED_EVENTS_KEPT)
    log.info("outbox_pruned", count=removed)
    return removed
