"""Events reach the workers exactly once, even across a Redis outage."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
from arq.connections import ArqRedis
from redis.exceptions import RedisError
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.sync import MutationIn, SyncRequest
from service import sync_batch
from service.db.engine import DriverPool
from service.db.tables import notifications, outbox, users
from service.envelope import MasterKeys
from service.outbox import CHANNEL, WAKE_EVERY_S, Relay, RelayWake
from service.queue import create_redis
from service.settings import Settings
from service.sync_batch import Syncer
from tests.integration.conftest import Client, anonymous, bearer
from tests.integration.processes import environment, eventually, start
from workers.jobs.events import on_records_changed

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


def experiment(follow_up_at: datetime | None, status: str = "planned") -> dict[str, Any]:
    return {
        "planned_for": datetime.now(UTC).isoformat(),
        "target_belief": "I deserve rest",
        "intention": "Take a slow walk without earning it first",
        "behaviours": ["walk"],
        "predicted_mood": 4,
        "belief_before": 30,
        "follow_up_at": follow_up_at.isoformat() if follow_up_at else None,
        "status": status,
    }


class Phone:
    def __init__(self, client: Client, tokens: Any) -> None:
        self.client, self.tokens, self.device = client, tokens, str(uuid.uuid4())
        self.versions: dict[str, int] = {}

    async def send(self, record_id: str, data: dict[str, Any]) -> None:
        mutation = {
            "id": record_id,
            "kind": "as_if_experiment",
            "op": "upsert",
            "base_version": self.versions.get(record_id, 0),
            "changed_at": datetime.now(UTC).isoformat(),
            "data": data,
        }
        body = {"device_id": self.device, "batch_id": str(uuid.uuid4()), "mutations": [mutation]}
        response = await self.client.post("/v1/sync", json=body, headers=bearer(self.tokens))
        assert response.status_code == 200, response.text
        result = response.json()["results"][0]
        assert result["status"] == "applied", result
        self.versions[record_id] = result["version"]


async def planned(engine: AsyncEngine) -> list[tuple[str, datetime, str]]:
    """Follow-ups only: a worker's evening cron may plan a weekly push for the same person."""
    query = select(notifications.c.kind, notifications.c.due_at, notifications.c.status).where(
        notifications.c.kind == "experiment_follow_up"
    )
    async with engine.connect() as conn:
        return [(row.kind, row.due_at, row.status) for row in await conn.execute(query)]


async def test_an_experiment_gets_its_follow_up_planned_moved_and_cancelled(
    client: Client, engine: AsyncEngine, worker: subprocess.Popen[bytes]
) -> None:
    phone = Phone(client, await anonymous(client))
    record_id = str(uuid.uuid4())
    first = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    await phone.send(record_id, experiment(first))

    async def is_planned_at(due: datetime, status: str = "planned") -> bool:
        return await planned(engine) == [("experiment_follow_up", due, status)]

    await eventually(lambda: is_planned_at(first))
    later = first + timedelta(hours=5)
    await phone.send(record_id, {"follow_up_at": later.isoformat()})
    await eventually(lambda: is_planned_at(later))
    await phone.send(record_id, {"status": "done", "actual_mood": 6})
    await eventually(lambda: is_planned_at(later, "cancelled"))


async def test_events_wait_while_redis_is_unreachable_then_go_out_once(
    client: Client, engine: AsyncEngine, redis: ArqRedis, settings: Settings
) -> None:
    tokens = await anonymous(client)
    phone = Phone(client, tokens)
    due = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for record_id in ids:
        await phone.send(record_id, experiment(due))

    down = create_redis(msgspec.structs.replace(settings, redis_url=UNREACHABLE_REDIS))
    try:
        with pytest.raises(RedisError):
            await Relay(engine, down, database_url=settings.database_url).publish_once()
    finally:
        await down.aclose()
    async with engine.connect() as conn:
        waiting = (await conn.execute(text("SELECT count(*) FROM outbox WHERE published_at IS NULL"))).scalar()
    assert waiting == 3, "the events wait in Postgres"

    relay = Relay(engine, redis, database_url=settings.database_url)
    assert await relay.publish_once() == 3
    assert await relay.publish_once() == 0, "nothing is published twice"
    event_ids = await _event_ids(engine)
    queued = {member.decode() for member in await redis.zrange("arq:queue", 0, -1)}
    assert queued == {f"outbox:{event_id}" for event_id in event_ids}

    worker = start(["worker"], environment(settings))
    try:

        async def all_planned() -> bool:
            rows = await planned(engine)
            return len(rows) == 3 and all(row == ("experiment_follow_up", due, "planned") for row in rows)

        await eventually(all_planned)
        await eventually(lambda: _queue_empty(redis))
    finally:
        worker.terminate()
        worker.wait(timeout=30)


