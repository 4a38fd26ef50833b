"""The sync path's three goals, each beside a raw-asyncpg baseline taken in the same run.

1. Ingest: 16 devices at once send batches of 100 new records (half mood check-ins, half
   journal entries of a few hundred characters) over HTTP; raw asyncpg writes the same rows
   (current records and their first versions) with one statement per batch.
2. Updates with 5% concurrent conflicts: the same 16 people edit their records in batches of
   100, alternating between two devices (both up to date when the clock starts), so each batch
   also pulls the other device's last one; 5 of each batch's edits build on a version the other
   device has already replaced, so they merge. Raw asyncpg applies the same edits (new current
   state plus a history row) with one statement per batch.
3. First sync: a new device of a person with 10,000 records pulls everything with the default
   page size; raw asyncpg reads the same rows page by page.

Ingest and updates run in rounds (--rounds), kindsync's and raw asyncpg's in turn, each round
every device's next batches: this machine's speed drifts over tens of seconds, and a ratio of two
phases run one after the other moved with it (0.42 to 0.62 between runs of the same code).

Request bodies and rows are built before the clock starts, for both sides: what is timed is
the server and the database, not the load generator. For the same reason the timed requests go
through a few lines of HTTP/1.1 (`Lane`) rather than a general client: this machine's two cores
run the server, Postgres and the load generator at once, and what a general client spends per
request (several times the server's own parsing) would be taken from the server being measured.
Before the clock starts each device sends one batch, on both sides: a new process's first
requests open its pooled connections and prepare its statements. Each phase then begins with a
warm-up round that is not counted (alternated): after one batch per device, some connections
were still unopened, and Postgres was still planning kindsync's statements afresh (for their
first five runs on each connection, and often after, before the sync path kept one plan per
statement: SYNC_SERVER_SETTINGS); counted, that cold start was nearly a fifth of the first
round's Postgres CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import asyncpg
import httpx
import msgspec
import uvloop
from sqlalchemy.engine import make_url

from schemas.sync import PULL_LIMIT_DEFAULT
from service.db import migrate
from service.db.engine import create_engine, drop_database, ensure_database
from service.envelope import MasterKeys
from service.settings import DEFAULT_DATABASE_URL, Settings

WORDS = ("kind", "gentle", "tired", "hopeful", "small", "walk", "friend", "rain", "coffee", "breathe", "enough")
CONFLICTS_PER_BATCH = 5
FIRST_SYNC_RECORDS = 10_000
_json = msgspec.json.Encoder()


class Process(NamedTuple):
    name: str
    parent: int
    # CPU seconds used so far, user and system, its own and its ended children's (once it has
    # waited for them): a Postgres backend that ends during a phase, or an API process, leaves
    # what it used in its parent's count instead of taking it out of the sum.
    cpu_s: float


def processes() -> dict[int, Process]:
    """Every process on this machine (Linux /proc)."""
    found: dict[int, Process] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as file:
                name, rest = file.read().split(" (", 1)[1].rsplit(")", 1)
        except (OSError, IndexError, ValueError):
            continue
        fields = rest.split()
        # utime, stime, cutime and cstime (proc(5)), counted from the state field on.
        ticks = sum(int(value) for value in fields[11:15])
        found[int(pid)] = Process(name, int(fields[1]), ticks / os.sysconf("SC_CLK_TCK"))
    return found


def process_tree(root: int) -> dict[int, float]:
    """A process and its descendants, each with the CPU seconds it used so far."""
    every = processes()
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, process in every.items() if process.parent in tree} - tree
        grew = bool(more)
        tree |= more
    return {pid: every[pid].cpu_s if pid in every else 0.0 for pid in tree}


def cpu_seconds(root: int) -> float:
    """CPU time used so far by the API's processes: what the API spends, steadier than a rate
    on a shared machine."""
    return sum(process_tree(root).values())


def database_cpu_seconds() -> float:
    """CPU time used so far by Postgres (every process named postgres: the backends, and the WAL
    writer and checkpointer, whose work the writes cause). Nothing else uses this Postgres while a
    figure is measured, so the difference over a run is what that run cost the database."""
    return sum(process.cpu_s for process in processes().values() if process.name == "postgres")


class Spent:
    """The CPU the API's processes (when given) and Postgres use from now until `into`: beside a
    rate, the like-for-like figure on a machine whose other load varies from run to run."""

    def __init__(self, server_pid: int | None = None) -> None:
        self._server_pid = server_pid
        self._start = self._read()

    def _read(self) -> tuple[float, float]:
        return (cpu_seconds(self._server_pid) if self._server_pid else 0.0), database_cpu_seconds()

    def into(self, figures: Figures) -> Figures:
        api, database = self._read()
        figures.cpu_s, figures.db_cpu_s = api - self._start[0], database - self._start[1]
        return figures


def listening(root: int, port: int) -> int:
    """Listening sockets on `port` among the API's processes: one per process once all are up."""
    inodes: set[str] = set()
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            inodes |= {
                os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1]
                for fd in os.listdir(f"/proc/{pid}/fd")
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")
            }
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as file:
            for line in file.readlines()[1:]:
                fields = line.split()
                count += int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A" and fields[9] in inodes
    return count


