"""One sync round trip: validate, apply, pull what is new.

The pure rules (service/sync) decide; this module loads what they need in one
set-based statement and writes what they decided in another (a batch of new
records, whose rules need nothing stored, is only written). The write numbers
the changes from the person's last change number, which it claims only if no
other write came between, and holds until it commits: numbers are taken in
commit order, so a concurrent pull never skips one.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg
import msgspec

from schemas import records as kinds
from schemas.sync import (
    MAX_MUTATIONS,
    PROTOCOL_VERSIONS,
    Change,
    MutationIn,
    MutationResult,
    SyncRequest,
    SyncResponse,
)
from schemas.sync import (
    Conflict as WireConflict,
)
from schemas.sync import (
    MutationError as WireError,
)
from service.db import keys as data_keys
from service.db import sync as queries
from service.db.engine import DriverPool
from service.db.errors import owner_gone
from service.db.sync import Driver
from service.envelope import DataKey, MasterKeys, WrappedKey
from service.insights.assessments import derive
from service.problems import ProblemError
from service.sync import cursor as cursors
from service.sync.clock import clamp
from service.sync.merge import Policy, Refused, apply_batch
from service.sync.model import ErrorCode, Mutation, MutationError, Record, Result, Written

_canonical = msgspec.json.Encoder(order="sorted")
# Runs of a batch (Syncer.sync): while other writes come between its read and its write, two
# without the person's lock, then under it; one more when a retry of the same batch overtook it.
OPTIMISTIC_ATTEMPTS = 2
ATTEMPTS = 4
# Data keys a process holds for batches of new records (Syncer._keys): a few hundred bytes each,
# each for a few minutes after the person's last batch read it (so not long after an erase).
KEYS_HELD = 10_000
KEY_HELD_S = 300.0


def _finalize(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """A merged state must be a valid whole record; the server then adds its fields."""
    try:
        server_set = kinds.SERVER_SET_FIELDS.get(kind)
        whole = kinds.validate_merged(
            kind, {k: v for k, v in data.items() if k not in server_set} if server_set else data
        )
    except kinds.Invalid as invalid:
        raise Refused(MutationError(code="invalid", message=invalid.message, path=invalid.path)) from None
    return derive(kind, whole)


POLICY = Policy(long_text=kinds.LONG_TEXT_FIELDS, sets=kinds.SET_FIELDS, finalize=_finalize, complete=derive)


class Answered(NamedTuple):
    """A round trip's answer, and whether its batch wrote changes (and with them an event for the
    workers)."""

    response: SyncResponse
    wrote_event: bool = False


class Syncer:
    """Sync round trips on connections of the pool it is given. The sync handler takes it from
    the app's state rather than as a dependency (service.api.sync.SyncController.sync)."""

    def __init__(
        self,
        *,
        pool: DriverPool,
        tombstone_retention: timedelta,
        master_keys: MasterKeys,
        on_applied: Callable[[list[MutationResult]], None] | None = None,
        on_event: Callable[[], None] | None = None,
    ) -> None:
        self._pool = pool
        self._retention = tombstone_retention
        self._master = master_keys
        # Told of each newly applied batch's results (not of replays): the metrics count them.
        self._on_applied = on_applied
        # Told when a batch that left an event for the workers has committed: the relay is woken.
        self._on_event = on_event
        # The data keys of people who wrote lately, as stored and opened, with when they were read,
        # the least lately read first: a batch of new records is then written with nothing read
        # first (_run_new).
        self._keys: dict[UUID, tuple[WrappedKey, DataKey, float]] = {}

    async def sync(self, user_id: UUID, request: SyncRequest, *, nul_free: bool = False) -> SyncResponse:
        """One round trip on a pooled connection. `nul_free`: the request's strings are known to
        hold no NUL (service.api.sync.decode_request), and its records are checked without
        looking for one.

        A batch of mutations reads what it starts from, decides, and writes in a statement that
        checks no other write came between (queries.save_batch): no transaction to open, no lock
        to take and release. When another write did come between, the batch is run again; the
        last attempts run in a transaction under the person's lock, which no write can come
        between, so a person's devices syncing at the same moments all get their answers.
        A pull alone is one statement (queries.pull), atomic without a transaction.
        """
        for attempt in range(1, ATTEMPTS + 1):
            locked = attempt > OPTIMISTIC_ATTEMPTS
            connect = self._pool.transaction if locked and request.mutations else self._pool.connection
            try:
                async with connect() as conn:
                    answered = await self.run(conn, user_id, request, lock=locked, nul_free=nul_free)
            except asyncpg.UniqueViolationError as error:
                # A retry of this batch ran meanwhile: run again, which answers what it stored.
                if attempt == ATTEMPTS or not queries.is_batch_written_meanwhile(error):
                    raise
                continue
            except asyncpg.ForeignKeyViolationError as error:
                if owner_gone(error):
                    raise ProblemError(401, "unauthorized", "This account no longer exists.") from None
                raise
            if answered is not None:
                # Committed now, under the lock too: a relay woken earlier could find nothing yet.
                if answered.wrote_event and self._on_event is not None:
                    self._on_event()
                return answered.response
        raise AssertionError("unreachable: a batch under the lock is never overtaken")

    async def run(
        self, conn: Driver, user_id: UUID, request: SyncRequest, *, lock: bool = False, nul_free: bool = False
    ) -> Answered | None:
        """On `conn`, an asyncpg connection (queries.Driver). With `lock`, in a transaction, under
        the person's lock; without it, statement by statement, and None when another write came
        between the batch's read and its write (nothing was written: run it again)."""
        _check_request(request)
        now = datetime.now(UTC)
        after = self._position(request.cursor, now)
        if not request.mutations:
            # The person's key is read with the page (queries.pull).
            return Answered(await self._pull(conn, user_id, self._master, request, after, None, None, [], now))

        # Checked before the start is read: under the lock, the lock is held only for the statements.
        prepared = [_prepare(user_id, request.device_id, m, now, nul_free) for m in request.mutations]
        mutations = [m for m in prepared if isinstance(m, Mutation)]
        request_hash = _request_hash(request.device_id, request.mutations, prepared)
        held = None if lock else self._held_key(user_id)
        if held is not None and all(m.base_version == 0 for m in mutations):
            answered = await self._run_new(conn, user_id, request, prepared, held, request_hash, after, now)
            if answered is not None:
                return answered
        start = await queries.read_start(
            conn, user_id, request.batch_id, mutations, lock=lock, after=after, limit=request.pull_limit
        )
        last_seq = start.last_seq
        key = await data_keys.read_or_create(conn, self._master, user_id, start.key)
        if start.key is not None:
            self._hold_key(user_id, start.key, key)
        if start.receipt is not None:
            stored = queries.open_batch(key, request.batch_id, start.receipt)
            same = stored.request_hash == request_hash
            # The earlier form is made only when the current one does not match.
            if not same and stored.request_hash != _request_hash_before_fingerprints(request):
                raise ProblemError(
                    409, "batch-conflict", "This batch_id was already used for a batch with other content."
                )
            return Answered(
                await self._pull(conn, user_id, key, request, after, last_seq, last_seq, stored.results, now)
            )

        targets = (
            queries.open_targets(key, start.targets)
            if start.targets is not None
            else await queries.load_targets(conn, key, mutations)
        )
        current = targets.records
        before = {record_id: record.version for record_id, record in current.items()}
        core_results, written = apply_batch(current, targets.history, targets.applied, prepared, POLICY)
        changed = _changed_in_order(current, before, written)
        own_up_to = last_seq + len(changed)
        # The records are stamped with the time of the start's read.
        results = [_wire_result(r, start.now) for r in core_results]
        # The page read with the start (when its snapshot holds every change up to last_seq): the
        # device's new position is then known before the write, which remembers it.
        page = _page_of(start.page, key, request, after, own_up_to, changed)
        if not await queries.save_batch(
            conn,
            key,
            written,
            changed,
            # A purged record has no row to update: its new state is inserted.
            before.keys() - targets.purged if targets.purged else before,
            queries.Receipt(request.batch_id, request_hash, results),
            (request.device_id, page.position if page is not None else None),
            start,
        ):
            return None
        answer = await self._answer(conn, user_id, key, request, after, (last_seq, own_up_to), results, page, now)
        return Answered(answer, wrote_event=bool(changed))

    async def _run_new(
        self,
        conn: Driver,
        user_id: UUID,
        request: SyncRequest,
        prepared: list[Mutation | Result],
        key: tuple[WrappedKey, DataKey],
        request_hash: bytes,
        after: int,
        now: datetime,
    ) -> Answered | None:
        """A batch of new records (each mutation a create, on base version 0) from a person whose
        data key this process holds: nothing is read before the write (queries.save_new_batch).
        None, with nothing written, when a record was not new after all, the batch is a retry, the
        key is no longer the person's, or the rules refused a mutation: the batch is then run as any
        other."""
        current: dict[UUID, Record] = {}
        core_results, written = apply_batch(current, {}, {}, prepared, POLICY)
        if any(r.status == "rejected" for r, m in zip(core_results, prepared, strict=True) if isinstance(m, Mutation)):
            # Refused as a new record (a change of some fields only, say), it may be a valid
            # change of one stored: only the write can tell, and it writes no refusal.
            return None
        changed = _changed_in_order(current, {}, written)
        # Rules applied to new records merge nothing: no result carries a record to stamp.
        results = [_wire_result(r, now) for r in core_results]
        try:
            saved = await queries.save_new_batch(
                conn,
                key,
                written,
                changed,
                queries.Receipt(request.batch_id, request_hash, results),
                request.device_id,
                after=after,
                limit=request.pull_limit,
            )
        except asyncpg.UniqueViolationError as error:
            if queries.is_not_new(error):
                return None
            raise
        if saved is None:
            self._keys.pop(user_id, None)
            return None
        page = _page_of(saved.page, key[1], request, after, saved.last_seq, changed)
        numbers = (saved.last_seq - len(changed), saved.last_seq)
        answer = await self._answer(conn, user_id, key[1], request, after, numbers, results, page, now)
        return Answered(answer, wrote_event=bool(changed))

    async def _answer(
        self,
        conn: Driver,
        user_id: UUID,
        key: DataKey,
        request: SyncRequest,
        after: int,
        numbers: tuple[int, int],
        results: list[MutationResult],
        page: queries.Page | None,
        now: datetime,
    ) -> SyncResponse:
        """The answer to a batch written after the change number `numbers[0]` up to `numbers[1]`:
        its results, and the page of changes its device is sent (read after the write when none
        was read before it)."""
        if self._on_applied is not None:
            self._on_applied(results)
        if page is None:
            return await self._pull(conn, user_id, key, request, after, *numbers, results, now)
        return SyncResponse(
            results=results, changes=page.changes, cursor=cursors.encode(page.position, now), has_more=page.has_more
        )

    def _hold_key(self, user_id: UUID, stored: WrappedKey, key: DataKey) -> None:
        self._keys.pop(user_id, None)
        if len(self._keys) >= KEYS_HELD:
            del self._keys[next(iter(self._keys))]
        self._keys[user_id] = (stored, key, time.monotonic())

    def _held_key(self, user_id: UUID) -> tuple[WrappedKey, DataKey] | None:
        held = self._keys.get(user_id)
        if held is None:
            return None
        stored, key, read_at = held
        if time.monotonic() - read_at > KEY_HELD_S:
            del self._keys[user_id]
            return None
        return stored, key

    def _position(self, cursor: str | None, now: datetime) -> int:
        if cursor is None:
            return 0
        try:
            position = cursors.decode(cursor)
        except cursors.BadCursor:
            raise ProblemError(
                400, "invalid-cursor", "cursor: not a cursor from this server; start over with null", title=None
            ) from None
        if cursors.issued_at(position) < now - self._retention:
            raise ProblemError(
                410,
                "cursor-expired",
                f"This cursor is older than {self._retention.days} days; sync again from the start with cursor null.",
            )
        return position.seq

    async def _pull(
        self,
        conn: Driver,
        user_id: UUID,
        key: DataKey | MasterKeys,
        request: SyncRequest,
        after: int,
        up_to: int | None,
        own_up_to: int | None,
        results: list[MutationResult],
        now: datetime,
    ) -> SyncResponse:
        """Changes after the cursor, leaving out those this request itself made."""
        page = await queries.pull(
            conn,
            user_id,
            key,
            request.device_id,
            after=after,
            up_to=up_to,
            own_up_to=own_up_to,
            limit=request.pull_limit,
        )
        return SyncResponse(
            results=results,
            changes=page.changes,
            cursor=cursors.encode(page.position, now),
            has_more=page.has_more,
        )


