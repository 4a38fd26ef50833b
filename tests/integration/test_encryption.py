"""What people write is unreadable in the database, and only its owner reads it back.

A sentence written through sync must appear nowhere in a `pg_dump` (nor in
Redis), while pull, record GET, history, batch receipts and export all give
it back whole. Tags stay readable for the weekly insight; the dump shows
them, which also proves the dump holds the records it is searched for.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import cast

import msgspec
import pytest
from arq.connections import ArqRedis
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from service.app import create_app
from service.envelope import EnvelopeError, MasterKeys, WrappedKey
from service.settings import Settings
from tests.integration.conftest import Client, assert_problem, bearer, serve, signup
from tests.integration.processes import environment, eventually, start
from tests.integration.test_sync import Phone, journal, new_id, upsert


def pg_dump(database_url: str) -> bytes:
    url = make_url(database_url)
    env = {**os.environ, "PGPASSWORD": url.password or ""}
    return subprocess.run(
        [
            "pg_dump",
            "--no-owner",
            "-h",
            url.host or "127.0.0.1",
            "-p",
            str(url.port or 5432),
            "-U",
            url.username or "postgres",
            url.database or "",
        ],
        env=env,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout


async def redis_bytes(redis: ArqRedis) -> bytes:
    """Every key and value in this run's Redis index: strings, hashes, sorted sets and lists."""
    found = bytearray()
    async for name in redis.scan_iter():
        found += name
        kind = (await redis.type(name)).decode()
        if kind == "string":
            found += await redis.get(name) or b""
        elif kind == "hash":
            for field, value in (await cast(Awaitable[dict[bytes, bytes]], redis.hgetall(name))).items():
                found += field + value
        elif kind == "zset":
            for member in await redis.zrange(name, 0, -1):
                found += member
        elif kind == "list":
            for item in await cast(Awaitable[list[bytes]], redis.lrange(name, 0, -1)):
                found += item
    return bytes(found)


def words(tag: str) -> str:
    """A sentence no other test writes."""
    return f"{tag}{uuid.uuid4().hex[:12]}"


