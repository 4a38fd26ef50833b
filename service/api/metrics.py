"""`/metrics`: the API's Prometheus metrics, with the backlogs read fresh at each scrape."""

from __future__ import annotations

import asyncio
import contextlib

from litestar import Response, get
from litestar.di import NamedDependency
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from service.health import outbox_backlog, queue_backlog
from service.metrics import CONTENT_TYPE, ApiMetrics
from service.settings import Settings


@get("/metrics", tags=["operations"], media_type=CONTENT_TYPE)
async def metrics(
    api_metrics: NamedDependency[ApiMetrics],
    engine: NamedDependency[AsyncEngine],
    redis: NamedDependency[Redis],
    settings: NamedDependency[Settings],
) -> Response[bytes]:
    """Prometheus text. A backlog that cannot be read in time keeps its last value; /admin/health says why."""

    async def outbox() -> None:
        async with engine.connect() as conn:
            pending = (await outbox_backlog(conn)).pending
        api_metrics.outbox_backlog.set(pending or 0)

    async def queue() -> None:
        depth = (await queue_backlog(redis)).depth
        api_metrics.queue_depth.set(depth or 0)

    async def bounded(read: asyncio.Future[None] | asyncio.Task[None]) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(read, settings.health_check_timeout_s)

    await asyncio.gather(bounded(asyncio.ensure_future(outbox())), bounded(asyncio.ensure_future(queue())))
    return Response(api_metrics.render(), media_type=CONTENT_TYPE)
