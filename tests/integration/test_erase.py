"""Deleting an account leaves nothing of the person behind."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.tables import metadata, record_versions, users
from tests.integration.conftest import Client, anonymous, assert_problem, bearer, signup
from tests.integration.pushes import Recorder, follow_up_at
from tests.integration.test_sync import Phone, _blocked_by, new_id, upsert
from workers.jobs.insights import compute_insights
from workers.jobs.push import deliver

PASSWORD = "correct horse battery"
NOON = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


async def test_deleting_an_account_leaves_nothing_of_the_person(client: Client, engine: AsyncEngine) -> None:
    gone = await signup(client, email="leaving@example.org", password=PASSWORD)
    stays = await signup(client, email="staying@example.org", password=PASSWORD)
    for tokens in (gone, stays):
        device = {"platform": "ios", "push_token": f"token-{uuid.uuid4()}"}
        assert (await client.put(f"/v1/devices/{uuid.uuid4()}", json=device, headers=bearer(tokens))).status_code == 200
        await follow_up_at(client, engine, tokens, NOON)  # records, history, batches, cursors, outbox, notifications
    await deliver(engine, Recorder(), NOON + timedelta(minutes=1))  # deliveries, outside anyone's quiet hours
    await compute_insights({"engine": engine}, {})  # weekly insights
    refreshed = (await client.post("/v1/auth/refresh", json={"refresh_token": gone["refresh_token"]})).json()

    assert (await client.delete("/v1/account", headers=bearer(refreshed))).status_code == 204

    gone_id, stays_id = uuid.UUID(gone["user_id"]), uuid.UUID(stays["user_id"])
    async with engine.connect() as conn:
        for table in metadata.sorted_tables:
            owner = table.c.get("user_id") if table is not users else table.c.id
            if owner is None:
                continue
            left = await conn.scalar(select(func.count()).select_from(table).where(owner == gone_id))
            assert left == 0, f"{table.name} still holds the person"
            if table.name not in ("refresh_tokens", "sync_batches"):
                kept = await conn.scalar(select(func.count()).select_from(table).where(owner == stays_id))
                assert kept, f"{table.name}: the other person's data must stay"

    login = await client.post("/v1/auth/login", json={"email": "leaving@example.org", "password": PASSWORD})
    assert_problem(login, 401)
    assert_problem(await client.post("/v1/auth/refresh", json={"refresh_token": refreshed["refresh_token"]}), 401)
    sync = {"device_id": str(uuid.uuid4()), "batch_id": str(uuid.uuid4()), "mutations": []}
    assert_problem(await client.post("/v1/sync", json=sync, headers=bearer(refreshed)), 401)
    change = {"id": str(uuid.uuid4()), "kind": "mood_checkin", "op": "upsert", "base_version": 0}
    change |= {"changed_at": NOON.isoformat(), "data": {"occurred_at": NOON.isoformat(), "mood": 5}}
    pushed = await client.post("/v1/sync", json={**sync, "mutations": [change]}, headers=bearer(refreshed))
    assert_problem(pushed, 401)
    assert_problem(await client.get("/v1/account/export", headers=bearer(refreshed)), 401)


async def test_history_written_while_the_account_is_deleted_goes_with_it(client: Client, engine: AsyncEngine) -> None:
    """History has no foreign key to its person, and goes with them by a trigger (tables.py,
    record_versions): a batch writing versions while the account is deleted holds the person's
    change numbers, the erase waits for it, and what it wrote is deleted too."""
    tokens = await anonymous(client)
    phone = Phone(client, tokens)
    entry = new_id()
    await phone.sync(upsert(entry, "mood_checkin", {"occurred_at": NOON.isoformat(), "mood": 6}))
    user_id = uuid.UUID(tokens["user_id"])
    async with engine.connect() as batch:
        # As a batch's write: its change numbers claimed, then its versions, committed together.
        await batch.exec_driver_sql("UPDATE sync_state SET last_seq = last_seq + 1 WHERE user_id = $1", (user_id,))
        await batch.exec_driver_sql(
            "INSERT INTO record_versions (user_id, record_id, version, kind, deleted, data, changed_at) "
            "VALUES ($1, $2, 2, 'mood_checkin', false, '{}'::jsonb, now())",
            (user_id, uuid.UUID(entry)),
        )
        erasing = asyncio.ensure_future(client.delete("/v1/account", headers=bearer(tokens)))
        assert await _blocked_by(engine, batch), "the erase never waited for the batch"
        await batch.commit()
    assert (await erasing).status_code == 204
    async with engine.connect() as conn:
        left = await conn.scalar(
            select(func.count()).select_from(record_versions).where(record_versions.c.user_id == user_id)
        )
    assert left == 0, "history outlived its person"
