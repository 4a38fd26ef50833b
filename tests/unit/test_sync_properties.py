"""Any interleaving of offline edits on several devices, synced in any order and
retried any number of times, converges and loses no text.

Devices run against the in-memory server (the pure merge rules), so thousands
of syncs run in seconds. A program is a list of steps; hypothesis shrinks a
failing one to the few steps that matter.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from uuid import UUID

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from schemas.sync import MutationResult, SyncRequest, SyncResponse
from tests.simulator import Device, MemoryServer, SyncRefused, fingerprint

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
# kind -> (its long-text field, its other field)
KINDS = {"journal_entry": ("body", "title"), "mood_checkin": ("note", "mood")}
KIND_NAMES = sorted(KINDS)
TAGS = ["calm", "family", "sleep", "walk", "work"]
TEXT_FIELDS = ("body", "note")


class Create(NamedTuple):
    device: int
    kind: int
    words: int
    tags: frozenset[str]
    value: int


class EditText(NamedTuple):
    device: int
    record: int
    edits: tuple[tuple[bool, int], ...]  # (insert a new word, else delete one; at this word position)


class EditTags(NamedTuple):
    device: int
    record: int
    add: frozenset[str]
    remove: frozenset[str]


class EditValue(NamedTuple):
    device: int
    record: int
    value: int


class Delete(NamedTuple):
    device: int
    record: int


class Tick(NamedTuple):
    minutes: int


class Sync(NamedTuple):
    device: int
    # ok | retry (sent `copies` more times) | lost (the response) | dropped (the request) | late_duplicate
    delivery: str
    copies: int
    pull_limit: int
    # With an unanswered request pending: send that one again, or give up on it and build a new one.
    resend: bool


class Replay(NamedTuple):
    """The network delivers some earlier request once more."""

    request: int


Step = Create | EditText | EditTags | EditValue | Delete | Tick | Sync | Replay


def steps(devices: int) -> st.SearchStrategy[list[Step]]:
    device = st.integers(0, devices - 1)
    record = st.integers(0, 15)
    tags = st.frozensets(st.sampled_from(TAGS), max_size=3)
    value = st.integers(1, 10)
    sync = st.builds(
        Sync,
        device,
        st.sampled_from(["ok", "ok", "retry", "lost", "dropped", "late_duplicate"]),
        st.integers(1, 2),
        st.sampled_from([1, 2, 500]),
        st.booleans(),
    )
    text_edits = st.lists(st.tuples(st.booleans(), st.integers(0, 8)), min_size=1, max_size=3).map(tuple)
    # (how often, what): sampled_from picks evenly, where one_of would favour its first branches.
    # Tick comes first: a failing program shrinks toward Tick(0), which does nothing.
    weighted: list[tuple[int, st.SearchStrategy[Step]]] = [
        (1, st.builds(Tick, st.sampled_from([0, 1, 3, 10]))),
        (2, st.builds(Create, device, st.integers(0, len(KINDS) - 1), st.integers(0, 4), tags, value)),
        (4, st.builds(EditText, device, record, text_edits)),
        (2, st.builds(EditTags, device, record, tags, tags)),
        (2, st.builds(EditValue, device, record, value)),
        (1, st.builds(Delete, device, record)),
        (5, sync),
        (1, st.builds(Replay, st.integers(0, 50))),
    ]
    step = st.sampled_from([strategy for weight, strategy in weighted for _ in range(weight)]).flatmap(lambda s: s)
    return st.lists(step, min_size=15, max_size=60)


class World:
    """Devices, a server, one shared true time, and what was written along the way."""

    def __init__(self, skews: list[int]) -> None:
        self.server = MemoryServer(now=T0)
        self.devices = [Device(UUID(int=index + 1)) for index in range(len(skews))]
        self.skews = [timedelta(minutes=skew) for skew in skews]
        self.now = T0
        self.counter = 0
        self.last_changed: dict[tuple[int, UUID], datetime] = {}
        self.texts: set[str] = set()
        self.words: set[str] = set()
        self.queued = 0  # mutations the devices queued
        self.requests: list[SyncRequest] = []  # built in the program, delivered or not
        self.delivered: set[bytes] = set()  # fingerprints of every mutation that reached the server
        self.first_results: dict[UUID, list[MutationResult]] = {}

    def next_id(self) -> UUID:
        self.counter += 1
        return UUID(int=0x1000 + self.counter)

    def new_word(self) -> str:
        self.counter += 1
        return f"w{self.counter}"

    def changed_at(self, device: int, record_id: UUID) -> datetime:
        """The device's clock (maybe wrong); strictly later than its last change of the record."""
        at = self.now + self.skews[device]
        last = self.last_changed.get((device, record_id))
        if last is not None and at <= last:
            at = last + timedelta(milliseconds=1)
        self.last_changed[device, record_id] = at
        return at

    def pick(self, device: Device, index: int) -> UUID | None:
        ids = sorted(device.store)
        return ids[index % len(ids)] if ids else None

    def edit(self, device_index: int, kind: str, record_id: UUID, fields: dict[str, Any]) -> None:
        for name in TEXT_FIELDS:
            if isinstance(fields.get(name), str):
                self.texts.add(fields[name])
                self.words.update(fields[name].split())
        if self.devices[device_index].edit(kind, record_id, fields, self.changed_at(device_index, record_id)):
            self.queued += 1

    async def send(self, request: SyncRequest) -> SyncResponse:
        self.server.now = self.now
        self.delivered.update(fingerprint(request.device_id, m) for m in request.mutations)
        response = await self.server(request)
        first = self.first_results.setdefault(request.batch_id, response.results)
        assert response.results == first, "a retry answers with the stored results"
        return response

    async def run(self, shared: int, program: list[Step]) -> None:
        """`shared` records made on the first device and seen by all, then the program,
        then every device syncs until it has sent and pulled everything."""
        for index in range(shared):
            await self.step(Create(0, index % len(KINDS), 3, frozenset(TAGS[:2]), 5))
        for device in self.devices:
            await device.sync(self.send)
        for step in program:
            await self.step(step)
        for _ in range(2):
            for device in self.devices:
                await device.sync(self.send)

    async def step(self, step: Step) -> None:
        match step:
            case Tick(minutes):
                self.now += timedelta(minutes=minutes)
            case Create(d, kind_index, length, initial_tags, value):
                kind = KIND_NAMES[kind_index]
                text_field, value_field = KINDS[kind]
                fields = {
                    text_field: " ".join(self.new_word() for _ in range(length)),
                    value_field: value if value_field == "mood" else f"title {value}",
                    "tags": sorted(initial_tags),
                }
                self.edit(d, kind, self.next_id(), fields)
            case EditText(d, index, edits):
                if (record_id := self.pick(self.devices[d], index)) is None:
                    return
                record = self.devices[d].store[record_id]
                text_field = KINDS[record.kind][0]
                words = str(record.data.get(text_field) or "").split()
                for insert, position in edits:
                    if insert:
                        words.insert(position % (len(words) + 1), self.new_word())
                    elif words:
                        del words[position % len(words)]
                self.edit(d, record.kind, record_id, {text_field: " ".join(words)})
            case EditTags(d, index, add, remove):
                if (record_id := self.pick(self.devices[d], index)) is None:
                    return
                record = self.devices[d].store[record_id]
                tags = sorted((set(record.data.get("tags") or []) | add) - remove)
                self.edit(d, record.kind, record_id, {"tags": tags})
            case EditValue(d, index, value):
                if (record_id := self.pick(self.devices[d], index)) is None:
                    return
                record = self.devices[d].store[record_id]
                value_field = KINDS[record.kind][1]
                self.edit(
                    d, record.kind, record_id, {value_field: value if value_field == "mood" else f"title {value}"}
                )
            case Delete(d, index):
                record_id = self.pick(self.devices[d], index)
                if record_id is not None and self.devices[d].delete(record_id, self.changed_at(d, record_id)):
                    self.queued += 1
            case Sync(d, delivery, copies, pull_limit, resend):
                await self.sync(self.devices[d], delivery, copies, pull_limit, resend)
            case Replay(index):
                if self.requests:
                    await self.send(self.requests[index % len(self.requests)])

    async def sync(self, device: Device, delivery: str, copies: int, pull_limit: int, resend: bool) -> None:
        pending = device.pending
        if pending is not None and resend:
            request = pending
        else:
            request = device.build_request(batch_id=self.next_id(), pull_limit=pull_limit)
            self.requests.append(request)
        if delivery == "dropped":
            return
        response = await self.send(request)
        if delivery == "lost":
            return
        for _ in range(copies if delivery == "retry" else 0):
            response = await self.send(request)
        device.handle(request, response)
        if delivery == "late_duplicate":
            await self.send(request)