async def test_written_text_is_nowhere_in_a_dump_but_its_owner_reads_it_everywhere(
    client: Client, settings: Settings, redis: ArqRedis
) -> None:
    tokens = await signup(client, email="private@example.org")
    secrets = {
        name: words(name)
        for name in ("body", "title", "note", "critical", "kind", "phrase", "behaviour", "emotion", "mine", "theirs")
    }
    readable_tag = words("tagvisible")
    now = datetime.now(UTC)
    phone, laptop = Phone(client, tokens), Phone(client, tokens)
    entry, checkin, talk, practice, experiment = (new_id() for _ in range(5))
    first = await phone.sync(
        upsert(entry, "journal_entry", journal(body=f"Tonight {secrets['body']} was hard", title=secrets["title"])),
        upsert(
            checkin,
            "mood_checkin",
            {
                "occurred_at": now.isoformat(),
                "mood": 3,
                "note": secrets["note"],
                "emotions": [secrets["emotion"]],
                "tags": [readable_tag],
            },
        ),
        upsert(
            talk,
            "self_talk",
            {
                "occurred_at": now.isoformat(),
                "critical_thought": secrets["critical"],
                "compassionate_response": secrets["kind"],
                "belief_before": 80,
            },
        ),
        upsert(
            practice,
            "practice_session",
            {
                "occurred_at": now.isoformat(),
                "practice": "loving_kindness",
                "phrases": [secrets["phrase"]],
                "duration_s": 300,
            },
        ),
        upsert(
            experiment,
            "as_if_experiment",
            {
                "planned_for": now.isoformat(),
                "target_belief": "I deserve rest",
                "intention": "Take a walk",
                "behaviours": [secrets["behaviour"]],
                "predicted_mood": 4,
                "belief_before": 20,
                "status": "planned",
            },
        ),
    )
    assert [r["status"] for r in first["results"]] == ["applied"] * 5
    # Both devices edit the same entry offline: the merge and the batch's stored answer hold both texts.
    await laptop.sync()
    later = now + timedelta(seconds=5)
    mine = await phone.sync(
        upsert(
            entry, "journal_entry", {"body": f"Tonight {secrets['body']} was hard {secrets['mine']}"}, base=1, at=later
        )
    )
    batch_id = new_id()
    their_edit = upsert(
        entry, "journal_entry", {"body": f"{secrets['theirs']} Tonight {secrets['body']} was hard"}, base=1, at=later
    )
    theirs = await laptop.sync(their_edit, batch_id=batch_id)
    assert mine["results"][0]["status"] == "applied"
    assert theirs["results"][0]["status"] == "merged", theirs

    dump = pg_dump(settings.database_url)
    assert readable_tag.encode() in dump, "the dump must hold the records it is searched in"
    assert b"private@example.org" in dump
    for name, secret in secrets.items():
        assert secret.encode() not in dump, f"{name} is readable in a dump of the database"
    in_redis = await redis_bytes(redis)
    for secret in secrets.values():
        assert secret.encode() not in in_redis

    merged = f"{secrets['theirs']} Tonight {secrets['body']} was hard {secrets['mine']}"
    pulled = {c["id"]: c["data"] for c in await Phone(client, tokens).pull_all()}
    assert pulled[entry]["body"] == merged
    assert pulled[entry]["title"] == secrets["title"]
    assert pulled[checkin]["note"] == secrets["note"]
    assert pulled[checkin]["emotions"] == [secrets["emotion"]]
    assert (pulled[talk]["critical_thought"], pulled[talk]["compassionate_response"]) == (
        secrets["critical"],
        secrets["kind"],
    )
    assert pulled[practice]["phrases"] == [secrets["phrase"]]
    assert pulled[experiment]["behaviours"] == [secrets["behaviour"]]

    current = await client.get(f"/v1/records/journal_entry/{entry}", headers=bearer(tokens))
    assert current.json()["data"]["body"] == merged
    history = (await client.get(f"/v1/records/journal_entry/{entry}/history", headers=bearer(tokens))).json()
    bodies = [version["data"]["body"] for version in history]
    original = f"Tonight {secrets['body']} was hard"
    assert bodies == [merged, f"{original} {secrets['mine']}", original]
    receipt = (await client.get(f"/v1/sync/batches/{batch_id}", headers=bearer(tokens))).json()
    assert receipt["results"][0]["record"]["data"]["body"] == merged
    # A retry of the batch gets the same stored answer, opened again.
    retried = await laptop.send([their_edit], batch_id=batch_id)
    assert retried.json()["results"] == theirs["results"]
    export = (await client.get("/v1/account/export", headers=bearer(tokens))).text
    for secret in secrets.values():
        assert secret in export


async def test_master_key_rotation_rewraps_every_data_key_while_text_stays_readable(
    client: Client, settings: Settings, engine: AsyncEngine, database: str
) -> None:
    old = settings.master_keys
    new = MasterKeys.generate("test-2")
    before = await signup(client, email="before-rotation@example.org")
    secret = words("rotation")
    entry = new_id()
    await Phone(client, before).sync(upsert(entry, "journal_entry", journal(body=secret)))

    # Step 1: the new key goes first, the old one stays: everything still opens, new keys use the new one.
    both = msgspec.structs.replace(settings, master_keys=f"{new},{old}")
    async with serve(create_app(both)) as during:
        assert (await during.get(f"/v1/records/journal_entry/{entry}", headers=bearer(before))).json()["data"][
            "body"
        ] == secret
        joining = await signup(during, email="during-rotation@example.org")
        await Phone(during, joining).sync(upsert(new_id(), "journal_entry", journal(body=words("joining"))))
    assert await wrapped_under(engine) == {before["user_id"]: "test-1", joining["user_id"]: "test-2"}

    # Step 2: re-wrap, as an operator runs it.
    rotate = start(["keys", "rotate"], environment(both))
    output, _ = rotate.communicate(timeout=60)
    assert rotate.returncode == 0, output.decode()
    assert b"1 data keys re-wrapped under master key 'test-2'" in output
    assert set((await wrapped_under(engine)).values()) == {"test-2"}

    # Step 3: the old key is gone from the environment, and the text still opens.
    only_new = msgspec.structs.replace(settings, master_keys=new)
    async with serve(create_app(only_new)) as after:
        response = await after.get(f"/v1/records/journal_entry/{entry}", headers=bearer(before))
        assert response.json()["data"]["body"] == secret
    # The old key alone no longer opens anything: the rotation really replaced the wrapping.
    async with serve(create_app(settings)) as stale:
        response = await stale.get(f"/v1/records/journal_entry/{entry}", headers=bearer(before))
        assert_problem(response, 500)
        assert secret not in response.text
    again = start(["keys", "rotate"], environment(both))
    output, _ = again.communicate(timeout=60)
    assert b"0 data keys re-wrapped" in output


