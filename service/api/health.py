"""`/healthz` (the process runs) and `/readyz` (its dependencies answer)."""

from __future__ import annotations

from litestar import Response, get
from litestar.di import NamedDependency

from schemas.health import Alive, Readiness
from service.health import HealthCheck


@get("/healthz", tags=["operations"])
async def healthz() -> Alive:
    """200 while the process runs; touches no dependency."""
    return Alive()


@get("/readyz", tags=["operations"], responses={})
async def readyz(health_check: NamedDependency[HealthCheck]) -> Response[Readiness]:
    """200 when Postgres and Redis both answer within HEALTH_CHECK_TIMEOUT, else 503."""
    postgres, redis = await health_check.dependencies()
    ready = postgres.ok and redis.ok
    body = Readiness(status="ok" if ready else "unavailable", checks={"postgres": postgres.ok, "redis": redis.ok})
    return Response(body, status_code=200 if ready else 503)
