"""Weekly insights in bulk: facts for many people in one statement, stored as sync records.

Days are the person's own: each record's time is read in their time zone.
Nothing here is a query per person or per metric.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from uuid import UUID

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.insights import WeeklyInsight
from service.db import sync as records
from service.db.preferences import PREFS_SQL, Prefs, prefs_of
from service.envelope import Sealer
from service.insights.weekly import Fact, Screening
from service.sync.model import Record, Stamp, Written

KIND = "weekly_insight"
# Insight ids are derived, so every run for one person and week meets the same record.
_NAMESPACE = uuid.UUID("5d0c7f3e-2f7a-4c59-9a43-6b1f0c2f8e11")
SERVER_DEVICE = UUID(int=0)
_to_data = msgspec.json.Decoder(dict)
_encoder = msgspec.json.Encoder()


class Person(msgspec.Struct, frozen=True, array_like=True):
    user_id: UUID
    week_start: date
    timezone: str


def insight_id(user_id: UUID, week_start: date) -> UUID:
    return uuid.uuid5(_NAMESPACE, f"{user_id}:{week_start.isoformat()}")


_FACTS = """
WITH people AS (
    SELECT * FROM unnest($1::uuid[], $2::date[], $3::text[]) AS p(user_id, week_start, tz)
), dated AS (
    SELECT p.user_id, r.kind, r.data,
           (COALESCE(r.data->>'occurred_at', r.data->>'planned_for')::timestamptz AT TIME ZONE p.tz)::date AS day,
           p.week_start
    FROM people p JOIN records r ON r.user_id = p.user_id
    WHERE NOT r.deleted AND r.kind <> 'weekly_insight' AND r.kind <> 'preferences'
)
SELECT d.user_id, d.day, f.name, count(*) AS n,
       coalesce(sum(f.value), 0)::float8 AS total, count(f.value) AS valued
FROM dated d
CROSS JOIN LATERAL (
    SELECT 'logged' AS name, NULL::numeric AS value
    UNION ALL SELECT 'mood', (d.data->>'mood')::numeric WHERE d.kind = 'mood_checkin'
    UNION ALL SELECT 'tag:' || t.tag, NULL FROM jsonb_array_elements_text(
        CASE WHEN d.kind IN ('mood_checkin', 'journal_entry') THEN d.data->'tags' ELSE '[]'::jsonb END) AS t(tag)
    UNION ALL SELECT 'practice:' || (d.data->>'practice'), (d.data->>'felt_genuine')::numeric
        WHERE d.kind = 'practice_session'
    UNION ALL SELECT 'activity:' || (d.data->>'category'), NULL WHERE d.kind = 'activity'
    UNION ALL SELECT 'experiment_done', (d.data->>'actual_mood')::numeric - (d.data->>'predicted_mood')::numeric
        WHERE d.kind = 'as_if_experiment' AND d.data->>'status' = 'done'
    UNION ALL SELECT 'experiment_better', NULL
        WHERE d.kind = 'as_if_experiment' AND d.data->>'status' = 'done'
        AND (d.data->>'actual_mood')::int > (d.data->>'predicted_mood')::int
    UNION ALL SELECT 'belief_shift', (d.data->>'belief_after')::numeric - (d.data->>'belief_before')::numeric
        WHERE d.kind = 'as_if_experiment' AND d.data->>'status' = 'done' AND d.data->>'belief_after' IS NOT NULL
) AS f
WHERE d.day >= d.week_start - 28 AND d.day < d.week_start + 7
GROUP BY d.user_id, d.day, f.name
"""

_SCREENING = """
WITH people AS (
    SELECT * FROM unnest($1::uuid[], $2::date[], $3::text[]) AS p(user_id, week_start, tz)
)
SELECT DISTINCT ON (p.user_id, r.data->>'instrument') p.user_id, r.data->>'instrument' AS instrument,
       (r.data->>'score')::float8 AS score, (r.data->'answers'->>8)::int AS item9
FROM people p JOIN records r ON r.user_id = p.user_id
WHERE r.kind = 'assessment' AND NOT r.deleted AND r.data->>'instrument' IN ('who5', 'phq9')
  AND (r.data->>'occurred_at')::timestamptz < ((p.week_start + 7)::timestamp AT TIME ZONE p.tz)
