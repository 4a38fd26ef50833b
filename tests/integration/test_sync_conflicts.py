"""The contract's conflict rules, each played out by two devices of one person through HTTP.

The phone creates a record and both devices see version 1; then each edits
it offline. The phone syncs first, the tablet second, basing its change on
version 1, so the tablet's mutation meets a concurrent change on the server.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete as sql_delete
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.tables import record_versions
from tests.integration.conftest import Client, anonymous
from tests.integration.test_sync import Phone, checkin, current, delete, history, journal, new_id, statuses, upsert

BODY = (
    "This morning I walked along the river before work and noticed the herons. "
    "At lunch I was harsh with myself about the report, then remembered to breathe. "
    "In the evening I called my sister and we laughed about the old kitchen."
)


class Scene:
    """One person, two devices, one record both have seen at version 1."""

    def __init__(self, tokens: Any, phone: Phone, tablet: Phone, record: str, kind: str, start: datetime) -> None:
        self.tokens = tokens
        self.phone = phone
        self.tablet = tablet
        self.record = record
        self.kind = kind
        self.start = start

    def at(self, minutes: float) -> datetime:
        return self.start + timedelta(minutes=minutes)

    async def by_phone(self, data: dict[str, Any], minutes: float) -> dict[str, Any]:
        body = await self.phone.sync(upsert(self.record, self.kind, data, base=1, at=self.at(minutes)))
        assert statuses(body) == ["applied"], body
        return body

    async def by_tablet(self, data: dict[str, Any], minutes: float) -> dict[str, Any]:
        """The tablet's edit, based on version 1; answers its one result."""
        body = await self.tablet.sync(upsert(self.record, self.kind, data, base=1, at=self.at(minutes)))
        result: dict[str, Any] = body["results"][0]
        return result

    async def now(self) -> dict[str, Any]:
        return await current(self.tablet.client, self.tokens, self.kind, self.record)

    async def history(self) -> list[dict[str, Any]]:
        return await history(self.tablet.client, self.tokens, self.kind, self.record)


async def scene(
    client: Client,
    kind: str,
    data: dict[str, Any],
    *,
    phone_id: uuid.UUID | None = None,
    tablet_id: uuid.UUID | None = None,
) -> Scene:
    tokens = await anonymous(client)
    phone, tablet = Phone(client, tokens, phone_id), Phone(client, tokens, tablet_id)
    record = new_id()
    start = datetime.now(UTC) - timedelta(hours=1)
    created = await phone.sync(upsert(record, kind, data, at=start))
    assert statuses(created) == ["applied"]
    assert [c["id"] for c in (await tablet.sync())["changes"]] == [record]
    return Scene(tokens, phone, tablet, record, kind, start)


def conflicts(result: dict[str, Any]) -> dict[str, tuple[Any, Any, str]]:
    return {c["field"]: (c["yours"], c["theirs"], c["resolution"]) for c in result["conflicts"]}


async def test_a_field_changed_on_one_side_only_takes_that_sides_value(client: Client) -> None:
    s = await scene(client, "mood_checkin", checkin(mood=5, energy=2, note="slept badly"))
    await s.by_phone({"mood": 7}, minutes=2)

    # The tablet's edit is older than the phone's, but it touched another field.
    result = await s.by_tablet({"note": "slept badly, but the walk helped"}, minutes=1)

    assert (result["status"], result["version"], result["conflicts"]) == ("merged", 3, [])
    now = await s.now()
    assert now["version"] == 3
    assert (now["data"]["mood"], now["data"]["energy"], now["data"]["note"]) == (
        7,
        2,
        "slept badly, but the walk helped",
    )
    assert result["record"]["data"] == now["data"]
    # The phone learns the merged state on its next pull.
    [change] = (await s.phone.sync())["changes"]
    assert (change["version"], change["data"]) == (3, now["data"])


async def test_both_sides_changing_a_field_to_the_same_value_keep_it(client: Client) -> None:
    s = await scene(client, "mood_checkin", checkin(mood=5, tags=["work"]))
    await s.by_phone({"mood": 7}, minutes=2)

    result = await s.by_tablet({"mood": 7}, minutes=1)

    assert result["status"] == "merged"
    assert result["record"]["data"]["mood"] == 7
    now = await s.now()
    assert (now["data"]["mood"], now["data"]["tags"]) == (7, ["work"])


async def test_edits_to_different_parts_of_a_long_text_are_merged(client: Client) -> None:
    s = await scene(client, "journal_entry", journal(body=BODY, title="Tuesday"))
    phone_text = BODY.replace("noticed the herons", "noticed two herons fishing")
    await s.by_phone({"body": phone_text}, minutes=2)

    tablet_text = BODY.replace("called my sister", "called my sister Maya")
    result = await s.by_tablet({"body": tablet_text}, minutes=1)

    both = BODY.replace("noticed the herons", "noticed two herons fishing").replace(
        "called my sister", "called my sister Maya"
    )
    assert result["status"] == "merged"
    assert conflicts(result) == {"body": (tablet_text, phone_text, "merged_text")}
    now = await s.now()
    assert now["data"]["body"] == both
    assert "two herons fishing" in now["data"]["body"]
    assert "my sister Maya" in now["data"]["body"]
    assert now["data"]["title"] == "Tuesday"
    assert result["record"]["data"]["body"] == both


