"""The weekly reflection's rules: factor comparisons, the support prompt, highlights and a suggestion.

Pure functions of per-day and per-week numbers the worker's SQL has already gathered, so every
threshold and every sentence is tested without a database. The wording is part of the product:
a finding "tends to go with" a mood, never causes it; counts are counts, never streaks; nothing
here names a diagnosis.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from statistics import fmean

import msgspec

from schemas.insights import FactorComparison, Suggestion, WeeklyInsight

FACTOR_DAYS_MIN = 3  # days with a mood on which a factor was present, and as many on which it was absent
FACTORS_MAX = 5
FACTOR_GAP_MIN = 0.5  # on the 1-10 mood scale; a smaller gap is noise worth no sentence
FACTOR_HIGHLIGHTS_MAX = 2
HIGHLIGHTS_MAX = 4
LOW_MOOD_MAX = 3.0  # mood_avg at or below this two weeks running
WHO5_LOW_BELOW = 13  # raw 0-25; below 13 is poor wellbeing (Topp et al. 2015)
PHQ9_HIGH_FROM = 10  # total 0-27; 10 and above is at least the moderate band
TAG_LABEL_MAX = 40  # tags are the person's own words, up to 500 characters; a sentence needs few

ACTIVITY_LABELS = {
    "enjoyment": "Doing something you enjoy",
    "meaning": "Doing something meaningful",
    "self_care": "Taking care of yourself",
    "social": "Time with other people",
    "professional_support": "Professional support",
}
PRACTICE_LABELS = {
    "loving_kindness": "Loving-kindness practice",
    "self_compassion_break": "A self-compassion break",
    "compassionate_letter": "Writing a compassionate letter",
    "breathing": "A breathing practice",
    "other": "Your own kind of practice",
}
# Short names for counts inside a sentence ("3 loving-kindness, 1 breathing").
PRACTICE_NAMES = {
    "loving_kindness": "loving-kindness",
    "self_compassion_break": "self-compassion break",
    "compassionate_letter": "compassionate letter",
    "breathing": "breathing",
    "other": "other",
}
ACTIVITY_NAMES = {
    "enjoyment": "enjoyment",
    "meaning": "meaning",
    "self_care": "self-care",
    "social": "social",
    "professional_support": "professional support",
}
ACTIVITY_IDEAS = {
    "enjoyment": "something small you enjoy, just for its own sake.",
    "meaning": "something that matters to you, however small.",
    "self_care": "a meal, a rest or a walk, the way you would offer one to a friend.",
    "social": "a message, a call or a coffee with someone you like.",
    "professional_support": "staying in touch with the people who support you.",
}

REACH_OUT_TEXT = (
    "You deserve support, and you do not have to carry things alone. It could help to reach out to someone "
    "you trust, or to a doctor or counsellor, and tell them how things have been for you. If it ever feels "
    "like too much, a local crisis line is there to listen, day and night."
)
AS_IF_TEXT = (
    "You could try a small as-if experiment this week: choose one moment to act as if you already believed "
    "you deserve kindness, guess how you will feel, then notice how it really goes."
)
PRACTICE_TEXT = (
    "A few minutes of practice could be a gentle part of this week: loving-kindness phrases, a self-compassion "
    "break or a few slow breaths, whichever feels kindest."
)
REFLECT_TEXT = (
    "When you have a quiet moment, look back on the week and name one thing you did that you would thank a friend for."
)


class DayFacts(msgspec.Struct, kw_only=True, frozen=True):
    """One day of the last 28 in the person's time zone: its mean mood and the factors present.

    A factor is "activity:<category>", "practice:<practice>" or "tag:<tag>".
    """

    day: date
    mood_avg: float | None
    factors: frozenset[str] = frozenset()


class WeekStats(msgspec.Struct, kw_only=True, frozen=True):
    """The week's numbers as the worker's SQL counts them: everything of the insight but the rules' output."""

    week_start: date
    days_logged: int = 0
    checkins: int = 0
    mood_avg: float | None = None
    mood_avg_prev4: float | None = None
    practice_counts: dict[str, int] = {}
    felt_genuine_avg: float | None = None
    felt_genuine_prev4: float | None = None
    experiments_done: int = 0
    experiments_better_than_predicted: int = 0
    experiment_mood_gap_avg: float | None = None
    belief_shift_avg: float | None = None
    activity_counts: dict[str, int] = {}


