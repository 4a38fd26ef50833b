"""Worker liveness in one Redis sorted set: member = worker id, score = time.

Each worker writes its beat every few seconds; anyone can count the workers
whose last beat is recent without knowing their ids in advance.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

WORKERS_KEY = "kindsync:workers"


async def beat(redis: Redis, worker_id: str, *, forget_after_s: float) -> None:
    now = time.time()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zadd(WORKERS_KEY, {worker_id: now})
        pipe.zremrangebyscore(WORKERS_KEY, "-inf", now - forget_after_s)
        await pipe.execute()


async def forget(redis: Redis, worker_id: str) -> None:
    await redis.zrem(WORKERS_KEY, worker_id)


async def last_beats(redis: Redis) -> dict[str, float]:
    """Seconds since each known worker's last beat."""
    now = time.time()
    members = await redis.zrange(WORKERS_KEY, 0, -1, withscores=True)
    return {member.decode(): now - score for member, score in members}
