"""A page of changes is read in index order, whatever Postgres's statistics say."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from litestar import Litestar
from litestar.di import Provide
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db import sync as queries
from service.db.engine import API_SERVER_SETTINGS, SYNC_SERVER_SETTINGS, DriverPool
from service.settings import Settings

ALL_AFTER = 9223372036854775807


def _nodes(plan: dict[str, Any]) -> list[str]:
    return [plan["Node Type"], *(name for child in plan.get("Plans", []) for name in _nodes(child))]


async def _write_records(driver: Any, people: list[uuid.UUID], count: int) -> None:
    """`count` mood check-ins for each of `people`, numbered 1 to `count`."""
    await driver.execute(
        "INSERT INTO records (user_id, id, kind, version, deleted, data, changed_at, seq, stamps) "
        "SELECT p, gen_random_uuid(), 'mood_checkin', 1, false, '{\"mood\": 3}', now(), s, '\\x80' "
        "FROM unnest($1::uuid[]) AS p, generate_series(1, $2::int) AS s",
        people,
        count,
    )


def _new_batch_reading_a_page(user_id: uuid.UUID) -> tuple[Any, ...]:
    """_SAVE_NEW_BATCH's arguments for a batch of `user_id` with no records, whose device is sent
    the page of changes after 0 (up to 500)."""
    return (user_id, "[]", 0, uuid.uuid4(), b"", b"", 0, 0, 0, None, [], uuid.uuid4(), 0, 500, b"")


async def test_a_first_sync_page_reads_the_index_in_order_when_the_statistics_lag(
    settings: Settings, database: str
) -> None:
    """Statistics taken before a person wrote 5,000 records say they have almost none: Postgres
    would then read all their rows after the cursor and sort them, for every page of a first
    sync. On the API's connections a page is the first rows of the (user_id, seq) index, in a
    pull, with a batch's start, and with a batch of new records."""
    pool = DriverPool(settings.database_url, size=1, server_settings=API_SERVER_SETTINGS)
    try:
        async with pool.connection() as driver:
            # Rolled back: the statistics and the rows go with it.
            transaction = driver.transaction()
            await transaction.start()
            try:
                await driver.execute("ANALYZE records")
                user_id = uuid.uuid4()
                await driver.execute("INSERT INTO users (id) VALUES ($1)", user_id)
                await _write_records(driver, [user_id], 5000)
                plans = {
                    "pull": await driver.fetchval(
                        "EXPLAIN (FORMAT JSON) " + queries._PULL, user_id, 0, None, 500, None, uuid.uuid4()
                    ),
                    "batch": await driver.fetchval(
                        "EXPLAIN (FORMAT JSON) " + queries._START,
                        user_id,
                        [uuid.uuid4()],
                        [b"\0" * 32],
                        [0],
                        uuid.uuid4(),
                        0,
                        500,
                    ),
                    "new records": await driver.fetchval(
                        "EXPLAIN (FORMAT JSON) " + queries._SAVE_NEW_BATCH, *_new_batch_reading_a_page(user_id)
                    ),
                }
            finally:
                await transaction.rollback()
    finally:
        await pool.close()
    for statement, plan in plans.items():
        nodes = _nodes(json.loads(plan)[0]["Plan"])
        assert "Bitmap Heap Scan" not in nodes, (statement, nodes)


async def test_the_apis_connections_are_the_ones_that_read_in_index_order(app: Litestar, database: str) -> None:
    """Both the sync path's connections and the engine's, which compile no statement either."""
    provided_engine, provided_pool = app.dependencies["engine"], app.dependencies["driver_pool"]
    assert isinstance(provided_engine, Provide)
    assert isinstance(provided_pool, Provide)
    engine: AsyncEngine = provided_engine.dependency()
    pool: DriverPool = provided_pool.dependency()
    async with engine.connect() as conn:
        assert await conn.scalar(text("SHOW enable_bitmapscan")) == "off"
        assert await conn.scalar(text("SHOW jit")) == "off"
    async with pool.connection() as driver:
        assert await driver.fetchval("SHOW enable_bitmapscan") == "off"
        assert await driver.fetchval("SHOW jit") == "off"
        # The sync path keeps one plan per statement (test_the_sync_paths_kept_plans_read_by_index).
        assert await driver.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
    async with engine.connect() as conn:
        assert await conn.scalar(text("SHOW plan_cache_mode")) == "auto"


async def test_a_batchs_start_is_not_compiled_however_costly_postgres_thinks_it(
    settings: Settings, database: str
) -> None:
    """Postgres compiles a statement it thinks costly (jit_above_cost) at every run, and thinks a
    batch's start costly once the tables are big, whoever's rows it reads. Here the threshold is
    brought down to any cost: a connection with Postgres's defaults compiles the start (on a
    server that can compile), the API's never do."""
    start = (uuid.uuid4(), [uuid.uuid4()], [b"\0" * 32], [0], uuid.uuid4(), 0, 500)

    async def compiled(server_settings: dict[str, str]) -> tuple[bool, bool]:
        """Whether the start was compiled, and whether this connection could compile."""
        pool = DriverPool(settings.database_url, size=1, server_settings=server_settings)
        try:
            async with pool.connection() as driver:
                await driver.execute("SET jit_above_cost = 0")
                plan = await driver.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + queries._START, *start)
                # True only with a JIT provider installed and `jit` on.
                can_compile = await driver.fetchval("SELECT pg_jit_available()")
        finally:
            await pool.close()
        return "JIT" in json.loads(plan)[0], can_compile

    by_default, server_compiles = await compiled({})
    if not server_compiles:
        pytest.skip("this Postgres has no JIT provider: nothing would be compiled on any connection")
    assert by_default, "with Postgres's defaults, the start is compiled"
    assert await compiled(API_SERVER_SETTINGS) == (False, False)