async def test_overlapping_text_edits_keep_the_later_and_the_losing_text_stays_in_history(client: Client) -> None:
    s = await scene(client, "journal_entry", journal(body=BODY))
    phone_text = BODY.replace("along the river", "along the canal")
    await s.by_phone({"body": phone_text}, minutes=2)

    tablet_text = BODY.replace("along the river", "along the lake shore")
    result = await s.by_tablet({"body": tablet_text}, minutes=1)

    assert result["status"] == "merged"
    assert conflicts(result) == {"body": (tablet_text, phone_text, "kept_theirs")}
    now = await s.now()
    assert now["data"]["body"] == phone_text
    assert result["version"] == now["version"]
    versions = await s.history()
    assert versions[0]["version"] == now["version"]
    assert versions[0]["data"]["body"] == phone_text
    # The tablet's own text is a version of its own, directly before the merged one.
    assert versions[1]["version"] == versions[0]["version"] - 1
    assert versions[1]["data"]["body"] == tablet_text
    assert versions[1]["device_id"] == str(s.tablet.id)
    assert not versions[1]["deleted"]
    assert [v["data"]["body"] for v in versions[2:]] == [phone_text, BODY]


async def test_overlapping_text_edits_the_later_device_text_wins(client: Client) -> None:
    s = await scene(client, "journal_entry", journal(body=BODY))
    phone_text = BODY.replace("along the river", "along the canal")
    await s.by_phone({"body": phone_text}, minutes=1)

    tablet_text = BODY.replace("along the river", "along the lake shore")
    result = await s.by_tablet({"body": tablet_text}, minutes=2)

    assert result["status"] == "merged"
    assert conflicts(result) == {"body": (tablet_text, phone_text, "kept_yours")}
    assert (await s.now())["data"]["body"] == tablet_text
    assert phone_text in [v["data"].get("body") for v in await s.history()]


async def test_sets_take_the_union_of_both_sides_changes(client: Client) -> None:
    s = await scene(client, "mood_checkin", checkin(tags=["work", "tired"], emotions=["sad"]))
    await s.by_phone({"tags": ["work", "tired", "walk"], "emotions": ["sad", "hopeful"]}, minutes=2)

    # The tablet removed "work" and added "friends"; the phone added "walk".
    result = await s.by_tablet({"tags": ["tired", "friends"], "emotions": ["sad", "calm"]}, minutes=1)

    assert result["status"] == "merged"
    assert {field: c[2] for field, c in conflicts(result).items()} == {"tags": "union", "emotions": "union"}
    now = await s.now()
    assert sorted(now["data"]["tags"]) == ["friends", "tired", "walk"]
    assert sorted(now["data"]["emotions"]) == ["calm", "hopeful", "sad"]


@pytest.mark.parametrize(
    ("tablet_minutes", "mood", "resolution"),
    [pytest.param(3, 2, "kept_yours", id="tablet-later"), pytest.param(1, 8, "kept_theirs", id="tablet-earlier")],
)
async def test_any_other_field_goes_to_the_later_change(
    client: Client, tablet_minutes: int, mood: int, resolution: str
) -> None:
    s = await scene(client, "mood_checkin", checkin(mood=5))
    await s.by_phone({"mood": 8}, minutes=2)

    result = await s.by_tablet({"mood": 2}, minutes=tablet_minutes)

    assert result["status"] == "merged"
    assert conflicts(result) == {"mood": (2, 8, resolution)}
    assert (await s.now())["data"]["mood"] == mood
    assert result["record"]["data"]["mood"] == mood


@pytest.mark.parametrize("phone_is_greater", [True, False], ids=["phone-greater", "tablet-greater"])
async def test_a_tie_goes_to_the_greater_device_id(client: Client, phone_is_greater: bool) -> None:
    lesser, greater = sorted([uuid.uuid4(), uuid.uuid4()], key=str)
    phone_id, tablet_id = (greater, lesser) if phone_is_greater else (lesser, greater)
    s = await scene(client, "mood_checkin", checkin(mood=5), phone_id=phone_id, tablet_id=tablet_id)
    await s.by_phone({"mood": 8}, minutes=2)

    result = await s.by_tablet({"mood": 2}, minutes=2)

    winner = 8 if phone_is_greater else 2
    assert result["status"] == "merged"
    assert conflicts(result) == {"mood": (2, 8, "kept_theirs" if phone_is_greater else "kept_yours")}
    assert (await s.now())["data"]["mood"] == winner


