"""`kindsync` commands as an operator runs them."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
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


async def test_run_with_two_api_processes_evens_out_their_connections_and_stops(
    settings: Settings, database: str
) -> None:
    """API_PROCESSES: sixteen phones that connect at once and keep their connections end up
    split evenly over the processes, whatever the kernel's first placement; one process that
    dies is replaced; Ctrl-C stops them all."""
    port = free_port()
    process = start(["run"], environment(settings, PORT=str(port), API_PROCESSES="2"))
    try:
        assert (await _wait_for(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        serving = await listening(process, port, 2)
        # Opened all at once, before any process accepts one: the case a shared socket gets wrong.
        phones = await asyncio.to_thread(lambda: [KeptConnection(port) for _ in range(16)])

        async def even() -> dict[int, int] | None:
            answers = await asyncio.gather(*(asyncio.to_thread(phone.ask_ready) for phone in phones))
            assert set(answers) == {200}
            held = {pid: sockets_on(pid, port, state=ESTABLISHED) for pid in serving}
            return held if sum(held.values()) == len(phones) and max(held.values()) - min(held.values()) <= 1 else None

        try:
            assert await eventually(even)
        finally:
            for phone in phones:
                phone.close()

        os.kill(serving[0], signal.SIGKILL)  # one dies: another takes its place
        replaced = await listening(process, port, 2)
        assert serving[0] not in replaced
        assert serving[1] in replaced

        process.send_signal(signal.SIGINT)
        output, _ = await asyncio.to_thread(process.communicate, timeout=30)
        assert b"Traceback" not in output
        assert not any(alive(pid) for pid in {*serving, *replaced}), "no API process outlives Ctrl-C"
    finally:
        if process.poll() is None:
            process.kill()


async def test_api_processes_stop_when_their_supervisor_is_killed(settings: Settings, database: str) -> None:
    """No orphan goes on serving the port after `run` dies without a chance to stop them."""
    port = free_port()
    process = start(["run"], environment(settings, PORT=str(port), API_PROCESSES="2"))
    try:
        serving = await listening(process, port, 2)
        process.kill()
        process.wait(timeout=10)

        async def all_gone() -> bool | None:
            return True if not any(alive(pid) and not zombie(pid) for pid in serving) else None

        assert await eventually(all_gone)
    finally:
        if process.poll() is None:
            process.kill()


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


async def listening(run: subprocess.Popen[bytes], port: int, count: int) -> list[int]:
    """The API processes of `run` that listen on the port, once there are `count` of them."""

    async def found() -> list[int] | None:
        pids = await asyncio.to_thread(api_processes, run.pid)
        serving = [pid for pid in pids if sockets_on(pid, port, state=LISTEN)]
        return serving if len(serving) >= count else None

    serving = await eventually(found)
    assert serving is not None
    return serving


def api_processes(parent: int) -> list[int]:
    """The serving processes `run` spawned (not multiprocessing's resource tracker)."""
    found = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, check=False)
    serving = []
    for pid in (int(pid) for pid in found.stdout.split()):
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                serving.append(pid)
        except OSError:
            continue  # gone meanwhile
    return serving


class KeptConnection:
    """An HTTP/1.1 client that keeps its connection, and opens a new one when an answer says
    `Connection: close`, as phones' HTTP clients do."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._sock = self._connect()

    def _connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self._port), timeout=10)

    def _receive(self) -> bytes:
        got = self._sock.recv(4096)
        if not got:
            raise ConnectionError("the server closed the connection before answering")
        return got

    def ask_ready(self) -> int:
        """GET /readyz: the answer's status."""
        self._sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: kindsync\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += self._receive()
        head, _, body = answer.partition(b"\r\n\r\n")
        headers = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])
        while len(body) < int(headers[b"content-length"]):
            body += self._receive()
        if headers.get(b"connection") == b"close":
            self._sock.close()
            self._sock = self._connect()
        return int(head[9:12])

    def close(self) -> None:
        self._sock.close()


LISTEN, ESTABLISHED = "0A", "01"


def sockets_on(pid: int, port: int, *, state: str) -> int:
    """TCP sockets on local `port` in `state` that the process holds (read from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:  # closed between listing and reading: the process goes on working meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    held = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            held += local_port == port and fields[3] == state and fields[9] in inodes
    return held


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
