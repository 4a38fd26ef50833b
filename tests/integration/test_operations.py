"""What an operator sees: /admin/health with everything up, with Redis gone or hanging, with no
worker, without the token; and /metrics counting the sync traffic that really happened."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from arq.connections import ArqRedis

from schemas import jobs
from service.app import create_app
from service.db import migrate
from service.db.engine import DriverPool
from service.settings import Settings
from tests.integration.conftest import Client, anonymous, assert_problem, bearer, serve
from tests.integration.processes import environment, eventually, free_port, start
from tests.integration.test_sync import Phone, journal, new_id, upsert

ADMIN_TOKEN = "admin-" + "h" * 40
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def with_admin(settings: Settings, **changes: Any) -> Settings:
    return msgspec.structs.replace(settings, admin_token=ADMIN_TOKEN, **changes)


@asynccontextmanager
async def operator(settings: Settings) -> AsyncIterator[Client]:
    async with serve(create_app(settings)) as client:
        yield client


async def traffic(client: Client) -> dict[str, int]:
    """Sync as two phones would: new records, a text merge and a rejected mutation."""
    tokens = await anonymous(client)
    phone, laptop = Phone(client, tokens), Phone(client, tokens)
    entry = new_id()
    await phone.sync(
        upsert(entry, "journal_entry", journal(body="One two three")),
        upsert(new_id(), "mood_checkin", {"occurred_at": datetime.now(UTC).isoformat(), "mood": 6}),
    )
    await laptop.sync()
    later = datetime.now(UTC) + timedelta(seconds=1)
    await phone.sync(upsert(entry, "journal_entry", {"body": "One two three four"}, base=1, at=later))
    merged = await laptop.sync(
        upsert(entry, "journal_entry", {"body": "Zero one two three"}, base=1, at=later),
        {
            "id": new_id(),
            "kind": "dream_log",
            "op": "upsert",
            "base_version": 0,
            "changed_at": later.isoformat(),
            "data": {},
        },
    )
    assert [r["status"] for r in merged["results"]] == ["merged", "rejected"]
    return {"batches": 3, "mutations": 5, "merged": 1, "rejected": 1}


async def test_health_with_everything_up_reports_every_figure(
    settings: Settings, database: str, redis: ArqRedis, worker: subprocess.Popen[bytes]
) -> None:
    async with operator(with_admin(settings)) as client:
        sent = await traffic(client)
        insights = await redis.enqueue_job(jobs.COMPUTE_INSIGHTS, {"week_start": None, "user_id": None})
        assert insights is not None
        await insights.result(timeout=20)

        async def healthy() -> httpx.Response | None:
            response = await client.get("/admin/health", headers=ADMIN)
            return response if response.status_code == 200 else None

        response = await eventually(healthy)
    assert response is not None
    body = response.json()
    assert body["status"] == "ok"
    assert body["failing"] == []
    assert body["version"]
    checks = body["checks"]
    assert set(checks) == {"postgres", "redis", "migrations", "workers", "queue", "outbox", "push", "insights", "sync"}
    for dependency in ("postgres", "redis"):
        assert checks[dependency]["ok"] is True
        assert 0 < checks[dependency]["latency_ms"] < 1000
    assert checks["migrations"] == {"current": migrate.head_revision(), "head": migrate.head_revision()}
    assert checks["workers"]["alive"] == 1
    assert 0 <= checks["workers"]["last_heartbeat_age_s"] < 5
    assert checks["queue"]["depth"] >= 0
    assert checks["outbox"]["pending"] >= 0
    assert checks["push"] == {"sent_1h": 0, "failed_1h": 0, "invalid_tokens_1h": 0}
    assert checks["insights"]["users"] == 1
    ran_at = datetime.fromisoformat(checks["insights"]["last_run_at"])
    assert datetime.now(UTC) - ran_at < timedelta(minutes=1)
    assert checks["sync"] == {
        "batches_1h": sent["batches"],
        "mutations_1h": sent["mutations"],
        "merged_1h": sent["merged"],
        "rejected_1h": sent["rejected"],
    }


async def test_with_no_worker_running_health_is_503_naming_the_workers(settings: Settings, database: str) -> None:
    async with operator(with_admin(settings)) as client:
        response = await client.get("/admin/health", headers=ADMIN)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["failing"] == ["workers"]
    assert body["checks"]["workers"] == {"alive": 0, "last_heartbeat_age_s": None}
    assert body["checks"]["postgres"]["ok"] is True


async def test_with_redis_unreachable_health_is_503_and_sync_still_works(
    client: Client, settings: Settings, database: str
) -> None:
    tokens = await anonymous(client)  # signing up asks Redis (login throttling); sync does not
    unreachable = with_admin(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with operator(unreachable) as cut_off:
        response = await cut_off.get("/admin/health", headers=ADMIN)
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "degraded"
        assert {"redis", "workers", "queue"} <= set(body["failing"])
        assert body["checks"]["redis"] == {"ok": False, "latency_ms": None}
        assert body["checks"]["workers"]["alive"] is None, "unknown, not zero: nobody could ask"
        assert body["checks"]["postgres"]["ok"] is True
        synced = await Phone(cut_off, tokens).sync(upsert(new_id(), "journal_entry", journal()))
        assert synced["results"][0]["status"] == "applied"
        assert (await cut_off.get("/readyz")).status_code == 503


@asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A port that accepts connections and never answers: a hung dependency."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_hanging_redis_does_not_hang_the_health_check(settings: Settings, database: str) -> None:
    async with silent_server() as port:
        hung = with_admin(settings, redis_url=f"redis://127.0.0.1:{port}/0", health_check_timeout_s=0.5)
        async with operator(hung) as client:
            started = time.monotonic()
            response = await asyncio.wait_for(client.get("/admin/health", headers=ADMIN), 10)
            took = time.monotonic() - started
    assert response.status_code == 503
    assert "redis" in response.json()["failing"]
    assert took < 3, f"the answer took {took:.1f} s; each check is bounded by 0.5 s"


async def test_health_needs_the_admin_token(client: Client, settings: Settings, database: str) -> None:
    assert_problem(await client.get("/admin/health", headers=ADMIN), 401)  # no ADMIN_TOKEN configured
    async with operator(with_admin(settings)) as admin:
        assert_problem(await admin.get("/admin/health"), 401)
        assert_problem(await admin.get("/admin/health", headers={"Authorization": f"Bearer {ADMIN_TOKEN}x"}), 401)
        person = await anonymous(admin)
        assert_problem(await admin.get("/admin/health", headers=bearer(person)), 401)


def samples(text: str, name: str) -> Iterator[tuple[dict[str, str], float]]:
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
            yield labels, float(match.group(2))


def value(text: str, name: str, **labels: str) -> float:
    found = [v for found, v in samples(text, name) if all(found.get(k) == want for k, want in labels.items())]
    assert found, f"no {name} {labels} in the scrape"
    return sum(found)


async def test_metrics_count_the_sync_traffic(settings: Settings, database: str) -> None:
    async with operator(settings) as client:
        sent = await traffic(client)
        scrape = await client.get("/metrics")
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain")
    text = scrape.text
    assert value(text, "kindsync_sync_batches_total") == sent["batches"]
    assert value(text, "kindsync_sync_mutations_total", status="applied") == 3
    assert value(text, "kindsync_sync_mutations_total", status="merged") == sent["merged"]
    assert value(text, "kindsync_sync_mutations_total", status="rejected") == sent["rejected"]
    assert value(text, "kindsync_sync_merges_total", resolution="merged_text") == 1
    # Every sync round trip, pulls included, is timed under its route template.
    assert (
        value(text, "kindsync_http_request_duration_seconds_count", route="/v1/sync", method="POST", status="200") == 4
    )
    assert value(text, "kindsync_outbox_backlog") == 3, "no worker runs: each batch's event waits"
    assert value(text, "kindsync_queue_depth") == 0
    assert "One two three" not in text


async def test_unmatched_paths_share_one_label(client: Client) -> None:
    for path in ("/nothing-here", f"/v1/records/journal_entry/{uuid.uuid4()}x", "/also/not/here"):
        await client.get(path)
    text = (await client.get("/metrics")).text
    routes = {labels["route"] for labels, _ in samples(text, "kindsync_http_request_duration_seconds_count")}
    assert "unmatched" in routes
    assert not any("nothing-here" in route or "also" in route for route in routes)


async def test_a_worker_serves_its_own_metrics(settings: Settings, database: str, redis: ArqRedis) -> None:
    port = free_port()
    process = start(["worker"], environment(settings, WORKER_METRICS_PORT=str(port), HOST="127.0.0.1"))
    try:
        job = await redis.enqueue_job(jobs.COMPUTE_INSIGHTS, {"week_start": None, "user_id": None})
        assert job is not None
        await job.result(timeout=30)

        async def scraped() -> str | None:
            try:
                async with httpx.AsyncClient() as http:
                    text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
            except httpx.TransportError:
                return None
            return text if 'kindsync_insight_runs_total{trigger="requested"} 1.0' in text else None

        text = await eventually(scraped)
        assert text is not None
        assert value(text, "kindsync_insight_people_total", trigger="requested") == 0
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 20)


async def test_a_sync_after_postgres_closed_the_pooled_connection_succeeds(settings: Settings, database: str) -> None:
    """Postgres restarting (here: the backend behind the app's pooled connection terminated)
    costs the next request nothing: the closed connection is replaced when taken from the pool."""
    admin = await asyncpg.connect(settings.database_url)
    others = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    try:
        before = {row["pid"] for row in await admin.fetch(others)}
        app = create_app(msgspec.structs.replace(settings, db_pool_size=1, db_max_overflow=0, db_sync_pool_size=1))
        async with serve(app) as client:
            phone = Phone(client, await anonymous(client))
            mood = {"occurred_at": datetime.now(UTC).isoformat(), "mood": 4}
            await phone.sync(upsert(new_id(), "mood_checkin", mood))
            apps = {row["pid"] for row in await admin.fetch(others)} - before
            assert apps, "the app holds a pooled connection"
            await admin.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", list(apps))
            await asyncio.sleep(0.2)  # the close reaches the app's connection

            answer = await phone.sync(upsert(new_id(), "mood_checkin", mood))

            assert [r["status"] for r in answer["results"]] == ["applied"]
            assert {row["pid"] for row in await admin.fetch(others)} - before - apps, "a new connection"
    finally:
        await admin.close()


async def test_the_sync_paths_connections_are_replaced_once_old(settings: Settings, database: str) -> None:
    """As the engine's pool_recycle does: a connection older than its limit is closed as it comes
    back, and the next use opens another; a younger one is lent again."""
    pids = []
    for recycle_s in (1800.0, 0.0):
        pool = DriverPool(settings.database_url, size=1, recycle_s=recycle_s)
        try:
            for _ in range(2):
                async with pool.connection() as conn:
                    pids.append(await conn.fetchval("SELECT pg_backend_pid()"))
        finally:
            await pool.close()
    kept, recycled = pids[:2], pids[2:]
    assert kept[0] == kept[1]
    assert recycled[0] != recycled[1]


async def test_the_sync_paths_connections_stay_closed_once_the_app_stopped(settings: Settings, database: str) -> None:
    """A request still running as the app stops gets an error, not a pool of its own that
    nothing would ever close."""
    pool = DriverPool(settings.database_url, size=1)
    async with pool.connection() as conn:
        assert await conn.fetchval("SELECT 1") == 1
    await pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        async with pool.connection():
            pass