def texts_of(data: dict[str, Any]) -> list[str]:
    return [value for name in TEXT_FIELDS if isinstance(value := data.get(name), str)]


def check(world: World) -> None:
    server = world.server
    state = server.state()

    for label in sorted(
        {result.status for results in world.first_results.values() for result in results}
        | {c.resolution for _, _, result in server.processed for c in result.conflicts}
    ):
        event(label)

    # (a) convergence: every device holds exactly what the server holds.
    for device in world.devices:
        assert device.queue == []
        assert device.store == state, f"device {device.device_id} differs from the server"

    # (b) no text lost: each text written is a version somewhere, or went into a merged text;
    # and every word ever typed is in some version.
    kept = {
        text for versions in server.history.values() for entry in versions.values() for text in texts_of(entry.data)
    }
    merged = {
        conflict.yours
        for _, _, result in server.processed
        for conflict in result.conflicts
        if conflict.resolution == "merged_text"
    }
    assert world.texts - kept - merged == set()
    words_kept = {word for text in kept for word in text.split()}
    assert world.words - words_kept == set()

    # (c) nothing applied twice: every mutation queued on a device ran the rules exactly once,
    # however often it was sent.
    ran = [fingerprint(device_id, mutation) for device_id, mutation, _ in server.processed]
    assert len(ran) == len(set(ran)) == world.queued
    assert set(ran) == world.delivered == set(server.applied_fingerprints)
    stamped = [version.fingerprint for version in server.written if version.fingerprint is not None]
    assert len(stamped) == len(set(stamped)), "one version per applied mutation"
    for index, version in enumerate(server.written):
        if version.fingerprint is None:  # a losing proposal, directly followed by its merged version
            after = server.written[index + 1]
            assert (after.record_id, after.version) == (version.record_id, version.version + 1)
    for record_id, versions in server.history.items():
        assert sorted(versions) == list(range(1, server.records[record_id].version + 1))
    assert sum(len(versions) for versions in server.history.values()) == len(server.written)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    skews=st.lists(st.sampled_from([-10, -1, 0, 0, 2, 10]), min_size=2, max_size=4),
    shared=st.integers(0, 3),
)
def test_devices_converge_and_lose_no_text(data: st.DataObject, skews: list[int], shared: int) -> None:
    program = data.draw(steps(len(skews)), label="program")
    world = World(skews)
    asyncio.run(world.run(shared, program))
    check(world)


