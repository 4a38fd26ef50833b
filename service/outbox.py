"""Events written with the change they describe, and the relay that queues them.

Postgres is the source of truth for events too: they are written in the
transaction of the change they describe (the sync path's write statement,
service/db/sync.py), with a NOTIFY on CHANNEL that wakes the relay at commit. The relay moves
unpublished events to arq with the event id as the job id, under
`FOR UPDATE SKIP LOCKED` so several relays can share the work; if Redis is
down the events simply wait. Jobs may run more than once: each is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import asyncpg
import structlog
from arq.connections import ArqRedis
from redis.exceptions import RedisError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schemas.jobs import EVENT_JOBS

log = structlog.get_logger(__name__)

CHANNEL = "kindsync_outbox"


async def prune(conn: AsyncConnection, older_than: timedelta) -> int:
    result = await conn.exec_driver_sql("DELETE FROM outbox WHERE published_at < now() - $1::interval", (older_than,))
    return result.rowcount or 0


class Relay:
    def __init__(
        self, engine: AsyncEngine, redis: ArqRedis, *, database_url: str, poll_s: float = 2.0, batch: int = 200
    ) -> None:
        self._engine = engine
        self._redis = redis
        self._dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._poll_s = poll_s
        self._batch = batch
        self._wake = asyncio.Event()

    async def publish_once(self) -> int:
        """Queue a batch of unpublished events; raises when Redis cannot take them.

        Events are marked published in the same transaction that locked them,
        so a failure leaves them for the next round; a job queued before the
        failure is not queued twice, as its id is the event's.
        """
        async with self._engine.begin() as conn:
            rows = (
                await conn.exec_driver_sql(
                    "SELECT id, user_id, kind, payload FROM outbox WHERE published_at IS NULL "
                    "ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                    (self._batch,),
                )
            ).all()
            for row in rows:
                job = EVENT_JOBS.get(row.kind)
                if job is not None:
                    await self._redis.enqueue_job(
                        job, {"user_id": str(row.user_id), **row.payload}, _job_id=f"outbox:{row.id}"
                    )
            if rows:
                await conn.exec_driver_sql(
                    "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])", ([row.id for row in rows],)
                )
        return len(rows)

    async def run(self) -> None:
        """Publish until cancelled: woken by NOTIFY, polling as a fallback."""
        listener = await self._listen()
        try:
            while True:
                try:
                    if await self.publish_once() == self._batch:
                        continue  # more waiting
                except (RedisError, OSError, SQLAlchemyError) as error:
                    log.warning("outbox_relay_waiting", error=type(error).__name__)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_s)
        finally:
            if listener is not None:
                with contextlib.suppress(Exception):
                    await listener.close()

    async def _listen(self) -> asyncpg.Connection | None:
        try:
            listener = await asyncpg.connect(self._dsn, timeout=5)
            await listener.add_listener(CHANNEL, lambda *_: self._wake.set())
        except (OSError, asyncpg.PostgresError) as error:
            log.warning("outbox_listen_unavailable", error=type(error).__name__)
            return None
        return listener
