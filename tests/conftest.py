"""Settings for a test run: its own database and its own Redis index.

Several runs may share a machine (two terminals, CI beside `make run`), so a
run claims a free Redis index (15 down to 1) with a key set only-if-absent,
keeps that key through every flush, and gives it back at the end. Index 0,
the developer's, is never touched.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import msgspec
import pytest
import redis
from sqlalchemy.engine import make_url

from service.envelope import MasterKeys
from service.settings import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, Settings

CLAIM_KEY = "kindsync:test-run"
CLAIM_TTL_S = 3 * 3600


class RunClaim(msgspec.Struct, frozen=True):
    run_id: str
    settings: Settings


def redis_url_with_index(url: str, index: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{index}"))


def _claim_redis_index(base_url: str, run_id: str) -> int:
    pinned = os.environ.get("TEST_REDIS_DB")
    candidates = [int(pinned)] if pinned else list(range(15, 0, -1))
    for index in candidates:
        with redis.Redis.from_url(redis_url_with_index(base_url, index)) as client:
            if client.set(CLAIM_KEY, run_id, nx=True, ex=CLAIM_TTL_S):
                return index
    raise RuntimeError(f"Redis indexes {candidates} are all claimed by other test runs ({CLAIM_KEY})")


def build_test_settings(run_id: str) -> Settings:
    """A fresh database named for this run, and a Redis index claimed for it."""
    base_redis = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    index = _claim_redis_index(base_redis, run_id)
    base_db = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    return Settings(
        secret_key="kindsync-test-secret-" + "k" * 40,
        master_keys=MasterKeys.generate("test-1"),
        env="test",
        database_url=make_url(base_db).set(database=f"kindsync_test_{run_id}").render_as_string(hide_password=False),
        redis_url=redis_url_with_index(base_redis, index),
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        worker_heartbeat_s=0.5,
        worker_shutdown_grace_s=5,
        log_level="WARNING",
    )


@pytest.fixture(scope="session")
def test_run() -> Iterator[RunClaim]:
    run_id = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
    settings = build_test_settings(run_id)
    yield RunClaim(run_id=run_id, settings=settings)
    with redis.Redis.from_url(settings.redis_url) as client:
        if client.get(CLAIM_KEY) == run_id.encode():
            client.flushdb()


@pytest.fixture(scope="session")
def settings(test_run: RunClaim) -> Settings:
    return test_run.settings