# ---------------------------------------------------------------- the simulator itself


def mood(value: int, note: str = "") -> dict[str, Any]:
    return {"mood": value, "note": note, "tags": []}


async def test_a_retried_batch_returns_the_same_results_and_other_content_is_refused() -> None:
    server, device = MemoryServer(now=T0), Device(UUID(int=1))
    device.edit("mood_checkin", UUID(int=9), mood(4), T0)
    request = device.build_request()
    first, again = await server(request), await server(request)
    assert first.results == again.results
    assert [r.status for r in again.results] == ["applied"]
    assert server.records[UUID(int=9)].version == 1
    other = SyncRequest(device_id=request.device_id, batch_id=request.batch_id, mutations=[])
    with pytest.raises(SyncRefused) as refused:
        await server(other)
    assert refused.value.status == 409


async def test_two_records_deleted_at_the_same_instant_are_both_deleted() -> None:
    server, device = MemoryServer(now=T0), Device(UUID(int=1))
    first, second = UUID(int=10), UUID(int=11)
    device.edit("mood_checkin", first, mood(4), T0)
    device.edit("mood_checkin", second, mood(4), T0)
    await device.sync(server)
    device.delete(first, T0 + timedelta(minutes=1))
    device.delete(second, T0 + timedelta(minutes=1))
    await device.sync(server)
    assert server.records[first].deleted
    assert server.records[second].deleted


