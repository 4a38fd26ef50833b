"""Queries of the sync path: a handful of statements per batch, never one per mutation.

Whole batches go in at once: lookups as arrays (`unnest`), a batch's new rows
as one JSON document beside binary arrays (save_batch). A batch is two
statements: what it starts from, with the page its device is sent (read_start),
and its writes (save_batch); a batch of new records is one (save_new_batch).
The statements of a sync round trip are sent on asyncpg connections of their own
(`Driver`, from service.db.engine.DriverPool, in a transaction under the lock):
SQLAlchemy's work per statement cost more than the statement. The
rest (workers, the records API) runs through SQLAlchemy connections. What people
wrote is sealed here on the way in and opened on the way out
(service/envelope.py), so the rules above see whole records.
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, cast
from uuid import UUID

import asyncpg
import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.jobs import RECORDS_CHANGED
from schemas.sync import Change, HistoryVersion, MutationResult
from service.envelope import DataKey, MasterKeys, Sealer, WrappedKey, reveal
from service.sync.merge import DELETED, ZERO_DEVICE
from service.sync.model import HistoryEntry, Mutation, Record, Stamp, Written

# An asyncpg connection (service.db.engine.DriverPool, outside a transaction or in one): the sync
# path's statements go to the driver directly, without SQLAlchemy's work per statement.
Driver = Any

# Stamps are stored as MessagePack, device ids as 16 bytes (migration 0007); a field's stamp that
# is its record's own is stored as nil (migration 0008, pack_stamps).
_stamps = msgspec.msgpack.Decoder(dict[str, Stamp | None])
_pack_stamps = msgspec.msgpack.Encoder(uuid_format="bytes")
# JSONB is read as text and decoded here: msgspec is several times faster than the driver's json.loads.
_data = msgspec.json.Decoder(dict[str, Any])
# A receipt's ids as 16 bytes, not 36 characters: a receipt of 100 new records is then 7 KB rather
# than 9 and stays in its row (migration 0010). The decoder reads ids in either form, as every
# release since the receipts were sealed does.
_results_encoder = msgspec.msgpack.Encoder(uuid_format="bytes")
_results_decoder = msgspec.msgpack.Decoder(list[MutationResult])
_json = msgspec.json.Encoder()
# What a sealed batch answer is bound to, beside its owner and batch id.
_BATCH = b"batch"
# The lengths that begin a written row's bytes (_row_bytes).
_ROW_HEADER = struct.Struct(">BI")


# A records row as change_of reads it, by position (SQLAlchemy and asyncpg rows alike).
CHANGE_COLUMNS = "id, kind, version, deleted, data::text AS data, sealed, changed_at, updated_at"
# A version as history_entry reads it, by position (SQLAlchemy and asyncpg rows alike).
VERSION_COLUMNS = "v.record_id, v.version, v.deleted, v.data::text AS data, v.sealed, v.changed_at, v.device_id"


class StoredBatch(msgspec.Struct, frozen=True):
    request_hash: bytes
    results: list[MutationResult]


class Start(msgspec.Struct, frozen=True):
    """What a batch starts from, read in one statement (read_start), in one snapshot.

    Read without the person's lock, the batch's write then checks that no other write came
    between (save_batch); read with it (after another write won that check), in the snapshot
    taken before the lock was awaited: what a write committed meanwhile is not in it. A data key
    made meanwhile is found by keys.read_or_create; a receipt of the same batch written meanwhile
    makes this batch's own receipt clash (is_batch_written_meanwhile), and the batch is run
    again; records changed meanwhile move the person's last change number past the snapshot's,
    and `targets` is then None."""

    last_seq: int
    # The data key as stored, if the person has one.
    key: WrappedKey | None
    # The time of the read: what the batch's writes stamp as updated_at.
    now: datetime
    # This batch's receipt as stored (request hash, sealed results), if it was received before.
    receipt: tuple[bytes, bytes] | None
    # What the batch's mutations touch (rows for open_targets), or None when a write committed
    # while the lock was awaited: load_targets reads them afresh.
    targets: list[tuple[Any, ...]] | None
    # The changes after the device's position (rows for page_before), or None as `targets`: the
    # page is then read after the batch's write (pull).
    page: list[tuple[Any, ...]] | None


class Targets(msgspec.Struct, frozen=True):
    """What the rules need of the records a batch touches."""

    # The current state of each record that has one.
    records: dict[UUID, Record]
    # Fingerprints of the batch's mutations that already produced a version, with that version.
    applied: dict[bytes, int]
    # The versions of each record changed since a mutation's base, from the oldest such base on.
    history: dict[UUID, dict[int, HistoryEntry]]
    # The records among `records` whose row was purged, read from their history (_TARGETS).
    purged: frozenset[UUID] = frozenset()


# For each mutation (id, fingerprint, base version): its record, the version its fingerprint
# already produced, and, when the record has moved past the base, its versions from the base on
# (one row each). A mutation that meets none of these (a new record) has no row, rather than a
# row of nulls for the API to read. Each id is one index probe (a LATERAL join), whatever the
# planner knows of the tables: with `id = ANY(…)` and no statistics yet (a new table, or after a
# bulk load) it reads all of the person's rows instead, and the time grows with their history.
# OFFSET 0 keeps the planner from flattening the subqueries back into that form. A mutation on
# the record's current version cannot have been applied before (it would have moved the record
# past its base): its fingerprint is looked for only when the record is past the base or has no
# row, which spares most edits a probe of the record's history and a read of its rows.
#
# A record whose row was purged (a tombstone kept past the retention, workers/jobs/maintenance.py)
# but whose history was not is read as its newest version, as its tombstone was, with its versions
# from the base on; a null `stamps` marks it, and open_targets stamps its fields with that
# version's time (_purged_stamps). A change to it follows that version by the same rules, and
# brings it back when it is later than the delete, rather than clashing with its history. Only
# ids without a row and not recognised by their fingerprint are looked for there.
_TARGETS = f"""
SELECT coalesce(r.id, g.record_id), coalesce(r.kind, g.kind), coalesce(r.version, g.version),
       coalesce(r.deleted, g.deleted), coalesce(r.data, g.data)::text,
       CASE WHEN r.id IS NULL THEN g.sealed ELSE r.sealed END, r.stamps, coalesce(r.changed_at, g.changed_at),
       CASE WHEN r.id IS NULL THEN g.device_id ELSE r.device_id END,
       q.fingerprint, f.version, {VERSION_COLUMNS}