def round1(value: float) -> float:
    """To 1 decimal, halves away from zero, as Postgres rounds numerics (Python's round() goes to even)."""
    return float(Decimal(repr(value)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def _round1_or_none(value: float | None) -> float | None:
    return None if value is None else round1(value)


def compare_factors(days: Sequence[DayFacts]) -> list[FactorComparison]:
    """Mood with and without each factor, for factors both present and absent on enough days with a mood.

    A day without a mood says nothing about mood, so it counts on neither side. Largest gap first
    (ties by factor name, so the order never depends on the input's), at most FACTORS_MAX.
    """
    rated = [(day.mood_avg, day.factors) for day in days if day.mood_avg is not None]
    seen = sorted({factor for _, factors in rated for factor in factors})
    found = []
    for factor in seen:
        with_ = [mood for mood, factors in rated if factor in factors]
        without = [mood for mood, factors in rated if factor not in factors]
        if len(with_) >= FACTOR_DAYS_MIN and len(without) >= FACTOR_DAYS_MIN:
            found.append(
                FactorComparison(
                    factor=factor,
                    with_=round1(fmean(with_)),
                    without=round1(fmean(without)),
                    days_with=len(with_),
                    days_without=len(without),
                )
            )
    found.sort(key=lambda comparison: (-abs(_gap(comparison)), comparison.factor))
    return found[:FACTORS_MAX]


def _gap(comparison: FactorComparison) -> float:
    # Rounded again: 3.2 - 2.1 is 1.1000000000000003 in floats, and equal gaps must tie.
    return round1(comparison.with_ - comparison.without)


def support_prompt(
    mood_avg_this_week: float | None,
    mood_avg_last_week: float | None,
    latest_who5_raw: int | None,
    latest_phq9_total: int | None,
    latest_phq9_item9: int | None,
) -> bool:
    """Whether to gently point towards people who can help; None means nothing was recorded.

    Pass the moods as the insight shows them (rounded), so the prompt agrees with the numbers seen.
    """
    low_two_weeks = (
        mood_avg_this_week is not None
        and mood_avg_last_week is not None
        and mood_avg_this_week <= LOW_MOOD_MAX
        and mood_avg_last_week <= LOW_MOOD_MAX
    )
    return (
        low_two_weeks
        or (latest_who5_raw is not None and latest_who5_raw < WHO5_LOW_BELOW)
        or (latest_phq9_total is not None and latest_phq9_total >= PHQ9_HIGH_FROM)
        or (latest_phq9_item9 is not None and latest_phq9_item9 > 0)
    )


def factor_label(factor: str) -> str:
    """A factor as the start of a sentence; an unknown kind of factor falls back to its own text."""
    kind, _, value = factor.partition(":")
    if kind == "activity" and value in ACTIVITY_LABELS:
        return ACTIVITY_LABELS[value]
    if kind == "practice" and value in PRACTICE_LABELS:
        return PRACTICE_LABELS[value]
    if kind == "tag" and value:
        short = value if len(value) <= TAG_LABEL_MAX else value[: TAG_LABEL_MAX - 1].rstrip() + "…"
        return f'Your tag "{short}"'
    return factor


def _plural(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


def _counts(counts: dict[str, int], names: dict[str, str]) -> str:
    """ "3 loving-kindness, 1 breathing": most first, then by name, so the same week reads the same."""
    items = sorted(((n, key) for key, n in counts.items() if n > 0), key=lambda item: (-item[0], item[1]))
    return ", ".join(f"{n} {names.get(key, key.replace('_', ' '))}" for n, key in items)


def _week_line(stats: WeekStats) -> str:
    if stats.days_logged <= 0:
        return "A quiet week here, and that is okay. This space is ready whenever you want it."
    days = _plural(stats.days_logged, "day")
    if stats.checkins <= 0:
        return f"You logged something on {days} this week."
    return f"You logged something on {days} this week, including {_plural(stats.checkins, 'mood check-in')}."


def _experiment_lines(stats: WeekStats) -> list[str]:
    done, better = stats.experiments_done, min(stats.experiments_better_than_predicted, stats.experiments_done)
    if done <= 0:
        return []
    if better <= 0:
        return [f"You tried {_plural(done, 'as-if experiment')} this week."]
    if done == 1:
        return ["Your as-if experiment felt better than you predicted."]
    if better == done:
        return [f"All {done} of your experiments felt better than you predicted."]
    return [f"{better} of your {done} experiments felt better than you predicted."]


def _felt_genuine_lines(stats: WeekStats) -> list[str]:
    now, before = stats.felt_genuine_avg, stats.felt_genuine_prev4
    if now is None or before is None or round1(now) <= round1(before):
        return []
    words = "Loving-kindness phrases" if stats.practice_counts.get("loving_kindness", 0) > 0 else "Kind words"
    return [f"{words} felt a little more true than before ({now:.1f} vs {before:.1f} out of 10)."]


def _factor_lines(comparisons: Sequence[FactorComparison]) -> list[str]:
    lines = []
    for comparison in comparisons:
        gap = _gap(comparison)
        # Help is sought on hard days: a lower mood beside it is no reason to seek less of it.
        if abs(gap) < FACTOR_GAP_MIN or (gap < 0 and comparison.factor == "activity:professional_support"):
            continue
        direction = "higher" if gap > 0 else "lower"
        lines.append(
            f"{factor_label(comparison.factor)} tends to go with a {direction} mood "
            f"({comparison.with_:.1f} vs {comparison.without:.1f})."
        )
    return lines[:FACTOR_HIGHLIGHTS_MAX]


def _practice_lines(stats: WeekStats) -> list[str]:
    total = sum(n for n in stats.practice_counts.values() if n > 0)
    if total <= 0:
        return []
    return [f"You practised {_plural(total, 'time')}: {_counts(stats.practice_counts, PRACTICE_NAMES)}."]


def _activity_lines(stats: WeekStats) -> list[str]:
    total = sum(n for n in stats.activity_counts.values() if n > 0)
    if total <= 0:
        return []
    return [
        f"You made time for {_plural(total, 'activity', 'activities')}: "
        f"{_counts(stats.activity_counts, ACTIVITY_NAMES)}."
    ]


def _mood_lines(stats: WeekStats) -> list[str]:
    if stats.mood_avg is None:
        return []
    if stats.mood_avg_prev4 is None:
        return [f"Your average mood this week was {stats.mood_avg:.1f}."]
    return [
        f"Your average mood was {stats.mood_avg:.1f} this week, "
        f"and {stats.mood_avg_prev4:.1f} over the four weeks before."
    ]


def highlights(stats: WeekStats, comparisons: Sequence[FactorComparison]) -> list[str]:
    """At most HIGHLIGHTS_MAX sentences: the week's counts first, then what went well, then findings and numbers."""
    found = [
        _week_line(stats),
        *_experiment_lines(stats),
        *_felt_genuine_lines(stats),
        *_factor_lines(comparisons),
        *_practice_lines(stats),
        *_activity_lines(stats),
        *_mood_lines(stats),
    ]
    return found[:HIGHLIGHTS_MAX]


def suggestion(stats: WeekStats, comparisons: Sequence[FactorComparison], support: bool) -> Suggestion:
    """One next step: reaching out whenever the support prompt is on, else the first fitting kind."""
    if support:
        return Suggestion(kind="reach_out", text=REACH_OUT_TEXT)
    if stats.experiments_done <= 0:
        return Suggestion(kind="as_if_experiment", text=AS_IF_TEXT)
    if sum(stats.practice_counts.values()) <= 0:
        return Suggestion(kind="practice", text=PRACTICE_TEXT)
    for comparison in comparisons:
        kind, _, category = comparison.factor.partition(":")
        if kind == "activity" and category in ACTIVITY_IDEAS and _gap(comparison) >= FACTOR_GAP_MIN:
            text = (
                f"{ACTIVITY_LABELS[category]} tends to go with a higher mood for you. You might make a little room "
                f"for it this week: {ACTIVITY_IDEAS[category]}"
            )
            return Suggestion(kind="activity", text=text)
    return Suggestion(kind="reflect", text=REFLECT_TEXT)


def weekly_insight(
    stats: WeekStats,
    days: Sequence[DayFacts],
    *,
    mood_avg_last_week: float | None,
    latest_who5_raw: int | None,
    latest_phq9_total: int | None,
    latest_phq9_item9: int | None,
) -> WeeklyInsight:
    """The whole record's data: averages rounded to 1 decimal, then the rules on those rounded numbers."""
    stats = msgspec.structs.replace(
        stats,
        mood_avg=_round1_or_none(stats.mood_avg),
        mood_avg_prev4=_round1_or_none(stats.mood_avg_prev4),
        felt_genuine_avg=_round1_or_none(stats.felt_genuine_avg),
        felt_genuine_prev4=_round1_or_none(stats.felt_genuine_prev4),
        experiment_mood_gap_avg=_round1_or_none(stats.experiment_mood_gap_avg),
        belief_shift_avg=_round1_or_none(stats.belief_shift_avg),
        # Copies: the record must not share mutable dicts with the caller's stats.
        practice_counts=dict(stats.practice_counts),
        activity_counts=dict(stats.activity_counts),
    )
    comparisons = compare_factors(days)
    support = support_prompt(
        stats.mood_avg, _round1_or_none(mood_avg_last_week), latest_who5_raw, latest_phq9_total, latest_phq9_item9
    )
    return WeeklyInsight(
        **msgspec.structs.asdict(stats),
        mood_with_vs_without=comparisons,
        highlights=highlights(stats, comparisons),
        suggestion=suggestion(stats, comparisons, support),
        support_prompt=support,
    )