async def test_a_lost_response_then_a_new_batch_applies_nothing_twice() -> None:
    server, phone, tablet = MemoryServer(now=T0), Device(UUID(int=1)), Device(UUID(int=2))
    record_id = UUID(int=10)
    phone.edit("mood_checkin", record_id, mood(4, "a quiet morning"), T0)
    await phone.sync(server)
    await tablet.sync(server)
    phone.edit("mood_checkin", record_id, {"mood": 6}, T0 + timedelta(minutes=1))
    await server(phone.build_request())  # applied; the answer never reaches the phone
    tablet.edit("mood_checkin", record_id, {"note": "a quiet morning, then rain"}, T0 + timedelta(minutes=2))
    await tablet.sync(server)
    await phone.sync(server)  # a new batch: the mood change again, now a duplicate
    await tablet.sync(server)
    assert [r.status for _, _, r in server.processed] == ["applied", "applied", "merged"]
    assert phone.store == tablet.store == server.state()
    assert server.state()[record_id].data == {"mood": 6, "note": "a quiet morning, then rain", "tags": []}


async def test_an_edit_made_while_a_request_is_out_is_rebased_on_its_answer() -> None:
    server, phone, tablet = MemoryServer(now=T0), Device(UUID(int=1)), Device(UUID(int=2))
    record_id = UUID(int=10)
    phone.edit("mood_checkin", record_id, mood(4, "one two three"), T0)
    await phone.sync(server)
    await tablet.sync(server)
    tablet.edit("mood_checkin", record_id, {"note": "zero one two three"}, T0 + timedelta(minutes=1))
    await tablet.sync(server)
    phone.edit("mood_checkin", record_id, {"note": "one two three four"}, T0 + timedelta(minutes=2))
    request = phone.build_request()
    phone.edit("mood_checkin", record_id, {"mood": 8}, T0 + timedelta(minutes=3))  # while the request is out
    response = await server(request)
    assert [r.status for r in response.results] == ["merged"]
    assert phone.handle(request, response)
    (queued,) = phone.queue
    assert queued.base_version == phone.confirmed[record_id].version == 3
    assert phone.store[record_id].data == {"mood": 8, "note": "zero one two three four", "tags": []}
    await phone.sync(server)
    await tablet.sync(server)
    assert phone.store == tablet.store == server.state()
    assert server.state()[record_id].version == 4


async def test_a_small_pull_limit_pages_through_everything() -> None:
    server, writer, reader = MemoryServer(now=T0), Device(UUID(int=1)), Device(UUID(int=2))
    for n in range(7):
        writer.edit("mood_checkin", UUID(int=100 + n), mood(n + 1), T0)
    await writer.sync(server)
    assert await reader.sync(server, pull_limit=3) == 3
    assert reader.store == server.state()
    assert len(reader.store) == 7


async def test_a_duplicates_version_is_not_taken_as_the_base_of_a_later_edit() -> None:
    """Shrunk from the property: a duplicate's version is the record's current one,
    which here holds the tablet's tag change the phone has not pulled yet."""
    server, phone, tablet = MemoryServer(now=T0), Device(UUID(int=1)), Device(UUID(int=2))
    record_id, other_id = UUID(int=10), UUID(int=11)
    phone.edit("journal_entry", record_id, {"body": "one two", "title": "t", "tags": ["calm", "sleep"]}, T0)
    await phone.sync(server)
    await tablet.sync(server)
    tablet.edit("journal_entry", other_id, {"body": "x", "title": "x", "tags": []}, T0)
    tablet.edit("journal_entry", record_id, {"tags": ["sleep"]}, T0 + timedelta(minutes=1))
    phone.edit("journal_entry", record_id, {"title": "new title"}, T0 + timedelta(minutes=1))
    await server(phone.build_request())  # v2, the answer is lost
    await tablet.sync(server)  # v3: the tags, merged
    request = phone.build_request(pull_limit=1)  # the title again, and a pull that stops before the record
    response = await server(request)
    assert [r.status for r in response.results] == ["duplicate"]
    assert response.has_more
    phone.handle(request, response)
    assert phone.confirmed[record_id].version == 1, "the phone has not seen version 3"
    assert phone.store[record_id].data["title"] == "new title"
    phone.edit("journal_entry", record_id, {"body": "two"}, T0 + timedelta(minutes=2))
    await phone.sync(server)
    await tablet.sync(server)
    assert phone.store == tablet.store == server.state()
    assert server.state()[record_id].data == {"body": "two", "title": "new title", "tags": ["sleep"]}
