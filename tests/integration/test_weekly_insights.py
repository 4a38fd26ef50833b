"""A week of entries becomes the person's weekly insight, in their own time zone."""

from __future__ import annotations

import subprocess
import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from arq.connections import ArqRedis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.jobs import COMPUTE_INSIGHTS
from service.db.tables import notifications
from tests.integration.conftest import Client, anonymous, bearer
from workers.jobs.insights import compute_insights, last_complete_week, run_due


class Person:
    def __init__(self, client: Client, tokens: Any, timezone: str) -> None:
        self.client, self.tokens, self.zone = client, tokens, ZoneInfo(timezone)
        self.mutations: list[dict[str, Any]] = [self._upsert("preferences", tokens["user_id"], {"timezone": timezone})]

    def at(self, day: date, hour: int, minute: int = 0) -> str:
        return datetime.combine(day, time(hour, minute), self.zone).isoformat()

    def _upsert(self, kind: str, record_id: str, data: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": record_id,
            "kind": kind,
            "op": "upsert",
            "base_version": 0,
            "changed_at": datetime.now(UTC).isoformat(),
            "data": data,
        }

    def add(self, kind: str, **data: Any) -> None:
        self.mutations.append(self._upsert(kind, str(uuid.uuid4()), data))

    async def sync(self, device: str | None = None, cursor: str | None = None) -> Any:
        body = {
            "device_id": device or str(uuid.uuid4()),
            "batch_id": str(uuid.uuid4()),
            "cursor": cursor,
            "mutations": self.mutations,
        }
        self.mutations = []
        response = await self.client.post("/v1/sync", json=body, headers=bearer(self.tokens))
        assert response.status_code == 200, response.text
        assert all(r["status"] == "applied" for r in response.json()["results"]), response.text
        return response.json()


def experiment(person: Person, day: date, predicted: int, actual: int, before: int, after: int | None) -> None:
    person.add(
        "as_if_experiment",
        planned_for=person.at(day, 12),
        target_belief="I deserve rest",
        intention="Rest without earning it",
        behaviours=["nap"],
        predicted_mood=predicted,
        belief_before=before,
        follow_up_at=None,
        status="done",
        actual_mood=actual,
        belief_after=after,
    )


async def test_a_week_of_entries_gives_exact_numbers_and_reaches_another_device(
    client: Client, engine: AsyncEngine, redis: ArqRedis, worker: subprocess.Popen[bytes]
) -> None:
    zone = "Pacific/Auckland"
    person = Person(client, await anonymous(client), zone)
    week = last_complete_week(datetime.now(UTC), zone)
    mon, tue, wed, thu, fri, sat = (week + timedelta(days=n) for n in range(6))
    for day, hour, mood, tags in [
        (mon, 9, 4, ["walk"]),
        (mon, 20, 6, []),
        (tue, 10, 5, ["walk"]),
        (wed, 8, 7, []),
        (thu, 9, 3, []),
        (fri, 18, 8, ["walk"]),
    ]:
        person.add("mood_checkin", occurred_at=person.at(day, hour), mood=mood, tags=tags)
    person.add("mood_checkin", occurred_at=person.at(week - timedelta(days=1), 23, 30), mood=1)  # the Sunday before
    person.add("mood_checkin", occurred_at=person.at(week + timedelta(days=7), 0, 30), mood=10)  # the Monday after
    person.add(
        "practice_session", occurred_at=person.at(mon, 21), practice="loving_kindness", duration_s=300, felt_genuine=4
    )
    person.add(
        "practice_session", occurred_at=person.at(wed, 21), practice="loving_kindness", duration_s=300, felt_genuine=6
    )
    person.add("practice_session", occurred_at=person.at(thu, 7), practice="breathing", duration_s=120)
    experiment(person, tue, predicted=4, actual=6, before=30, after=45)
    experiment(person, thu, predicted=6, actual=5, before=40, after=None)
    person.add(
        "activity", occurred_at=person.at(wed, 17), category="social", description="Tea with Sam", with_others=True
    )
    person.add(
        "activity", occurred_at=person.at(sat, 11), category="enjoyment", description="Garden", with_others=False
    )
    first = await person.sync()

    async def run_in_worker() -> Any:
        job = await redis.enqueue_job(COMPUTE_INSIGHTS, {"week_start": week.isoformat(), "user_id": None})
        assert job is not None
        return await job.result(timeout=30)

    assert await run_in_worker() == 1

    pulled = await person.sync(cursor=None)  # another device, from the start
    # The worker's own evening cron may add the current week's insight meanwhile: look at this week's.
    insights = [c for c in pulled["changes"] if c["kind"] == "weekly_insight" and c["data"]["week_start"] == str(week)]
    assert len(insights) == 1
    data = insights[0]["data"]
    assert data["week_start"] == week.isoformat()
    assert (data["days_logged"], data["checkins"], data["mood_avg"], data["mood_avg_prev4"]) == (6, 6, 5.5, 1.0)
    assert data["practice_counts"] == {"breathing": 1, "loving_kindness": 2}
    assert (data["felt_genuine_avg"], data["felt_genuine_prev4"]) == (5.0, None)
    assert (data["experiments_done"], data["experiments_better_than_predicted"]) == (2, 1)
    assert (data["experiment_mood_gap_avg"], data["belief_shift_avg"]) == (0.5, 15.0)
    assert data["activity_counts"] == {"enjoyment": 1, "social": 1}
    assert data["support_prompt"] is False
    assert data["highlights"], "the week is described"
    assert not any(word in " ".join(data["highlights"]).lower() for word in ("cause", "because", "streak"))

    # The first device pulls it too, after its own changes.
    again = await person.sync(cursor=first["cursor"])
    assert insights[0]["id"] in [c["id"] for c in again["changes"] if c["kind"] == "weekly_insight"]
    assert {c["kind"] for c in again["changes"]} == {"weekly_insight"}
    # Computing the unchanged week again writes nothing new.
    assert await run_in_worker() == 0
    history = await client.get(f"/v1/records/weekly_insight/{insights[0]['id']}/history", headers=bearer(person.tokens))
    assert [v["version"] for v in history.json()] == [1]


