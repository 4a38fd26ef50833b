"""`kindsync` commands as an operator runs them."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from service.db import migrate
from service.db.engine import drop_database
from service.settings import Settings
from tests.integration.processes import environment, eventually, free_port, start


async def _wait_for(url: str, within_s: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + within_s
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            try:
                return await http.get(url)
            except httpx.TransportError:
                await asyncio.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {within_s}s")


async def test_run_serves_health_and_readiness_then_stops_on_ctrl_c(settings: Settings, database: str) -> None:
    port = free_port()
    process = start(["run"], environment(settings, PORT=str(port)))
    try:
        health = await _wait_for(f"http://127.0.0.1:{port}/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        async with httpx.AsyncClient() as http:
            ready = await http.get(f"http://127.0.0.1:{port}/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"postgres": True, "redis": True}
        process.send_signal(signal.SIGINT)
        output, _ = await asyncio.to_thread(process.communicate, timeout=15)
        assert process.returncode == 130, "stopped by Ctrl-C, after a graceful shutdown"
        assert b"Application shutdown complete" in output
        assert b"Traceback" not in output
    finally:
        if process.poll() is None:
            process.kill()


async def test_run_with_two_api_processes_serves_from_both_and_stops(settings: Settings, database: str) -> None:
    """API_PROCESSES: both processes answer on one port, and Ctrl-C stops them all."""
    port = free_port()
    process = start(["run"], environment(settings, PORT=str(port), API_PROCESSES="2"))
    try:
        assert (await _wait_for(f"http://127.0.0.1:{port}/healthz")).status_code == 200

        async def children() -> list[int]:
            return await asyncio.to_thread(api_processes, process.pid)

        async def both_serving() -> list[int] | None:
            pids = await children()
            return pids if len(pids) >= 2 else None

        serving = await eventually(both_serving)
        async with httpx.AsyncClient() as http:
            answers = await asyncio.gather(*(http.get(f"http://127.0.0.1:{port}/readyz") for _ in range(20)))
        assert {answer.status_code for answer in answers} == {200}
        process.send_signal(signal.SIGINT)
        output, _ = await asyncio.to_thread(process.communicate, timeout=30)
        assert b"Traceback" not in output
        assert not any(alive(pid) for pid in serving or []), "no API process outlives Ctrl-C"
    finally:
        if process.poll() is None:
            process.kill()


def api_processes(parent: int) -> list[int]:
    """The serving processes uvicorn spawned (not multiprocessing's resource tracker)."""
    found = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, check=False)
    serving = []
    for pid in (int(pid) for pid in found.stdout.split()):
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                serving.append(pid)
        except OSError:
            continue  # gone meanwhile
    return serving


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


async def test_migrate_creates_a_missing_database(settings: Settings) -> None:
    url = make_url(settings.database_url).set(database=f"kindsync_test_new_{uuid.uuid4().hex[:8]}")
    database_url = url.render_as_string(hide_password=False)
    process = start(["migrate"], environment(settings, DATABASE_URL=database_url))
    try:
        output, _ = await asyncio.to_thread(process.communicate, timeout=60)
        assert process.returncode == 0, output.decode()
        conn = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))
        try:
            assert await conn.fetchval("SELECT version_num FROM alembic_version") == migrate.head_revision()
        finally:
            await conn.close()
    finally:
        await drop_database(database_url)


def test_production_refuses_to_start_without_a_secret(settings: Settings) -> None:
    env = environment(settings, KINDSYNC_ENV="production")
    env.pop("SECRET_KEY")
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "migrate"], env=env, capture_output=True, timeout=30, check=False
    )
    assert done.returncode == 2
    assert b"SECRET_KEY must be set" in done.stderr