def _check_request(request: SyncRequest) -> None:
    if request.protocol not in PROTOCOL_VERSIONS:
        raise ProblemError(
            426,
            "protocol-unsupported",
            f"Protocol {request.protocol} is not supported by this server. Keep your queued changes "
            "and update the app; they will sync after the update.",
        )
    if len(request.mutations) > MAX_MUTATIONS:
        raise ProblemError(
            413,
            "too-many-mutations",
            f"mutations: {len(request.mutations)} in one batch; the limit is {MAX_MUTATIONS}. Send them in batches.",
        )


def _request_hash(device_id: UUID, mutations: list[MutationIn], prepared: list[Mutation | Result]) -> bytes:
    """What makes two requests the same batch: the device and its mutations, each as its
    fingerprint (which names the device too; _prepare), or as sent when it was refused. Made of the
    fingerprints rather than by encoding the request again: 1.2 us less per mutation. Like the
    fingerprints, it follows what validation makes of a record: a release that changes that must
    match a retry's receipt by the earlier form too, as _request_hash_before_fingerprints does."""
    digest = hashlib.sha256(device_id.bytes)
    for sent, mutation in zip(mutations, prepared, strict=True):
        digest.update(
            mutation.fingerprint if isinstance(mutation, Mutation) else hashlib.sha256(_canonical.encode(sent)).digest()
        )
    return digest.digest()


