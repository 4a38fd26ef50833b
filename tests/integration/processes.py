"""Start kindsync's own commands as real processes against the test database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping

from service.settings import Settings


def environment(settings: Settings, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "SECRET_KEY": settings.secret_key,
        "KINDSYNC_ENV": "test",
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_KIB": "1024",
        "WORKER_HEARTBEAT": str(settings.worker_heartbeat_s),
        "WORKER_SHUTDOWN_GRACE": str(settings.worker_shutdown_grace_s),
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
