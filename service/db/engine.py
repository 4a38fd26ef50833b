"""Connections to Postgres: the async engine and creating a missing database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from service.settings import Settings


def async_url(database_url: str) -> URL:
    """`postgresql://…` as the contract spells it, driven by asyncpg."""
    return make_url(database_url).set(drivername="postgresql+asyncpg")


# The API reads one person's rows at a time, in index order. Postgres may instead read a page of
# changes as a bitmap scan of all the person's rows after the cursor and a sort, and does when its
# statistics lag behind a table that grows fast (a new database, a bulk first sync): each page then
# costs as much as all the person's later rows, and a first sync grows with the square of them.
# With bitmap scans off for the API's connections, the page is the first rows of the index.
API_SERVER_SETTINGS = {"enable_bitmapscan": "off"}


def create_engine(
    settings: Settings, *, pool_size: int | None = None, server_settings: Mapping[str, str] | None = None
) -> AsyncEngine:
    """`server_settings` are Postgres settings for each of the engine's connections."""
    engine = create_async_engine(
        async_url(settings.database_url),
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_recycle=1800,
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


@asynccontextmanager
async def driver_transaction(engine: AsyncEngine) -> AsyncIterator[Any]:
    """A transaction on the asyncpg connection of a pooled connection, for the statements of
    the hot path; the connection goes back to the engine's pool (checked as any other)."""
    async with engine.connect() as conn:
        driver = await _driver(conn)
        async with driver.transaction():
            yield driver


@asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[Any]:
    """The asyncpg connection of a pooled connection, outside a transaction: each statement is
    one (single reads, and a sync batch's read and checked write)."""
    async with engine.connect() as conn:
        yield await _driver(conn)


async def _driver(conn: AsyncConnection) -> Any:
    driver = (await conn.get_raw_connection()).driver_connection
    if driver is None:
        raise RuntimeError("a pooled connection without its driver connection")
    return driver


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