def _request_hash_before_fingerprints(request: SyncRequest) -> bytes:
    """The request hash of receipts stored before _request_hash was made of fingerprints: a retry of
    such a batch matches it. Needed until those receipts are purged, TOMBSTONE_RETENTION_DAYS after
    the release that made _request_hash of fingerprints."""
    return hashlib.sha256(_canonical.encode([request.device_id, request.mutations])).digest()


def _prepare(user_id: UUID, device_id: UUID, m: MutationIn, now: datetime, nul_free: bool) -> Mutation | Result:
    """Check one mutation against its kind's rules; a refusal is that mutation's result."""
    if m.kind in kinds.READ_ONLY_KINDS:
        return _refuse(m, "read_only_kind", f"{m.kind} records are written by the server only", "kind")
    if m.kind not in kinds.KINDS:
        return _refuse(m, "unknown_kind", f"unknown kind {m.kind!r}; known: {', '.join(sorted(kinds.KINDS))}", "kind")
    if m.kind == "preferences" and m.id != user_id:
        return _refuse(m, "invalid", "the preferences record's id is the user id", "id")
    if m.op == "delete":
        if m.data:
            return _refuse(m, "invalid", "a delete carries no data", "data")
        data: dict[str, Any] = {}
        whole = None
    else:
        if m.data is None:
            return _refuse(m, "invalid", "is required for an upsert", "data")
        # Field by field; whether the whole record is complete is known only once
        # it is clear this is a create: a record made offline and edited again
        # before a sync is sent with base_version 0 and only the changes. A create
        # sent whole is checked whole once here, not again when it is applied.
        checked = kinds.validate_create(m.kind, m.data, nul_free=nul_free) if m.base_version == 0 else None
        if checked is not None:
            data, whole = checked
        else:
            whole = None
            try:
                data = kinds.validate_patch(m.kind, m.data, nul_free=nul_free)
            except kinds.Invalid as invalid:
                return _refuse(m, "invalid", invalid.message, invalid.path)
    # Everything that makes this mutation this one: a re-send matches, another record never does.
    fingerprint = hashlib.sha256(
        _canonical.encode([m.id, m.kind, m.op, m.base_version, m.changed_at, data, device_id])
    ).digest()
    return Mutation(
        id=m.id,
        kind=m.kind,
        op=m.op,
        base_version=m.base_version,
        changed_at=clamp(m.changed_at, now),
        device_id=device_id,
        data=data,
        fingerprint=fingerprint,
        whole=whole,
    )