async def test_a_consumer_run_twice_plans_nothing_twice(client: Client, engine: AsyncEngine) -> None:
    phone = Phone(client, await anonymous(client))
    record_id = str(uuid.uuid4())
    due = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    await phone.send(record_id, experiment(due))
    async with engine.connect() as conn:
        event = (await conn.execute(select(outbox.c.user_id, outbox.c.payload))).one()
    payload = {"user_id": str(event.user_id), **event.payload}
    ctx = {"engine": engine}
    assert await on_records_changed(ctx, payload) == 1
    assert await on_records_changed(ctx, payload) == 1  # as after a crash midway: arq runs it again
    assert await planned(engine) == [("experiment_follow_up", due, "planned")]


async def test_an_event_that_names_its_records_is_still_followed(client: Client, engine: AsyncEngine) -> None:
    """Events queued by an earlier release name the changed records rather than their change
    numbers: a worker of this release still plans their follow-ups."""
    tokens = await anonymous(client)
    phone = Phone(client, tokens)
    record_id = str(uuid.uuid4())
    due = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    await phone.send(record_id, experiment(due))
    earlier = {"user_id": tokens["user_id"], "records": [[record_id, "as_if_experiment", 1, False]]}
    assert await on_records_changed({"engine": engine}, earlier) == 1
    assert await planned(engine) == [("experiment_follow_up", due, "planned")]


async def test_an_experiment_changed_again_is_followed_as_it_is_now(client: Client, engine: AsyncEngine) -> None:
    """An event names the change numbers its batch took; a record changed again since is no
    longer at them, and the later batch's event plans its follow-up as it is then."""
    phone = Phone(client, await anonymous(client))
    record_id = str(uuid.uuid4())
    first = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    await phone.send(record_id, experiment(first))
    moved = first + timedelta(days=2)
    await phone.send(record_id, experiment(moved))
    async with engine.connect() as conn:
        events = (await conn.execute(select(outbox.c.user_id, outbox.c.payload).order_by(outbox.c.id))).all()
    ctx = {"engine": engine}
    older, newer = ({"user_id": str(e.user_id), **e.payload} for e in events)
    assert await on_records_changed(ctx, older) == 0, "the record has moved on to the later change"
    assert await planned(engine) == []
    assert await on_records_changed(ctx, newer) == 1
    assert await planned(engine) == [("experiment_follow_up", moved, "planned")]


async def _event_ids(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(outbox.c.id))).scalars())


async def _queue_empty(redis: ArqRedis) -> bool:
    return bool(await redis.zcard("arq:queue") == 0)