FROM unnest($2::uuid[], $3::bytea[], $4::int[]) AS q(id, fingerprint, base)
LEFT JOIN LATERAL (SELECT * FROM records WHERE user_id = $1 AND id = q.id OFFSET 0) r ON true
LEFT JOIN LATERAL (SELECT version FROM record_versions WHERE (r.id IS NULL OR q.base < r.version)
    AND user_id = $1 AND record_id = q.id AND fingerprint = q.fingerprint LIMIT 1) f ON true
LEFT JOIN LATERAL (SELECT * FROM record_versions WHERE r.id IS NULL AND f.version IS NULL
    AND user_id = $1 AND record_id = q.id ORDER BY version DESC LIMIT 1) g ON true
LEFT JOIN LATERAL (SELECT * FROM record_versions WHERE q.base < coalesce(r.version, g.version)
    AND user_id = $1 AND record_id = q.id AND version >= q.base OFFSET 0) v ON true
WHERE r.id IS NOT NULL OR f.version IS NOT NULL OR g.version IS NOT NULL
"""  # noqa: S608

# All a batch starts from, in one statement: the person's last change number, data key and the
# batch's receipt (head), the rows of _TARGETS, and the page of changes after the device's position
# (`limit` + 1 records, to tell whether more follow), as rows of one shape: each leaves the other
# parts' columns null (as an array of records, a page took asyncpg and Postgres each about 1.5 us
# more per record). The head is one row of its own: repeated on each target's row, its time and key
# were decoded a hundred times a batch (asyncpg makes a timestamp in 0.7 us). `seen` is the last
# change number in the statement's snapshot. Taking the lock, `last_seq` is the one the lock
# returns: a later one when a write committed while the lock was awaited.
_SEEN = "coalesce((SELECT last_seq FROM sync_state WHERE user_id = $1), 0)"
_HEAD = """
SELECT {last_seq} AS last_seq, {seen} AS seen, k.master_key_id, k.wrapped, now() AS now, b.request_hash, b.results
FROM {source} LEFT JOIN data_keys k ON k.user_id = $1
LEFT JOIN sync_batches b ON b.user_id = $1 AND b.batch_id = $5
"""
# Where each part of a row of _START begins; in a page's part, the change number follows CHANGE_COLUMNS.
_TARGET_AT, _PAGE_AT, _PAGE_SEQ = 7, 25, 8


def _nulls(count: int) -> str:
    """Untyped nulls for the columns of a UNION's other part: Postgres takes that part's types."""
    return ", ".join(["NULL"] * count)


def _page_end(*, after: str, limit: str, own_up_to: str) -> str:
    """A statement's `position` of a device after the rows of its `page` (`limit` + 1 of those
    after the device's position `after`, to tell whether more follow): the page's end when more
    follow, else everything up to `own_up_to` (what the request itself wrote), or to the last
    change sent. page_before states the same rule for a page read before a batch's write."""
    return f"""position AS (
    SELECT CASE WHEN count(*) > {limit} THEN (SELECT seq FROM page ORDER BY seq OFFSET {limit} - 1 LIMIT 1)
                ELSE greatest({after}, coalesce({own_up_to}, max(seq))) END AS seq,
           count(*) > {limit} AS has_more
    FROM page
)"""  # noqa: S608


def _page(*, after: str, limit: str, up_to: str | None = None) -> str:
    """The person's changes after `after` (and not after `up_to`), oldest first, `limit` + 1 of
    them. Both ends of the range bound the index scan: as a filter, the upper end made the scan
    read (and throw away) every change after it, such as all of a batch's own just written."""
    upper = f" AND seq <= {up_to}" if up_to else ""
    return (
        f"SELECT {CHANGE_COLUMNS}, seq FROM records "  # noqa: S608
        f"WHERE user_id = $1 AND seq > {after}{upper} ORDER BY seq LIMIT {limit} + 1"
    )