def _page_of(
    rows: list[tuple[Any, ...]] | None,
    key: DataKey,
    request: SyncRequest,
    after: int,
    own_up_to: int,
    changed: list[Record],
) -> queries.Page | None:
    """The page a batch's device is sent, from the rows read before or with its write; None when
    none could be (the page is then pulled after the write)."""
    if rows is None:
        return None
    return queries.page_before(
        rows, key, limit=request.pull_limit, after=after, own_up_to=own_up_to, rewritten={r.id for r in changed}
    )


def _refuse(m: MutationIn, code: ErrorCode, message: str, path: str) -> Result:
    return Result(id=m.id, status="rejected", error=MutationError(code=code, message=message, path=path))


def _changed_in_order(current: dict[UUID, Record], before: dict[UUID, int], written: list[Written]) -> list[Record]:
    """Records that got new versions, in the order of their last change: the order of their
    change numbers."""
    last_first = dict.fromkeys(version.record_id for version in reversed(written))
    return [record for rid in reversed(last_first) if (record := current[rid]).version != before.get(rid)]


def _wire_result(result: Result, updated_at: datetime) -> MutationResult:
    record = result.record
    return MutationResult(
        id=result.id,
        status=result.status,
        version=result.version,
        record=Change(
            id=record.id,
            kind=record.kind,
            version=record.version,
            deleted=record.deleted,
            data={} if record.deleted else record.data,
            changed_at=record.changed_at,
            updated_at=updated_at,
        )
        if record is not None
        else None,
        conflicts=[
            WireConflict(field=c.field, yours=c.yours, theirs=c.theirs, resolution=c.resolution)
            for c in result.conflicts
        ],
        error=WireError(code=result.error.code, message=result.error.message, path=result.error.path)
        if result.error
        else None,
    )