@pytest.mark.parametrize(
    ("phone_op", "phone_minutes", "tablet_op", "tablet_minutes", "deleted"),
    [
        pytest.param("delete", 1, "edit", 2, False, id="edit-after-delete-brings-it-back"),
        pytest.param("edit", 1, "delete", 2, True, id="delete-after-edit-deletes"),
        pytest.param("delete", 2, "edit", 1, True, id="edit-before-delete-stays-deleted"),
        pytest.param("edit", 2, "delete", 1, False, id="delete-before-edit-keeps-it"),
    ],
)
async def test_a_delete_against_a_concurrent_edit_goes_to_the_later(
    client: Client, phone_op: str, phone_minutes: int, tablet_op: str, tablet_minutes: int, deleted: bool
) -> None:
    s = await scene(client, "mood_checkin", checkin(mood=5))

    def mutation(op: str, minutes: int) -> dict[str, Any]:
        if op == "delete":
            return delete(s.record, s.kind, base=1, at=s.at(minutes))
        return upsert(s.record, s.kind, {"mood": 8}, base=1, at=s.at(minutes))

    assert statuses(await s.phone.sync(mutation(phone_op, phone_minutes))) == ["applied"]
    [result] = (await s.tablet.sync(mutation(tablet_op, tablet_minutes)))["results"]

    assert result["status"] == "merged"
    now = await s.now()
    assert now["deleted"] is deleted
    assert result["record"]["deleted"] is deleted
    if deleted:
        assert now["data"] == {}
    else:
        assert now["data"]["mood"] == 8
    # The edit is never lost: it is in the record's history either way.
    assert any(v["data"].get("mood") == 8 and not v["deleted"] for v in await s.history())
    # The phone ends up with the outcome: pulled, or what it wrote itself when that won outright.
    pulled = (await s.phone.sync())["changes"]
    phone_view = (pulled[-1]["deleted"], pulled[-1]["version"]) if pulled else (phone_op == "delete", 2)
    assert phone_view == (deleted, now["version"])


async def test_a_change_dated_far_in_the_future_counts_as_the_server_now(client: Client) -> None:
    s = await scene(client, "mood_checkin", checkin(mood=5))
    # A phone whose clock runs a day fast.
    await s.phone.sync(upsert(s.record, s.kind, {"mood": 9}, base=1, at=datetime.now(UTC) + timedelta(days=1)))
    await asyncio.sleep(0.01)

    # A real change made after that sync still wins.
    [result] = (await s.tablet.sync(upsert(s.record, s.kind, {"mood": 2}, base=1, at=datetime.now(UTC))))["results"]

    assert result["status"] == "merged"
    assert conflicts(result)["mood"][2] == "kept_yours"
    assert (await s.now())["data"]["mood"] == 2


async def test_a_change_dated_less_than_five_minutes_ahead_is_trusted(client: Client) -> None:
    s = await scene(client, "mood_checkin", checkin(mood=5))
    await s.phone.sync(upsert(s.record, s.kind, {"mood": 9}, base=1, at=datetime.now(UTC) + timedelta(minutes=4)))
    await asyncio.sleep(0.01)

    [result] = (await s.tablet.sync(upsert(s.record, s.kind, {"mood": 2}, base=1, at=datetime.now(UTC))))["results"]

    assert result["status"] == "merged"
    assert conflicts(result)["mood"][2] == "kept_theirs"
    assert (await s.now())["data"]["mood"] == 9


@pytest.mark.parametrize(
    ("tablet_minutes", "expected"),
    [
        pytest.param(3, {"mood": 3, "tags": ["a", "c"], "note": "tablet"}, id="tablet-later"),
        pytest.param(1, {"mood": 7, "tags": ["a", "b"], "note": "tablet"}, id="tablet-earlier"),
    ],
)
async def test_without_the_base_version_each_field_goes_to_the_later_change(
    client: Client, engine: AsyncEngine, tablet_minutes: int, expected: dict[str, Any]
) -> None:
    s = await scene(client, "mood_checkin", checkin(mood=5, tags=["a"], note="base"))
    await s.by_phone({"mood": 7, "tags": ["a", "b"]}, minutes=2)
    async with engine.begin() as conn:
        await conn.execute(
            sql_delete(record_versions).where(
                record_versions.c.user_id == uuid.UUID(s.tokens["user_id"]),
                record_versions.c.record_id == uuid.UUID(s.record),
                record_versions.c.version == 1,
            )
        )

    result = await s.by_tablet({"mood": 3, "tags": ["a", "c"], "note": "tablet"}, minutes=tablet_minutes)

    assert result["status"] == "merged"
    # With the base, tags would have been a union (a, b, c); without it the later side wins.
    assert conflicts(result)["tags"][2] == ("kept_yours" if tablet_minutes == 3 else "kept_theirs")
    now = await s.now()
    assert {field: now["data"][field] for field in expected} == expected