def _remember(position: str) -> str:
    """A statement's `remembered`: the device's new position, from the query `position` (rows of
    user id, device id and change number), kept for tombstone purges."""
    return f"""remembered AS (
    INSERT INTO device_cursors (user_id, device_id, seq) {position}
    ON CONFLICT (user_id, device_id) DO UPDATE SET seq = excluded.seq, updated_at = now()
)"""


# A UNION's untyped nulls take their types from its parts two at a time, from the first: the page's
# columns are null in both the head's row and the targets', and would be taken as text there. The
# head's row takes them, typed, from a page of no rows (`WHERE false`, which Postgres plans as no
# scan at all).
_START_ROWS = f"""
SELECT head.*, {_nulls(_PAGE_AT - _TARGET_AT)}, p.*
FROM head LEFT JOIN (SELECT {CHANGE_COLUMNS}, seq FROM records WHERE false) p ON true
UNION ALL
SELECT {_nulls(_TARGET_AT)}, t.*, {_nulls(_PAGE_SEQ + 1)} FROM ({_TARGETS}) t
WHERE (SELECT request_hash FROM head) IS NULL
UNION ALL
SELECT {_nulls(_PAGE_AT)}, p.* FROM ({_page(after="$6", limit="$7")}) p WHERE (SELECT request_hash FROM head) IS NULL
"""  # noqa: S608
_START = f"""
WITH head AS ({_HEAD.format(last_seq="s.last_seq", seen="s.last_seq", source=f"(SELECT {_SEEN} AS last_seq) AS s")})
{_START_ROWS}"""
_LOCKED_START = f"""
WITH locked AS (
    INSERT INTO sync_state (user_id) VALUES ($1)
    ON CONFLICT (user_id) DO UPDATE SET last_seq = sync_state.last_seq RETURNING last_seq
), head AS ({_HEAD.format(last_seq="locked.last_seq", seen=_SEEN, source="locked")})
{_START_ROWS}"""  # noqa: S608


async def read_start(
    conn: Driver,
    user_id: UUID,
    batch_id: UUID,
    mutations: Sequence[Mutation],
    *,
    lock: bool,
    after: int,
    limit: int,
) -> Start:
    """Read what the batch starts from, with the page of changes after `after` (up to `limit`);
    with `lock`, first take this person's write lock until commit (in a transaction)."""
    rows = await conn.fetch(
        _LOCKED_START if lock else _START, user_id, *_target_arguments(mutations), batch_id, after, limit
    )
    head = next(row for row in rows if row[0] is not None)
    fresh = head[0] == head[1]
    page = sorted((row[_PAGE_AT:] for row in rows if row[_PAGE_AT] is not None), key=lambda change: change[_PAGE_SEQ])
    # The rest are the targets': the head's last_seq and a page's id are never null.
    targets = [row[_TARGET_AT:_PAGE_AT] for row in rows if row[0] is None and row[_PAGE_AT] is None]
    return Start(
        last_seq=int(head[0]),
        key=WrappedKey(head[2], head[3]) if head[2] is not None else None,
        now=head[4],
        receipt=(head[5], head[6]) if head[5] is not None else None,
        targets=targets if fresh else None,
        page=page if fresh else None,
    )


def page_before(
    rows: Sequence[Sequence[Any]], key: DataKey, *, limit: int, after: int, own_up_to: int, rewritten: Collection[UUID]
) -> Page:
    """The page a batch's device is sent, from rows read before the batch wrote (Start.page): as
    pull would read it after the write. The records the batch rewrote are left out (their new
    states are in its results) but still count toward the page's end, and when no more follow,
    the device's position moves past the batch's own changes (`own_up_to`)."""
    has_more = len(rows) > limit
    shown = rows[:limit]
    return Page(
        changes=[change_of(row, key) for row in shown if row[0] not in rewritten],
        has_more=has_more,
        position=shown[-1][_PAGE_SEQ] if has_more else max(after, own_up_to),
    )


def _target_arguments(mutations: Sequence[Mutation]) -> tuple[list[UUID], list[bytes], list[int]]:
    return [m.id for m in mutations], [m.fingerprint for m in mutations], [m.base_version for m in mutations]


async def load_targets(conn: Driver, key: DataKey, mutations: Sequence[Mutation]) -> Targets:
    """Targets read afresh under the lock (when Start.targets is None)."""
    return open_targets(key, await conn.fetch(_TARGETS, key.owner, *_target_arguments(mutations)))


def open_targets(key: DataKey, rows: Iterable[Sequence[Any]]) -> Targets:
    """Targets from the rows of _TARGETS."""
    records: dict[UUID, Record] = {}
    applied: dict[bytes, int] = {}
    history: dict[UUID, dict[int, HistoryEntry]] = {}
    purged: set[UUID] = set()
    for row in rows:
        if row[0] is not None and row[0] not in records:
            if row[6] is None:
                purged.add(row[0])
            data = reveal(key, row[0], _data.decode(row[4]), row[5])
            records[row[0]] = Record(
                id=row[0],
                kind=row[1],
                version=row[2],
                deleted=row[3],
                data=data,
                stamps=open_stamps(row[6], row[7], row[8]) if row[6] is not None else _purged_stamps(data, row),
                changed_at=row[7],
                device_id=row[8],
            )
        if row[10] is not None:
            applied[row[9]] = row[10]
        if row[11] is not None:
            entry = history_entry(row[11:], key)
            history.setdefault(row[11], {})[entry.version] = entry
    return Targets(records, applied, history, frozenset(purged))


