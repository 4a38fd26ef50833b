"""`kindsync run|worker|migrate|revision|dev`: the operator's commands."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import structlog

from service import heap
from service.envelope import EnvelopeError, MasterKeys
from service.settings import Settings, SettingsError

log = structlog.get_logger("kindsync.cli")


def build_parser() -> argparse.ArgumentParser:
    """The command line; deployment files are checked against it (tests/unit/test_infra.py)."""
    parser = argparse.ArgumentParser(prog="kindsync", description="kindsync backend")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="serve the HTTP API")
    run.add_argument("--host", help="address to bind (default $HOST or 127.0.0.1)")
    run.add_argument("--port", type=int, help="port to bind (default $PORT or 8000)")
    worker = commands.add_parser("worker", help="run a background worker")
    worker.add_argument(
        "--check",
        action="store_true",
        help="exit 0 when this host's worker refreshed its health check lately, else 1 (a liveness probe)",
    )
    commands.add_parser("migrate", help="create the database when missing and apply migrations")
    revision = commands.add_parser("revision", help="write a migration from changes to service/db/tables.py")
    revision.add_argument("-m", "--message", required=True)
    commands.add_parser("dev", help="migrate, then run the API and one worker together")
    keys = commands.add_parser("keys", help="master keys, which wrap each person's data key")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    key_commands.add_parser("rotate", help="re-wrap every data key under the first key of MASTER_KEYS")
    new_key = key_commands.add_parser("new", help="print a new master key entry for MASTER_KEYS")
    new_key.add_argument("key_id", help="its id, e.g. the date it was made: 2026-11")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    if args.command == "keys" and args.keys_command == "new":
        # Needs no settings: this is how an operator makes the first one.
        try:
            print(MasterKeys.generate(args.key_id))
        except EnvelopeError as error:
            print(f"kindsync: {error}", file=sys.stderr)
            return 2
        return 0

    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"kindsync: {error}", file=sys.stderr)
        return 2

    if args.command == "run":
        return _run_api(settings, args.host, args.port)
    if args.command == "worker":
        return _check_worker(settings) if args.check else _run_worker(settings)
    if args.command == "migrate":
        asyncio.run(_migrate(settings))
        return 0
    if args.command == "revision":
        asyncio.run(_revision(settings, args.message))
        return 0
    if args.command == "keys":
        asyncio.run(_rotate_keys(settings))
        return 0
    return _run_dev(settings)


def _run_api(settings: Settings, host: str | None, port: int | None) -> int:
    options: dict[str, Any] = {
        "host": host or settings.host,
        "port": port or settings.port,
        "log_config": None,
        "access_log": False,
        "proxy_headers": True,
        "server_header": False,
        "timeout_graceful_shutdown": 10,
    }
    if settings.api_processes > 1:
        # Each process builds its own app from the same environment, on a socket of its own;
        # this one only supervises them and needs none.
        from service import api_processes

        return api_processes.serve(settings.api_processes, options)
    import uvicorn

    from service.app import create_app

    app = create_app(settings)
    heap.settle()
    try:
        uvicorn.Server(uvicorn.Config(app, **options)).run()
    except KeyboardInterrupt:
        return 130  # stopped by Ctrl-C after a graceful shutdown
    return 0


def _run_worker(settings: Settings) -> int:
    from workers.main import create_worker

    worker = create_worker(settings)
    heap.settle()
    worker.run()
    return 0


def _check_worker(settings: Settings) -> int:
    from arq.connections import RedisSettings
    from arq.worker import async_check_health

    from workers.main import health_check_key

    return asyncio.run(async_check_health(RedisSettings.from_dsn(settings.redis_url), health_check_key()))


async def _migrate(settings: Settings) -> None:
    from service.db import keys, migrate
    from service.db.engine import create_engine, ensure_database
    from service.logs import configure_logging

    configure_logging(settings.log_level)
    if await ensure_database(settings.database_url):
        log.info("database_created")
    engine = create_engine(settings, pool_size=1)
    try:
        master = MasterKeys.parse(settings.master_keys)
        await migrate.upgrade(engine, master_keys=master)
        log.info("migrated", revision=await migrate.current_revision(engine))
        async with engine.connect() as conn:
            missing = await keys.unheld(conn, master)
        if missing:
            # Not fatal: everyone else is served; these people get errors until the key is back.
            log.warning(
                "master_keys_missing",
                detail="data keys are wrapped under master keys MASTER_KEYS does not hold; "
                "their people's text cannot be read until those keys are added back",
                people_by_master_key_id=missing,
            )
    finally:
        await engine.dispose()


async def _revision(settings: Settings, message: str) -> None:
    from service.db import migrate
    from service.db.engine import create_engine, ensure_database

    await ensure_database(settings.database_url)
    engine = create_engine(settings, pool_size=1)
    try:
        await migrate.upgrade(engine)
        await migrate.revision(engine, message)
    finally:
        await engine.dispose()


async def _rotate_keys(settings: Settings) -> None:
    """Re-wrap data keys a page at a time, each page its own short transaction, while everything runs.

    Rotating without downtime: put the new key first in MASTER_KEYS and keep the old one after it,
    restart, run this, then drop the old key from MASTER_KEYS.
    """
    from service.db import keys
    from service.db.engine import create_engine
    from service.logs import configure_logging

    configure_logging(settings.log_level)
    master = MasterKeys.parse(settings.master_keys)
    engine = create_engine(settings, pool_size=1)
    rewrapped, after = 0, None
    try:
        while True:
            async with engine.begin() as conn:
                count, after = await keys.rewrap_page(conn, master, after, limit=1000)
            rewrapped += count
            if after is None:
                break
    finally:
        await engine.dispose()
    log.info("keys_rotated", master_key_id=master.current_id, rewrapped=rewrapped)
    print(f"{rewrapped} data keys re-wrapped under master key {master.current_id!r}")


def _run_dev(settings: Settings) -> int:
    """Both processes in the foreground: Ctrl-C (or either one ending) stops both."""
    asyncio.run(_migrate(settings))
    # Fixed arguments: this interpreter running this module.
    command = [sys.executable, "-m", "service.cli"]
    children = [subprocess.Popen([*command, role]) for role in ("run", "worker")]  # noqa: S603
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while not stopping and all(child.poll() is None for child in children):
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + settings.worker_shutdown_grace_s + 5
    for child in children:
        try:
            child.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            child.kill()
    codes = [child.returncode for child in children]
    return 0 if stopping else next((code for code in codes if code), 1) or 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