@dataclass
class Figures:
    items: int
    seconds: float
    latencies: list[float]
    cpu_s: float = 0.0  # of the API processes, when measured
    db_cpu_s: float = 0.0  # of Postgres
    # Each round's rate, when the phase ran in rounds (alternated), and its uncounted warm-up round's.
    round_rates: list[float] = field(default_factory=list)
    warm_up_rate: float = 0.0

    def add(self, part: Figures) -> None:
        """A round's figures added to the whole phase's."""
        self.round_rates.append(part.rate)
        self.items += part.items
        self.seconds += part.seconds
        self.latencies += part.latencies
        self.cpu_s += part.cpu_s
        self.db_cpu_s += part.db_cpu_s

    @property
    def rate(self) -> float:
        return self.items / self.seconds

    @property
    def p99_ms(self) -> float:
        return statistics.quantiles(self.latencies, n=100)[98] * 1000 if len(self.latencies) > 1 else 0.0

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1000


def new_records(count: int, seed: int, at: str) -> list[dict[str, Any]]:
    """Half mood check-ins, half journal entries of a few hundred characters."""
    out = []
    for index in range(count):
        if index % 2:
            body = " ".join(WORDS[(seed + index + k) % len(WORDS)] for k in range(60))
            data: dict[str, Any] = {"occurred_at": at, "body": body, "tags": ["evening"]}
            kind = "journal_entry"
        else:
            data = {"occurred_at": at, "mood": 1 + (seed + index) % 10, "emotions": ["calm"], "tags": []}
            kind = "mood_checkin"
        out.append(
            {"id": str(uuid.uuid4()), "kind": kind, "op": "upsert", "base_version": 0, "changed_at": at, "data": data}
        )
    return out


def edit(record: dict[str, Any], base: int, at: str, word: str) -> dict[str, Any]:
    """A change to one field: a word added to a journal entry, another mood for a check-in."""
    if record["kind"] == "journal_entry":
        change: dict[str, Any] = {"body": f"{record['data']['body']} {word}"}
    else:
        change = {"mood": 1 + (record["data"]["mood"] % 10)}
    return {**record, "base_version": base, "changed_at": at, "data": change}


@dataclass
class Person:
    tokens: dict[str, Any]
    devices: tuple[str, str]
    records: list[dict[str, Any]]
    # Each device keeps the cursor it was given, as the app does: it pulls only what is new.
    cursors: dict[str, str | None] = field(default_factory=dict)


@contextlib.contextmanager
def clock_running() -> Iterator[None]:
    """While the clock runs, the load generator's own garbage collector waits: it holds every
    request it will send, and a full collection of those (a tenth of a second) would be counted
    as the server's latency."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def timed_batches(
    jobs: list[list[Callable[[], Awaitable[None]]]],
) -> tuple[float, list[float]]:
    """Run each list of calls one after another, all lists at once; answer the wall time and each call's."""
    latencies: list[float] = []

    async def lane(calls: list[Callable[[], Awaitable[None]]]) -> None:
        for call in calls:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    with clock_running():
        started = time.perf_counter()
        await asyncio.gather(*(lane(calls) for calls in jobs))
        return time.perf_counter() - started, latencies