def _purged_stamps(data: dict[str, Any], row: Sequence[Any]) -> dict[str, Stamp]:
    """A purged record's stamps, which went with its row: each field and the delete at the time
    of its newest version (the delete), no earlier than the stamps the tombstone held. Without
    them a field would take the record's own stamp, which moves on with every later edit."""
    own = Stamp(row[7], row[8] or ZERO_DEVICE)
    stamps = dict.fromkeys(data, own)
    if row[3]:
        stamps[DELETED] = own
    return stamps


def is_batch_written_meanwhile(error: asyncpg.UniqueViolationError) -> bool:
    """The batch's receipt clashed with one of the same batch, committed by a request that ran
    beside this one (see Start)."""
    return bool(error.constraint_name == "pk_sync_batches")


async def find_batch(conn: Driver, key: DataKey, batch_id: UUID) -> StoredBatch | None:
    row = await conn.fetchrow(
        "SELECT request_hash, results FROM sync_batches WHERE user_id = $1 AND batch_id = $2", key.owner, batch_id
    )
    return open_batch(key, batch_id, (row[0], row[1])) if row is not None else None


def open_batch(key: DataKey, batch_id: UUID, receipt: tuple[bytes, bytes]) -> StoredBatch:
    request_hash, sealed = receipt
    return StoredBatch(request_hash, _results_decoder.decode(key.open_bytes(_BATCH, batch_id, sealed)))


def history_version(row: Any, key: DataKey | None) -> HistoryVersion:
    """A version as the app receives it."""
    return HistoryVersion(**msgspec.structs.asdict(history_entry(row, key)))


def history_entry(row: Any, key: DataKey | None) -> HistoryEntry:
    return HistoryEntry(
        version=row[1],
        deleted=row[2],
        data=reveal(key, row[0], _data.decode(row[3]), row[4]),
        changed_at=row[5],
        device_id=row[6],
    )


def pack_stamps(stamps: Mapping[str, Stamp], changed_at: datetime, device_id: UUID | None) -> bytes:
    """A record's stamps as its row keeps them beside its `changed_at` and `device_id`: a field
    set at the record's own time on its own device, as every field of a new record is, is nil.
    Whole, the stamps were a fifth of a new record's row and of what a batch sends Postgres (3%
    more batches of new records a second, measured). Release 0008 began reading nils and release
    0010 writing them, so that each release serves beside the one before it during a rolling
    update; going back to 0007 takes migration 0008's downgrade, which writes the nils out."""
    own: Stamp | None = None
    packed: dict[str, Stamp | None] = {}
    for field, stamp in stamps.items():
        # A new record's fields share one stamp: after the first, one identity check each.
        if stamp is own or (
            own is None and stamp.at == changed_at and (stamp.device is device_id or stamp.device == device_id)
        ):
            own = stamp
            packed[field] = None
        else:
            packed[field] = stamp
    return _pack_stamps.encode(packed)


def open_stamps(packed: bytes, changed_at: datetime, device_id: UUID | None) -> dict[str, Stamp]:
    """pack_stamps undone, with the `changed_at` and `device_id` of the same row."""
    stamps = _stamps.decode(packed)
    if None not in stamps.values():  # written whole: no step per field
        return cast(dict[str, Stamp], stamps)
    own = Stamp(changed_at, device_id or ZERO_DEVICE)  # a row without a device has no nil (pack_stamps)
    return {field: own if stamp is None else stamp for field, stamp in stamps.items()}


async def append_versions(conn: AsyncConnection, owned: Sequence[tuple[UUID, Written]], sealer: Sealer) -> None:
    """Append versions, each with its owner: one statement for one person's batch or many people's.

    `sealer` holds the data key of each owner whose versions carry private fields.
    """
    if not owned:
        return
    stored = [sealer.seal(owner, v.record_id, v.data) for owner, v in owned]
    await conn.exec_driver_sql(
        "INSERT INTO record_versions "
        "(user_id, record_id, version, kind, deleted, data, sealed, changed_at, device_id, fingerprint) "
        "SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::text[], $5::bool[], $6::jsonb[], "
        "$7::bytea[], $8::timestamptz[], $9::uuid[], $10::bytea[])",
        (
            [owner for owner, _ in owned],
            [v.record_id for _, v in owned],
            [v.version for _, v in owned],
            [v.kind for _, v in owned],
            [v.deleted for _, v in owned],
            [_json.encode(plain).decode() for plain, _ in stored],
            [sealed for _, sealed in stored],
            [v.changed_at for _, v in owned],
            [v.device_id for _, v in owned],
            [v.fingerprint for _, v in owned],
        ),
    )


