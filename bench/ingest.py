"""Sync ingest: batches of 100 new records over HTTP from 16 devices at once.

In the same run, the same rows (current records and their first versions)
are written by raw asyncpg with one statement per batch: the ceiling the
database allows. The figure that matters is the ratio between the two.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import msgspec
from sqlalchemy.engine import make_url

from service.db import migrate
from service.db.engine import create_engine, drop_database, ensure_database
from service.envelope import MasterKeys
from service.settings import DEFAULT_DATABASE_URL, Settings

WORDS = ("kind", "gentle", "tired", "hopeful", "small", "walk", "friend", "rain", "coffee", "breathe", "enough")


@dataclass
class Figures:
    mutations: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.mutations / self.seconds

    def line(self, name: str) -> str:
        p50 = statistics.median(self.latencies) * 1000
        p99 = statistics.quantiles(self.latencies, n=100)[98] * 1000
        return f"{name:<28} {self.rate:>10,.0f} mutations/s   batch p50 {p50:6.1f} ms   p99 {p99:6.1f} ms"


def mutations(count: int, seed: int) -> list[dict[str, Any]]:
    """Half mood check-ins, half journal entries of a few hundred characters."""
    now = datetime.now(UTC).isoformat()
    out = []
    for index in range(count):
        record_id = str(uuid.uuid4())
        if index % 2:
            body = " ".join(WORDS[(seed + index + k) % len(WORDS)] for k in range(60))
            data: dict[str, Any] = {"occurred_at": now, "body": body, "tags": ["evening"]}
            kind = "journal_entry"
        else:
            data = {"occurred_at": now, "mood": 1 + (seed + index) % 10, "emotions": ["calm"], "tags": []}
            kind = "mood_checkin"
        out.append({"id": record_id, "kind": kind, "op": "upsert", "base_version": 0, "changed_at": now, "data": data})
    return out


async def through_http(base_url: str, devices: int, batches: int, size: int) -> Figures:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        people = [(await http.post("/v1/auth/anonymous", json={})).json() for _ in range(devices)]
        latencies: list[float] = []
        errors = 0

        async def device(person: dict[str, Any], seed: int) -> None:
            nonlocal errors
            headers = {"Authorization": f"Bearer {person['access_token']}", "Content-Type": "application/json"}
            device_id, cursor = str(uuid.uuid4()), None
            for batch in range(batches):
                body = msgspec.json.encode(
                    {
                        "device_id": device_id,
                        "batch_id": str(uuid.uuid4()),
                        "cursor": cursor,
                        "mutations": mutations(size, seed * 1000 + batch),
                    }
                )
                started = time.perf_counter()
                response = await http.post("/v1/sync", content=body, headers=headers)
                latencies.append(time.perf_counter() - started)
                answer = response.json()
                if response.status_code != 200 or any(r["status"] != "applied" for r in answer["results"]):
                    errors += 1
                    if errors == 1:
                        print(
                            response.status_code,
                            [r for r in answer.get("results", []) if r["status"] != "applied"][:2],
                            file=sys.stderr,
                        )
                cursor = answer.get("cursor")

        started = time.perf_counter()
        await asyncio.gather(*(device(person, seed) for seed, person in enumerate(people)))
        seconds = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{errors} batches failed through HTTP")
    return Figures(devices * batches * size, seconds, latencies)


async def raw_asyncpg(dsn: str, devices: int, batches: int, size: int) -> Figures:
    """The same rows, one statement per batch, 16 connections at once."""
    pool = await asyncpg.create_pool(dsn, min_size=devices, max_size=devices)
    users = [uuid.uuid4() for _ in range(devices)]
    async with pool.acquire() as conn:
        await conn.executemany("INSERT INTO users (id) VALUES ($1)", [(u,) for u in users])
    statement = """
        WITH batch AS (
            SELECT * FROM unnest($2::uuid[], $3::text[], $4::jsonb[], $5::timestamptz[]) AS b(id, kind, data, at)
        ), history AS (
            INSERT INTO record_versions (user_id, record_id, version, kind, deleted, data, changed_at, device_id)
            SELECT $1, id, 1, kind, false, data, at, $6 FROM batch
        )
        INSERT INTO records (user_id, id, kind, version, deleted, data, stamps, changed_at, device_id, seq)
        SELECT $1, id, kind, 1, false, data, '{}'::jsonb, at, $6, row_number() OVER () FROM batch
    """
    latencies: list[float] = []

    async def device(user_id: uuid.UUID, seed: int) -> None:
        device_id = uuid.uuid4()
        for batch in range(batches):
            rows = mutations(size, seed * 1000 + batch)
            args = (
                user_id,
                [uuid.UUID(m["id"]) for m in rows],
                [m["kind"] for m in rows],
                [json.dumps(m["data"]) for m in rows],
                [datetime.fromisoformat(m["changed_at"]) for m in rows],
                device_id,
            )
            started = time.perf_counter()
            async with pool.acquire() as conn:
                await conn.execute(statement, *args)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(device(user, seed) for seed, user in enumerate(users)))
    seconds = time.perf_counter() - started
    await pool.close()
    return Figures(devices * batches * size, seconds, latencies)


async def wait_until_up(base_url: str, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    async with httpx.AsyncClient(base_url=base_url) as http:
        while time.monotonic() < deadline:
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                await asyncio.sleep(0.2)
    raise SystemExit("the API did not start")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=16)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()

    base = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    url = make_url(base).set(database=f"kindsync_bench_{os.getpid()}")
    database_url = url.render_as_string(hide_password=False)
    await ensure_database(database_url)
    master_keys = MasterKeys.generate("bench")
    engine = create_engine(
        Settings(secret_key="bench" * 10, master_keys=master_keys, database_url=database_url), pool_size=1
    )
    await migrate.upgrade(engine)
    await engine.dispose()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PORT": str(args.port),
        "LOG_LEVEL": "WARNING",
        "SECRET_KEY": "bench-secret-" + "b" * 40,
        "MASTER_KEYS": master_keys,
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_KIB": "1024",
    }
    server = await asyncio.create_subprocess_exec(sys.executable, "-m", "service.cli", "run", env=env)
    try:
        base_url = f"http://127.0.0.1:{args.port}"
        await wait_until_up(base_url)
        http = await through_http(base_url, args.devices, args.batches, args.size)
        raw = await raw_asyncpg(
            url.set(drivername="postgresql").render_as_string(hide_password=False),
            args.devices,
            args.batches,
            args.size,
        )
    finally:
        server.send_signal(signal.SIGINT)
        await asyncio.wait_for(server.wait(), 30)
        await drop_database(database_url)
    print(f"\nsync ingest: {args.devices} devices x {args.batches} batches x {args.size} new records")
    print(http.line("POST /v1/sync (HTTP, JSON)"))
    print(raw.line("raw asyncpg, 1 stmt/batch"))
    print(f"{'ratio':<28} {http.rate / raw.rate:>10.2f} x raw asyncpg")


if __name__ == "__main__":
    asyncio.run(main())
