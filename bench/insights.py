"""Weekly insights for 10,000 people with a realistic week each.

Beside it, in the same run, one raw SQL aggregate over the same rows (counts
and mood averages per person for the week): what the database alone needs
to read them. The ratio of people per second is the figure that matters.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from service.db import migrate
from service.db.engine import create_engine, drop_database, ensure_database
from service.envelope import MasterKeys
from service.logs import configure_logging
from service.settings import DEFAULT_DATABASE_URL, Settings
from workers.jobs.insights import compute_insights, last_complete_week

TAGS = ("walk", "work", "family", "sleep", "friends")


def week_of_records(user: uuid.UUID, week: datetime, seed: int) -> list[tuple[Any, ...]]:
    """A realistic week: daily check-ins, practices, experiments, activities, journal entries,
    and a few check-ins in the four weeks before."""
    rows: list[tuple[Any, ...]] = []

    def add(kind: str, at: datetime, data: dict[str, Any]) -> None:
        rows.append((user, uuid.uuid4(), kind, json.dumps({"occurred_at": at.isoformat(), **data}), at))

    for day in range(7):
        at = week + timedelta(days=day, hours=20)
        add(
            "mood_checkin",
            at,
            {
                "mood": 1 + (seed + day) % 10,
                "energy": None,
                "emotions": ["calm"],
                "tags": [TAGS[(seed + day) % 5]],
                "note": None,
            },
        )
    for day in (0, 2, 4):
        add(
            "practice_session",
            week + timedelta(days=day, hours=7),
            {
                "practice": "loving_kindness",
                "phrases": [],
                "duration_s": 300,
                "felt_genuine": (seed + day) % 11,
                "mood_before": None,
                "mood_after": None,
            },
        )
    for day in (1, 3, 5):
        add(
            "activity",
            week + timedelta(days=day, hours=17),
            {
                "category": ("social", "enjoyment", "meaning")[day % 3],
                "description": "time outside",
                "with_others": day == 1,
                "predicted_mood": None,
                "mood_after": None,
            },
        )
    for day in (1, 4):
        at = week + timedelta(days=day, hours=12)
        rows.append(
            (
                user,
                uuid.uuid4(),
                "as_if_experiment",
                json.dumps(
                    {
                        "planned_for": at.isoformat(),
                        "target_belief": "I deserve rest",
                        "intention": "rest",
                        "behaviours": [],
                        "predicted_mood": 4,
                        "belief_before": 30,
                        "follow_up_at": None,
                        "status": "done",
                        "actual_mood": 4 + (seed + day) % 3,
                        "outcome": None,
                        "learned": None,
                        "belief_after": 40,
                    }
                ),
                at,
            )
        )
    for day in (2, 6):
        add(
            "journal_entry",
            week + timedelta(days=day, hours=22),
            {"title": None, "body": "a few calm words", "prompt": None, "tags": ["evening"]},
        )
    for back in (3, 9, 16, 24):
        add("mood_checkin", week - timedelta(days=back, hours=-20), {"mood": 5, "tags": []})
    return rows


async def seed(dsn: str, people: int, week: datetime) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        users = [uuid.uuid4() for _ in range(people)]
        await conn.execute("INSERT INTO users (id) SELECT unnest($1::uuid[])", users)
        for start in range(0, people, 1000):
            rows = [
                row
                for n, user in enumerate(users[start : start + 1000])
                for row in week_of_records(user, week, start + n)
            ]
            await conn.execute(
                "INSERT INTO records (user_id, id, kind, version, deleted, data, stamps, changed_at, seq) "
                "SELECT u, i, k, 1, false, d, '\\x80'::bytea, c, row_number() OVER () "
                "FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::jsonb[], $5::timestamptz[]) AS t(u, i, k, d, c)",
                [r[0] for r in rows],
                [r[1] for r in rows],
                [r[2] for r in rows],
                [r[3] for r in rows],
                [r[4] for r in rows],
            )
        await conn.execute("ANALYZE records")
    finally:
        await conn.close()


RAW_AGGREGATE = """
SELECT user_id, count(*) FILTER (WHERE kind = 'mood_checkin') AS checkins,
       avg((data->>'mood')::int) FILTER (WHERE kind = 'mood_checkin') AS mood_avg,
       count(*) FILTER (WHERE kind = 'practice_session') AS practices,
       count(*) FILTER (WHERE kind = 'activity') AS activities,
       count(*) FILTER (WHERE kind = 'as_if_experiment' AND data->>'status' = 'done') AS experiments
FROM records
WHERE NOT deleted AND coalesce(data->>'occurred_at', data->>'planned_for')::timestamptz >= $1
  AND coalesce(data->>'occurred_at', data->>'planned_for')::timestamptz < $2
GROUP BY user_id
"""


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--people", type=int, default=10_000)
    args = parser.parse_args()
    configure_logging("WARNING")
    base = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    url = make_url(base).set(database=f"kindsync_bench_insights_{os.getpid()}")
    database_url = url.render_as_string(hide_password=False)
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    await ensure_database(database_url)
    engine = create_engine(
        Settings(secret_key="bench" * 10, master_keys=MasterKeys.generate("bench"), database_url=database_url),
        pool_size=2,
    )
    try:
        await migrate.upgrade(engine)
        week_start = last_complete_week(datetime.now(UTC), "UTC")
        week = datetime.combine(week_start, datetime.min.time(), UTC)
        await seed(dsn, args.people, week)

        started = time.perf_counter()
        written = await compute_insights({"engine": engine}, {"week_start": week_start.isoformat()})
        insight_s = time.perf_counter() - started
        assert written == args.people, f"{written} insights for {args.people} people"

        conn = await asyncpg.connect(dsn)
        try:
            started = time.perf_counter()
            rows = await conn.fetch(RAW_AGGREGATE, week, week + timedelta(days=7))
            raw_s = time.perf_counter() - started
        finally:
            await conn.close()
        assert len(rows) == args.people
    finally:
        await engine.dispose()
        await drop_database(database_url)
    print(f"\nweekly insights: {args.people:,} people, a realistic week each")
    print(f"{'compute_insights (all of it)':<30} {args.people / insight_s:>10,.0f} people/s   {insight_s:6.2f} s")
    print(f"{'raw SQL aggregate':<30} {args.people / raw_s:>10,.0f} people/s   {raw_s:6.2f} s")
    print(f"{'ratio':<30} {raw_s / insight_s:>10.2f} x raw SQL")


if __name__ == "__main__":
    asyncio.run(main())