async def save_records(conn: AsyncConnection, numbered: Sequence[tuple[UUID, int, Record]], sealer: Sealer) -> datetime:
    """Write new current states as (owner, change number, record); answers the write time."""
    stored = [sealer.seal(owner, r.id, r.data) for owner, _, r in numbered]
    result = await conn.exec_driver_sql(
        "INSERT INTO records (user_id, id, kind, version, deleted, data, sealed, stamps, changed_at, device_id, seq, "
        "updated_at) "
        "SELECT *, now() FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int[], $5::bool[], $6::jsonb[], "
        "$7::bytea[], $8::bytea[], $9::timestamptz[], $10::uuid[], $11::bigint[]) "
        "ON CONFLICT (user_id, id) DO UPDATE SET kind = excluded.kind, version = excluded.version, "
        "deleted = excluded.deleted, data = excluded.data, sealed = excluded.sealed, stamps = excluded.stamps, "
        "changed_at = excluded.changed_at, device_id = excluded.device_id, seq = excluded.seq, "
        "updated_at = excluded.updated_at RETURNING updated_at",
        (
            [owner for owner, _, _ in numbered],
            [r.id for _, _, r in numbered],
            [r.kind for _, _, r in numbered],
            [r.version for _, _, r in numbered],
            [r.deleted for _, _, r in numbered],
            [_json.encode(plain).decode() for plain, _ in stored],
            [sealed for _, sealed in stored],
            [pack_stamps(r.stamps, r.changed_at, r.device_id) for _, _, r in numbered],
            [r.changed_at for _, _, r in numbered],
            [r.device_id for _, _, r in numbered],
            [seq for _, seq, _ in numbered],
        ),
    )
    return result.scalars().first() or datetime.now().astimezone()


# Short keys for _Saved: Postgres reads the document character by character, and the names were
# a quarter of it. The statement names the columns in full (_SAVE_BATCH's ROWS FROM).
_SAVED_KEYS = {
    "record_id": "r",
    "version": "v",
    "kind": "k",
    "data": "d",
    "changed_at": "t",
    "deleted": "x",
    "device_id": "w",
    "record_changed_at": "rt",
    "seq": "s",
    "new": "n",
}


class _Saved(msgspec.Struct, omit_defaults=True, rename=_SAVED_KEYS):
    """A new version as save_batch sends it (its sealed blob and fingerprint go beside it, as
    bytes); the newest of its record also carries the record's change number (and its stamps
    beside it), and becomes the record's current state. What is usual is left out: a version
    not deleted, made by the batch's device, at the record's time."""

    record_id: UUID
    version: int
    kind: str
    data: dict[str, Any]
    changed_at: datetime
    deleted: bool = False
    # Another device than the batch's.
    device_id: UUID | None = None
    # The record's time, when not the version's own.
    record_changed_at: datetime | None = None
    seq: int | None = None
    # The record had no row before this batch: its current state is inserted, with no conflict to look for.
    new: bool | None = None


class Receipt(msgspec.Struct, frozen=True):
    """A batch's answer, kept so that a retry gets the same one."""

    batch_id: UUID
    request_hash: bytes
    results: list[MutationResult]


# One statement writes all of a batch: its versions and the new current states, the person's last
# change number, the event for the workers and the batch's receipt; or none of it, when the person's
# last change number cannot be claimed (see save_batch and save_new_batch, which claim it
# differently). The rows go in as one JSON document, which msgspec writes in one call, rather than
# as a dozen typed arrays that asyncpg encodes value by value in Python. Postgres reads it as jsonb:
# parsed once, each record's data is then taken as it is (json_to_recordset would parse every nested
# object again, and took twice the time). The sealed blobs, fingerprints and stamps, most of the
# bytes, go beside it as a binary array (zipped row by row with ROWS FROM), not as text for Postgres
# to parse: stamps as JSON were half the document and a third of its time. Each row's three are one
# element (_row_bytes): asyncpg looks at each element of an array in Python (is it an array
# itself?), and three arrays of a hundred took it 130 us a batch more than one (40 to 90 us more
# than making the elements). A row's change number is its place among the batch's $3 changes,
# counted on from the last change number before the claim. The event names the change numbers the
# batch took, not its records: the workers read what they need from the records still at those
# numbers (workers/jobs/events.py).
# The relay is woken after the commit, not by a NOTIFY in the statement (service.outbox.RelayWake).
#
# Both statements share $1 to $12; `updated_at` is what the new states are stamped with.
_WRITES = """
v AS (
    SELECT record_id, version, kind, coalesce(deleted, false) AS deleted, data, changed_at,
           coalesce(device_id, $12) AS device_id, coalesce(record_changed_at, changed_at) AS record_changed_at,
           (SELECT last_seq FROM claimed) - $3::bigint + seq AS seq, new,
           nullif(substring(b FROM 6 FOR get_byte(b, 0)), '') AS fingerprint,
           nullif(substring(b FROM 6 + get_byte(b, 0) FOR stamps_length), '') AS stamps,
           nullif(substring(b FROM 6 + get_byte(b, 0) + stamps_length), '') AS sealed
    FROM ROWS FROM (
        jsonb_to_recordset($2::jsonb) AS (r uuid, v int, k text, d jsonb, t timestamptz, x bool, w uuid,
            rt timestamptz, s bigint, n bool),
        unnest($11::bytea[])
    ) AS saved(record_id, version, kind, data, changed_at, deleted, device_id, record_changed_at, seq, new, b),
    LATERAL (SELECT (get_byte(b, 1) << 24) + (get_byte(b, 2) << 16) + (get_byte(b, 3) << 8) + get_byte(b, 4)
             AS stamps_length) AS header
    WHERE EXISTS (SELECT FROM claimed)
), history AS (
    INSERT INTO record_versions
        (user_id, record_id, version, kind, deleted, data, sealed, changed_at, device_id, fingerprint)
    SELECT $1, record_id, version, kind, deleted, data, sealed, changed_at, device_id, fingerprint
    FROM v
), new_states AS (
    INSERT INTO records
        (user_id, id, kind, version, deleted, data, sealed, stamps, changed_at, device_id, seq, updated_at)
    SELECT $1, record_id, kind, version, deleted, data, sealed, stamps, record_changed_at,
           device_id, seq, {updated_at}
    FROM v WHERE seq IS NOT NULL AND new
), current_states AS (
    INSERT INTO records
        (user_id, id, kind, version, deleted, data, sealed, stamps, changed_at, device_id, seq, updated_at)
    SELECT $1, record_id, kind, version, deleted, data, sealed, stamps, record_changed_at,
           device_id, seq, {updated_at}
    FROM v WHERE seq IS NOT NULL AND new IS NULL
    ON CONFLICT (user_id, id) DO UPDATE SET kind = excluded.kind, version = excluded.version,
        deleted = excluded.deleted, data = excluded.data, sealed = excluded.sealed, stamps = excluded.stamps,
        changed_at = excluded.changed_at, device_id = excluded.device_id, seq = excluded.seq,
        updated_at = excluded.updated_at
), receipt AS (
    INSERT INTO sync_batches (user_id, batch_id, request_hash, results, mutations, merged, rejected)
    SELECT $1, $4, $5, $6, $7, $8, $9 WHERE EXISTS (SELECT FROM claimed)
), event AS (
    INSERT INTO outbox (user_id, kind, payload)
    SELECT $1, $10, jsonb_build_object('after', last_seq - $3::bigint, 'up_to', last_seq)
    FROM claimed WHERE $10::text IS NOT NULL
)"""