@pytest.mark.parametrize("trigger", ["phq9 total of 10", "phq9 item 9", "who5 below 13", "two low weeks"])
async def test_the_support_prompt_and_a_gentle_suggestion(client: Client, engine: AsyncEngine, trigger: str) -> None:
    person = Person(client, await anonymous(client), "Europe/Berlin")
    week = last_complete_week(datetime.now(UTC), "Europe/Berlin")
    midweek = person.at(week + timedelta(days=2), 9)
    if trigger == "phq9 total of 10":
        person.add("assessment", occurred_at=midweek, instrument="phq9", answers=[2, 2, 1, 1, 1, 1, 1, 1, 0])
    elif trigger == "phq9 item 9":
        person.add("assessment", occurred_at=midweek, instrument="phq9", answers=[0, 0, 0, 0, 0, 0, 0, 0, 1])
    elif trigger == "who5 below 13":
        person.add("assessment", occurred_at=midweek, instrument="who5", answers=[3, 3, 2, 2, 2])
    else:
        for day in (week - timedelta(days=5), week + timedelta(days=2)):
            person.add("mood_checkin", occurred_at=person.at(day, 20), mood=3)
    await person.sync()
    await compute_insights({"engine": engine}, {"week_start": week.isoformat()})
    data = next(c for c in (await person.sync())["changes"] if c["kind"] == "weekly_insight")["data"]
    assert data["support_prompt"] is True
    assert data["suggestion"]["kind"] == "reach_out"


async def test_each_person_gets_their_own_monday_to_sunday(client: Client, engine: AsyncEngine) -> None:
    """Late Sunday evening in Los Angeles is already Monday in UTC and in Auckland."""
    people = {}
    for zone in ("America/Los_Angeles", "Pacific/Auckland"):
        person = Person(client, await anonymous(client), zone)
        week = last_complete_week(datetime.now(UTC), zone)
        sunday = week + timedelta(days=6)
        person.add("mood_checkin", occurred_at=person.at(sunday, 23), mood=9)  # inside this person's week
        person.add("mood_checkin", occurred_at=person.at(week, 0, 10), mood=3)  # its first minutes
        await person.sync()
        people[zone] = (person, week)
    await compute_insights({"engine": engine}, {})
    for zone, (person, week) in people.items():
        data = next(c for c in (await person.sync())["changes"] if c["kind"] == "weekly_insight")["data"]
        assert data["week_start"] == week.isoformat(), zone
        assert (data["checkins"], data["mood_avg"]) == (2, 6.0), zone


async def _notifications(engine: AsyncEngine) -> list[tuple[str, str, datetime]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(notifications.c.user_id, notifications.c.kind, notifications.c.due_at))
        return sorted((str(r.user_id), r.kind, r.due_at) for r in rows)


async def test_each_person_gets_their_insight_on_their_own_evening(client: Client, engine: AsyncEngine) -> None:
    auckland = Person(client, await anonymous(client), "Pacific/Auckland")
    los_angeles = Person(client, await anonymous(client), "America/Los_Angeles")
    night_owl = Person(client, await anonymous(client), "Pacific/Auckland")
    night_owl.mutations[0]["data"].update(quiet_start="19:00", quiet_end="07:00")
    for person in (auckland, los_angeles, night_owl):
        await person.sync()

    sunday_evening_auckland = datetime(2026, 11, 22, 19, 30, tzinfo=ZoneInfo("Pacific/Auckland"))
    assert await run_due(engine, sunday_evening_auckland) == 2, "Los Angeles is still on Saturday"
    week = "2026-11-16"
    for person in (auckland, night_owl):
        data = next(c for c in (await person.sync())["changes"] if c["kind"] == "weekly_insight")["data"]
        assert data["week_start"] == week
    deferred = datetime(2026, 11, 23, 7, 0, tzinfo=ZoneInfo("Pacific/Auckland"))
    assert await _notifications(engine) == sorted(
        [
            (auckland.tokens["user_id"], "weekly_insight_ready", sunday_evening_auckland),
            (night_owl.tokens["user_id"], "weekly_insight_ready", deferred),  # quiet hours defer, never drop
        ]
    )
    assert await run_due(engine, sunday_evening_auckland + timedelta(minutes=5)) == 0, "once a week"

    sunday_evening_la = datetime(2026, 11, 22, 19, 30, tzinfo=ZoneInfo("America/Los_Angeles"))
    assert await run_due(engine, sunday_evening_la) == 1
    assert len(await _notifications(engine)) == 3


async def test_a_backfilled_older_week_plans_no_push(client: Client, engine: AsyncEngine) -> None:
    person = Person(client, await anonymous(client), "Europe/Berlin")
    await person.sync()
    old_week = last_complete_week(datetime.now(UTC), "Europe/Berlin") - timedelta(days=14)
    assert await compute_insights({"engine": engine}, {"week_start": old_week.isoformat()}) == 1
    assert await _notifications(engine) == []
    assert await compute_insights({"engine": engine}, {}) == 1  # the latest week: one push
    assert [kind for _, kind, _ in await _notifications(engine)] == ["weekly_insight_ready"]