@asynccontextmanager
async def listening(settings: Settings) -> AsyncIterator[asyncio.Queue[str]]:
    """The relay's side: each NOTIFY on the outbox channel, as it arrives."""
    dsn = make_url(settings.database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    listener = await asyncpg.connect(dsn)
    woken: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(CHANNEL, lambda *args: woken.put_nowait(args[2]))
    try:
        yield woken
    finally:
        await listener.close()


async def test_a_batch_that_changes_records_wakes_the_relay_after_its_commit(
    client: Client, settings: Settings, engine: AsyncEngine
) -> None:
    """The relay sleeps until it is told that events were written: a synced change must wake it
    (else its events wait for the relay's next poll), once its event can be read, and a pull
    alone must not."""
    await asyncio.sleep(2 * WAKE_EVERY_S)  # a wake-up still due from an earlier test has gone out
    async with listening(settings) as woken:
        phone = Phone(client, await anonymous(client))
        pull = {"device_id": phone.device, "batch_id": str(uuid.uuid4()), "mutations": []}
        assert (await client.post("/v1/sync", json=pull, headers=bearer(phone.tokens))).status_code == 200
        await asyncio.sleep(2 * WAKE_EVERY_S)
        assert woken.empty(), "a pull woke the relay"
        before = await _event_ids(engine)
        await phone.send(str(uuid.uuid4()), experiment(None))

        assert await asyncio.wait_for(woken.get(), timeout=5) == CHANNEL
        assert len(await _event_ids(engine)) == len(before) + 1, "woken before the event could be read"
        await asyncio.sleep(4 * WAKE_EVERY_S)
        assert woken.empty(), "one batch, one wake-up"


async def test_a_batch_under_the_lock_wakes_the_relay_only_once_committed(
    settings: Settings, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that lost its optimistic runs is written in a transaction under the person's lock,
    committed only when that transaction ends: a relay woken before then would find nothing."""
    monkeypatch.setattr(sync_batch, "OPTIMISTIC_ATTEMPTS", 0)  # every batch under the lock
    pool = DriverPool(settings.database_url, size=1)
    happened: list[str] = []
    opened = pool.transaction

    @asynccontextmanager
    async def transaction() -> AsyncIterator[Any]:
        async with opened() as conn:
            yield conn
        happened.append("committed")

    monkeypatch.setattr(pool, "transaction", transaction)
    syncer = Syncer(
        pool=pool,
        tombstone_retention=timedelta(days=30),
        master_keys=MasterKeys.parse(settings.master_keys),
        on_event=lambda: happened.append("relay woken"),
    )
    user_id = uuid.uuid4()
    async with engine.begin() as conn:
        await conn.execute(users.insert().values(id=user_id))
    now = datetime.now(UTC)
    request = SyncRequest(
        device_id=uuid.uuid4(),
        batch_id=uuid.uuid4(),
        mutations=[
            MutationIn(
                id=uuid.uuid4(),
                kind="as_if_experiment",
                op="upsert",
                base_version=0,
                changed_at=now,
                data=experiment(None),
            )
        ],
    )
    try:
        answer = await syncer.sync(user_id, request)
    finally:
        await pool.close()

    assert [result.status for result in answer.results] == ["applied"]
    assert happened == ["committed", "relay woken"]


async def test_writes_close_together_wake_the_relay_once_per_moment(settings: Settings) -> None:
    """Every sync batch that writes changes pokes the wake-up; the relay hears once for all the
    pokes before it is woken, and once more for those that came while it was being woken."""
    pool = DriverPool(settings.database_url, size=1)
    wake = RelayWake(pool, every_s=0.3)
    try:
        async with listening(settings) as woken:
            for _ in range(50):
                wake.poke()
            assert await asyncio.wait_for(woken.get(), timeout=5) == CHANNEL
            wake.poke()
            wake.poke()
            await asyncio.sleep(0.15)
            assert woken.empty(), "woken again within the moment"
            assert await asyncio.wait_for(woken.get(), timeout=5) == CHANNEL
            await asyncio.sleep(0.6)
            assert woken.empty(), "woken with nothing new written"
    finally:
        await wake.close()
        await pool.close()


async def test_a_wake_up_that_cannot_be_sent_is_logged_and_given_up(
    settings: Settings, capfd: pytest.CaptureFixture[str]
) -> None:
    """The events stay in the outbox, where the relay's polling finds them."""
    pool = DriverPool(settings.database_url, size=1)
    await pool.close()
    wake = RelayWake(pool, every_s=0.05)
    capfd.readouterr()
    wake.poke()
    await asyncio.sleep(0.2)
    await wake.close()
    output = capfd.readouterr().out

    assert "outbox_wake_failed" in output, output
    assert "Traceback" not in output, output
