"""`POST /v1/sync`, its receipts and the manifest, through HTTP against the real app and Postgres.

Each phone here is one device of a person: it sends its queued mutations and
keeps the cursor the server hands back, as the app does. The conflict rules
between two devices live in test_sync_conflicts.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.sync import SyncRequest, SyncResponse
from service import sync_batch
from service.db import sync as sync_queries
from service.db.tables import record_versions
from service.settings import Settings
from service.sync import cursor as cursors
from service.sync.model import Stamp
from tests.integration.conftest import Client, anonymous, assert_problem, bearer, signup
from workers.jobs.maintenance import purge_tombstones

MSGPACK = "application/msgpack"
NUL_REFUSED = "must not contain the NUL character (U+0000)"


def stamp(moment: datetime) -> str:
    return moment.isoformat()


def new_id() -> str:
    return str(uuid.uuid4())


def checkin(**changes: Any) -> dict[str, Any]:
    """A whole mood check-in, as a phone creates one."""
    data: dict[str, Any] = {"occurred_at": "2026-11-20T21:04:00+01:00", "mood": 5}
    data.update(changes)
    return data


def journal(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"occurred_at": "2026-11-20T21:04:00+01:00", "body": "A quiet evening."}
    data.update(changes)
    return data


def upsert(
    record_id: str, kind: str, data: dict[str, Any], *, base: int = 0, at: datetime | None = None
) -> dict[str, Any]:
    return {
        "id": record_id,
        "kind": kind,
        "op": "upsert",
        "base_version": base,
        "changed_at": stamp(at or datetime.now(UTC)),
        "data": data,
    }


def delete(record_id: str, kind: str, *, base: int, at: datetime | None = None) -> dict[str, Any]:
    return {
        "id": record_id,
        "kind": kind,
        "op": "delete",
        "base_version": base,
        "changed_at": stamp(at or datetime.now(UTC)),
    }


class Phone:
    """One device of a person: sends batches, keeps the cursor it is given."""

    def __init__(self, client: Client, tokens: Any, device_id: uuid.UUID | None = None) -> None:
        self.client = client
        self.tokens = tokens
        self.id = device_id or uuid.uuid4()
        self.cursor: str | None = None

    def request(self, mutations: list[dict[str, Any]], *, batch_id: str | None = None, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "device_id": str(self.id),
            "batch_id": batch_id or new_id(),
            "cursor": self.cursor,
            "mutations": mutations,
        }
        body.update(extra)
        return body

    async def post(self, body: Any, **headers: str) -> httpx.Response:
        return await self.client.post("/v1/sync", json=body, headers={**bearer(self.tokens), **headers})

    async def send(
        self, mutations: list[dict[str, Any]], *, batch_id: str | None = None, **extra: Any
    ) -> httpx.Response:
        return await self.post(self.request(mutations, batch_id=batch_id, **extra))

    async def sync(self, *mutations: dict[str, Any], **extra: Any) -> dict[str, Any]:
        """One round trip that must succeed; the phone moves on to the new cursor."""
        response = await self.send(list(mutations), **extra)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        body: dict[str, Any] = response.json()
        self.cursor = body["cursor"]
        return body

    async def pull_all(self, pull_limit: int = 500) -> list[dict[str, Any]]:
        """Pull until the server has nothing more."""
        changes: list[dict[str, Any]] = []
        while True:
            body = await self.sync(pull_limit=pull_limit)
            changes.extend(body["changes"])
            if not body["has_more"]:
                return changes


async def get_record(client: Client, tokens: Any, kind: str, record_id: str) -> httpx.Response:
    return await client.get(f"/v1/records/{kind}/{record_id}", headers=bearer(tokens))


async def current(client: Client, tokens: Any, kind: str, record_id: str) -> dict[str, Any]:
    response = await get_record(client, tokens, kind, record_id)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def history(client: Client, tokens: Any, kind: str, record_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/records/{kind}/{record_id}/history", headers=bearer(tokens))
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


async def manifest(client: Client, tokens: Any) -> dict[str, Any]:
    response = await client.get("/v1/sync/manifest", headers=bearer(tokens))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def statuses(body: dict[str, Any]) -> list[str]:
    return [result["status"] for result in body["results"]]


# --- statuses ------------------------------------------------------------------------------------


async def test_a_create_is_version_1_and_each_update_adds_one(client: Client) -> None:
    tokens = await anonymous(client)
    phone = Phone(client, tokens)
    record = new_id()

    created = await phone.sync(upsert(record, "mood_checkin", checkin(mood=4, tags=["walk"])))
    assert created["results"] == [
        {"id": record, "status": "applied", "version": 1, "record": None, "conflicts": [], "error": None}
    ]
    first = await phone.sync(upsert(record, "mood_checkin", {"mood": 6}, base=1))
    assert (statuses(first), first["results"][0]["version"]) == (["applied"], 2)
    second = await phone.sync(upsert(record, "mood_checkin", {"note": "better after tea"}, base=2))
    assert (statuses(second), second["results"][0]["version"]) == (["applied"], 3)

    now = await current(client, tokens, "mood_checkin", record)
    assert now["version"] == 3
    assert not now["deleted"]
    assert now["data"]["mood"] == 6
    assert now["data"]["note"] == "better after tea"
    assert now["data"]["tags"] == ["walk"]
    assert [v["version"] for v in await history(client, tokens, "mood_checkin", record)] == [3, 2, 1]


async def test_a_record_of_many_fields_keeps_each_stamp_its_private_text_and_its_fingerprint(
    client: Client, engine: AsyncEngine
) -> None:
    """A write sends each version's fingerprint, stamps and sealed text as one value of bytes that
    Postgres takes apart: an experiment's twelve fields make stamps of over 256 bytes."""
    tokens = await anonymous(client)
    phone = Phone(client, tokens)
    record = new_id()
    at = datetime.now(UTC) - timedelta(minutes=2)
    experiment = {
        "planned_for": "2026-11-21T18:00:00Z",
        "target_belief": "I deserve a rest when I am tired.",
        "intention": "Leave work on time and not apologise.",
        "behaviours": ["leave at six", "no apology"],
        "predicted_mood": 3,
        "belief_before": 20,
        "follow_up_at": "2026-11-22T09:00:00Z",
        "status": "done",
        "actual_mood": 6,
        "outcome": "Nobody minded.",
        "learned": "Rest did not cost what I feared.",
        "belief_after": 45,
    }
    create = upsert(record, "as_if_experiment", experiment, at=at)
    edit = upsert(record, "as_if_experiment", {"belief_after": 50}, base=1, at=at + timedelta(minutes=1))

    await phone.sync(create)  # a batch of new records
    await phone.sync(edit)  # a batch read before it writes
    again = await phone.sync(create, edit)

    assert statuses(again) == ["duplicate", "duplicate"]
    stored = await current(client, tokens, "as_if_experiment", record)
    assert (stored["version"], stored["data"]) == (2, {**experiment, "belief_after": 50})
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT stamps, changed_at, device_id FROM records WHERE id = :id"), {"id": uuid.UUID(record)}
            )
        ).one()
    stamps = sync_queries.open_stamps(*row)
    assert len(row.stamps) > 256
    assert {field: stamp.at for field, stamp in stamps.items()} == {
        **dict.fromkeys(experiment, at),
        "belief_after": at + timedelta(minutes=1),
    }
    assert {stamp.device for stamp in stamps.values()} == {phone.id}


