"""Events written with the change they describe, and the relay that queues them.

Postgres is the source of truth for events too: they are written in the
transaction of the change they describe (the sync path's write statement,
service/db/sync.py), and the API wakes the relay with a NOTIFY on CHANNEL after
that commits (RelayWake). The relay moves unpublished events to arq with the
event id as the job id, under `FOR UPDATE SKIP LOCKED` so several relays can
share the work; if Redis is down the events simply wait. Jobs may run more than
once: each is idempotent.
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
from service.db.engine import DriverPool

log = structlog.get_logger(__name__)

CHANNEL = "kindsync_outbox"
# An API process wakes the relay at most this often, however many batches it writes.
WAKE_EVERY_S = 0.05


class RelayWake:
    """Wakes the relay after writes that left events, at most once every `every_s`, with a NOTIFY
    of its own.

    A NOTIFY in the write's own transaction would make Postgres commit every such transaction one
    at a time: from the NOTIFY to the end of its commit, WAL flush included, a transaction holds a
    lock that every other notifying one waits for. With 16 clients on this machine, transactions
    that notified committed 4,300-5,300 a second, against 11,500 that did not (pgbench); every sync
    batch that changed records notified, whichever API process, whichever person. A NOTIFY alone
    writes no WAL, so it holds that lock for an instant.

    The first write after a quiet spell wakes the relay at once; writes within the next `every_s`
    wake it once more at its end. A wake-up that fails (Postgres unreachable) is logged, and the
    relay's own polling finds the events instead: nothing is lost either way.
    """

    def __init__(self, pool: DriverPool, *, every_s: float = WAKE_EVERY_S) -> None:
        self._pool = pool
        self._every_s = every_s
        self._asked = False
        self._waking: asyncio.Task[None] | None = None

    def poke(self) -> None:
        """A write that left events has committed: the relay hears of it within `every_s`."""
        self._asked = True
        if self._waking is None:
            self._waking = asyncio.get_running_loop().create_task(self._wake())

    async def close(self) -> None:
        if self._waking is not None:
            self._waking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._waking

    async def _wake(self) -> None:
        try:
            while self._asked:
                self._asked = False
                try:
                    async with self._pool.connection() as conn:
                        await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
                except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, RuntimeError) as error:
                    log.warning("outbox_wake_failed", error=type(error).__name__)
                await asyncio.sleep(self._every_s)
        finally:
            self._waking = None


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
