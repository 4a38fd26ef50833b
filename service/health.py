"""What `/admin/health` reports, and the backlog figures `/metrics` shares with it.

Every check runs at once and each is bounded by HEALTH_CHECK_TIMEOUT, so the
answer comes in about that time even when Postgres or Redis hangs; a figure
that could not be read is null and its check is named in `failing`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from arq.constants import default_queue_name
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schemas.health import (
    AdminHealth,
    Dependency,
    HealthChecks,
    HealthStatus,
    Insights,
    Migrations,
    Outbox,
    Push,
    Queue,
    SyncLastHour,
    Workers,
)
from service import heartbeats

T = TypeVar("T")

_LAST_HOUR = """
WITH p AS (
    SELECT count(*) FILTER (WHERE status = 'sent') AS sent, count(*) FILTER (WHERE status = 'failed') AS failed,
           count(*) FILTER (WHERE status = 'invalid_token') AS invalid
    FROM deliveries WHERE updated_at >= now() - interval '1 hour'
), s AS (
    SELECT count(*) AS batches, coalesce(sum(mutations), 0) AS mutations, coalesce(sum(merged), 0) AS merged,
           coalesce(sum(rejected), 0) AS rejected
    FROM sync_batches WHERE created_at >= now() - interval '1 hour'
), i AS (
    SELECT finished_at, users FROM insight_runs ORDER BY finished_at DESC LIMIT 1
)
SELECT (SELECT version_num FROM alembic_version LIMIT 1) AS revision, p.*, s.*, i.finished_at, i.users
FROM p CROSS JOIN s LEFT JOIN i ON true
"""


async def outbox_backlog(conn: AsyncConnection) -> Outbox:
    """Events not yet handed to the queue, and how long the oldest has waited (both from one index)."""
    row = (
        await conn.exec_driver_sql(
            "SELECT count(*) AS pending, (SELECT extract(epoch FROM now() - created_at)::float8 FROM outbox "
            "WHERE published_at IS NULL ORDER BY id LIMIT 1) AS oldest FROM outbox WHERE published_at IS NULL"
        )
    ).one()
    return Outbox(pending=row.pending, oldest_age_s=_rounded(row.oldest))


async def queue_backlog(redis: Redis) -> Queue:
    """Jobs in the arq queue, and how long the oldest one due has waited (deferred ones are not late)."""
    now_ms = time.time() * 1000
    depth = await redis.zcard(default_queue_name)
    due = await redis.zrangebyscore(default_queue_name, "-inf", now_ms, start=0, num=1, withscores=True)
    return Queue(depth=depth, oldest_age_s=_rounded((now_ms - due[0][1]) / 1000) if due else None)


class HealthCheck:
    def __init__(
        self,
        engine: AsyncEngine,
        redis: Redis,
        *,
        version: str,
        head: str | None,
        timeout_s: float,
        backlog_max_age_s: float,
        heartbeat_s: float,
    ) -> None:
        self._engine = engine
        self._redis = redis
        self._version = version
        self._head = head
        self._timeout_s = timeout_s
        self._max_age_s = backlog_max_age_s
        # A worker is alive while its beats are recent: three missed beats and it is not.
        self._alive_within_s = heartbeat_s * 3

    async def run(self) -> AdminHealth:
        postgres, figures, redis, beats, queue = await asyncio.gather(
            self._timed(self._postgres_ping()),
            self._bounded(self._postgres_figures()),
            self._timed(self._redis.ping()),
            self._bounded(heartbeats.last_beats(self._redis)),
            self._bounded(queue_backlog(self._redis)),
        )
        last_hour, outbox = figures if figures is not None else (None, Outbox(pending=None, oldest_age_s=None))
        alive = [age for age in beats.values() if age <= self._alive_within_s] if beats is not None else None
        checks = HealthChecks(
            postgres=postgres,
            redis=redis,
            migrations=Migrations(current=last_hour.revision if last_hour else None, head=self._head),
            workers=Workers(
                alive=len(alive) if alive is not None else None,
                last_heartbeat_age_s=_rounded(min(beats.values())) if beats else None,
            ),
            queue=queue or Queue(depth=None, oldest_age_s=None),
            outbox=outbox,
            push=Push(
                sent_1h=last_hour.sent if last_hour else None,
                failed_1h=last_hour.failed if last_hour else None,
                invalid_tokens_1h=last_hour.invalid if last_hour else None,
            ),
            insights=Insights(
                last_run_at=last_hour.finished_at if last_hour else None,
                users=last_hour.users if last_hour else None,
            ),
            sync=SyncLastHour(
                batches_1h=last_hour.batches if last_hour else None,
                mutations_1h=int(last_hour.mutations) if last_hour else None,
                merged_1h=int(last_hour.merged) if last_hour else None,
                rejected_1h=int(last_hour.rejected) if last_hour else None,
            ),
        )
        failing = assess(checks, self._max_age_s)
        status: HealthStatus = "down" if "postgres" in failing else "degraded" if failing else "ok"
        return AdminHealth(status=status, version=self._version, checks=checks, failing=failing)

    async def dependencies(self) -> tuple[Dependency, Dependency]:
        """Postgres and Redis alone: what readiness asks."""
        postgres, redis = await asyncio.gather(self._timed(self._postgres_ping()), self._timed(self._redis.ping()))
        return postgres, redis

    async def _postgres_ping(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def _postgres_figures(self) -> tuple[Any, Outbox]:
        async with self._engine.connect() as conn:
            last_hour = (await conn.exec_driver_sql(_LAST_HOUR)).one()
            return last_hour, await outbox_backlog(conn)

    async def _timed(self, check: Awaitable[object]) -> Dependency:
        started = time.perf_counter()
        if await self._bounded(_done(check)) is None:
            return Dependency(ok=False)
        return Dependency(ok=True, latency_ms=round((time.perf_counter() - started) * 1000, 2))

    async def _bounded(self, check: Awaitable[T]) -> T | None:
        """The check's answer, or None when it failed or took longer than the timeout."""
        try:
            return await asyncio.wait_for(check, self._timeout_s)
        except Exception:  # any failure of a dependency is what this reports
            return None


def assess(checks: HealthChecks, backlog_max_age_s: float) -> list[str]:
    """The checks that fail: a dependency down, no worker, a backlog too old, or a figure unreadable."""
    failing = []
    if not checks.postgres.ok:
        failing.append("postgres")
    if not checks.redis.ok:
        failing.append("redis")
    if checks.migrations.current is None or checks.migrations.current != checks.migrations.head:
        failing.append("migrations")
    if not checks.workers.alive:
        failing.append("workers")
    for name, age, count in (
        ("queue", checks.queue.oldest_age_s, checks.queue.depth),
        ("outbox", checks.outbox.oldest_age_s, checks.outbox.pending),
    ):
        if count is None or (age is not None and age > backlog_max_age_s):
            failing.append(name)
    return failing


async def _done(check: Awaitable[object]) -> bool:
    await check
    return True


def _rounded(seconds: float | None) -> float | None:
    return round(seconds, 3) if seconds is not None else None
