"""`/healthz` (the process runs) and `/readyz` (its dependencies answer)."""

from __future__ import annotations

import asyncio

from litestar import Response, get
from litestar.di import NamedDependency
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.health import Alive, Readiness

CHECK_TIMEOUT_S = 2.0


@get("/healthz", tags=["operations"])
async def healthz() -> Alive:
    """200 while the process runs; touches no dependency."""
    return Alive()


@get("/readyz", tags=["operations"], responses={})
async def readyz(engine: NamedDependency[AsyncEngine], redis: NamedDependency[Redis]) -> Response[Readiness]:
    """200 when Postgres and Redis both answer within two seconds, else 503."""
    postgres_ok, redis_ok = await asyncio.gather(_postgres_answers(engine), _redis_answers(redis))
    ready = postgres_ok and redis_ok
    body = Readiness(status="ok" if ready else "unavailable", checks={"postgres": postgres_ok, "redis": redis_ok})
    return Response(body, status_code=200 if ready else 503)


async def _postgres_answers(engine: NamedDependency[AsyncEngine]) -> bool:
    async def probe() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    try:
        await asyncio.wait_for(probe(), CHECK_TIMEOUT_S)
    except (SQLAlchemyError, OSError, TimeoutError):
        return False
    return True


async def _redis_answers(redis: NamedDependency[Redis]) -> bool:
    try:
        return bool(await asyncio.wait_for(redis.ping(), CHECK_TIMEOUT_S))
    except (RedisError, OSError, TimeoutError):
        return False
