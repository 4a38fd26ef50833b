"""Connections to Postgres: the async engine and creating a missing database."""

from __future__ import annotations

import asyncpg
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from service.settings import Settings


def async_url(database_url: str) -> URL:
    """`postgresql://…` as the contract spells it, driven by asyncpg."""
    return make_url(database_url).set(drivername="postgresql+asyncpg")


def create_engine(settings: Settings, *, pool_size: int | None = None) -> AsyncEngine:
    return create_async_engine(
        async_url(settings.database_url),
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"timeout": 5, "command_timeout": 30},
    )


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