class Lane:
    """One keep-alive HTTP/1.1 connection, one request at a time: a device's link to the server.
    When an answer says `Connection: close` (the server evening out its processes' connections),
    the next request goes on a new connection, as any HTTP client does."""

    def __init__(self, host: str, port: int) -> None:
        self._address = (host, port)
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, body: bytes, token: str) -> tuple[int, bytes]:
        request = (
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        reused = self._streams is not None
        if self._streams is None:
            self._streams = await asyncio.open_connection(*self._address)
        reader, writer = self._streams
        writer.write(request)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as closed:
            # A kept-alive connection left idle longer than the server keeps it (between phases of a
            # long run) is closed before it is answered: send again on a new one, as HTTP clients do.
            # A sync request is safe to send twice: its batch id makes the second an answer of the first.
            if not reused or closed.partial:
                raise
            await self.close()
            return await self.post(path, body, token)
        headers = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:] if line)
        content = await reader.readexactly(int(headers[b"content-length"]))
        if headers.get(b"connection") == b"close":
            await self.close()
        return int(head[9:12]), content

    async def close(self) -> None:
        if self._streams is not None:
            writer, self._streams = self._streams[1], None
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


class _Status(msgspec.Struct):
    status: str


class _Answer(msgspec.Struct):
    """What the load generator reads of a sync answer: each result's status, and the changes
    only counted (checked as JSON, not built as objects). Building them cost the load generator
    60 us per updates answer, taken from the cores the server runs on."""

    cursor: str
    has_more: bool
    results: list[_Status]
    changes: list[msgspec.Raw]


_answer = msgspec.json.Decoder(_Answer)


class Http:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.lanes: dict[int, Lane] = {}
        self.errors: list[str] = []

    async def lane(self, person: Person) -> Lane:
        if id(person) not in self.lanes:
            self.lanes[id(person)] = Lane(self.host, self.port)
        return self.lanes[id(person)]

    async def sync(self, person: Person, body: bytes) -> _Answer | None:
        status, content = await (await self.lane(person)).post("/v1/sync", body, person.tokens["access_token"])
        if status != 200:
            self.errors.append(f"{status}: {content[:200]!r}")
            return None
        return _answer.decode(content)

    def post(
        self, person: Person, device_id: str, mutations: list[dict[str, Any]], wanted: set[str]
    ) -> Callable[[], Awaitable[None]]:
        head = _json.encode({"device_id": device_id, "batch_id": str(uuid.uuid4())})[:-1]
        tail = b',"mutations":' + _json.encode(mutations) + b"}"

        async def call() -> None:
            answer = await self.sync(person, head + b',"cursor":' + _json.encode(person.cursors.get(device_id)) + tail)
            if answer is None:
                return
            person.cursors[device_id] = answer.cursor
            statuses = {r.status for r in answer.results}
            if not statuses <= wanted:
                self.errors.append(f"statuses {sorted(statuses)}")

        return call

    async def close(self) -> None:
        for lane in self.lanes.values():
            await lane.close()

    async def catch_up(self, person: Person, device_id: str) -> None:
        """Pull until nothing is left, moving the device's cursor."""
        while True:
            body = {"device_id": device_id, "batch_id": str(uuid.uuid4()), "cursor": person.cursors.get(device_id)}
            answer = await self.sync(person, _json.encode({**body, "mutations": []}))
            if answer is None:
                return
            person.cursors[device_id] = answer.cursor
            if not answer.has_more:
                return

    def check(self, what: str) -> None:
        if self.errors:
            raise SystemExit(f"{what}: {len(self.errors)} batches failed, first: {self.errors[0]}")


def plan_ingest(people: list[Person], batches: int, size: int, at: str) -> list[list[list[dict[str, Any]]]]:
    plans = []
    for seed, person in enumerate(people):
        batches_of_person = [new_records(size, seed * 1000 + b, at) for b in range(batches)]
        person.records = [m for batch in batches_of_person for m in batch]
        plans.append(batches_of_person)
    return plans


def plan_updates(records: list[dict[str, Any]], batches: int, size: int, at: str) -> list[list[dict[str, Any]]]:
    """Batch b: `size - 5` records edited for the first time (base 1), and 5 of batch b-1's records
    edited again on base 1, which the other device has meanwhile replaced: concurrent edits.
    Batch 0 has no earlier batch: its last 5 are first edits of records no other batch touches."""
    fresh = size - CONFLICTS_PER_BATCH
    spare = records[fresh * batches : fresh * batches + CONFLICTS_PER_BATCH]
    plan = []
    for b in range(batches):
        first = [edit(r, 1, at, f"first{b}") for r in records[b * fresh : (b + 1) * fresh]]
        earlier = records[(b - 1) * fresh : (b - 1) * fresh + CONFLICTS_PER_BATCH] if b else spare
        plan.append(first + [edit(r, 1, at, f"again{b}") for r in earlier])
    return plan


