"""Deletions are forgotten only after every active device has seen them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.tables import device_cursors, record_versions, records
from service.settings import Settings
from service.sync import cursor as cursors
from tests.integration.conftest import Client, anonymous, assert_problem, bearer
from workers.jobs.maintenance import purge_tombstones


async def _sync(client: Client, tokens: Any, device: str, mutations: list[dict[str, Any]], cursor: str | None) -> Any:
    body = {"device_id": device, "batch_id": str(uuid.uuid4()), "cursor": cursor, "mutations": mutations}
    response = await client.post("/v1/sync", json=body, headers=bearer(tokens))
    assert response.status_code == 200, response.text
    return response.json()


def _new_mood_checkin(record_id: str, at: str) -> dict[str, Any]:
    return {
        "id": record_id,
        "kind": "mood_checkin",
        "op": "upsert",
        "base_version": 0,
        "changed_at": at,
        "data": {"occurred_at": at, "mood": 4},
    }


async def test_tombstone_is_purged_only_after_every_active_device_pulled_it(
    client: Client, engine: AsyncEngine, settings: Settings
) -> None:
    tokens = await anonymous(client)
    writer, laggard = str(uuid.uuid4()), str(uuid.uuid4())
    record_id = str(uuid.uuid4())
    at = datetime.now(UTC).isoformat()
    create = _new_mood_checkin(record_id, at)
    first = await _sync(client, tokens, writer, [create], None)
    lag_cursor = (await _sync(client, tokens, laggard, [], None))["cursor"]  # saw the record, not its deletion
    delete = {"id": record_id, "kind": "mood_checkin", "op": "delete", "base_version": 1, "changed_at": at}
    await _sync(client, tokens, writer, [delete], first["cursor"])
    async with engine.begin() as conn:  # the deletion happened long ago
        old = datetime.now(UTC) - timedelta(days=settings.tombstone_retention_days + 1)
        await conn.execute(update(records).values(updated_at=old))
    ctx = {"engine": engine, "settings": settings}

    assert await purge_tombstones(ctx) == 0, "the laggard, active lately, has not pulled the deletion yet"
    pulled = await _sync(client, tokens, laggard, [], lag_cursor)
    assert [(c["id"], c["deleted"]) for c in pulled["changes"]] == [(record_id, True)]

    assert await purge_tombstones(ctx) == 1
    async with engine.connect() as conn:
        assert (await conn.execute(select(records.c.id))).all() == []
        versions = (await conn.execute(select(record_versions.c.version))).scalars().all()
    assert sorted(versions) == [1, 2], "history keeps every version"


async def test_devices_idle_past_the_retention_do_not_block_purging(
    client: Client, engine: AsyncEngine, settings: Settings
) -> None:
    tokens = await anonymous(client)
    record_id, device = str(uuid.uuid4()), str(uuid.uuid4())
    at = datetime.now(UTC).isoformat()
    await _sync(
        client,
        tokens,
        device,
        [_new_mood_checkin(record_id, at)],
        None,
    )
    idle = str(uuid.uuid4())
    await _sync(client, tokens, idle, [], None)
    await _sync(
        client,
        tokens,
        device,
        [{"id": record_id, "kind": "mood_checkin", "op": "delete", "base_version": 1, "changed_at": at}],
        None,
    )
    old = datetime.now(UTC) - timedelta(days=settings.tombstone_retention_days + 1)
    async with engine.begin() as conn:
        await conn.execute(update(records).values(updated_at=old))
        await conn.execute(
            update(device_cursors).where(device_cursors.c.device_id == uuid.UUID(idle)).values(updated_at=old)
        )
    assert await purge_tombstones({"engine": engine, "settings": settings}) == 1


async def test_a_cursor_older_than_the_retention_must_start_over(client: Client, settings: Settings) -> None:
    tokens = await anonymous(client)
    stale = cursors.encode(0, datetime.now(UTC) - timedelta(days=settings.tombstone_retention_days + 1))
    body = {"device_id": str(uuid.uuid4()), "batch_id": str(uuid.uuid4()), "cursor": stale, "mutations": []}
    problem = assert_problem(await client.post("/v1/sync", json=body, headers=bearer(tokens)), 410)
    assert problem["type"].endswith("cursor-expired")


async def test_a_device_that_only_writes_does_not_hold_back_the_purge_of_its_own_deletion(
    client: Client, engine: AsyncEngine, settings: Settings
) -> None:
    """Its batches find nothing to pull, and no page is read for them; the position each one
    leaves it at is still remembered."""
    tokens = await anonymous(client)
    device, record_id = str(uuid.uuid4()), str(uuid.uuid4())
    at = datetime.now(UTC).isoformat()
    cursor = (await _sync(client, tokens, device, [], None))["cursor"]
    create = _new_mood_checkin(record_id, at)
    cursor = (await _sync(client, tokens, device, [create], cursor))["cursor"]
    delete = {"id": record_id, "kind": "mood_checkin", "op": "delete", "base_version": 1, "changed_at": at}
    deleted = await _sync(client, tokens, device, [delete], cursor)
    assert deleted["changes"] == [], "its own changes are not sent back"
    assert not deleted["has_more"]
    async with engine.begin() as conn:
        old = datetime.now(UTC) - timedelta(days=settings.tombstone_retention_days + 1)
        await conn.execute(update(records).values(updated_at=old))

    assert await purge_tombstones({"engine": engine, "settings": settings}) == 1
