"""Real Postgres and Redis for the integration tests.

The database is created and migrated once per run and dropped at the end;
after each test every table is emptied and the Redis index flushed, because
the app under test uses connections of its own (no savepoint can span them).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis
from litestar import Litestar
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service import heartbeats
from service.app import create_app
from service.db import migrate
from service.db.engine import create_engine, drop_database, ensure_database
from service.db.tables import metadata
from service.queue import create_redis
from service.settings import Settings
from tests.conftest import CLAIM_KEY, CLAIM_TTL_S, RunClaim
from tests.integration.processes import environment, eventually, start

Client = httpx.AsyncClient


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


async def reset_redis(client: ArqRedis, run: RunClaim) -> None:
    """Empty this run's Redis index but keep the run's claim on it, atomically."""
    async with client.pipeline(transaction=True) as pipe:
        pipe.flushdb()
        pipe.set(CLAIM_KEY, run.run_id, ex=CLAIM_TTL_S)
        await pipe.execute()


@pytest.fixture(scope="session")
async def redis(settings: Settings, test_run: RunClaim) -> AsyncIterator[ArqRedis]:
    client = create_redis(settings)
    await reset_redis(client, test_run)
    yield client
    await client.aclose()


@pytest.fixture(autouse=True)
async def _clean_state(engine: AsyncEngine, redis: ArqRedis, test_run: RunClaim) -> AsyncIterator[None]:
    yield
    tables = ", ".join(table.name for table in metadata.sorted_tables)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {tables} CASCADE"))
    await reset_redis(redis, test_run)


@asynccontextmanager
async def serve(app: Litestar) -> AsyncIterator[Client]:
    """An HTTP client on `app`, running in the test's own event loop.

    Requests sent together (asyncio.gather) really run concurrently, as they
    would against a server; the app's lifespan runs around them.
    """
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))  # type: ignore[arg-type]
    async with _lifespan(app), httpx.AsyncClient(transport=transport, base_url="http://kindsync.test") as client:
        yield client


@asynccontextmanager
async def _lifespan(app: Litestar) -> AsyncIterator[None]:
    """Run the app's lifespan in a task of its own.

    A session fixture is set up and torn down in different tasks, and the
    lifespan's cancel scope must be left in the task that entered it.
    """
    started, stop = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with app.lifespan():
            started.set()
            await stop.wait()

    task = asyncio.create_task(hold())
    await asyncio.wait([task, asyncio.create_task(started.wait())], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # startup failed: raise its error here
    try:
        yield
    finally:
        stop.set()
        await task


@pytest.fixture(scope="session")
def app(settings: Settings) -> Litestar:
    return create_app(settings)


@pytest.fixture(scope="session")
async def client(app: Litestar, database: str) -> AsyncIterator[Client]:
    async with serve(app) as client:
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


@pytest.fixture
async def worker(settings: Settings, database: str, redis: ArqRedis) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A real `kindsync worker` process on this run's database and Redis index."""
    process = start(["worker"], environment(settings))
    try:
        await eventually(lambda: heartbeats.last_beats(redis))
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
