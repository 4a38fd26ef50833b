"""Settings for a test run: its own database and its own Redis index."""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy.engine import make_url

from service.settings import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, Settings

TEST_REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "15"))


def build_test_settings() -> Settings:
    """Point at a fresh database named for this run and Redis index 15 (by default).

    The developer's own `kindsync` database and Redis index 0 are never touched,
    so the tests can run while `make run` is up.
    """
    database = f"kindsync_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    base_db = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    redis = urlsplit(os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL)
    return Settings(
        secret_key="kindsync-test-secret-" + "k" * 40,
        env="test",
        database_url=make_url(base_db).set(database=database).render_as_string(hide_password=False),
        redis_url=urlunsplit(redis._replace(path=f"/{TEST_REDIS_DB}")),
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        worker_heartbeat_s=0.5,
        worker_shutdown_grace_s=5,
        log_level="WARNING",
    )


@pytest.fixture(scope="session")
def settings() -> Settings:
    return build_test_settings()
