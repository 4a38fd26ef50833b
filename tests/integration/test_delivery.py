"""Planned notifications reach every device with push on, in generic words, at kind hours."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db import notifications as planning
from service.db.tables import deliveries, devices, notifications
from service.metrics import WorkerMetrics
from service.push.base import WORDING, PushMessage, PushOutcome, PushTarget
from tests.integration.conftest import Client
from tests.integration.pushes import SENTINEL, Recorder, follow_up_at, person, sync
from workers.jobs.push import deliver

AUCKLAND = ZoneInfo("Pacific/Auckland")


async def statuses(engine: AsyncEngine) -> list[tuple[str, datetime]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(notifications.c.status, notifications.c.due_at).order_by(notifications.c.due_at)
        )
        return [(r.status, r.due_at) for r in rows]


async def test_one_notification_reaches_both_devices_in_generic_words(client: Client, engine: AsyncEngine) -> None:
    tokens = await person(client, {})
    due = datetime(2026, 11, 20, 18, 0, tzinfo=AUCKLAND)
    await follow_up_at(client, engine, tokens, due)
    recorder = Recorder()
    assert await deliver(engine, recorder, due + timedelta(minutes=1)) == 1
    assert len(recorder.sent) == 2, "every device with push on"
    for _, message in recorder.sent:
        assert (message.title, message.body) == WORDING["experiment_follow_up"]
        assert SENTINEL not in f"{message.title} {message.body}", "nothing the person wrote reaches a lock screen"
    assert [s for s, _ in await statuses(engine)] == ["sent"]
    assert await deliver(engine, recorder, due + timedelta(minutes=2)) == 0, "sent once"


async def test_quiet_hours_defer_and_never_drop(client: Client, engine: AsyncEngine) -> None:
    tokens = await person(client, {"quiet_start": "22:00", "quiet_end": "08:00"})
    late = datetime(2026, 11, 20, 23, 0, tzinfo=AUCKLAND)
    await follow_up_at(client, engine, tokens, late)
    recorder = Recorder()
    assert await deliver(engine, recorder, late + timedelta(minutes=1)) == 0
    morning = datetime(2026, 11, 21, 8, 0, tzinfo=AUCKLAND)
    assert await statuses(engine) == [("planned", morning)]
    assert await deliver(engine, recorder, morning) == 1
    assert [s for s, _ in await statuses(engine)] == ["sent"]


async def test_at_most_two_pushes_a_day(client: Client, engine: AsyncEngine) -> None:
    tokens = await person(client, {}, devices=1)
    noon = datetime(2026, 11, 20, 12, 0, tzinfo=AUCKLAND)
    for minutes in (0, 1, 2):
        await follow_up_at(client, engine, tokens, noon + timedelta(minutes=minutes))
    recorder = Recorder()
    assert await deliver(engine, recorder, noon + timedelta(minutes=5)) == 2
    rows = await statuses(engine)
    assert [s for s, _ in rows].count("sent") == 2
    assert ("planned", datetime(2026, 11, 21, 8, 0, tzinfo=AUCKLAND)) in rows, "the third waits for tomorrow"


async def test_a_practice_reminder_is_skipped_on_a_day_something_was_logged(
    client: Client, engine: AsyncEngine
) -> None:
    quiet_person = await person(client, {"reminders_enabled": True, "reminder_time": "18:30"}, devices=1)
    busy_person = await person(client, {"reminders_enabled": True, "reminder_time": "18:30"}, devices=1)
    morning = datetime(2026, 11, 20, 9, 0, tzinfo=AUCKLAND)
    await sync(
        client, busy_person, [("mood_checkin", str(uuid.uuid4()), {"occurred_at": morning.isoformat(), "mood": 6})]
    )
    async with engine.begin() as conn:
        await planning.plan_reminders(conn, morning)
        await planning.plan_reminders(conn, morning + timedelta(hours=1))  # planned once a day
        planned = (await conn.execute(text("SELECT count(*) FROM notifications"))).scalar()
    assert planned == 2
    recorder = Recorder()
    assert await deliver(engine, recorder, datetime(2026, 11, 20, 18, 31, tzinfo=AUCKLAND)) == 1
    async with engine.connect() as conn:
        rows = dict((await conn.execute(select(notifications.c.user_id, notifications.c.status))).all())
    assert rows == {uuid.UUID(quiet_person["user_id"]): "sent", uuid.UUID(busy_person["user_id"]): "cancelled"}


class DeadTokens(Recorder):
    """A provider that calls some tokens invalid, as APNs and FCM do for an uninstalled app."""

    def __init__(self, dead: set[str]) -> None:
        super().__init__()
        self.dead = dead

    async def send(self, target: PushTarget, message: PushMessage) -> PushOutcome:
        self.sent.append((target, message))
        return PushOutcome(ok=target.token not in self.dead, token_invalid=target.token in self.dead)


async def test_a_token_the_provider_calls_invalid_is_switched_off_at_once(client: Client, engine: AsyncEngine) -> None:
    tokens = await person(client, {}, devices=2)
    async with engine.connect() as conn:
        rows = (await conn.execute(select(devices.c.push_token))).scalars().all()
    dead = {rows[0]}
    due = datetime(2026, 11, 20, 12, 0, tzinfo=AUCKLAND)
    await follow_up_at(client, engine, tokens, due)
    metrics = WorkerMetrics()
    assert await deliver(engine, DeadTokens(dead), due, metrics) == 1, "the other device still got it"
    counted = {
        (sample.labels["provider"], sample.labels["outcome"]): sample.value
        for family in metrics.push_results.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    assert counted == {(DeadTokens.name, "sent"): 1, (DeadTokens.name, "invalid_token"): 1}, "the operator sees both"
    async with engine.connect() as conn:
        state = dict((await conn.execute(select(devices.c.push_token, devices.c.push_enabled))).all())
    assert state == {rows[0]: False, rows[1]: True}
    provider = DeadTokens(dead)
    await follow_up_at(client, engine, tokens, due + timedelta(minutes=1))
    await deliver(engine, provider, due + timedelta(minutes=2))
    assert [target.token for target, _ in provider.sent] == [rows[1]], "no more pushes to the dead token"


class Busy(Recorder):
    """A provider that keeps answering 'busy' until told otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self.busy = True

    async def send(self, target: PushTarget, message: PushMessage) -> PushOutcome:
        self.sent.append((target, message))
        return PushOutcome(ok=not self.busy, retryable=self.busy, detail="503" if self.busy else "200")


async def test_a_busy_provider_is_tried_again_later_and_each_device_is_recorded(
    client: Client, engine: AsyncEngine
) -> None:
    tokens = await person(client, {}, devices=2)
    due = datetime(2026, 11, 20, 12, 0, tzinfo=AUCKLAND)
    await follow_up_at(client, engine, tokens, due)
    provider = Busy()
    assert await deliver(engine, provider, due) == 0
    assert await statuses(engine) == [("planned", due + timedelta(minutes=1))], "retrying, not dropped"
    async with engine.connect() as conn:
        per_device = (await conn.execute(select(deliveries.c.status, deliveries.c.attempts))).all()
    assert sorted(per_device) == [("retrying", 1), ("retrying", 1)]

    provider.busy = False
    assert await deliver(engine, provider, due + timedelta(minutes=1)) == 1
    async with engine.connect() as conn:
        per_device = (await conn.execute(select(deliveries.c.status, deliveries.c.attempts))).all()
    assert sorted(per_device) == [("sent", 2), ("sent", 2)]
    assert [s for s, _ in await statuses(engine)] == ["sent"]