Calls = list[list[Callable[[], Awaitable[None]]]]  # each device's batches, in order


def planned(args: argparse.Namespace) -> int:
    """Each device's batches in a phase: a warm-up round's (one round's worth, not counted), then
    the --batches that are."""
    return int(args.batches // args.rounds + args.batches)


class Ours:
    """kindsync's side of the goals, through HTTP: each timed phase as each device's calls, so that
    its rounds can alternate with raw asyncpg's (alternated)."""

    def __init__(self, base_url: str, args: argparse.Namespace, server_pid: int) -> None:
        self.server_pid = server_pid
        self._args = args
        self._client = httpx.AsyncClient(base_url=base_url, timeout=120)
        self._http = Http("127.0.0.1", args.port)
        self._at = datetime.now(UTC).isoformat()
        self._people: list[Person] = []

    async def start(self) -> None:
        """The people, each with two devices, and a batch from each device before the clock starts."""
        args = self._args
        self._people = [await self._person() for _ in range(args.devices)]
        warm_up = [
            [self._http.post(p, d, new_records(args.size, 99, self._at), {"applied"}) for d in p.devices]
            for p in self._people
        ]
        await timed_batches(warm_up)
        self._http.check("warm-up")

    async def _person(self) -> Person:
        tokens = (await self._client.post("/v1/auth/anonymous", json={})).json()
        return Person(tokens, (str(uuid.uuid4()), str(uuid.uuid4())), [])

    def check(self, what: str) -> None:
        self._http.check(what)

    def ingest(self) -> Calls:
        args, http = self._args, self._http
        plans = plan_ingest(self._people, planned(args), args.size, self._at)
        return [
            [http.post(p, p.devices[0], batch, {"applied"}) for batch in plan]
            for p, plan in zip(self._people, plans, strict=True)
        ]

    async def updates(self) -> Calls:
        """The second devices have what the first ones wrote before the clock starts, as phones that
        synced in between would: this goal measures updates; a first sync is measured on its own."""
        http = self._http
        await asyncio.gather(*(http.catch_up(person, person.devices[1]) for person in self._people))
        http.check("catching up")
        return [
            [
                http.post(person, person.devices[b % 2], batch, {"applied", "merged"})
                for b, batch in enumerate(plan_updates(person.records, planned(self._args), self._args.size, self._at))
            ]
            for person in self._people
        ]

    async def first_sync(self) -> Figures:
        http = self._http
        reader = await self._person()
        seeded = new_records(FIRST_SYNC_RECORDS, 7, self._at)
        seed_calls = [
            http.post(reader, reader.devices[0], seeded[i : i + 500], {"applied"}) for i in range(0, len(seeded), 500)
        ]
        await timed_batches([seed_calls])
        http.check("first sync seeding")
        spent = Spent(self.server_pid)
        return spent.into(await pull_everything(http, reader))

    async def close(self) -> None:
        await self._http.close()
        await self._client.aclose()


async def pull_everything(http: Http, person: Person) -> Figures:
    """A new device's first sync: pages of the default size until nothing is left."""
    cursor, pulled, latencies = None, 0, []
    device = str(uuid.uuid4())
    with clock_running():
        started = time.perf_counter()
        while True:
            request = _json.encode(
                {"device_id": device, "batch_id": str(uuid.uuid4()), "cursor": cursor, "mutations": []}
            )
            sent = time.perf_counter()
            answer = await http.sync(person, request)
            latencies.append(time.perf_counter() - sent)
            if answer is None:
                http.check("first sync")
                raise AssertionError("unreachable")
            pulled += len(answer.changes)
            cursor = answer.cursor
            if not answer.has_more:
                break
        seconds = time.perf_counter() - started
    if pulled != FIRST_SYNC_RECORDS:
        raise SystemExit(f"first sync pulled {pulled} of {FIRST_SYNC_RECORDS} records")
    return Figures(pulled, seconds, latencies)


# Stamps are MessagePack; raw asyncpg writes an empty map (0x80), as it writes no sealed text.
_RAW_INGEST = """
WITH batch AS (
    SELECT * FROM unnest($2::uuid[], $3::text[], $4::jsonb[], $5::timestamptz[]) AS b(id, kind, data, at)
), history AS (
    INSERT INTO record_versions (user_id, record_id, version, kind, deleted, data, changed_at, device_id)
    SELECT $1, id, 1, kind, false, data, at, $6 FROM batch
)
INSERT INTO records (user_id, id, kind, version, deleted, data, stamps, changed_at, device_id, seq)
SELECT $1, id, kind, 1, false, data, '\\x80'::bytea, at, $6, $7 + row_number() OVER () FROM batch
"""

_RAW_UPDATE = """
WITH batch AS (
    SELECT * FROM unnest($2::uuid[], $3::jsonb[], $4::timestamptz[]) AS b(id, change, at)
), changed AS (
    UPDATE records r SET data = r.data || b.change, version = r.version + 1, changed_at = b.at, device_id = $5,
           seq = $6 + 1
    FROM batch b WHERE r.user_id = $1 AND r.id = b.id
    RETURNING r.id, r.version, r.kind, r.data, r.changed_at
)
INSERT INTO record_versions (user_id, record_id, version, kind, deleted, data, changed_at, device_id)
SELECT $1, id, version, kind, false, data, changed_at, $5 FROM changed
"""

_RAW_PAGE = """
SELECT id, kind, version, deleted, data, changed_at, updated_at, seq FROM records
WHERE user_id = $1 AND seq > $2 ORDER BY seq LIMIT $3
"""


def statement(pool: asyncpg.Pool, sql: str, values: tuple[Any, ...]) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        async with pool.acquire() as conn:
            await conn.execute(sql, *values)

    return call


class Raw:
    """Raw asyncpg's side of the goals: the same rows, one statement per batch."""

    server_pid = None  # only Postgres's CPU is counted

    def __init__(self, dsn: str, args: argparse.Namespace) -> None:
        self._dsn = dsn
        self._args = args
        self._at = datetime.now(UTC)
        self._people = [Person({}, (str(uuid.uuid4()), str(uuid.uuid4())), []) for _ in range(args.devices)]
        self._users = [uuid.uuid4() for _ in range(args.devices + 1)]
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "Raw.start first"
        return self._pool

    async def start(self) -> None:
        """The people, and a batch from each before the clock starts."""
        self._pool = await asyncpg.create_pool(self._dsn, min_size=self._args.devices, max_size=self._args.devices)
        async with self.pool.acquire() as conn:
            await conn.executemany("INSERT INTO users (id) VALUES ($1)", [(u,) for u in self._users])
        stamp = self._at.isoformat()
        await timed_batches(
            [
                [self._ingest(user, str(uuid.uuid4()), new_records(self._args.size, 99, stamp), 0)]
                for user in self._users
            ]
        )

    def check(self, what: str) -> None:
        """A failed statement raises at once: nothing is left to check."""

    def _ingest(
        self, user: uuid.UUID, device: str, batch: list[dict[str, Any]], seq: int
    ) -> Callable[[], Awaitable[None]]:
        values = (
            user,
            [uuid.UUID(m["id"]) for m in batch],
            [m["kind"] for m in batch],
            [json.dumps(m["data"]) for m in batch],
            [self._at] * len(batch),
            uuid.UUID(device),
            seq,
        )
        return statement(self.pool, _RAW_INGEST, values)

    def ingest(self) -> Calls:
        args = self._args
        plans = plan_ingest(self._people, planned(args), args.size, self._at.isoformat())
        return [
            [self._ingest(user, p.devices[0], batch, b * args.size) for b, batch in enumerate(plan)]
            for user, p, plan in zip(self._users[:-1], self._people, plans, strict=True)
        ]

    async def updates(self) -> Calls:
        args, at = self._args, self._at

        def update(
            user: uuid.UUID, device: str, batch: list[dict[str, Any]], seq: int
        ) -> Callable[[], Awaitable[None]]:
            values = (
                user,
                [uuid.UUID(m["id"]) for m in batch],
                [json.dumps(m["data"]) for m in batch],
                [at + timedelta(seconds=1)] * len(batch),
                uuid.UUID(device),
                seq,
            )
            return statement(self.pool, _RAW_UPDATE, values)

        return [
            [
                update(user, p.devices[b % 2], batch, 10_000 + b)
                for b, batch in enumerate(plan_updates(p.records, planned(args), args.size, at.isoformat()))
            ]
            for user, p in zip(self._users[:-1], self._people, strict=True)
        ]

    async def first_sync(self) -> Figures:
        reader = self._users[-1]
        seeded = new_records(FIRST_SYNC_RECORDS, 7, self._at.isoformat())
        await timed_batches(
            [[self._ingest(reader, str(uuid.uuid4()), seeded[i : i + 500], i) for i in range(0, len(seeded), 500)]]
        )
        async with self.pool.acquire() as conn:
            after, pulled, page_latencies = 0, 0, []
            spent = Spent()
            with clock_running():
                started = time.perf_counter()
                while True:
                    sent = time.perf_counter()
                    rows = await conn.fetch(_RAW_PAGE, reader, after, PULL_LIMIT_DEFAULT)
                    page_latencies.append(time.perf_counter() - sent)
                    pulled += len(rows)
                    if len(rows) < PULL_LIMIT_DEFAULT:
                        break
                    after = rows[-1]["seq"]
                return spent.into(Figures(pulled, time.perf_counter() - started, page_latencies))

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


Side = Ours | Raw


async def alternated(
    what: str, sides: tuple[Side, Side], calls: tuple[Calls, Calls], *, batches: int, rounds: int, per_call: int
) -> list[Figures]:
    """Both sides of a goal in turns: each round, every device's next batches on one side, then
    on the other. This machine's speed drifts over tens of seconds (other load on the
    host); measured one whole phase after the other, the ratio moved with it. Each side's figure
    is over all its rounds; `per_call` is what one call counts (a batch's mutations).

    Each device's calls are a warm-up round's, then `batches` more. The warm-up round runs first,
    on both sides in turn, and is not counted: it is when each side's pooled connections open and
    Postgres makes the plans it then keeps (before kindsync's sync path kept one plan per
    statement, pg_stat_statements counted 37 ms of planning in its first round of ingest and 55 ms
    in its first of updates, nearly a fifth of their Postgres CPU, against 0.6 to 2 ms in the
    last rounds). A server that runs for hours pays that once per connection; counted here, it
    was a cold start's cost in a goal of steady throughput."""
    totals = [Figures(0, 0.0, []) for _ in sides]
    warm_up = len(calls[0][0]) - batches
    for r in range(-1, rounds):
        low, high = (0, warm_up) if r < 0 else (warm_up + r * batches // rounds, warm_up + (r + 1) * batches // rounds)
        for side, side_calls, total in zip(sides, calls, totals, strict=True):
            spent = Spent(side.server_pid)
            seconds, latencies = await timed_batches([device[low:high] for device in side_calls])
            side.check(what)
            figures = spent.into(Figures(len(side_calls) * (high - low) * per_call, seconds, latencies))
            if r < 0:
                total.warm_up_rate = figures.rate
            else:
                total.add(figures)
    return totals


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=16)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--api-processes",
        type=int,
        default=os.cpu_count() or 1,
        help="API_PROCESSES of the server (default: one per core)",
    )
    parser.add_argument(
        "--rounds", type=int, default=4, help="turns of ingest and of updates, alternating with raw asyncpg's"
    )
    args = parser.parse_args()
    if not 1 <= args.rounds <= args.batches:
        parser.error("--rounds: from 1 to --batches")

    base = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    url = make_url(base).set(database=f"kindsync_bench_{os.getpid()}")
    database_url = url.render_as_string(hide_password=False)
    await ensure_database(database_url)
    master_keys = MasterKeys.generate("bench")
    engine = create_engine(
        Settings(secret_key="bench" * 10, master_keys=master_keys, database_url=database_url), pool_size=1
    )
    await migrate.upgrade(engine)
    await engine.dispose()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PORT": str(args.port),
        "LOG_LEVEL": "WARNING",
        "SECRET_KEY": "bench-secret-" + "b" * 40,
        "MASTER_KEYS": master_keys,
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_KIB": "1024",
    }
    env["API_PROCESSES"] = str(args.api_processes)
    server = await asyncio.create_subprocess_exec(sys.executable, "-m", "service.cli", "run", env=env)
    try:
        base_url = f"http://127.0.0.1:{args.port}"
        await wait_until_up(base_url, server.pid, args.port, args.api_processes)
        http, raw = await goals(
            Ours(base_url, args, server.pid),
            Raw(url.set(drivername="postgresql").render_as_string(hide_password=False), args),
            args,
        )
    finally:
        server.send_signal(signal.SIGINT)
        await asyncio.wait_for(server.wait(), 30)
        await drop_database(database_url)
    report(args, http, raw)