async def test_the_same_mutation_in_a_new_batch_is_a_duplicate_and_changes_nothing(client: Client) -> None:
    tokens = await anonymous(client)
    phone, other = Phone(client, tokens), Phone(client, tokens)
    record = new_id()
    create = upsert(record, "mood_checkin", checkin(mood=3))
    update = upsert(record, "mood_checkin", {"mood": 7}, base=1)
    await phone.sync(create)
    await phone.sync(update)
    await other.pull_all()
    before = await current(client, tokens, "mood_checkin", record)

    # The response was lost; the phone sends both again in a batch of its own.
    again = await phone.sync(create, update)

    assert statuses(again) == ["duplicate", "duplicate"]
    # Each answers the version it produced back then, so a phone building on it
    # has its next edit merged with anything newer instead of overwriting it.
    assert [r["version"] for r in again["results"]] == [1, 2]
    assert await current(client, tokens, "mood_checkin", record) == before
    assert before["data"]["mood"] == 7
    assert [v["version"] for v in await history(client, tokens, "mood_checkin", record)] == [2, 1]
    # Another device has nothing new to pull.
    assert (await other.sync())["changes"] == []


async def test_unknown_read_only_and_ahead_mutations_are_rejected_and_the_rest_applies(client: Client) -> None:
    tokens = await anonymous(client)
    phone = Phone(client, tokens)
    existing = new_id()
    await phone.sync(upsert(existing, "mood_checkin", checkin(mood=5)))
    ok_before, dream, insight, ok_after = new_id(), new_id(), new_id(), new_id()

    body = await phone.sync(
        upsert(ok_before, "mood_checkin", checkin(mood=2)),
        upsert(dream, "dream_log", {"occurred_at": "2026-11-20T21:04:00+01:00"}),
        upsert(insight, "weekly_insight", {"week_start": "2026-11-16"}),
        upsert(existing, "mood_checkin", {"mood": 9}, base=5),
        upsert(ok_after, "journal_entry", journal()),
    )

    assert statuses(body) == ["applied", "rejected", "rejected", "rejected", "applied"]
    errors = [result["error"] for result in body["results"]]
    assert (errors[1]["code"], errors[1]["path"]) == ("unknown_kind", "kind")
    assert (errors[2]["code"], errors[2]["path"]) == ("read_only_kind", "kind")
    assert (errors[3]["code"], errors[3]["path"]) == ("base_version_ahead", "base_version")
    assert all(error["message"] for error in errors[1:4])
    assert errors[0] is None
    assert errors[4] is None
    assert (await get_record(client, tokens, "dream_log", dream)).status_code == 404
    assert (await get_record(client, tokens, "weekly_insight", insight)).status_code == 404
    untouched = await current(client, tokens, "mood_checkin", existing)
    assert (untouched["version"], untouched["data"]["mood"]) == (1, 5)
    assert (await current(client, tokens, "mood_checkin", ok_before))["data"]["mood"] == 2
    assert (await current(client, tokens, "journal_entry", ok_after))["version"] == 1


INVALID_CASES = [
    pytest.param("mood_checkin", checkin(mood="seven"), "data.mood", None, id="wrong-type"),
    pytest.param("mood_checkin", checkin(mood=11), "data.mood", r"\b10\b", id="range"),
    pytest.param(
        "activity",
        {"occurred_at": "2026-11-20T09:00:00Z", "category": "chores", "description": "x", "with_others": False},
        "data.category",
        r"enjoyment",
        id="enum",
    ),
    pytest.param("journal_entry", journal(body="a" * 20_001), "data.body", r"20[,.\s]?000", id="text-too-long"),
    pytest.param(
        "mood_checkin", checkin(tags=[f"t{i}" for i in range(51)]), "data.tags", r"\b50\b", id="list-too-long"
    ),
    pytest.param("mood_checkin", checkin(x=1), "data.x", None, id="unknown-field"),
    pytest.param(
        "assessment",
        {"occurred_at": "2026-11-20T09:00:00Z", "instrument": "who5", "answers": [3, 3, 3, 3, 3], "score": 25},
        "data.score",
        None,
        id="server-set-field",
    ),
]


@pytest.mark.parametrize(("kind", "data", "path", "limit"), INVALID_CASES)
async def test_an_invalid_mutation_is_rejected_naming_the_field_and_the_batch_goes_on(
    client: Client, kind: str, data: dict[str, Any], path: str, limit: str | None
) -> None:
    tokens = await anonymous(client)
    phone = Phone(client, tokens)
    before, bad, after = new_id(), new_id(), new_id()

    body = await phone.sync(
        upsert(before, "mood_checkin", checkin(mood=4)),
        upsert(bad, kind, data),
        upsert(after, "mood_checkin", checkin(mood=6)),
    )

    assert statuses(body) == ["applied", "rejected", "applied"]
    error = body["results"][1]["error"]
    assert (error["code"], error["path"]) == ("invalid", path)
    assert error["message"]
    if limit is not None:
        assert re.search(limit, error["message"]), error["message"]
    assert (await get_record(client, tokens, kind, bad)).status_code == 404
    assert (await manifest(client, tokens))["records"] == 2


async def test_preferences_must_carry_the_user_id(client: Client) -> None:
    tokens = await anonymous(client)
    phone = Phone(client, tokens)
    prefs = {"timezone": "Europe/Berlin", "weekly_day": "fri"}

    body = await phone.sync(upsert(new_id(), "preferences", prefs), upsert(tokens["user_id"], "preferences", prefs))

    assert statuses(body) == ["rejected", "applied"]
    error = body["results"][0]["error"]
    assert (error["code"], error["path"]) == ("invalid", "id")
    saved = await current(client, tokens, "preferences", tokens["user_id"])
    assert (saved["data"]["timezone"], saved["data"]["weekly_day"]) == ("Europe/Berlin", "fri")


async def test_one_record_created_then_updated_twice_in_one_batch_applies_in_order(client: Client) -> None:
    tokens = await anonymous(client)
    phone = Phone(client, tokens)
    record = new_id()
    start = datetime.now(UTC) - timedelta(minutes=3)

    body = await phone.sync(
        upsert(record, "journal_entry", journal(body="First draft.", tags=["evening"]), at=start),
        upsert(record, "journal_entry", {"body": "Second draft."}, base=1, at=start + timedelta(minutes=1)),
        upsert(record, "journal_entry", {"title": "Kinder words"}, base=2, at=start + timedelta(minutes=2)),
    )

    assert statuses(body) == ["applied", "applied", "applied"]
    assert [r["version"] for r in body["results"]] == [1, 2, 3]
    now = await current(client, tokens, "journal_entry", record)
    assert now["version"] == 3
    assert (now["data"]["body"], now["data"]["title"], now["data"]["tags"]) == (
        "Second draft.",
        "Kinder words",
        ["evening"],
    )
    versions = await history(client, tokens, "journal_entry", record)
    assert [(v["version"], v["data"]["body"]) for v in versions] == [
        (3, "Second draft."),
        (2, "Second draft."),
        (1, "First draft."),
    ]


async def test_a_batch_becomes_visible_all_at_once(client: Client) -> None:
    """All accepted mutations of a batch commit together: a reader never sees half of one."""
    tokens = await anonymous(client)
    writer = Phone(client, tokens)
    size, batches = 150, 3
    observed: list[int] = []
    done = asyncio.Event()

    async def write() -> None:
        try:
            for _ in range(batches):
                body = await writer.sync(*(upsert(new_id(), "mood_checkin", checkin()) for _ in range(size)))
                assert set(statuses(body)) == {"applied"}
        finally:
            done.set()

    async def watch() -> None:
        while not done.is_set():
            observed.append((await manifest(client, tokens))["records"])
            await asyncio.sleep(0)

    await asyncio.gather(write(), watch())
    observed.append((await manifest(client, tokens))["records"])

    assert observed[-1] == size * batches
    assert any(0 < count < size * batches for count in observed), "the reader never overlapped the writes"
    assert all(count % size == 0 for count in observed), observed


# --- limits and refusals -------------------------------------------------------------------------


async def test_a_body_over_2_mib_is_413_naming_the_limit(client: Client) -> None:
    tokens = await anonymous(client)
    phone = Phone(client, tokens)
    body = phone.request([upsert(new_id(), "journal_entry", journal(body="a" * (2 * 1024 * 1024)))])

    response = await phone.post(body)

    problem = assert_problem(response, 413)
    assert re.search(r"2\s*MiB|2\s*MB|2097152|2,097,152", problem["detail"]), problem
    assert (await manifest(client, tokens))["records"] == 0


