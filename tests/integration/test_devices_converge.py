"""Three phones of one person, offline edits, any sync order or all at once, lost answers: one truth.

The reference client (tests/simulator.py) runs against the real endpoint.
Every device ends with the server's state, and every text anyone typed is in
that state or in the records' history.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from schemas.records import validate_full
from schemas.sync import SyncRequest, SyncResponse
from tests.integration.conftest import Client, anonymous, bearer
from tests.simulator import Device, Transport

WORDS = ("kind", "tired", "walk", "friend", "enough", "gentle", "rain", "slow", "worthy", "today", "breathe")


def http_transport(client: Client, tokens: Any, merged_in: set[str]) -> Transport:
    """Posts to the real endpoint; notes each text whose edits went into a merged text."""
    headers = {**bearer(tokens), "content-type": "application/json"}

    async def send(request: SyncRequest) -> SyncResponse:
        response = await client.post("/v1/sync", content=msgspec.json.encode(request), headers=headers)
        assert response.status_code == 200, response.text
        answer = msgspec.json.decode(response.content, type=SyncResponse)
        merged_in.update(c.yours for r in answer.results for c in r.conflicts if c.resolution == "merged_text")
        return answer

    return send


def whole(data: dict[str, Any]) -> dict[str, Any]:
    """What the app saves locally: the record as the shared schema normalises it."""
    return validate_full("journal_entry", data)


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))


@pytest.mark.parametrize("at_once", [False, True], ids=["one-after-another", "at-once"])
@pytest.mark.parametrize("seed", range(6))
async def test_devices_converge_and_no_text_is_lost(client: Client, seed: int, at_once: bool) -> None:
    """With `at_once`, the phones' batches (and a lost answer's re-send beside its first send) reach
    the server at the same moments: their reads and writes interleave, and a write that another
    came before is run again, then under the person's lock."""
    rng = random.Random(seed)
    tokens = await anonymous(client)
    merged_in: set[str] = set()
    send = http_transport(client, tokens, merged_in)
    phones = [Device() for _ in range(3)]
    clock = datetime.now(UTC) - timedelta(hours=1)
    typed: set[str] = set()
    ids: list[uuid.UUID] = []

    def tick() -> datetime:
        nonlocal clock
        clock += timedelta(seconds=rng.randint(1, 30))
        return clock

    for _ in range(4):  # a few records everyone starts from
        record_id, body = uuid.uuid4(), sentence(rng)
        typed.add(body)
        ids.append(record_id)
        phones[0].edit(
            "journal_entry",
            record_id,
            whole({"occurred_at": tick().isoformat(), "body": body, "tags": ["start"]}),
            tick(),
        )
    for phone in phones:
        await phone.sync(send)

    def create(phone: Device) -> None:
        new_id, body = uuid.uuid4(), sentence(rng)
        typed.add(body)
        ids.append(new_id)
        phone.edit("journal_entry", new_id, whole({"occurred_at": tick().isoformat(), "body": body}), tick())

    for _round in range(4):
        for phone in phones:  # offline edits
            if rng.random() < 0.3:
                # Only new entries: a batch the server writes with nothing read first.
                for _ in range(rng.randint(1, 3)):
                    create(phone)
                continue
            for _ in range(rng.randint(1, 3)):
                record_id = rng.choice(ids)
                current = phone.record(record_id)
                if current is None or current.deleted:
                    continue
                action = rng.random()
                if action < 0.6:
                    words = current.data["body"].split(" ")
                    words.insert(rng.randint(0, len(words)), rng.choice(WORDS))
                    body = " ".join(words)
                    typed.add(body)
                    phone.edit("journal_entry", record_id, {"body": body}, tick())
                elif action < 0.85:
                    phone.edit(
                        "journal_entry", record_id, {"tags": sorted({*current.data["tags"], rng.choice(WORDS)})}, tick()
                    )
                elif action < 0.95:
                    phone.delete(record_id, tick())
                else:
                    create(phone)
        order = phones[:]
        rng.shuffle(order)
        if at_once:
            batches = [(phone, phone.build_request(), rng.random() < 0.4) for phone in order]

            async def deliver(phone: Device, request: SyncRequest, lost: bool) -> None:
                answers = await asyncio.gather(*(send(request) for _ in range(2 if lost else 1)))
                phone.handle(request, answers[-1])

            await asyncio.gather(*(deliver(*batch) for batch in batches))
        else:
            for phone in order:  # syncs in any order, some answers lost and the batch re-sent
                request = phone.build_request()
                if rng.random() < 0.4:
                    await send(request)  # the answer never arrives
                phone.handle(request, await send(request))

    for _ in range(2):
        for phone in phones:
            await phone.sync(send)

    states = [{rid: (r.version, r.deleted, r.deleted or r.data) for rid, r in phone.store.items()} for phone in phones]
    assert states[0] == states[1] == states[2], "every device holds the same state"
    seen: set[str] = set()
    for record_id in ids:
        server = (await client.get(f"/v1/records/journal_entry/{record_id}", headers=bearer(tokens))).json()
        local = phones[0].store[record_id]
        assert (server["version"], server["deleted"]) == (local.version, local.deleted)
        if not server["deleted"]:
            assert server["data"] == local.data
        history = (await client.get(f"/v1/records/journal_entry/{record_id}/history", headers=bearer(tokens))).json()
        seen.update(version["data"].get("body", "") for version in history)
    # Each text is in some version as it was typed, or its edits went into a merged text.
    missing = typed - seen - merged_in
    assert not missing, f"texts lost: {missing}"