# Claimed only if the person's last change number is still the one the batch started from ($14),
# and the device's new position ($13) remembered when it is known before the write.
_SAVE_BATCH = f"""
WITH claimed AS (
    INSERT INTO sync_state (user_id, last_seq) VALUES ($1, $14::bigint + $3::bigint)
    ON CONFLICT (user_id) DO UPDATE SET last_seq = excluded.last_seq WHERE sync_state.last_seq = $14
    RETURNING last_seq
), {_WRITES.format(updated_at="$15")},
{_remember("SELECT $1, $12, $13 WHERE $13::bigint IS NOT NULL AND EXISTS (SELECT FROM claimed)")}
SELECT EXISTS (SELECT FROM claimed)
"""  # noqa: S608

# A batch of new records needs nothing read before its write: the next change numbers are taken
# whatever the last one is (waiting for a write still running, as the person's lock would), the
# key the rows are sealed with must still be the person's ($15, as stored; locked, so that an
# erase destroying it meanwhile is waited for and seen), and the page of changes after the
# device's position ($13, up to $14 of them) is read in the statement's snapshot. That page is
# whole only when the snapshot holds every change before the claimed ones (`fresh`): the device's
# new position is then remembered here, as a pull would (_page_end).
_SAVE_NEW_BATCH = f"""
WITH claimed AS (
    INSERT INTO sync_state (user_id, last_seq)
    SELECT $1, $3 FROM data_keys WHERE user_id = $1 AND wrapped = $15 FOR KEY SHARE
    ON CONFLICT (user_id) DO UPDATE SET last_seq = sync_state.last_seq + excluded.last_seq
    RETURNING last_seq
), {_WRITES.format(updated_at="now()")}, page AS ({_page(after="$13", limit="$14")}), fresh AS (
    SELECT last_seq FROM claimed WHERE last_seq - $3::bigint = {_SEEN}
), {_page_end(after="$13", limit="$14", own_up_to="(SELECT last_seq FROM fresh)")},
{_remember("SELECT $1, $12, seq FROM position WHERE EXISTS (SELECT FROM fresh)")}
SELECT c.last_seq, EXISTS (SELECT FROM fresh), page.*
FROM claimed c LEFT JOIN page ON EXISTS (SELECT FROM fresh) ORDER BY page.seq
"""  # noqa: S608
# Where a new record's part of a _SAVE_NEW_BATCH row begins.
_NEW_PAGE_AT = 2