async def test_501_mutations_are_413_naming_the_limit_500(client: Client) -> None:
    tokens = await anonymous(client)
    phone = Phone(client, tokens)

    response = await phone.send([upsert(new_id(), "mood_checkin", checkin()) for _ in range(501)])

    problem = assert_problem(response, 413)
    assert re.search(r"\b500\b", problem["detail"]), problem
    assert (await manifest(client, tokens))["records"] == 0
    # 500 is allowed.
    allowed = await phone.sync(*(upsert(new_id(), "mood_checkin", checkin()) for _ in range(500)))
    assert statuses(allowed) == ["applied"] * 500


@pytest.mark.parametrize("pull_limit", [0, 1001])
async def test_a_pull_limit_outside_1_to_1000_is_422_naming_it(client: Client, pull_limit: int) -> None:
    tokens = await anonymous(client)
    phone = Phone(client, tokens)

    response = await phone.send([upsert(new_id(), "mood_checkin", checkin())], pull_limit=pull_limit)

    problem = assert_problem(response, 422, path="pull_limit")
    assert "pull_limit" in problem["detail"]
    assert (await manifest(client, tokens))["records"] == 0


async def test_an_unsupported_protocol_is_426_and_tells_the_app_to_keep_its_changes(client: Client) -> None:
    tokens = await anonymous(client)
    phone = Phone(client, tokens)

    response = await phone.send([upsert(new_id(), "mood_checkin", checkin())], protocol=2)

    problem = assert_problem(response, 426)
    assert problem["type"].endswith("protocol-unsupported")
    assert re.search(r"\bkeep\b", problem["detail"], re.IGNORECASE), problem["detail"]
    assert re.search(r"\bupdate\b", problem["detail"], re.IGNORECASE), problem["detail"]
    assert (await manifest(client, tokens))["records"] == 0
    # Protocol 1, said out loud, is fine.
    assert statuses(await phone.sync(upsert(new_id(), "mood_checkin", checkin()), protocol=1)) == ["applied"]


async def test_a_garbage_cursor_is_400(client: Client) -> None:
    tokens = await anonymous(client)
    phone = Phone(client, tokens)
    phone.cursor = "not-a-cursor!!"

    response = await phone.send([upsert(new_id(), "mood_checkin", checkin())])

    assert_problem(response, 400)
    assert (await manifest(client, tokens))["records"] == 0


async def test_a_cursor_older_than_the_retention_is_410_cursor_expired(client: Client, settings: Settings) -> None:
    tokens = await anonymous(client)
    phone = Phone(client, tokens)
    await phone.sync(upsert(new_id(), "mood_checkin", checkin()))
    old = datetime.now(UTC) - timedelta(days=settings.tombstone_retention_days + 1)
    phone.cursor = cursors.encode(1, old)

    response = await phone.send([])

    problem = assert_problem(response, 410)
    assert problem["type"].endswith("cursor-expired")
    # Starting over works and brings everything back.
    phone.cursor = None
    assert len((await phone.sync())["changes"]) == 1


async def test_an_unsupported_content_type_is_415(client: Client) -> None:
    tokens = await anonymous(client)
    phone = Phone(client, tokens)
    body = json.dumps(phone.request([upsert(new_id(), "mood_checkin", checkin())]))

    response = await client.post("/v1/sync", content=body, headers={**bearer(tokens), "Content-Type": "text/plain"})

    assert_problem(response, 415)
    assert (await manifest(client, tokens))["records"] == 0


async def test_sync_without_a_bearer_token_is_401(client: Client) -> None:
    tokens = await anonymous(client)
    phone = Phone(client, tokens)

    response = await client.post("/v1/sync", json=phone.request([upsert(new_id(), "mood_checkin", checkin())]))

    assert_problem(response, 401)
    assert_problem(await client.get("/v1/sync/manifest"), 401)
    assert_problem(await client.get(f"/v1/sync/batches/{new_id()}"), 401)
    assert (await manifest(client, tokens))["records"] == 0


# --- idempotency and receipts --------------------------------------------------------------------


async def test_the_same_batch_sent_five_times_at_once_applies_once_with_identical_results(
    client: Client, engine: AsyncEngine
) -> None:
    tokens = await anonymous(client)
    phone = Phone(client, tokens)
    ids = [new_id() for _ in range(4)]
    request = phone.request(
        [
            *(upsert(record, "mood_checkin", checkin(mood=3 + i)) for i, record in enumerate(ids)),
            upsert(ids[0], "mood_checkin", {"mood": 9}, base=1),
            upsert(new_id(), "dream_log", {}),
        ]
    )

    responses = await asyncio.gather(*(phone.post(request) for _ in range(5)))

    assert [r.status_code for r in responses] == [200] * 5, [r.text for r in responses]
    results = [r.json()["results"] for r in responses]
    assert all(result == results[0] for result in results[1:])
    assert [(r["status"], r["version"]) for r in results[0]] == [
        ("applied", 1),
        ("applied", 1),
        ("applied", 1),
        ("applied", 1),
        ("applied", 2),
        ("rejected", None),
    ]
    for record, versions in zip(ids, [[2, 1], [1], [1], [1]], strict=True):
        assert [v["version"] for v in await history(client, tokens, "mood_checkin", record)] == versions
    async with engine.connect() as conn:
        rows = await conn.scalar(
            select(func.count())
            .select_from(record_versions)
            .where(record_versions.c.user_id == uuid.UUID(tokens["user_id"]))
        )
    assert rows == 5
    assert (await manifest(client, tokens))["records"] == 4


async def test_the_same_batch_id_with_other_content_is_409(client: Client) -> None:
    tokens = await anonymous(client)
    phone = Phone(client, tokens)
    batch_id, first, second = new_id(), new_id(), new_id()
    await phone.sync(upsert(first, "mood_checkin", checkin()), batch_id=batch_id)

    response = await phone.send([upsert(second, "mood_checkin", checkin())], batch_id=batch_id)

    assert_problem(response, 409)
    assert (await get_record(client, tokens, "mood_checkin", second)).status_code == 404
    assert (await manifest(client, tokens))["records"] == 1


async def test_a_retry_of_a_batch_stored_under_the_earlier_request_hash_gets_its_answer(
    client: Client, engine: AsyncEngine
) -> None:
    """Receipts stored before the request hash was made of fingerprints keep the earlier hash."""
    tokens = await anonymous(client)
    phone = Phone(client, tokens)
    batch_id = new_id()
    request = phone.request(
        [upsert(new_id(), "mood_checkin", checkin()), upsert(new_id(), "nope", {})], batch_id=batch_id
    )
    first = await phone.post(request)
    earlier = sync_batch._request_hash_before_fingerprints(msgspec.convert(request, SyncRequest))
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE sync_batches SET request_hash = :hash WHERE batch_id = :batch"),
            {"hash": earlier, "batch": uuid.UUID(batch_id)},
        )

    again = await phone.post(request)
    other = await phone.send([upsert(new_id(), "mood_checkin", checkin())], batch_id=batch_id)

    assert again.status_code == 200, again.text
    assert again.json()["results"] == first.json()["results"]
    assert statuses(again.json()) == ["applied", "rejected"]
    assert_problem(other, 409)
    assert (await manifest(client, tokens))["records"] == 1


