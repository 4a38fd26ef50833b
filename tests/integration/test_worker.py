"""The worker as a real process: it starts, runs jobs, beats, and stops cleanly."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import uuid
from datetime import timedelta

from arq.connections import ArqRedis
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas import jobs
from service import heartbeats
from service.db import accounts
from service.db.tables import refresh_families, users
from service.settings import Settings
from tests.integration.processes import environment, eventually, start
from workers.main import health_check_key


async def _session(engine: AsyncEngine, ttl: timedelta) -> uuid.UUID:
    user_id = uuid.uuid4()
    async with engine.begin() as conn:
        await conn.execute(insert(users).values(id=user_id))
        return await accounts.start_session(conn, user_id, uuid.uuid4().bytes, ttl)


async def test_worker_runs_a_job_refreshes_its_health_and_stops_gracefully(
    worker: subprocess.Popen[bytes], engine: AsyncEngine, redis: ArqRedis, settings: Settings
) -> None:
    ended = await _session(engine, timedelta(seconds=-1))
    live = await _session(engine, timedelta(days=1))

    job = await redis.enqueue_job(jobs.PURGE_EXPIRED_SESSIONS)
    assert job is not None
    # 1, or 0 if the worker's hourly purge (at :17) happened to run first: either way it ran.
    assert await job.result(timeout=20) in (0, 1)

    async with engine.connect() as conn:
        left = set((await conn.execute(select(refresh_families.c.id))).scalars())
    assert left == {live}, "the ended session is purged and the live one kept"
    assert ended not in left

    # arq's own health key counts the completed job…
    async def health() -> str | None:
        raw = await redis.get(health_check_key())
        text = raw.decode() if raw else ""
        done = re.search(r"j_complete=(\d+)", text)
        return text if done and int(done.group(1)) >= 1 else None

    await eventually(health)
    # …and our heartbeat keeps moving.
    first = min((await heartbeats.last_beats(redis)).values())
    await asyncio.sleep(1.5)
    beats = await heartbeats.last_beats(redis)
    assert len(beats) == 1
    assert min(beats.values()) < 1.5 <= first + 1.5, "the heartbeat was refreshed"

    # The liveness probe of its pod says so too.
    assert await _liveness_probe(settings) == 0

    worker.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 15) == 0
    assert await heartbeats.last_beats(redis) == {}, "a stopped worker removes its heartbeat"
    assert await _liveness_probe(settings) == 1, "with no worker running the probe fails"


async def _liveness_probe(settings: Settings) -> int:
    probe = start(["worker", "--check"], environment(settings))
    return await asyncio.to_thread(probe.wait, 30)


async def test_purging_twice_changes_nothing_the_second_time(
    worker: subprocess.Popen[bytes], engine: AsyncEngine, redis: ArqRedis
) -> None:
    await _session(engine, timedelta(seconds=-1))
    first = await redis.enqueue_job(jobs.PURGE_EXPIRED_SESSIONS)
    second = await redis.enqueue_job(jobs.PURGE_EXPIRED_SESSIONS)
    assert first is not None
    assert second is not None
    # One removes it and the other finds nothing (or the hourly purge got there first).
    assert sorted([await first.result(timeout=20), await second.result(timeout=20)]) in ([0, 1], [0, 0])
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(refresh_families)) == 0
