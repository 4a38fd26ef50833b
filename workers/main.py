"""The arq worker: its jobs, its schedule, and the resources it holds.

`create_worker(settings)` is the worker's one wiring place, as
`create_app(settings)` is the API's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from typing import Any

import structlog
from arq import cron
from arq.typing import WorkerCoroutine
from arq.worker import Worker, func
from prometheus_client import start_http_server
from redis.exceptions import RedisError

from schemas import jobs
from service import heartbeats
from service.db.engine import create_engine
from service.logs import configure_logging
from service.metrics import WorkerMetrics
from service.outbox import Relay
from service.push.log import LogProvider
from service.push.routing import real_providers
from service.queue import create_redis, decode_job, encode_job
from service.settings import Settings
from workers.jobs.events import on_records_changed
from workers.jobs.insights import compute_insights, insights_due
from workers.jobs.maintenance import prune_outbox, purge_expired_sessions, purge_tombstones
from workers.jobs.push import deliver_due, plan_practice_reminders

log = structlog.get_logger(__name__)

FUNCTIONS: dict[str, WorkerCoroutine] = {
    jobs.PURGE_EXPIRED_SESSIONS: purge_expired_sessions,
    jobs.PURGE_TOMBSTONES: purge_tombstones,
    jobs.PRUNE_OUTBOX: prune_outbox,
    jobs.ON_RECORDS_CHANGED: on_records_changed,
    jobs.COMPUTE_INSIGHTS: compute_insights,
    jobs.INSIGHTS_DUE: insights_due,
    jobs.DELIVER_DUE: deliver_due,
    jobs.PLAN_PRACTICE_REMINDERS: plan_practice_reminders,
}


def health_check_key() -> str:
    """arq's health-check key, one per host: a pod's liveness probe asks about its own worker."""
    return f"kindsync:worker-health:{socket.gethostname()}"


def create_worker(settings: Settings, *, handle_signals: bool = True) -> Worker:
    configure_logging(settings.log_level)
    worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    metrics = WorkerMetrics()

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["settings"] = settings
        ctx["metrics"] = metrics
        ctx["metrics_server"] = _serve_metrics(metrics, settings.host, settings.worker_metrics_port)
        ctx["engine"] = create_engine(settings, pool_size=5)
        if settings.push_provider == "real":
            ctx["push"], ctx["push_clients"] = real_providers(settings)
        else:
            ctx["push"], ctx["push_clients"] = LogProvider(), []
        ctx["heartbeat"] = asyncio.create_task(_keep_beating(ctx["redis"], worker_id, settings.worker_heartbeat_s))
        relay = Relay(ctx["engine"], ctx["redis"], database_url=settings.database_url)
        ctx["relay"] = asyncio.create_task(relay.run())
        log.info("worker_started", worker_id=worker_id)

    async def shutdown(ctx: dict[str, Any]) -> None:
        for task in (ctx["heartbeat"], ctx["relay"]):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(RedisError, OSError):
            await heartbeats.forget(ctx["redis"], worker_id)
        for client in ctx["push_clients"]:
            await client.aclose()
        await ctx["engine"].dispose()
        if ctx["metrics_server"] is not None:
            ctx["metrics_server"].shutdown()
        log.info("worker_stopped", worker_id=worker_id)

    return Worker(
        functions=[func(fn, name=name) for name, fn in FUNCTIONS.items()],
        cron_jobs=[
            cron(purge_expired_sessions, name=jobs.PURGE_EXPIRED_SESSIONS + ":cron", minute=17, second=0),
            cron(purge_tombstones, name=jobs.PURGE_TOMBSTONES + ":cron", hour=3, minute=41, second=0),
            cron(prune_outbox, name=jobs.PRUNE_OUTBOX + ":cron", minute=29, second=0),
            cron(insights_due, name=jobs.INSIGHTS_DUE + ":cron", minute=set(range(0, 60, 5)), second=0),
            cron(
                plan_practice_reminders,
                name=jobs.PLAN_PRACTICE_REMINDERS + ":cron",
                minute=set(range(2, 60, 5)),
                second=0,
            ),
            cron(deliver_due, name=jobs.DELIVER_DUE + ":cron", second={0, 30}),
        ],
        redis_pool=create_redis(settings),
        on_startup=startup,
        on_shutdown=shutdown,
        handle_signals=handle_signals,
        job_completion_wait=settings.worker_shutdown_grace_s,
        health_check_interval=settings.worker_heartbeat_s,
        health_check_key=health_check_key(),
        job_serializer=encode_job,
        job_deserializer=decode_job,
        keep_result=3600,
        log_results=False,
        max_jobs=20,
    )


def _serve_metrics(metrics: WorkerMetrics, host: str, port: int) -> Any:
    """The metrics endpoint, on a thread of the library's; a port already taken (a second worker on
    one machine) costs that worker its metrics, never its jobs."""
    if not port:
        return None
    try:
        server, _ = start_http_server(port, host, registry=metrics.registry)
    except OSError as error:
        log.warning("metrics_port_unavailable", port=port, error=type(error).__name__)
        return None
    return server


async def _keep_beating(redis: Any, worker_id: str, every_s: float) -> None:
    """Beat until cancelled; a Redis outage is logged, not fatal."""
    while True:
        try:
            await heartbeats.beat(redis, worker_id, forget_after_s=every_s * 12)
        except (RedisError, OSError):
            log.warning("heartbeat_failed", worker_id=worker_id)
        await asyncio.sleep(every_s)