async def test_a_batch_receipt_returns_the_stored_results(client: Client) -> None:
    tokens = await anonymous(client)
    phone, other = Phone(client, tokens), Phone(client, tokens)
    record = new_id()
    await phone.sync(upsert(record, "mood_checkin", checkin(mood=4, tags=["a"])))
    await other.sync(upsert(record, "mood_checkin", {"tags": ["a", "b"]}, base=1))
    batch_id = new_id()
    sent = await phone.sync(
        upsert(record, "mood_checkin", {"tags": ["a", "c"]}, base=1),
        upsert(new_id(), "mood_checkin", checkin(mood=99)),
        upsert(new_id(), "journal_entry", journal()),
        batch_id=batch_id,
    )
    assert statuses(sent) == ["merged", "rejected", "applied"]

    response = await client.get(f"/v1/sync/batches/{batch_id}", headers=bearer(tokens))

    assert response.status_code == 200, response.text
    assert response.json() == {"batch_id": batch_id, "results": sent["results"]}


async def test_an_unknown_or_someone_elses_batch_receipt_is_404(client: Client) -> None:
    ada, bob = await signup(client, "ada@example.org"), await signup(client, "bob@example.org")
    batch_id = new_id()
    await Phone(client, ada).sync(upsert(new_id(), "mood_checkin", checkin()), batch_id=batch_id)
    assert (await client.get(f"/v1/sync/batches/{batch_id}", headers=bearer(ada))).status_code == 200

    unknown = await client.get(f"/v1/sync/batches/{new_id()}", headers=bearer(bob))
    others = await client.get(f"/v1/sync/batches/{batch_id}", headers=bearer(bob))

    assert_problem(unknown, 404)
    assert_problem(others, 404)
    assert others.json() == unknown.json()


# --- pull ----------------------------------------------------------------------------------------


async def test_a_second_device_pulls_everything_from_a_null_cursor(client: Client) -> None:
    tokens = await anonymous(client)
    phone, tablet = Phone(client, tokens), Phone(client, tokens)
    mood, entry = new_id(), new_id()
    await phone.sync(
        upsert(mood, "mood_checkin", checkin(mood=6, emotions=["calm", "tired", "calm"])),
        upsert(entry, "journal_entry", journal(body="I was gentle with myself today.")),
    )

    body = await tablet.sync()

    assert body["has_more"] is False
    assert [(c["id"], c["kind"], c["version"], c["deleted"]) for c in body["changes"]] == [
        (mood, "mood_checkin", 1, False),
        (entry, "journal_entry", 1, False),
    ]
    assert body["changes"][0]["data"]["mood"] == 6
    assert body["changes"][0]["data"]["emotions"] == ["calm", "tired"]
    assert body["changes"][1]["data"]["body"] == "I was gentle with myself today."
    # Nothing more the next time round.
    assert (await tablet.sync())["changes"] == []


async def test_a_request_does_not_echo_its_own_changes(client: Client) -> None:
    tokens = await anonymous(client)
    phone, tablet = Phone(client, tokens), Phone(client, tokens)
    theirs, mine = new_id(), new_id()
    await tablet.sync(upsert(theirs, "mood_checkin", checkin(mood=2)))

    body = await phone.sync(upsert(mine, "mood_checkin", checkin(mood=8)))

    assert statuses(body) == ["applied"]
    assert [c["id"] for c in body["changes"]] == [theirs]
    # The next pull does not bring it back either: the cursor is past it.
    assert (await phone.sync())["changes"] == []
    assert [c["id"] for c in (await tablet.sync())["changes"]] == [mine]


async def test_a_record_a_request_changes_comes_back_in_its_result_not_as_the_older_change(client: Client) -> None:
    """The tablet changed two records; the phone, not yet up to date, edits one of them. Its answer
    brings the other one, and the edited one only as its result (merged with the tablet's
    change), never the tablet's older version of it among the changes."""
    tokens = await anonymous(client)
    phone, tablet = Phone(client, tokens), Phone(client, tokens)
    edited, other = new_id(), new_id()
    await tablet.sync(upsert(edited, "mood_checkin", checkin(mood=2)), upsert(other, "mood_checkin", checkin(mood=3)))
    await phone.sync()
    await tablet.sync(
        upsert(edited, "mood_checkin", {"mood": 4}, base=1), upsert(other, "mood_checkin", {"mood": 5}, base=1)
    )

    body = await phone.sync(upsert(edited, "mood_checkin", {"note": "after a walk"}, base=1))

    [result] = body["results"]
    assert (result["version"], result["record"]["data"]["mood"]) == (3, 4)
    assert [(c["id"], c["version"]) for c in body["changes"]] == [(other, 2)]
    assert (await phone.sync())["changes"] == []


async def test_paging_brings_every_record_once_in_change_order(client: Client) -> None:
    tokens = await anonymous(client)
    phone, tablet = Phone(client, tokens), Phone(client, tokens)
    ids = [new_id() for _ in range(10)]
    await phone.sync(*(upsert(record, "mood_checkin", checkin(mood=i + 1)) for i, record in enumerate(ids)))
    await phone.sync(upsert(ids[0], "mood_checkin", {"mood": 10}, base=1))

    pages = []
    while True:
        body = await tablet.sync(pull_limit=3)
        pages.append(body)
        if not body["has_more"]:
            break
        assert len(pages) < 10, "paging never ends"

    assert [len(page["changes"]) for page in pages] == [3, 3, 3, 1]
    assert [page["has_more"] for page in pages] == [True, True, True, False]
    pulled = [(c["id"], c["version"]) for page in pages for c in page["changes"]]
    assert pulled == [(record, 1) for record in ids[1:]] + [(ids[0], 2)]
    assert (await tablet.sync(pull_limit=3))["changes"] == []


async def test_a_deleted_record_arrives_as_a_tombstone(client: Client) -> None:
    tokens = await anonymous(client)
    phone, tablet = Phone(client, tokens), Phone(client, tokens)
    record = new_id()
    await phone.sync(upsert(record, "journal_entry", journal(body="Too raw to keep.")))
    assert [c["id"] for c in (await tablet.sync())["changes"]] == [record]

    removed = await phone.sync(delete(record, "journal_entry", base=1))
    assert (statuses(removed), removed["results"][0]["version"]) == (["applied"], 2)

    changes = (await tablet.sync())["changes"]
    assert [(c["id"], c["version"], c["deleted"], c["data"]) for c in changes] == [(record, 2, True, {})]
    gone = await current(client, tokens, "journal_entry", record)
    assert (gone["deleted"], gone["data"]) == (True, {})


async def test_a_pull_during_concurrent_writes_of_three_devices_misses_nothing(client: Client) -> None:
    tokens = await anonymous(client)
    writers = [Phone(client, tokens) for _ in range(3)]
    reader = Phone(client, tokens)
    created: set[str] = set()
    pulled: list[tuple[str, int]] = []
    overlapped: list[int] = []  # changes pulled while the writers were still at it
    writing = 3

    async def write(phone: Phone) -> None:
        nonlocal writing
        try:
            for _ in range(6):
                batch = [upsert(new_id(), "mood_checkin", checkin()) for _ in range(5)]
                body = await phone.sync(*batch)
                assert statuses(body) == ["applied"] * 5
                created.update(m["id"] for m in batch)
        finally:
            writing -= 1

    async def read() -> None:
        while True:
            writers_done = writing == 0
            body = await reader.sync(pull_limit=4)
            pulled.extend((c["id"], c["version"]) for c in body["changes"])
            if not writers_done:
                overlapped.append(len(body["changes"]))
            if writers_done and not body["has_more"]:
                return
            await asyncio.sleep(0)

    await asyncio.gather(read(), *(write(phone) for phone in writers))

    assert len(created) == 90
    assert {record for record, _ in pulled} == created
    assert len(pulled) == len(set(pulled)), "a record was pulled twice at the same version"
    assert sum(overlapped) > 0, "the reader never pulled while the writers wrote"


async def _a_journal_entry_on_two_devices(client: Client) -> tuple[dict[str, Any], Phone, str]:
    """A person's journal entry, written on their phone and pulled by their tablet."""
    tokens = await anonymous(client)
    phone, tablet = Phone(client, tokens), Phone(client, tokens)
    record = new_id()
    await phone.sync(upsert(record, "journal_entry", journal(body="morning pages")))
    await tablet.sync()
    return tokens, tablet, record