def _write_arguments(
    key: DataKey,
    written: Sequence[Written],
    changed: Sequence[Record],
    stored: Collection[UUID],
    receipt: Receipt,
    device_id: UUID,
) -> tuple[Any, ...]:
    """$1 to $12 of both write statements (_WRITES). Each version goes with its sealed blob; the
    newest of each changed record also carries its place among the changes (and its stamps), and
    becomes the record's current state, a plain insert unless its id is in `stored`."""
    current = {record.id: (place, record) for place, record in enumerate(changed, 1)}
    rows: list[_Saved] = []
    row_bytes: list[bytes] = []
    for v, (plain, sealed) in zip(written, key.seal_all([(v.record_id, v.data) for v in written]), strict=True):
        row = _Saved(v.record_id, v.version, v.kind, plain, v.changed_at, v.deleted)
        if v.device_id is not device_id and v.device_id != device_id:  # UUID's == is Python code
            row.device_id = v.device_id
        # A changed record's newest version is the one its state is at.
        if (entry := current.get(v.record_id)) is not None and entry[1].version == v.version:
            place, record = entry
            row.seq = place
            if record.changed_at != v.changed_at:
                row.record_changed_at = record.changed_at
            if record.id not in stored:
                row.new = True
            stamps = pack_stamps(record.stamps, record.changed_at, v.device_id)
        else:
            stamps = b""
        rows.append(row)
        row_bytes.append(_row_bytes(v.fingerprint or b"", stamps, sealed or b""))
    results = receipt.results
    return (
        key.owner,
        _json.encode(rows).decode(),
        len(changed),
        receipt.batch_id,
        receipt.request_hash,
        key.seal_bytes(_BATCH, receipt.batch_id, _results_encoder.encode(results)),
        len(results),
        sum(r.status == "merged" for r in results),
        sum(r.status == "rejected" for r in results),
        RECORDS_CHANGED if changed else None,
        row_bytes,
        device_id,
    )


def _row_bytes(fingerprint: bytes, stamps: bytes, sealed: bytes) -> bytes:
    """A written row's bytes as _WRITES reads them: the fingerprint's length (one byte) and the
    stamps' (four), then the three one after the other. An empty one is none (null)."""
    return _ROW_HEADER.pack(len(fingerprint), len(stamps)) + fingerprint + stamps + sealed


async def save_batch(
    conn: Driver,
    key: DataKey,
    written: Sequence[Written],
    changed: Sequence[Record],
    stored: Collection[UUID],
    receipt: Receipt,
    device: tuple[UUID, int | None],
    start: Start,
) -> bool:
    """One sync batch's writes in one statement: its new versions, the new current states of the
    `changed` records (numbered in that order after the start's last change number), the person's
    last change number, the event for the workers and the receipt. A current state is its
    record's newest version: its data and blob are sent once.

    Written only if the person's last change number is still the one the batch started from
    (`start`), and then True; when another write came between, nothing is written and the
    answer is False. The check waits for a write still running, as the person's lock would
    have, and every writer of records moves that number.

    `device` is the batch's device, with its new position when it is remembered here: when the
    device had every change before the batch, there is no page to read (see pull).

    `stored` holds the ids of the records that had a row when the batch began: the others' rows
    are plain inserts. Every writer of records moves the person's last change number, so none
    can have made one of those rows since (the write would not be claimed). An
    insert that could conflict costs Postgres a probe of the index and a speculative insertion
    per row, a sixth of writing a new record.

    The receipt is sealed (msgpack) since it repeats records and conflicts.
    """
    device_id, position = device
    claimed = await conn.fetchval(
        _SAVE_BATCH,
        *_write_arguments(key, written, changed, stored, receipt, device_id),
        position,
        start.last_seq,
        start.now,
    )
    return bool(claimed)


class NewBatch(msgspec.Struct, frozen=True):
    """What save_new_batch wrote and read."""

    # The person's last change number after the batch's changes.
    last_seq: int
    # The changes after the device's position (rows for page_before), or None when a write
    # committed between the statement's snapshot and its claim: the page is then read after (pull).
    page: list[tuple[Any, ...]] | None


async def save_new_batch(
    conn: Driver,
    key: tuple[WrappedKey, DataKey],
    written: Sequence[Written],
    changed: Sequence[Record],
    receipt: Receipt,
    device_id: UUID,
    *,
    after: int,
    limit: int,
) -> NewBatch | None:
    """save_batch for a batch whose records all are new, in one statement with nothing read
    first: its rows are written after the person's last change number, whatever it is, and the
    page of changes after `after` (up to `limit`) is read in the same statement.

    None, with nothing written, when `key` (as stored, and opened) is no longer the person's. A
    record that has a row, or history, after all (the batch was not new) makes the statement fail
    on the table's key, and nothing is written either (is_not_new).
    """
    wrapped, opened = key
    found = await conn.fetch(
        _SAVE_NEW_BATCH,
        *_write_arguments(opened, written, changed, (), receipt, device_id),
        after,
        limit,
        wrapped.wrapped,
    )
    if not found:
        return None
    head = found[0]
    return NewBatch(
        last_seq=head[0],
        page=[row[_NEW_PAGE_AT:] for row in found if row[_NEW_PAGE_AT] is not None] if head[1] else None,
    )


def is_not_new(error: asyncpg.UniqueViolationError) -> bool:
    """save_new_batch met a record with a row or history, or this batch's receipt: the batch must
    be read for, and run, as any other."""
    return error.constraint_name in {"pk_records", "pk_record_versions", "pk_sync_batches"}


