"""Connections to Postgres: the async engine and creating a missing database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from service.settings import Settings


def async_url(database_url: str) -> URL:
    """`postgresql://…` as the contract spells it, driven by asyncpg."""
    return make_url(database_url).set(drivername="postgresql+asyncpg")


# The API reads one person's rows at a time, in index order. Postgres may instead read a page of
# changes as a bitmap scan of all the person's rows after the cursor and a sort, and does when its
# statistics lag behind a table that grows fast (a new database, a bulk first sync): each page then
# costs as much as all the person's later rows, and a first sync grows with the square of them.
# With bitmap scans off for the API's connections, the page is the first rows of the index.
#
# JIT compilation is off for them too. Postgres compiles a statement whose estimated cost passes
# jit_above_cost, and it compiles it again at each run: a plan is cached, its compiled code is not.
# A batch's start is estimated by the size of the whole tables, not of one person's rows: with
# statistics of 240,000 records it was costed at 570,000 (it takes 100 index probes and runs in
# 1 ms), and each run then spent 200 to 480 ms compiling. In a bench run that grew the tables to
# that size, compiling took a tenth of Postgres's CPU and set the updates' p99 at 400 to 470 ms.
API_SERVER_SETTINGS = {"enable_bitmapscan": "off", "jit": "off"}
# The sync path's connections (DriverPool) also plan each statement once, without the values of
# its parameters, and keep that plan until an ANALYZE or a change of schema makes Postgres plan it
# again. By default Postgres plans a prepared statement with each run's values for its first five
# runs on a connection, and after that goes on doing so unless the value-free plan is estimated no
# costlier than those plans were on average, which a batch's write often was not: planning it took
# 0.4 to 0.6 ms, a fifth of its run, and in the bench's last rounds about one run in eight was
# still planned (pg_stat_statements). The sync statements are written to need no values to be
# planned well (an index probe per record, a page read in index order), and their kept plans are
# those (test_page_plans). In six alternated bench pairs, batches of new records went from
# 0.48-0.49 of raw asyncpg's rate to 0.49-0.53, 0.025 more on average and more in every pair;
# edits stayed at 0.34-0.36. Not for the engine's connections: some of their statements (key
# rotation's and the insights' pages, `$1 IS NULL OR user_id > $1`) need their values.
SYNC_SERVER_SETTINGS = {**API_SERVER_SETTINGS, "plan_cache_mode": "force_generic_plan"}
# A pooled connection older than this is closed when it is given back, and another opened.
RECYCLE_S = 1800.0
# How long a request waits for a connection of DriverPool when all are lent.
ACQUIRE_TIMEOUT_S = 30.0


def create_engine(
    settings: Settings, *, pool_size: int | None = None, server_settings: Mapping[str, str] | None = None
) -> AsyncEngine:
    """`server_settings` are Postgres settings for each of the engine's connections."""
    engine = create_async_engine(
        async_url(settings.database_url),
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_recycle=RECYCLE_S,
        connect_args={"timeout": 5, "command_timeout": 30, "server_settings": dict(server_settings or {})},
    )
    event.listen(engine.sync_engine.pool, "checkout", _replace_if_closed)
    return engine


def _replace_if_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """A pooled connection Postgres has closed (a restart, a terminated backend) is replaced
    before use. asyncpg learns of the close as it happens, so asking it costs nothing; a ping
    (pool_pre_ping) would cost three round trips on every checkout."""
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("the connection was closed by the server")


class DriverPool:
    """asyncpg connections of their own for the sync path, whose statements go to the driver
    directly. A connection lent by SQLAlchemy's pool cost the API 120 us to take and give back,
    more than a round trip to Postgres and a tenth of a batch of new records; asyncpg's pool
    takes 25 us. A connection comes back with no reset query: nothing on the sync path changes
    its session, and a transaction left open is rolled back.

    Opened on first use, in the loop that serves (as the engine's pool is), and closed with the
    app. Up to `size` connections, besides the engine's; an idle one is closed after 5 minutes,
    and one older than `recycle_s` when it comes back (as the engine's pool_recycle does): a
    backend's caches grow with what it served, and a proxy or firewall may drop a connection
    it thinks too old.
    """

    def __init__(
        self,
        database_url: str,
        *,
        size: int,
        server_settings: Mapping[str, str] | None = None,
        recycle_s: float = RECYCLE_S,
    ) -> None:
        url = make_url(database_url)
        self._dsn = _server_dsn(url, url.database or "")
        self._size = size
        self._recycle_s = recycle_s
        self._server_settings = dict(server_settings or {})
        self._pool: asyncpg.Pool | None = None
        self._opening: asyncio.Lock | None = None
        self._closed = False

    async def _open(self) -> asyncpg.Pool:
        self._opening = self._opening or asyncio.Lock()
        async with self._opening:
            if self._closed:
                # A request still running as the app stops must not open a pool nobody closes.
                raise RuntimeError("the sync path's connections are closed")
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=0,
                    max_size=self._size,
                    max_inactive_connection_lifetime=300,
                    reset=_as_lent,
                    timeout=5,
                    command_timeout=30,
                    server_settings=self._server_settings,
                    connection_class=_DatedConnection,
                )
        return self._pool

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """A connection outside a transaction: each statement is one (single reads, and a sync
        batch's read and checked write). Waits up to 30 s for one, as the engine's pool does.

        With a connection idle, none is waited for, and none is asked for with a timeout: asyncpg
        then arms a timer to take it and another to give it back, a thirtieth of the API's work
        for a sync that pulls nothing (counted in instructions, callgrind)."""
        pool = self._pool if self._pool is not None and not self._closed else await self._open()
        async with pool.acquire(timeout=None if pool.get_idle_size() else ACQUIRE_TIMEOUT_S) as conn:
            yield conn
            if time.monotonic() - conn.opened_at > self._recycle_s:
                # Closed, it is given back as such, and the pool opens another when one is next needed.
                await conn.close(timeout=5)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        """A connection in a transaction, committed when the block ends without an error."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def close(self) -> None:
        self._closed = True
        if self._pool is not None:
            await self._pool.close()


class _DatedConnection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg has no type hints
    """A connection that knows when it was opened (DriverPool recycles old ones)."""

    __slots__ = ("opened_at",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.opened_at = time.monotonic()


async def _as_lent(_conn: asyncpg.Connection) -> None:
    """No reset query (asyncpg's default sends one each time a connection comes back)."""


def _server_dsn(url: URL, database: str) -> str:
    """A libpq-style DSN asyncpg understands, pointed at another database."""
    return url.set(drivername="postgresql", database=database).render_as_string(hide_password=False)


async def ensure_database(database_url: str) -> bool:
    """Create the database named in the URL when it is missing; True if created."""
    url = make_url(database_url)
    name = url.database or "kindsync"
    conn = await asyncpg.connect(_server_dsn(url, "postgres"), timeout=10)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        try:
            await conn.execute(f'CREATE DATABASE "{_quote(name)}"')
        except asyncpg.DuplicateDatabaseError:
            return False  # created meanwhile by another process
        return True
    finally:
        await conn.close()


async def drop_database(database_url: str) -> None:
    url = make_url(database_url)
    conn = await asyncpg.connect(_server_dsn(url, "postgres"), timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{_quote(url.database or "")}" WITH (FORCE)')
    finally:
        await conn.close()


def _quote(identifier: str) -> str:
    return identifier.replace('"', '""')
