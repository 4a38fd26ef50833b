"""A person's weekly insight from the day-by-day facts the database counted.

The SQL groups a person's records by day (in their own time zone) and by
fact: a mood, a tag, a practice, an activity, a finished experiment. From
those few rows per day this module derives every number of the insight and
hands them to the rules for highlights, suggestion and support prompt.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date, timedelta

import msgspec

from schemas.insights import WeeklyInsight
from service.insights.rules import DayFacts, WeekStats, round1, weekly_insight

WEEK = timedelta(days=7)
FACTOR_WINDOW = timedelta(days=28)
FACTOR_PREFIXES = ("activity:", "practice:", "tag:")


class Fact(msgspec.Struct, frozen=True, array_like=True):
    """How often `name` happened on `day`, and the sum and count of its values."""

    day: date
    name: str
    count: int
    total: float
    valued: int


class Screening(msgspec.Struct, frozen=True, kw_only=True):
    """The latest questionnaire answers up to the week's end."""

    who5_raw: int | None = None
    phq9_total: int | None = None
    phq9_item9: int | None = None


def build(week_start: date, facts: Iterable[Fact], screening: Screening) -> WeeklyInsight:
    week = _Window(week_start, week_start + WEEK)
    before = _Window(week_start - 4 * WEEK, week_start)
    last_week = _Window(week_start - WEEK, week_start)
    facts = list(facts)
    stats = WeekStats(
        week_start=week_start,
        days_logged=len({f.day for f in facts if f.name == "logged" and week.holds(f.day)}),
        checkins=sum(f.count for f in facts if f.name == "mood" and week.holds(f.day)),
        mood_avg=_mean(facts, week, "mood"),
        mood_avg_prev4=_mean(facts, before, "mood"),
        practice_counts=_counts(facts, week, "practice:"),
        felt_genuine_avg=_mean(facts, week, "practice:"),
        felt_genuine_prev4=_mean(facts, before, "practice:"),
        experiments_done=sum(f.count for f in facts if f.name == "experiment_done" and week.holds(f.day)),
        experiments_better_than_predicted=sum(
            f.count for f in facts if f.name == "experiment_better" and week.holds(f.day)
        ),
        experiment_mood_gap_avg=_mean(facts, week, "experiment_done"),
        belief_shift_avg=_mean(facts, week, "belief_shift"),
        activity_counts=_counts(facts, week, "activity:"),
    )
    return weekly_insight(
        stats,
        _days(facts, week_start + WEEK - FACTOR_WINDOW, week_start + WEEK),
        mood_avg_last_week=_mean(facts, last_week, "mood"),
        latest_who5_raw=screening.who5_raw,
        latest_phq9_total=screening.phq9_total,
        latest_phq9_item9=screening.phq9_item9,
    )


class _Window(msgspec.Struct, frozen=True, array_like=True):
    start: date
    end: date  # exclusive

    def holds(self, day: date) -> bool:
        return self.start <= day < self.end


def _matches(fact: Fact, name: str) -> bool:
    """A name ending in ':' stands for every fact of that family."""
    return fact.name.startswith(name) if name.endswith(":") else fact.name == name


def _mean(facts: list[Fact], window: _Window, name: str) -> float | None:
    total = sum(f.total for f in facts if _matches(f, name) and window.holds(f.day))
    valued = sum(f.valued for f in facts if _matches(f, name) and window.holds(f.day))
    return round1(total / valued) if valued else None


def _counts(facts: list[Fact], window: _Window, family: str) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for f in facts:
        if f.name.startswith(family) and window.holds(f.day):
            counts[f.name.removeprefix(family)] += f.count
    return dict(sorted(counts.items()))


def _days(facts: list[Fact], start: date, end: date) -> list[DayFacts]:
    """Each day of the window: its mean mood and which factors were present (28 days ending with the week)."""
    mood: dict[date, list[float]] = defaultdict(lambda: [0.0, 0])
    factors: dict[date, set[str]] = defaultdict(set)
    for f in facts:
        if not start <= f.day < end:
            continue
        if f.name == "mood":
            mood[f.day][0] += f.total
            mood[f.day][1] += f.valued
        elif f.name.startswith(FACTOR_PREFIXES):
            factors[f.day].add(f.name)
    days = []
    day = start
    while day < end:
        total, valued = mood.get(day, (0.0, 0))
        days.append(DayFacts(day=day, mood_avg=total / valued if valued else None, factors=frozenset(factors[day])))
        day += timedelta(days=1)
    return days