def _literal(value: Any, type_name: str) -> str:
    """A value as SQL text of `type_name` (EXECUTE of a prepared statement takes no parameters
    when it is explained)."""
    if value is None:
        return f"NULL::{type_name}"
    if isinstance(value, list):
        return f"ARRAY[{', '.join(_literal(v, type_name.removesuffix('[]')) for v in value)}]::{type_name}"
    if isinstance(value, bytes):
        return f"'\\x{value.hex()}'::{type_name}"
    return "'" + str(value).replace("'", "''") + f"'::{type_name}"


async def _kept_plan(driver: Any, name: str, sql: str, *args: Any) -> list[str]:
    """The scans of the plan a sync connection keeps for `sql`: made without the values of its
    parameters (generic), as PREPARE and EXPLAIN EXECUTE show it. A generic plan names its
    parameters where a plan made for the values would hold them: the person's id is `$1`."""
    parameters = (await driver.prepare(sql)).get_parameters()
    types = [await driver.fetchval("SELECT format_type($1, NULL)", p.oid) for p in parameters]
    literals = ", ".join(_literal(arg, t) for arg, t in zip(args, types, strict=True))
    await driver.execute(f"PREPARE {name} ({', '.join(types)}) AS {sql}")
    plan = json.loads(await driver.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE {name}({literals})"))[0]["Plan"]
    assert "user_id = $1" in json.dumps(plan), f"{name}: not a generic plan"
    return _scans(plan)


def _scans(plan: dict[str, Any]) -> list[str]:
    """Each node of a plan, with the table and index it reads ("Index Scan records
    ix_records_user_id_seq")."""
    here = " ".join(filter(None, (plan["Node Type"], plan.get("Relation Name"), plan.get("Index Name"))))
    return [here, *(node for child in plan.get("Plans", []) for node in _scans(child))]


@pytest.mark.parametrize("statistics", ["current", "lagging"])
async def test_the_sync_paths_kept_plans_read_by_index(settings: Settings, database: str, statistics: str) -> None:
    """The sync path's connections keep the plan each statement gets without its values (a
    generic plan, SYNC_SERVER_SETTINGS). For a person among many, with 5,000 records of their own,
    and statistics taken after their records were written or before: a batch's start probes each
    target's row and its history by key and reads its page from the (user_id, seq) index, and a
    pull and a batch of new records read their page from that index too. No statement reads all
    of a table."""
    pool = DriverPool(settings.database_url, size=1, server_settings=SYNC_SERVER_SETTINGS)
    try:
        async with pool.connection() as driver:
            assert await driver.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
            # Rolled back: the statistics, the rows and the prepared statements' uses go with it.
            transaction = driver.transaction()
            await transaction.start()
            try:
                people = [uuid.uuid4() for _ in range(50)]
                await driver.executemany("INSERT INTO users (id) VALUES ($1)", [(p,) for p in people])
                await _write_records(driver, people[1:], 100)
                if statistics == "lagging":
                    await driver.execute("ANALYZE records")
                user_id = people[0]
                await _write_records(driver, [user_id], 5000)
                if statistics == "current":
                    await driver.execute("ANALYZE records")
                ids = [
                    row[0] for row in await driver.fetch("SELECT id FROM records WHERE user_id = $1 LIMIT 100", user_id)
                ]
                start = await _kept_plan(
                    driver,
                    "kept_start",
                    queries._START,
                    user_id,
                    ids,
                    [b"\0" * 32] * len(ids),
                    [1] * len(ids),
                    uuid.uuid4(),
                    0,
                    500,
                )
                pull = await _kept_plan(driver, "kept_pull", queries._PULL, user_id, 0, None, 500, None, uuid.uuid4())
                new_records = await _kept_plan(
                    driver, "kept_new_records", queries._SAVE_NEW_BATCH, *_new_batch_reading_a_page(user_id)
                )
            finally:
                await transaction.rollback()
    finally:
        await pool.close()  # its connection, and the statements prepared on it, with it
    page = "Index Scan records ix_records_user_id_seq"
    for statement, nodes in {"start": start, "pull": pull, "new records": new_records}.items():
        assert not [node for node in nodes if node.startswith(("Seq Scan records", "Bitmap"))], (statement, nodes)
        assert page in nodes, (statement, nodes)
    # Each target is one probe of its row and of its history: nested loops over the batch's ids.
    assert not {"Hash Join", "Merge Join"} & set(start), start
    assert not [node for node in start if node.startswith("Seq Scan record")], start
    assert "Index Scan records pk_records" in start, start
    assert "Index Scan record_versions pk_record_versions" in start, start