async def take_seqs(conn: AsyncConnection, users: Sequence[UUID]) -> dict[UUID, int]:
    """Lock each person's sync row and take one change number each, in id order
    (so two callers cannot deadlock): how server-written records are numbered."""
    rows = await conn.exec_driver_sql(
        "INSERT INTO sync_state (user_id, last_seq) SELECT u, 1 FROM unnest($1::uuid[]) AS u ORDER BY u "
        "ON CONFLICT (user_id) DO UPDATE SET last_seq = sync_state.last_seq + 1 RETURNING user_id, last_seq",
        (sorted(users),),
    )
    return {row.user_id: row.last_seq for row in rows}


class Page(msgspec.Struct, frozen=True):
    changes: list[Change]
    has_more: bool
    # Where the device's cursor now stands: the number of the last change it has.
    position: int


_PULL = f"""
WITH page AS ({_page(after="$2", limit="$4", up_to="coalesce($3::bigint, 9223372036854775807)")}),
{_page_end(after="$2", limit="$4", own_up_to="$5")}, {_remember("SELECT $1, $6, seq FROM position")}
SELECT page.*, position.seq, position.has_more, k.master_key_id, k.wrapped
FROM position LEFT JOIN page ON true LEFT JOIN data_keys k ON k.user_id = $1 ORDER BY page.seq
"""  # noqa: S608


async def pull(
    conn: Driver,
    user_id: UUID,
    key: DataKey | MasterKeys,
    device_id: UUID,
    *,
    after: int,
    up_to: int | None,
    own_up_to: int | None,
    limit: int,
) -> Page:
    """Up to `limit` records changed after `after` (and not after `up_to`), oldest change first,
    and the device's new position, which is also remembered for it: the end of the page when
    more follow, else everything up to `own_up_to` (what this request itself wrote) or to the
    last change sent.

    `key` is the person's data key, or the master keys when it is not known yet: the key is then
    read with the page, in the same snapshot, so a key made by a write the page shows is there.
    """
    rows = await conn.fetch(_PULL, user_id, after, up_to, limit, own_up_to, device_id)
    shown = [row for row in rows[:limit] if row[0] is not None]
    opener: DataKey | None = key if isinstance(key, DataKey) else None
    # Unwrapped only for a page with sealed text: most pulls of a phone in use bring nothing new,
    # and unwrapping (a key schedule and a decryption) was 3% of such a pull's CPU in a profile.
    if isinstance(key, MasterKeys) and rows[0][11] is not None and any(row[5] is not None for row in shown):
        opener = key.unwrap(user_id, WrappedKey(rows[0][11], rows[0][12]))
    changes = [change_of(row, opener) for row in shown]
    return Page(changes=changes, has_more=rows[0][10], position=rows[0][9])


async def get_record(
    conn: AsyncConnection, user_id: UUID, key: DataKey | None, kind: str, record_id: UUID
) -> Change | None:
    row = (
        await conn.exec_driver_sql(
            f"SELECT {CHANGE_COLUMNS} FROM records WHERE user_id = $1 AND id = $2 AND kind = $3",  # noqa: S608
            (user_id, record_id, kind),
        )
    ).first()
    return change_of(row, key) if row else None


async def record_history(
    conn: AsyncConnection, user_id: UUID, key: DataKey | None, kind: str, record_id: UUID
) -> list[HistoryVersion]:
    result = await conn.exec_driver_sql(
        f"SELECT {VERSION_COLUMNS} FROM record_versions v "  # noqa: S608
        "WHERE v.user_id = $1 AND v.record_id = $2 AND v.kind = $3 ORDER BY v.version DESC",
        (user_id, record_id, kind),
    )
    return [history_version(row, key) for row in result]


async def live_versions(conn: AsyncConnection, user_id: UUID) -> Iterable[tuple[UUID, str, int]]:
    """(id, kind, version) of every live record, sorted by id: the manifest's input."""
    result = await conn.exec_driver_sql(
        "SELECT id, kind, version FROM records WHERE user_id = $1 AND NOT deleted ORDER BY id", (user_id,)
    )
    return [(row.id, row.kind, row.version) for row in result]


def change_of(row: Any, key: DataKey | None) -> Change:
    """A records row as the app receives it: a deleted record carries no data."""
    return Change(
        id=row[0],
        kind=row[1],
        version=row[2],
        deleted=row[3],
        data={} if row[3] else reveal(key, row[0], _data.decode(row[4]), row[5]),
        changed_at=row[6],
        updated_at=row[7],
    )


async def purge_tombstones(conn: AsyncConnection, retention: timedelta) -> int:
    """Drop deleted records older than the retention that every device active
    within it has already pulled; their history stays."""
    result = await conn.exec_driver_sql(
        "DELETE FROM records r WHERE r.deleted AND r.updated_at < now() - $1::interval "
        "AND NOT EXISTS (SELECT 1 FROM device_cursors c WHERE c.user_id = r.user_id "
        "AND c.updated_at >= now() - $1::interval AND c.seq < r.seq)",
        (retention,),
    )
    return result.rowcount or 0


async def purge_batches(conn: AsyncConnection, retention: timedelta) -> int:
    """Receipts are kept as long as a device may still come back with an old cursor."""
    result = await conn.exec_driver_sql(
        "DELETE FROM sync_batches WHERE created_at < now() - $1::interval", (retention,)
    )
    return result.rowcount or 0
