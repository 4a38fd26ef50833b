"""A reference client of `POST /v1/sync`, and an in-memory server to run it against.

`Device` is what a phone does: edits land in a local store at once and wait in
an offline queue; a sync pushes the queue and pulls what the device has not
seen. It keeps two things apart: the state the server confirmed for each
record, and the queued edits on top of it. What the app shows (`store`) is
the first with the second applied, so neither a merged result nor a pull can
hide an edit that is still waiting to be sent.

`MemoryServer` answers the same requests from memory with nothing but the
pure rules (`service.sync.merge.apply_batch`), so integration tests and
benchmarks can compare the real endpoint with it, and property tests can run
thousands of syncs a second.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from uuid import UUID, uuid4

import msgspec

from schemas.sync import (
    MAX_MUTATIONS,
    PULL_LIMIT_DEFAULT,
    Change,
    Conflict,
    MutationError,
    MutationIn,
    MutationResult,
    SyncRequest,
    SyncResponse,
)
from service.sync.clock import clamp
from service.sync.merge import Policy, apply_batch
from service.sync.model import ErrorCode, HistoryEntry, Mutation, Record, Result, Written
from service.sync.model import MutationError as CoreError

Transport = Callable[[SyncRequest], Awaitable[SyncResponse]]

_canonical = msgspec.json.Encoder(order="sorted")


class LocalRecord(NamedTuple):
    """One record as a device (or the server) holds it."""

    kind: str
    version: int
    deleted: bool
    data: dict[str, Any]


# --------------------------------------------------------------------------- device


@dataclass(eq=False)
class _Queued:
    mutation: MutationIn
    # Sent at least once: its content (and so its fingerprint) must not change
    # any more, or a lost response would let the server apply it twice.
    sent: bool = False


@dataclass
class _Pending:
    request: SyncRequest
    entries: list[_Queued] = field(default_factory=list)


class Device:
    """A phone with an offline queue. One request is in flight at a time: building
    a new request forgets an unanswered one (its mutations are still queued and
    go again, and the server calls them duplicates if they did arrive)."""

    def __init__(self, device_id: UUID | None = None) -> None:
        self.device_id = device_id or uuid4()
        self.cursor: str | None = None
        self._confirmed: dict[UUID, LocalRecord] = {}
        self._queue: list[_Queued] = []
        # Pulled states of records that still had queued edits, held back until
        # those edits are answered (then taken if nothing newer came meanwhile).
        self._held_back: dict[UUID, Change] = {}
        self._pending: _Pending | None = None

    # -- what the app sees

    @property
    def store(self) -> dict[UUID, LocalRecord]:
        """Every record: the server's confirmed state with queued edits applied."""
        store = dict(self._confirmed)
        for entry in self._queue:
            overlaid = _overlay(store.get(entry.mutation.id), entry.mutation)
            store[entry.mutation.id] = overlaid
        return store

    @property
    def confirmed(self) -> dict[UUID, LocalRecord]:
        """What the server last confirmed, without the queued edits."""
        return dict(self._confirmed)

    @property
    def queue(self) -> list[MutationIn]:
        return [entry.mutation for entry in self._queue]

    @property
    def pending(self) -> SyncRequest | None:
        """The request built last and not answered yet."""
        return self._pending.request if self._pending else None

    def record(self, record_id: UUID) -> LocalRecord | None:
        record = self._confirmed.get(record_id)
        for entry in self._queue:
            if entry.mutation.id == record_id:
                record = _overlay(record, entry.mutation)
        return record

    # -- local changes

    def edit(self, kind: str, record_id: UUID, fields: dict[str, Any], changed_at: datetime) -> MutationIn | None:
        """Create a record (all of `fields`) or change some of its fields; None if nothing changed."""
        current = self.record(record_id)
        if current is None:
            data = copy.deepcopy(fields)
        else:
            if current.kind != kind:
                raise ValueError(f"record {record_id} is a {current.kind}, not a {kind}")
            data = {k: copy.deepcopy(v) for k, v in fields.items() if k not in current.data or current.data[k] != v}
            if not data and not current.deleted:
                return None
        return self._enqueue(
            MutationIn(
                id=record_id,
                kind=kind,
                op="upsert",
                base_version=self._base_version(record_id),
                changed_at=changed_at,
                data=data,
            )
        )

    def delete(self, record_id: UUID, changed_at: datetime) -> MutationIn | None:
        """Delete a record; None if it is already deleted here."""
        current = self.record(record_id)
        if current is None:
            raise KeyError(record_id)
        if current.deleted:
            return None
        return self._enqueue(
            MutationIn(
                id=record_id,
                kind=current.kind,
                op="delete",
                base_version=self._base_version(record_id),
                changed_at=changed_at,
            )
        )

    # -- sync

    def build_request(self, batch_id: UUID | None = None, pull_limit: int = PULL_LIMIT_DEFAULT) -> SyncRequest:
        """The next request: the queue's first mutations, nothing drained. Sending the
        returned request again is a retry (same batch_id, same results)."""
        entries = self._queue[:MAX_MUTATIONS]
        for entry in entries:
            entry.sent = True
        request = SyncRequest(
            device_id=self.device_id,
            batch_id=batch_id or uuid4(),
            cursor=self.cursor,
            pull_limit=pull_limit,
            mutations=[entry.mutation for entry in entries],
        )
        self._pending = _Pending(request, entries)
        return request

    def handle(self, request: SyncRequest, response: SyncResponse) -> bool:
        """Take in the answer to the pending request; False (and nothing done) for
        any other request, such as one this device has given up on."""
        pending = self._pending
        if pending is None or pending.request.batch_id != request.batch_id:
            return False
        if len(response.results) != len(pending.entries):
            raise ValueError(f"{len(response.results)} results for {len(pending.entries)} mutations")
        self._pending = None
        for entry, result in zip(pending.entries, response.results, strict=True):
            self._take_result(entry.mutation, result)
        sent = {id(entry) for entry in pending.entries}
        self._queue = [entry for entry in self._queue if id(entry) not in sent]
        queued = {entry.mutation.id for entry in self._queue}
        for change in response.changes:
            if change.id in queued:
                held = self._held_back.get(change.id)
                if held is None or change.version >= held.version:
                    self._held_back[change.id] = change
            else:
                self._adopt(change)
        for record_id in [r for r in self._held_back if r not in queued]:
            self._adopt(self._held_back.pop(record_id))
        self._rebase()
        self.cursor = response.cursor
        return True

    async def sync(self, transport: Transport, *, pull_limit: int = PULL_LIMIT_DEFAULT, max_rounds: int = 1000) -> int:
        """Push the whole queue and pull everything; returns the number of round trips."""
        for rounds in range(1, max_rounds + 1):
            request = self.build_request(pull_limit=pull_limit)
            response = await transport(request)
            self.handle(request, response)
            if not response.has_more and not self._queue:
                return rounds
        raise RuntimeError(f"device {self.device_id} still syncing after {max_rounds} round trips")

    # -- internals

    def _enqueue(self, mutation: MutationIn) -> MutationIn:
        self._queue.append(_Queued(mutation))
        return mutation

    def _base_version(self, record_id: UUID) -> int:
        confirmed = self._confirmed.get(record_id)
        return confirmed.version if confirmed else 0

    def _take_result(self, mutation: MutationIn, result: MutationResult) -> None:
        if result.id != mutation.id:
            raise ValueError(f"result for {result.id} in the place of {mutation.id}")
        if result.status == "merged" and result.record is not None:
            self._adopt(result.record)
        elif result.status == "applied":
            # The server applied exactly this change, to what the device had seen or
            # to its own later versions.
            if result.version is None:
                raise ValueError(f"applied result without a version for {mutation.id}")
            previous = self._confirmed.get(mutation.id)
            if previous is None or result.version >= previous.version:
                self._confirmed[mutation.id] = _overlay(previous, mutation)._replace(version=result.version)
        elif result.status == "duplicate":
            # Applied by an earlier batch whose answer was lost. The version given is the
            # one that change produced; if it was merged then, this device does not know
            # the merged state. So the change counts as done but the device keeps the
            # version it knows; the pull brings the rest, and an edit before that is
            # merged against what the device saw.
            previous = self._confirmed.get(mutation.id)
            self._confirmed[mutation.id] = _overlay(previous, mutation)
        # rejected: the mutation is dropped, the confirmed state stays.

    def _adopt(self, change: Change) -> None:
        previous = self._confirmed.get(change.id)
        if previous is None or change.version >= previous.version:
            self._confirmed[change.id] = LocalRecord(
                change.kind, change.version, change.deleted, copy.deepcopy(change.data)
            )

    def _rebase(self) -> None:
        """Queued edits never sent build on the version the device now holds."""
        for entry in self._queue:
            if entry.sent:
                continue
            base = self._base_version(entry.mutation.id)
            if entry.mutation.base_version != base:
                entry.mutation = msgspec.structs.replace(entry.mutation, base_version=base)