async def _write_as_another_device(holder: Any, user_id: uuid.UUID, record: str, version: int, tags: list[str]) -> None:
    """Another device's write, as a batch makes one: under the person's lock (held until `holder`
    commits), a version `version` of the journal entry with other tags."""
    await holder.exec_driver_sql("SELECT 1 FROM sync_state WHERE user_id = $1 FOR UPDATE", (user_id,))
    await holder.exec_driver_sql(
        "INSERT INTO record_versions (user_id, record_id, version, kind, deleted, data, sealed, changed_at, "
        "device_id) SELECT user_id, record_id, $3, kind, deleted, jsonb_set(data, '{tags}', $4::jsonb), "
        "sealed, now(), $5 FROM record_versions WHERE user_id = $1 AND record_id = $2 AND version = $3 - 1",
        (user_id, uuid.UUID(record), version, json.dumps(tags), uuid.uuid4()),
    )
    row = (
        await holder.execute(
            text("SELECT stamps, changed_at, device_id FROM records WHERE id = :id"), {"id": uuid.UUID(record)}
        )
    ).one()
    stamps = sync_queries.open_stamps(*row)
    stamps["tags"] = Stamp(at=datetime.now(UTC), device=uuid.uuid4())
    await holder.exec_driver_sql(
        "UPDATE records SET version = $4, data = jsonb_set(data, '{tags}', $5::jsonb), stamps = $3, "
        "changed_at = now(), seq = (SELECT last_seq + 1 FROM sync_state WHERE user_id = $1) "
        "WHERE user_id = $1 AND id = $2",
        (user_id, uuid.UUID(record), msgspec.msgpack.encode(stamps), version, json.dumps(tags)),
    )
    await holder.exec_driver_sql("UPDATE sync_state SET last_seq = last_seq + 1 WHERE user_id = $1", (user_id,))


async def _blocked_by(engine: AsyncEngine, holder: Any, waiting: int = 1) -> bool:
    """Whether `waiting` sessions wait for a lock `holder` holds, within five seconds."""
    pid = await holder.scalar(text("SELECT pg_backend_pid()"))
    async with engine.connect() as watcher:
        for _ in range(100):
            blocked = await watcher.scalar(
                text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"), {"pid": pid}
            )
            if blocked >= waiting:
                return True
            await asyncio.sleep(0.05)
    return False


async def _edit_while_another_device_writes(
    engine: AsyncEngine, tablet: Phone, record: str, *, written: str
) -> httpx.Response:
    """The tablet edits `record` while another device's write (a version 2 of `written`, with
    other tags) holds the person's lock; the write commits once the tablet's batch waits for it."""
    user_id = uuid.UUID(tablet.tokens["user_id"])
    async with engine.connect() as holder:
        await _write_as_another_device(holder, user_id, written, 2, ["rain"])
        edit = asyncio.ensure_future(tablet.send([upsert(record, "journal_entry", {"body": "evening pages"}, base=1)]))
        assert await _blocked_by(engine, holder), "the tablet's batch never waited for the other write"
        await holder.commit()
    response = await edit
    assert response.status_code == 200, response.text
    return response


@pytest.mark.parametrize("optimistic_attempts", [2, 0], ids=["checked-at-write", "under-the-lock"])
async def test_an_edit_waiting_for_another_write_to_the_same_record_builds_on_that_write(
    client: Client, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch, optimistic_attempts: int
) -> None:
    """Another device's write holds the person's lock, changing the record a batch edits. Once it
    commits, the batch must see that version, not the one it read first, and merge with it:
    whether the batch read without the lock and waits at its write (which must then find it was
    overtaken and run again), or waits for the lock (reading in the snapshot from before it waited)."""
    monkeypatch.setattr(sync_batch, "OPTIMISTIC_ATTEMPTS", optimistic_attempts)
    tokens, tablet, record = await _a_journal_entry_on_two_devices(client)

    response = await _edit_while_another_device_writes(engine, tablet, record, written=record)
    [result] = response.json()["results"]
    assert result["version"] == 3
    assert (result["record"]["data"]["body"], result["record"]["data"]["tags"]) == ("evening pages", ["rain"])
    assert [v["version"] for v in await history(client, tokens, "journal_entry", record)] == [3, 2, 1]


async def test_a_batch_from_a_device_pages_behind_gets_one_page_and_the_rest_after(client: Client) -> None:
    """The page sent with a batch's results ends where a pull's would: the device pulls on from
    there and gets every change once, none skipped."""
    tokens = await anonymous(client)
    phone, tablet = Phone(client, tokens), Phone(client, tokens)
    written = [new_id() for _ in range(5)]
    await phone.sync(*(upsert(record, "mood_checkin", checkin()) for record in written))

    answer = await tablet.sync(upsert(new_id(), "mood_checkin", checkin()), pull_limit=2)
    assert [r["status"] for r in answer["results"]] == ["applied"]
    assert answer["has_more"]
    pulled = [c["id"] for c in answer["changes"]] + [c["id"] for c in await tablet.pull_all(pull_limit=2)]
    assert [record for record in pulled if record in written] == written


@pytest.mark.parametrize("optimistic_attempts", [2, 0], ids=["checked-at-write", "under-the-lock"])
async def test_a_change_committed_while_a_batch_waits_is_sent_with_its_answer(
    client: Client, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch, optimistic_attempts: int
) -> None:
    """Another device's write to another record commits while a batch waits for it. The batch's
    answer must send that change: its device's new position is past it, so a page read before
    the write (in the snapshot the batch first read, or the lock's from before it waited) would
    skip it for good."""
    monkeypatch.setattr(sync_batch, "OPTIMISTIC_ATTEMPTS", optimistic_attempts)
    tokens, tablet, record = await _a_journal_entry_on_two_devices(client)
    phone = Phone(client, tokens)
    other = new_id()
    await phone.sync(upsert(other, "journal_entry", journal(body="a second page")))
    await tablet.sync()

    response = await _edit_while_another_device_writes(engine, tablet, record, written=other)
    answer = response.json()
    assert [r["version"] for r in answer["results"]] == [2]
    assert [(c["id"], c["version"], c["data"]["tags"]) for c in answer["changes"]] == [(other, 2, ["rain"])]
    tablet.cursor = answer["cursor"]
    assert (await tablet.sync())["changes"] == [], "nothing is left for the tablet, nor sent twice"


async def test_a_batch_overtaken_on_each_try_without_the_lock_merges_with_every_write_under_it(
    client: Client, engine: AsyncEngine
) -> None:
    """Two other writes in a row come between a batch's read and its write: it is tried again,
    then under the person's lock, and merges with both; nothing is written twice."""
    tokens, tablet, record = await _a_journal_entry_on_two_devices(client)
    user_id = uuid.UUID(tokens["user_id"])

    async with engine.connect() as first, engine.connect() as second:
        await _write_as_another_device(first, user_id, record, 2, ["rain"])
        edit = asyncio.ensure_future(tablet.send([upsert(record, "journal_entry", {"body": "evening pages"}, base=1)]))
        assert await _blocked_by(engine, first), "the batch's write never waited for the first"
        # The second write queues for the lock behind the batch's write, and takes it as the first
        # commits: the batch, overtaken, reads again and waits for the second.
        queued = asyncio.ensure_future(_write_as_another_device(second, user_id, record, 3, ["rain", "walk"]))
        assert await _blocked_by(engine, first, waiting=2), "the second write never queued for the lock"
        await first.commit()
        await queued
        assert await _blocked_by(engine, second), "the batch's second try never waited for the second"
        await second.commit()

    response = await edit
    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    assert result["version"] == 4
    assert (result["record"]["data"]["body"], result["record"]["data"]["tags"]) == ("evening pages", ["rain", "walk"])
    assert [v["version"] for v in await history(client, tokens, "journal_entry", record)] == [4, 3, 2, 1]


# --- batches of new records ----------------------------------------------------------------------


