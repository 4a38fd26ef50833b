"""Housekeeping: keep tables from growing with what nobody can use any more."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db import accounts

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