def _overlay(record: LocalRecord | None, mutation: MutationIn) -> LocalRecord:
    """`record` with `mutation` applied as the server would apply it unopposed."""
    data = record.data if record is not None else {}
    version = record.version if record is not None else 0
    if mutation.op == "delete":
        return LocalRecord(mutation.kind, version, True, data)
    return LocalRecord(mutation.kind, version, False, {**data, **copy.deepcopy(mutation.data or {})})


# --------------------------------------------------------------------------- server


class SyncRefused(Exception):
    """What the HTTP endpoint answers with a problem document (409, 413, 400)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


def fingerprint(device_id: UUID, mutation: MutationIn) -> bytes:
    """What makes a mutation this one: a re-send matches, another record never does.
    changed_at is taken as sent, before clamping, so a retry matches later too."""
    data = {} if mutation.op == "delete" else mutation.data
    return hashlib.sha256(
        _canonical.encode(
            [mutation.id, mutation.kind, mutation.op, mutation.base_version, mutation.changed_at, data, device_id]
        )
    ).digest()


def keep_data(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """A finalize that knows no record kinds: the state is taken as it is."""
    return data


class _Batch(msgspec.Struct):
    content: bytes
    results: list[MutationResult]


class MemoryServer:
    """One user's sync state in memory, driven only by the pure merge rules.

    `now` is the server clock (set it, or `advance` it); a device's changed_at
    more than five minutes ahead of it counts as `now`. Calling the server is a
    transport: requests and responses go through JSON as on the wire.
    """

    def __init__(
        self,
        *,
        long_text: frozenset[str] = frozenset({"body", "note"}),
        sets: frozenset[str] = frozenset({"tags"}),
        finalize: Callable[[str, dict[str, Any]], dict[str, Any]] = keep_data,
        kinds: Iterable[str] | None = None,
        now: datetime | None = None,
        wire: bool = True,
    ) -> None:
        self.policy = Policy(long_text=long_text, sets=sets, finalize=finalize)
        self.kinds = frozenset(kinds) if kinds is not None else None
        self.now = now or datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
        self.wire = wire
        self.records: dict[UUID, Record] = {}
        self.history: dict[UUID, dict[int, HistoryEntry]] = {}
        self.applied_fingerprints: dict[bytes, int] = {}
        self.batches: dict[UUID, _Batch] = {}
        # Every version ever written, in order; every mutation applied or merged (not
        # duplicates, not rejections), with its device and its result.
        self.written: list[Written] = []
        self.processed: list[tuple[UUID, MutationIn, MutationResult]] = []
        self.requests = 0
        # The change sequence: _log[n - 1] is the record changed at sequence n.
        self._log: list[UUID] = []
        self._seq_of: dict[UUID, int] = {}
        self._written_by_batch: dict[UUID, UUID] = {}
        self._updated_at: dict[UUID, datetime] = {}

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now

    async def __call__(self, request: SyncRequest) -> SyncResponse:
        if not self.wire:
            return self.sync(request)
        decoded = msgspec.json.decode(msgspec.json.encode(request), type=SyncRequest)
        return msgspec.json.decode(msgspec.json.encode(self.sync(decoded)), type=SyncResponse)

    def sync(self, request: SyncRequest) -> SyncResponse:
        self.requests += 1
        if len(request.mutations) > MAX_MUTATIONS:
            raise SyncRefused(413, f"at most {MAX_MUTATIONS} mutations per batch")
        after = self._position(request.cursor)
        content = _canonical.encode([request.device_id, request.mutations])
        stored = self.batches.get(request.batch_id)
        if stored is not None:
            if stored.content != content:
                raise SyncRefused(409, "this batch_id was already used for a batch with other content")
            results = stored.results
        else:
            results = self._apply(request)
            self.batches[request.batch_id] = _Batch(content, results)
        changes, cursor, has_more = self._pull(after, request.pull_limit, request.batch_id)
        return SyncResponse(results=list(results), changes=changes, cursor=cursor, has_more=has_more)

    def state(self) -> dict[UUID, LocalRecord]:
        """Every record as it is now, in the shape a device's store has."""
        return {
            record_id: LocalRecord(record.kind, record.version, record.deleted, record.data)
            for record_id, record in self.records.items()
        }

    def change(self, record_id: UUID) -> Change:
        return self._change(self.records[record_id])

    def _change(self, record: Record) -> Change:
        return Change(
            id=record.id,
            kind=record.kind,
            version=record.version,
            deleted=record.deleted,
            data=record.data,
            changed_at=record.changed_at,
            updated_at=self._updated_at.get(record.id, self.now),
        )

    # -- internals

    def _position(self, cursor: str | None) -> int:
        if cursor is None:
            return 0
        if not cursor.isdigit() or int(cursor) > len(self._log):
            raise SyncRefused(400, "cursor: not a cursor from this server; start over with null")
        return int(cursor)

    def _apply(self, request: SyncRequest) -> list[MutationResult]:
        prepared = [self._prepare(request.device_id, m) for m in request.mutations]
        results, written = apply_batch(self.records, self.history, self.applied_fingerprints, prepared, self.policy)
        for version in written:
            self.written.append(version)
            self._log.append(version.record_id)
            self._seq_of[version.record_id] = len(self._log)
            self._written_by_batch[version.record_id] = request.batch_id
            self._updated_at[version.record_id] = self.now
        wire = [self._wire_result(result) for result in results]
        for mutation, result in zip(request.mutations, wire, strict=True):
            if result.status in ("applied", "merged"):
                self.processed.append((request.device_id, mutation, result))
        return wire

    def _prepare(self, device_id: UUID, m: MutationIn) -> Mutation | Result:
        if self.kinds is not None and m.kind not in self.kinds:
            return _refused(m.id, "unknown_kind", f"unknown kind {m.kind!r}", "kind")
        if m.op == "upsert" and m.data is None:
            return _refused(m.id, "invalid", "is required for an upsert", "data")
        if m.op == "delete" and m.data:
            return _refused(m.id, "invalid", "a delete carries no data", "data")
        return Mutation(
            id=m.id,
            kind=m.kind,
            op=m.op,
            base_version=m.base_version,
            changed_at=clamp(m.changed_at, self.now),
            device_id=device_id,
            data={} if m.op == "delete" else dict(m.data or {}),
            fingerprint=fingerprint(device_id, m),
        )

    def _wire_result(self, result: Result) -> MutationResult:
        return MutationResult(
            id=result.id,
            status=result.status,
            version=result.version,
            record=self._change(result.record) if result.record is not None else None,
            conflicts=[
                Conflict(field=c.field, yours=c.yours, theirs=c.theirs, resolution=c.resolution)
                for c in result.conflicts
            ],
            error=MutationError(code=result.error.code, message=result.error.message, path=result.error.path)
            if result.error is not None
            else None,
        )

    def _pull(self, after: int, limit: int, batch_id: UUID) -> tuple[list[Change], str, bool]:
        """Records changed after `after`, oldest change first, skipping those whose
        newest version this very batch wrote (its results carry them)."""
        changes: list[Change] = []
        last = after
        for index in range(after, len(self._log)):
            record_id = self._log[index]
            if self._seq_of[record_id] != index + 1 or self._written_by_batch[record_id] == batch_id:
                continue
            if len(changes) == limit:
                return changes, str(last), True
            changes.append(self.change(record_id))
            last = index + 1
        return changes, str(len(self._log)), False


def _refused(record_id: UUID, code: ErrorCode, message: str, path: str) -> Result:
    return Result(id=record_id, status="rejected", error=CoreError(code=code, message=message, path=path))