async def _a_person_whose_key_the_api_holds(client: Client) -> tuple[Any, Phone, Phone]:
    """A person with a phone and a tablet, after batches that leave their data key with the API
    process: from then on a batch of new records is written with nothing read first."""
    tokens = await anonymous(client)
    phone, tablet = Phone(client, tokens), Phone(client, tokens)
    await phone.sync(upsert(new_id(), "journal_entry", journal(body="first words")))
    await phone.sync(upsert(new_id(), "mood_checkin", checkin()))
    await tablet.sync()
    return tokens, phone, tablet


def _tries_of_new_batches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What became of each batch written as new records: "written", "not new" (a record, its
    history or the batch's receipt was stored: nothing written) or "key changed"."""
    tries: list[str] = []
    save_new_batch = sync_queries.save_new_batch

    async def spy(*args: Any, **kwargs: Any) -> Any:
        try:
            saved = await save_new_batch(*args, **kwargs)
        except asyncpg.UniqueViolationError:
            tries.append("not new")
            raise
        tries.append("written" if saved is not None else "key changed")
        return saved

    monkeypatch.setattr(sync_queries, "save_new_batch", spy)
    return tries


def _nothing_read_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make reading a batch's start fail: what is sent then must be written without it."""

    async def read_start(*_: Any, **__: Any) -> None:
        raise AssertionError("a batch of new records read its start before writing")

    monkeypatch.setattr(sync_queries, "read_start", read_start)


async def test_a_batch_of_new_records_is_written_in_one_statement_with_the_changes_for_its_device(
    client: Client, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The statement that writes the batch also reads the page its device is sent: the phone's
    entry written since the tablet's last sync, once, and the tablet's position past both."""
    _, phone, tablet = await _a_person_whose_key_the_api_holds(client)
    written = new_id()
    await phone.sync(upsert(written, "journal_entry", journal(body="from the phone")))
    _nothing_read_first(monkeypatch)

    mine = [new_id() for _ in range(3)]
    answer = await tablet.sync(*(upsert(record, "mood_checkin", checkin(mood=3)) for record in mine))

    assert [(r["id"], r["status"], r["version"]) for r in answer["results"]] == [(r, "applied", 1) for r in mine]
    assert [(c["id"], c["data"]["body"]) for c in answer["changes"]] == [(written, "from the phone")]
    assert not answer["has_more"]
    async with engine.connect() as conn:
        remembered = await conn.scalar(
            text("SELECT seq FROM device_cursors WHERE device_id = :device"), {"device": tablet.id}
        )
    assert remembered == cursors.decode(answer["cursor"]).seq, "purges wait for the position the tablet was given"
    assert (await tablet.sync())["changes"] == [], "nothing is sent twice, not even its own"
    assert [c["id"] for c in (await phone.sync())["changes"]] == mine


async def test_a_batch_of_new_records_from_a_device_pages_behind_gets_one_page_and_the_rest_after(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, phone, tablet = await _a_person_whose_key_the_api_holds(client)
    written = [new_id() for _ in range(5)]
    await phone.sync(*(upsert(record, "mood_checkin", checkin()) for record in written))
    _nothing_read_first(monkeypatch)

    mine = new_id()
    answer = await tablet.sync(upsert(mine, "mood_checkin", checkin()), pull_limit=2)

    assert [r["status"] for r in answer["results"]] == ["applied"]
    assert answer["has_more"]
    pulled = [c["id"] for c in answer["changes"]] + [c["id"] for c in await tablet.pull_all(pull_limit=2)]
    assert pulled == [*written, mine], "its own record comes after the page it was answered with"


async def test_a_batch_of_new_records_sent_again_after_a_lost_answer_gets_the_same_answer(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens, phone, _ = await _a_person_whose_key_the_api_holds(client)
    tries = _tries_of_new_batches(monkeypatch)
    records = [new_id() for _ in range(3)]
    batch = phone.request([upsert(record, "journal_entry", journal(body="said once")) for record in records])

    first, again = await phone.post(batch), await phone.post(batch)

    assert first.status_code == again.status_code == 200, again.text
    assert tries == ["written", "not new"]
    assert again.json()["results"] == first.json()["results"]
    for record in records:
        assert [v["version"] for v in await history(client, tokens, "journal_entry", record)] == [1]


@pytest.mark.parametrize(
    ("sent", "tried"),
    [(journal(body="a second draft"), ["not new"]), ({"body": "a second draft"}, [])],
    ids=["whole", "some-fields"],
)
async def test_a_record_created_again_with_base_version_0_is_applied_over_the_one_stored(
    client: Client, monkeypatch: pytest.MonkeyPatch, sent: dict[str, Any], tried: list[str]
) -> None:
    """An entry made offline and edited before its create was answered is sent again on base
    version 0: it is the stored record's next version, not a second record. Sent whole, it is
    tried as a new record and found stored; with some fields only, it is not even tried: as a
    new record it would be refused."""
    tokens, phone, _ = await _a_person_whose_key_the_api_holds(client)
    record = new_id()
    await phone.sync(upsert(record, "journal_entry", journal(body="a first draft")))
    tries = _tries_of_new_batches(monkeypatch)

    answer = await phone.sync(upsert(record, "journal_entry", sent))

    assert tries == tried
    assert [(r["status"], r["version"]) for r in answer["results"]] == [("applied", 2)]
    assert (await current(client, tokens, "journal_entry", record))["data"]["body"] == "a second draft"
    assert [v["version"] for v in await history(client, tokens, "journal_entry", record)] == [2, 1]


async def test_a_create_sent_again_after_its_deleted_record_was_purged_is_a_duplicate(
    client: Client, engine: AsyncEngine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record's row is gone, its history is not: the create is recognised, not made again."""
    tokens, phone, tablet = await _a_person_whose_key_the_api_holds(client)
    record = new_id()
    create = upsert(record, "mood_checkin", checkin())
    await phone.sync(create)
    await phone.sync(delete(record, "mood_checkin", base=1))
    await tablet.sync()
    async with engine.begin() as conn:
        old = datetime.now(UTC) - timedelta(days=settings.tombstone_retention_days + 1)
        await conn.execute(text("UPDATE records SET updated_at = :old WHERE id = :id"), {"old": old, "id": record})
    assert await purge_tombstones({"engine": engine, "settings": settings}) == 1
    tries = _tries_of_new_batches(monkeypatch)

    answer = await phone.sync(create)

    assert tries == ["not new"]
    assert [(r["status"], r["version"]) for r in answer["results"]] == [("duplicate", 1)]
    assert_problem(await get_record(client, tokens, "mood_checkin", record), 404)


async def _deleted_and_purged(
    client: Client, engine: AsyncEngine, settings: Settings, *, deleted_by: str
) -> tuple[dict[str, Any], Phone, str]:
    """A person's entry written on their phone, deleted on `deleted_by` ("phone" or "tablet"), and
    its tombstone purged once both devices had the delete: its history stays."""
    tokens, phone, tablet = await _a_person_whose_key_the_api_holds(client)
    record = new_id()
    await phone.sync(upsert(record, "journal_entry", journal(body="a first draft")))
    await tablet.sync()
    await {"phone": phone, "tablet": tablet}[deleted_by].sync(delete(record, "journal_entry", base=1))
    await phone.sync()
    await tablet.sync()
    async with engine.begin() as conn:
        old = datetime.now(UTC) - timedelta(days=settings.tombstone_retention_days + 1)
        await conn.execute(text("UPDATE records SET updated_at = :old WHERE id = :id"), {"old": old, "id": record})
    assert await purge_tombstones({"engine": engine, "settings": settings}) == 1
    return tokens, phone, record


@pytest.mark.parametrize(
    ("sent", "tried"),
    [(journal(body="a second draft"), ["not new"]), ({"body": "a second draft"}, [])],
    ids=["whole", "some-fields"],
)
@pytest.mark.parametrize("deleted_by", ["phone", "tablet"])
async def test_a_record_created_again_after_it_was_deleted_and_purged_comes_back_after_its_history(
    client: Client,
    engine: AsyncEngine,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    sent: dict[str, Any],
    tried: list[str],
    deleted_by: str,
) -> None:
    """The entry's row is gone, its history is not. Sent again on base version 0 with other
    words, later than the delete, it is brought back as the version after its history, as it
    would have been over its tombstone: nothing clashes with what history holds."""
    tokens, phone, record = await _deleted_and_purged(client, engine, settings, deleted_by=deleted_by)
    tries = _tries_of_new_batches(monkeypatch)

    answer = await phone.sync(upsert(record, "journal_entry", sent))

    assert tries == tried
    assert [(r["status"], r["version"]) for r in answer["results"]] == [
        ("applied" if deleted_by == "phone" else "merged", 3)
    ]
    back = await current(client, tokens, "journal_entry", record)
    assert (back["version"], back["data"]["body"]) == (3, "a second draft")
    assert [v["version"] for v in await history(client, tokens, "journal_entry", record)] == [3, 2, 1]


@pytest.mark.parametrize("tombstone", ["kept", "purged"])
async def test_a_record_brought_back_after_a_purge_merges_as_it_would_have_over_its_tombstone(
    client: Client, engine: AsyncEngine, settings: Settings, tombstone: str
) -> None:
    """Brought back with a new body after its tombstone was purged, an entry's other fields keep
    stamps no later than the delete: a laptop's offline title, written after the delete, still
    wins, as it does while the tombstone is kept."""
    tokens, phone, tablet = await _a_person_whose_key_the_api_holds(client)
    laptop = Phone(client, tokens)
    t0 = datetime.now(UTC) - timedelta(hours=6)
    record = new_id()
    await phone.sync(upsert(record, "journal_entry", journal(title="A", body="first"), at=t0))
    await phone.sync(delete(record, "journal_entry", base=1, at=t0 + timedelta(hours=1)))
    await tablet.sync()
    if tombstone == "purged":
        async with engine.begin() as conn:
            old = datetime.now(UTC) - timedelta(days=settings.tombstone_retention_days + 1)
            await conn.execute(text("UPDATE records SET updated_at = :old WHERE id = :id"), {"old": old, "id": record})
        assert await purge_tombstones({"engine": engine, "settings": settings}) == 1
    await phone.sync(upsert(record, "journal_entry", {"body": "back again"}, base=2, at=t0 + timedelta(hours=3)))

    answer = await laptop.sync(
        upsert(record, "journal_entry", journal(title="B", body="from the laptop"), at=t0 + timedelta(hours=2))
    )

    [result] = answer["results"]
    assert {c["field"]: c["resolution"] for c in result["conflicts"]}.get("title") == "kept_yours"
    assert (await current(client, tokens, "journal_entry", record))["data"]["title"] == "B"


async def test_a_batch_of_new_records_after_the_persons_key_was_destroyed_is_sealed_with_a_new_one(
    client: Client, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key the API holds is checked against the stored one as the batch is written: text
    sealed with a destroyed key could never be read again."""
    tokens, phone, _ = await _a_person_whose_key_the_api_holds(client)
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM data_keys WHERE user_id = :id"), {"id": tokens["user_id"]})
    tries = _tries_of_new_batches(monkeypatch)
    record = new_id()

    await phone.sync(upsert(record, "journal_entry", journal(body="still mine to read")))

    assert tries == ["key changed"]
    assert (await current(client, tokens, "journal_entry", record))["data"]["body"] == "still mine to read"


async def test_a_batch_of_new_records_waits_for_an_erase_destroying_the_key_and_is_not_sealed_with_it(
    client: Client, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key is destroyed by a transaction that commits after the batch's statement began: the
    statement waits for it and writes nothing with the destroyed key."""
    tokens, phone, _ = await _a_person_whose_key_the_api_holds(client)
    tries = _tries_of_new_batches(monkeypatch)
    record = new_id()

    async with engine.connect() as eraser:
        await eraser.execute(text("DELETE FROM data_keys WHERE user_id = :id"), {"id": tokens["user_id"]})
        batch = asyncio.ensure_future(phone.send([upsert(record, "journal_entry", journal(body="kept readable"))]))
        assert await _blocked_by(engine, eraser), "the batch never waited for the key's destruction"
        await eraser.commit()
    response = await batch

    assert response.status_code == 200, response.text
    assert tries == ["key changed"]
    assert (await current(client, tokens, "journal_entry", record))["data"]["body"] == "kept readable"


async def test_a_change_committed_while_a_batch_of_new_records_waits_is_sent_with_its_answer(
    client: Client, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another device's write commits after the batch's statement began and before it took its
    change numbers: the page the statement read misses that change, so it is read again after."""
    tokens, phone, tablet = await _a_person_whose_key_the_api_holds(client)
    other = new_id()
    await phone.sync(upsert(other, "journal_entry", journal(body="a second page")))
    await tablet.sync()
    _nothing_read_first(monkeypatch)
    user_id = uuid.UUID(tokens["user_id"])

    async with engine.connect() as holder:
        await _write_as_another_device(holder, user_id, other, 2, ["rain"])
        mine = new_id()
        batch = asyncio.ensure_future(tablet.send([upsert(mine, "mood_checkin", checkin())]))
        assert await _blocked_by(engine, holder), "the tablet's batch never waited for the other write"
        await holder.commit()
    response = await batch
    assert response.status_code == 200, response.text

    answer = response.json()
    assert [(r["id"], r["status"]) for r in answer["results"]] == [(mine, "applied")]
    assert [(c["id"], c["version"], c["data"]["tags"]) for c in answer["changes"]] == [(other, 2, ["rain"])]
    tablet.cursor = answer["cursor"]
    assert (await tablet.sync())["changes"] == [], "nothing is left for the tablet, nor sent twice"


# --- manifest ------------------------------------------------------------------------------------


async def test_the_manifest_counts_and_checksums_live_records(client: Client) -> None:
    tokens = await anonymous(client)
    phone = Phone(client, tokens)
    moods, entries = [new_id() for _ in range(3)], [new_id() for _ in range(2)]
    await phone.sync(
        *(upsert(record, "mood_checkin", checkin()) for record in moods),
        *(upsert(record, "journal_entry", journal()) for record in entries),
    )
    await phone.sync(
        delete(moods[0], "mood_checkin", base=1), upsert(entries[1], "journal_entry", {"title": "t"}, base=1)
    )
    live = {moods[1]: 1, moods[2]: 1, entries[0]: 1, entries[1]: 2}
    lines = "".join(f"{record}:{live[record]}\n" for record in sorted(live))

    body = await manifest(client, tokens)

    assert body["records"] == 4
    assert {kind: count for kind, count in body["by_kind"].items() if count} == {"mood_checkin": 2, "journal_entry": 2}
    assert body["checksum"] == hashlib.sha256(lines.encode()).hexdigest()


async def test_an_empty_account_has_an_empty_manifest(client: Client) -> None:
    tokens = await anonymous(client)

    body = await manifest(client, tokens)

    assert body["records"] == 0
    assert not any(body["by_kind"].values())
    assert body["checksum"] == hashlib.sha256(b"").hexdigest()


# --- isolation between people --------------------------------------------------------------------


async def test_one_person_never_sees_anothers_records(client: Client) -> None:
    ada, bob = await signup(client, "ada@example.org"), await signup(client, "bob@example.org")
    ada_phone, bob_phone = Phone(client, ada), Phone(client, bob)
    hers, his = new_id(), new_id()
    await ada_phone.sync(upsert(hers, "journal_entry", journal(body="Private words.")))
    await bob_phone.sync(upsert(his, "mood_checkin", checkin()))

    theirs = await get_record(client, bob, "journal_entry", hers)
    unknown = await get_record(client, bob, "journal_entry", new_id())
    assert_problem(theirs, 404)
    assert theirs.json() == unknown.json()
    their_history = await client.get(f"/v1/records/journal_entry/{hers}/history", headers=bearer(bob))
    unknown_history = await client.get(f"/v1/records/journal_entry/{new_id()}/history", headers=bearer(bob))
    assert_problem(their_history, 404)
    assert their_history.json() == unknown_history.json()
    assert "Private words." not in theirs.text + their_history.text

    pulled = await Phone(client, bob).pull_all()
    assert [c["id"] for c in pulled] == [his]
    assert (await manifest(client, bob))["records"] == 1


async def test_a_mutation_with_anothers_record_id_makes_ones_own_record(client: Client) -> None:
    ada, bob = await signup(client, "ada@example.org"), await signup(client, "bob@example.org")
    ada_phone, bob_phone = Phone(client, ada), Phone(client, bob)
    record = new_id()
    await ada_phone.sync(upsert(record, "mood_checkin", checkin(mood=4, note="hers")))

    ahead = await bob_phone.sync(upsert(record, "mood_checkin", {"mood": 1}, base=1))
    created = await bob_phone.sync(upsert(record, "mood_checkin", checkin(mood=9, note="his")))

    assert ahead["results"][0]["error"]["code"] == "base_version_ahead"
    assert (statuses(created), created["results"][0]["version"]) == (["applied"], 1)
    hers = await current(client, ada, "mood_checkin", record)
    his = await current(client, bob, "mood_checkin", record)
    assert (hers["version"], hers["data"]["mood"], hers["data"]["note"]) == (1, 4, "hers")
    assert (his["version"], his["data"]["mood"], his["data"]["note"]) == (1, 9, "his")
    assert len(await history(client, ada, "mood_checkin", record)) == 1
    assert (await ada_phone.sync())["changes"] == []


# --- MessagePack ---------------------------------------------------------------------------------


async def test_messagepack_in_messagepack_out_with_the_same_results_as_json(client: Client) -> None:
    packed_user, json_user = await anonymous(client), await anonymous(client)
    device = uuid.uuid4()
    packed_phone, json_phone = Phone(client, packed_user, device), Phone(client, json_user, device)
    at = datetime.now(UTC) - timedelta(minutes=1)
    record = new_id()
    mutations = [
        upsert(record, "mood_checkin", checkin(mood=6, tags=["b", "a"]), at=at),
        upsert(record, "mood_checkin", {"mood": 7}, base=1, at=at),
        upsert(new_id(), "mood_checkin", checkin(mood=0), at=at),
        upsert(new_id(), "weekly_insight", {}, at=at),
    ]
    request = packed_phone.request(mutations)

    packed = await client.post(
        "/v1/sync",
        content=msgspec.msgpack.encode(request),
        headers={**bearer(packed_user), "Content-Type": MSGPACK},
    )
    as_json = await json_phone.post(request)

    assert packed.status_code == 200, packed.content
    assert packed.headers["content-type"].startswith(MSGPACK)
    from_packed = msgspec.msgpack.decode(packed.content, type=SyncResponse)
    from_json = msgspec.json.decode(as_json.content, type=SyncResponse)
    assert [r.status for r in from_packed.results] == ["applied", "applied", "rejected", "rejected"]
    assert from_packed.results == from_json.results
    stored = await current(client, packed_user, "mood_checkin", record)
    assert (stored["version"], stored["data"]["mood"], stored["data"]["tags"]) == (2, 7, ["a", "b"])

    # Another device pulls through MessagePack and gets what JSON gives.
    packed_pull = await client.post(
        "/v1/sync",
        content=msgspec.msgpack.encode(Phone(client, packed_user).request([])),
        headers={**bearer(packed_user), "Content-Type": MSGPACK},
    )
    json_pull = await Phone(client, packed_user).send([])
    assert packed_pull.headers["content-type"].startswith(MSGPACK)
    changes = msgspec.msgpack.decode(packed_pull.content, type=SyncResponse).changes
    assert [c.data["mood"] for c in changes] == [7]
    assert changes == msgspec.json.decode(json_pull.content, type=SyncResponse).changes


async def test_accept_chooses_the_answer_format(client: Client) -> None:
    tokens = await anonymous(client)
    phone = Phone(client, tokens)
    packed_request = msgspec.msgpack.encode(phone.request([upsert(new_id(), "mood_checkin", checkin())]))

    as_json = await client.post(
        "/v1/sync",
        content=packed_request,
        headers={**bearer(tokens), "Content-Type": MSGPACK, "Accept": "application/json"},
    )
    as_packed = await phone.post(phone.request([upsert(new_id(), "mood_checkin", checkin())]), Accept=MSGPACK)

    assert as_json.status_code == 200, as_json.text
    assert as_json.headers["content-type"].startswith("application/json")
    assert [r["status"] for r in as_json.json()["results"]] == ["applied"]
    assert as_packed.status_code == 200, as_packed.content
    assert as_packed.headers["content-type"].startswith(MSGPACK)
    assert [r.status for r in msgspec.msgpack.decode(as_packed.content, type=SyncResponse).results] == ["applied"]


@pytest.mark.parametrize("packed", [False, True], ids=["json", "msgpack"])
async def test_a_nul_in_text_is_refused_where_it_is_and_its_escape_typed_as_text_is_kept(
    client: Client, packed: bool
) -> None:
    """A JSON body without the escape \\u0000 is checked without looking for a NUL in each string:
    one that has it, and every MessagePack body, is looked through."""
    tokens = await anonymous(client)
    phone = Phone(client, tokens)
    edited, kept, refused = new_id(), new_id(), new_id()
    await phone.sync(upsert(edited, "journal_entry", journal()))
    typed = "In code, \\u0000 stands for a NUL."
    request = phone.request(
        [
            upsert(kept, "journal_entry", journal(body=typed)),
            upsert(refused, "journal_entry", journal(body="before\x00after")),
            upsert(edited, "journal_entry", {"tags": ["ok", "bad\x00"]}, base=1),
        ]
    )

    if packed:
        response = await client.post(
            "/v1/sync", content=msgspec.msgpack.encode(request), headers={**bearer(tokens), "Content-Type": MSGPACK}
        )
        body = msgspec.to_builtins(msgspec.msgpack.decode(response.content))
    else:
        response = await phone.post(request)
        body = response.json()

    assert response.status_code == 200, response.content
    assert statuses(body) == ["applied", "rejected", "rejected"]
    errors = [(r["error"]["path"], r["error"]["message"]) for r in body["results"][1:]]
    assert errors == [("data.body", NUL_REFUSED), ("data.tags[1]", NUL_REFUSED)]
    assert (await current(client, tokens, "journal_entry", kept))["data"]["body"] == typed
    assert (await get_record(client, tokens, "journal_entry", refused)).status_code == 404
    assert (await current(client, tokens, "journal_entry", edited))["version"] == 1


async def test_a_nul_in_a_kind_refuses_the_request(client: Client) -> None:
    tokens = await anonymous(client)

    response = await Phone(client, tokens).send([upsert(new_id(), "mood\x00checkin", checkin())])

    assert_problem(response, 422, path="mutations[0].kind")


# --- server-set fields ---------------------------------------------------------------------------


async def test_a_phq9_sent_through_sync_is_pulled_with_score_and_band(client: Client) -> None:
    tokens = await anonymous(client)
    phone, tablet = Phone(client, tokens), Phone(client, tokens)
    record = new_id()
    answers = [3, 3, 2, 2, 1, 1, 1, 1, 0]

    sent = await phone.sync(
        upsert(record, "assessment", {"occurred_at": "2026-11-20T09:00:00Z", "instrument": "phq9", "answers": answers})
    )

    assert statuses(sent) == ["applied"]
    [change] = (await tablet.sync())["changes"]
    assert change["id"] == record
    assert change["data"]["answers"] == answers
    assert (change["data"]["score"], change["data"]["band"]) == (14, "moderate")
