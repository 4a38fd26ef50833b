"""Real Postgres and Redis for the integration tests.

The database is created and migrated once per run and dropped at the end;
after each test every table is emptied and the Redis index flushed, because
the app under test uses connections of its own (no savepoint can span them).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.connections import ArqRedis
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.app import create_app
from service.db import migrate
from service.db.engine import create_engine, drop_database, ensure_database
from service.db.tables import metadata
from service.queue import create_redis
from service.settings import Settings

Client = AsyncTestClient[Litestar]


@pytest.fixture(scope="session")
async def database(settings: Settings) -> AsyncIterator[str]:
    await drop_database(settings.database_url)
    await ensure_database(settings.database_url)
    engine = create_engine(settings, pool_size=1)
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()
    yield settings.database_url
    await drop_database(settings.database_url)


@pytest.fixture(scope="session")
async def engine(settings: Settings, database: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def redis(settings: Settings) -> AsyncIterator[ArqRedis]:
    client = create_redis(settings)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture(autouse=True)
async def _clean_state(engine: AsyncEngine, redis: ArqRedis) -> AsyncIterator[None]:
    yield
    tables = ", ".join(table.name for table in metadata.sorted_tables)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {tables} CASCADE"))
    await redis.flushdb()


@pytest.fixture(scope="session")
async def client(settings: Settings, database: str) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


async def signup(client: Client, email: str = "ada@example.org", password: str = "correct horse battery") -> Any:
    """Sign up and answer the Tokens body."""
    response = await client.post("/v1/auth/signup", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    return response.json()


async def anonymous(client: Client) -> Any:
    response = await client.post("/v1/auth/anonymous", json={})
    assert response.status_code == 201, response.text
    return response.json()


def bearer(tokens: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def assert_problem(response: Any, status: int, *, path: str | None = None) -> dict[str, Any]:
    """The answer is problem+json with `status`, and names `path` when given."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert set(body) == {"type", "title", "status", "detail", "errors"}
    assert body["status"] == status
    assert body["detail"]
    assert "Traceback" not in response.text
    if path is not None:
        assert path in [error["path"] for error in body["errors"]], body
    return body