async def goals(ours: Ours, raw: Raw, args: argparse.Namespace) -> tuple[dict[str, Figures], dict[str, Figures]]:
    """Each goal's figures, ours and raw asyncpg's: ingest and updates in alternating rounds, then
    each side's first sync (one device's pulls, one after another: nothing to alternate)."""
    sides = (ours, raw)
    try:
        for side in sides:
            await side.start()
        ingest = await alternated(
            "ingest", sides, (ours.ingest(), raw.ingest()), batches=args.batches, rounds=args.rounds, per_call=args.size
        )
        updates = await alternated(
            "updates",
            sides,
            (await ours.updates(), await raw.updates()),
            batches=args.batches,
            rounds=args.rounds,
            per_call=args.size,
        )
        first_sync = (await ours.first_sync(), await raw.first_sync())
    finally:
        for side in sides:
            await side.close()
    ours_figures = {"ingest": ingest[0], "updates": updates[0], "first_sync": first_sync[0]}
    raw_figures = {"ingest": ingest[1], "updates": updates[1], "first_sync": first_sync[1]}
    return ours_figures, raw_figures


def report(args: argparse.Namespace, http: dict[str, Figures], raw: dict[str, Figures]) -> None:
    print(f"\nsync: {args.devices} devices x {args.batches} batches x {args.size} records")
    print(f"API processes: {args.api_processes} (API_PROCESSES)")
    print(
        f"ingest and updates: a warm-up round of {planned(args) - args.batches} batches per device, then "
        f"{args.rounds} rounds each, kindsync's and raw asyncpg's in turn"
    )
    print(f"first sync: {FIRST_SYNC_RECORDS:,} records, pages of {PULL_LIMIT_DEFAULT}")
    print(
        f"{'goal':<34} {'kindsync':>14} {'p50':>8} {'p99':>8} {'API cpu/item':>13} {'db cpu/item':>12} "
        f"{'raw asyncpg':>14} {'p99':>8} {'db cpu/item':>12} {'ratio':>6}   wanted"
    )
    rows = (
        ("ingest, new records (mutations/s)", "ingest", ">= 0.50 x raw, p99 <= 100 ms"),
        ("updates, 5% conflicts (mutations/s)", "updates", ">= 0.40 x raw"),
        ("first sync, default page (records/s)", "first_sync", ">= 20,000 records/s"),
    )
    for name, key, wanted in rows:
        ours, base = http[key], raw[key]
        print(
            f"{name:<34} {ours.rate:>14,.0f} {ours.p50_ms:>6.0f}ms {ours.p99_ms:>6.0f}ms "
            f"{ours.cpu_s / ours.items * 1e6:>11.0f}us {ours.db_cpu_s / ours.items * 1e6:>10.0f}us "
            f"{base.rate:>14,.0f} {base.p99_ms:>6.0f}ms {base.db_cpu_s / base.items * 1e6:>10.0f}us "
            f"{ours.rate / base.rate:>6.2f}   {wanted}"
        )
    for name, key, _ in rows[:2]:
        by_round = (f"{o / b:.2f}" for o, b in zip(http[key].round_rates, raw[key].round_rates, strict=True))
        warm_up = http[key].warm_up_rate / raw[key].warm_up_rate
        print(f"{name.split(',')[0]} ratio by round: {' '.join(by_round)} (warm-up round, not counted: {warm_up:.2f})")
    print("cpu/item: CPU time per mutation or record, of the API's processes and of Postgres")


async def wait_until_up(base_url: str, server_pid: int, port: int, processes: int, within_s: float = 60) -> None:
    """Until every API process listens: the devices connect at once, and a connection made before
    a process is up stays with another one for the whole run."""
    deadline = time.monotonic() + within_s
    async with httpx.AsyncClient(base_url=base_url) as http:
        while time.monotonic() < deadline:
            try:
                if (await http.get("/healthz")).status_code == 200 and listening(server_pid, port) >= processes:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit("the API did not start")


if __name__ == "__main__":
    uvloop.run(main())
