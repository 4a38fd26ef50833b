"""Start kindsync's own commands as real processes against the test database."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from service.settings import Settings

T = TypeVar("T")


def environment(settings: Settings, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "SECRET_KEY": settings.secret_key,
        "MASTER_KEYS": settings.master_keys,
        "KINDSYNC_ENV": "test",
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_KIB": "1024",
        "WORKER_HEARTBEAT": str(settings.worker_heartbeat_s),
        "WORKER_SHUTDOWN_GRACE": str(settings.worker_shutdown_grace_s),
        "WORKER_METRICS_PORT": "0",
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


def start(args: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", *args],
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def eventually(predicate: Callable[[], Awaitable[T]], within_s: float = 20.0, every: float = 0.1) -> T:
    """Poll until `predicate` answers something truthy; fail after `within_s`."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if result := await predicate():
            return result
        await asyncio.sleep(every)
    raise AssertionError("condition not met in time")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