ORDER BY p.user_id, r.data->>'instrument', (r.data->>'occurred_at')::timestamptz DESC
"""


def _columns(people: Sequence[Person]) -> tuple[list[UUID], list[date], list[str]]:
    return [p.user_id for p in people], [p.week_start for p in people], [p.timezone for p in people]


async def facts(conn: AsyncConnection, people: Sequence[Person]) -> dict[UUID, list[Fact]]:
    found: dict[UUID, list[Fact]] = defaultdict(list)
    for row in await conn.exec_driver_sql(_FACTS, _columns(people)):
        found[row.user_id].append(Fact(row.day, row.name, row.n, row.total, row.valued))
    return found


async def screenings(conn: AsyncConnection, people: Sequence[Person]) -> dict[UUID, Screening]:
    latest: dict[UUID, dict[str, int]] = defaultdict(dict)
    for row in await conn.exec_driver_sql(_SCREENING, _columns(people)):
        if row.instrument == "who5":
            latest[row.user_id]["who5_raw"] = int(row.score)
        else:
            latest[row.user_id]["phq9_total"] = int(row.score)
            latest[row.user_id]["phq9_item9"] = row.item9
    return {user_id: Screening(**values) for user_id, values in latest.items()}


async def store(conn: AsyncConnection, insights: dict[UUID, WeeklyInsight]) -> dict[UUID, int]:
    """Write each insight that changed as its person's `weekly_insight` record.

    Answers the new version for each person whose insight is new or changed
    (1: created); an unchanged week writes no version. Change numbers are taken under each person's sync lock,
    as a sync batch takes them, so the insight reaches every device by pull.
    """
    if not insights:
        return {}
    now = datetime.now(UTC)
    wanted = {
        user_id: (insight_id(user_id, insight.week_start), _to_data.decode(_encoder.encode(insight)))
        for user_id, insight in insights.items()
    }
    existing = await _existing(conn, list(wanted), [record_id for record_id, _ in wanted.values()])
    changed = sorted(u for u, (rid, data) in wanted.items() if rid not in existing or existing[rid][1] != data)
    if not changed:
        return {}
    seqs = await records.take_seqs(conn, changed)
    stamp = Stamp(now, SERVER_DEVICE)
    numbered: list[tuple[UUID, int, Record]] = []
    for user_id in changed:
        record_id, data = wanted[user_id]
        version = existing[record_id][0] + 1 if record_id in existing else 1
        record = Record(
            id=record_id,
            kind=KIND,
            version=version,
            deleted=False,
            data=data,
            stamps=dict.fromkeys(data, stamp),
            changed_at=now,
            device_id=SERVER_DEVICE,
        )
        numbered.append((user_id, seqs[user_id], record))
    # An insight holds no private field (its words are the server's), so it needs no data key.
    nothing_private = Sealer({})
    await records.append_versions(
        conn, [(user_id, _version(record)) for user_id, _, record in numbered], nothing_private
    )
    await records.save_records(conn, numbered, nothing_private)
    return {user_id: record.version for user_id, _, record in numbered}


def _version(record: Record) -> Written:
    return Written(
        record_id=record.id,
        kind=record.kind,
        version=record.version,
        deleted=False,
        data=record.data,
        changed_at=record.changed_at,
        device_id=SERVER_DEVICE,
        fingerprint=None,
    )


async def _existing(
    conn: AsyncConnection, users: list[UUID], ids: list[UUID]
) -> dict[UUID, tuple[int, dict[str, object]]]:
    rows = await conn.exec_driver_sql(
        "SELECT id, version, data FROM records WHERE user_id = ANY($1::uuid[]) AND id = ANY($2::uuid[])",
        (users, ids),
    )
    return {row.id: (row.version, row.data) for row in rows}


async def record_run(conn: AsyncConnection, trigger: str, users: int, at: datetime) -> None:
    """Remember the latest run of this trigger, for the operator's health check."""
    await conn.exec_driver_sql(
        "INSERT INTO insight_runs (trigger, finished_at, users) VALUES ($1, $2, $3) "
        "ON CONFLICT (trigger) DO UPDATE SET finished_at = excluded.finished_at, users = excluded.users",
        (trigger, at, users),
    )


async def people_page(conn: AsyncConnection, after: UUID | None, limit: int, only: UUID | None) -> list[Prefs]:
    """People in id order with their preferences."""
    rows = await conn.exec_driver_sql(
        f"{PREFS_SQL} WHERE ($1::uuid IS NULL OR u.id > $1) AND ($2::uuid IS NULL OR u.id = $2) ORDER BY u.id LIMIT $3",
        (after, only, limit),
    )
    return [prefs_of(row) for row in rows]


async def due(conn: AsyncConnection, now: datetime, evening: time) -> list[tuple[Prefs, date]]:
    """People for whom it is their weekly_day evening, whose week has no insight yet."""
    rows = await conn.exec_driver_sql(
        f"WITH prefs AS ({PREFS_SQL}), local AS (SELECT *, ($1::timestamptz AT TIME ZONE tz) AS at FROM prefs), "  # noqa: S608
        "weeks AS (SELECT *, at::date - (extract(isodow FROM at)::int % 7) - 6 AS week_start FROM local) "
        "SELECT * FROM weeks w WHERE lower(to_char(w.at, 'Dy')) = w.weekly_day AND w.at::time >= $2::time "
        "AND NOT EXISTS (SELECT 1 FROM records r WHERE r.user_id = w.user_id AND r.kind = 'weekly_insight' "
        "AND r.data->>'week_start' = w.week_start::text) ORDER BY w.user_id",
        (now, evening),
    )
    return [(prefs_of(row), row.week_start) for row in rows]