async def wrapped_under(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as conn:
        rows = await conn.exec_driver_sql("SELECT user_id, master_key_id FROM data_keys")
        return {str(row.user_id): row.master_key_id for row in rows}


def test_a_new_master_key_is_printed_for_the_operator(settings: Settings) -> None:
    made = start(["keys", "new", "2026-12"], environment(settings))
    output, _ = made.communicate(timeout=30)
    assert made.returncode == 0
    assert MasterKeys.parse(output.decode().strip()).current_id == "2026-12"


async def test_erase_destroys_the_data_key_before_anything_else(
    client: Client, settings: Settings, engine: AsyncEngine
) -> None:
    leaving = await signup(client, email="leaving-keys@example.org")
    staying = await signup(client, email="staying-keys@example.org")
    secret = words("erased")
    for tokens in (leaving, staying):
        await Phone(client, tokens).sync(upsert(new_id(), "journal_entry", journal(body=secret)))
    user_id = uuid.UUID(leaving["user_id"])
    async with engine.connect() as conn:
        # What a backup taken now would hold of the person's text.
        backup = [
            (row.id, bytes(row.sealed))
            for row in await conn.exec_driver_sql("SELECT id, sealed FROM records WHERE user_id = $1", (user_id,))
        ]
    assert backup

    # Hold the person's row so the rest of the erase waits: the key must already be gone.
    blocker = await engine.connect()
    try:
        await blocker.exec_driver_sql("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", (user_id,))
        erase = asyncio.create_task(client.delete("/v1/account", headers=bearer(leaving)))

        async def key_gone_records_left() -> bool:
            async with engine.connect() as conn:
                key = (await conn.exec_driver_sql("SELECT 1 FROM data_keys WHERE user_id = $1", (user_id,))).first()
                records = (await conn.exec_driver_sql("SELECT 1 FROM records WHERE user_id = $1", (user_id,))).first()
                return key is None and records is not None

        await eventually(key_gone_records_left)
    finally:
        await blocker.rollback()
        await blocker.close()
    assert (await erase).status_code == 204

    master = MasterKeys.parse(settings.master_keys)
    async with engine.connect() as conn:
        remaining = [
            master.unwrap(row.user_id, WrappedKey(row.master_key_id, bytes(row.wrapped)))
            for row in await conn.exec_driver_sql("SELECT user_id, master_key_id, wrapped FROM data_keys")
        ]
    assert remaining, "the other person's key stays"
    for record_id, sealed in backup:
        for key in remaining:
            with pytest.raises(EnvelopeError):
                key.open(record_id, {}, sealed)


async def test_migrate_warns_when_master_keys_lack_one_that_wraps_data_keys(client: Client, settings: Settings) -> None:
    """An operator who dropped a master key too early hears of it at deploy time, by key id."""
    tokens = await signup(client, email="wrapped-under-test-1@example.org")
    await Phone(client, tokens).sync(upsert(new_id(), "journal_entry", journal(body=words("kept"))))
    migrate = start(["migrate"], environment(settings, MASTER_KEYS=MasterKeys.generate("test-9")))
    output, _ = migrate.communicate(timeout=60)
    assert migrate.returncode == 0, output.decode()
    warning = next(line for line in output.decode().splitlines() if "master_keys_missing" in line)
    assert '"test-1": 1' in warning or '"test-1":1' in warning
    assert settings.master_keys.split(":")[1] not in output.decode()

    fine = start(["migrate"], environment(settings))
    output, _ = fine.communicate(timeout=60)
    assert b"master_keys_missing" not in output
