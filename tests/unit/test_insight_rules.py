"""The weekly reflection's rules: thresholds by hand, wording over many generated weeks."""

from __future__ import annotations

import ast
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import TypedDict

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.insights import FactorComparison, Suggestion, WeeklyInsight
from service.insights.rules import (
    FACTOR_DAYS_MIN,
    HIGHLIGHTS_MAX,
    DayFacts,
    WeekStats,
    compare_factors,
    factor_label,
    highlights,
    round1,
    suggestion,
    support_prompt,
    weekly_insight,
)

START = date(2025, 3, 3)  # a Monday
FORBIDDEN = (
    "cause",
    "causes",
    "because",
    "leads to",
    "makes",
    "improves",
    "streak",
    "in a row",
    "missed",
    "broke",
    "failed",
    "depression",
    "disorder",
    "diagnos",
)


class Signals(TypedDict):
    """weekly_insight's keyword arguments beyond the week itself."""

    mood_avg_last_week: float | None
    latest_who5_raw: int | None
    latest_phq9_total: int | None
    latest_phq9_item9: int | None


NO_SIGNALS = Signals(mood_avg_last_week=None, latest_who5_raw=None, latest_phq9_total=None, latest_phq9_item9=None)


def days_of(*rows: tuple[float | None, set[str]]) -> list[DayFacts]:
    return [
        DayFacts(day=START + timedelta(days=i), mood_avg=mood, factors=frozenset(factors))
        for i, (mood, factors) in enumerate(rows)
    ]


# --- compare_factors --------------------------------------------------------------------------


def test_two_days_with_a_factor_are_not_compared() -> None:
    days = days_of(*[(7, {"tag:walk"})] * 2, *[(5, set())] * 5)
    assert compare_factors(days) == []


def test_two_days_without_a_factor_are_not_compared() -> None:
    days = days_of(*[(7, {"tag:walk"})] * 5, *[(5, set())] * 2)
    assert compare_factors(days) == []


def test_three_days_with_and_three_without_are_compared() -> None:
    assert FACTOR_DAYS_MIN == 3
    days = days_of(*[(7, {"tag:walk"})] * 3, *[(5, set())] * 3)
    assert compare_factors(days) == [
        FactorComparison(factor="tag:walk", with_=7.0, without=5.0, days_with=3, days_without=3)
    ]


def test_days_without_a_mood_count_on_neither_side() -> None:
    days = days_of(
        *[(7, {"tag:walk"})] * 2,
        *[(None, {"tag:walk"})] * 10,
        *[(5, set())] * 2,
        *[(None, set())] * 10,
    )
    assert compare_factors(days) == []
    days = days + days_of((8, {"tag:walk"}), (4, set()))
    [comparison] = compare_factors(days)
    assert (comparison.days_with, comparison.days_without) == (3, 3)
    assert (comparison.with_, comparison.without) == (7.3, 4.7)


def test_means_round_to_one_decimal_halves_away_from_zero() -> None:
    # with: (2+2+3+2)/4 = 2.25 -> 2.3 (Python's round would say 2.2); without: 20/3 = 6.67 -> 6.7.
    days = days_of(*[(2, {"tag:x"})] * 3, (3, {"tag:x"}), (7, set()), (7, set()), (6, set()))
    [comparison] = compare_factors(days)
    assert (comparison.with_, comparison.without) == (2.3, 6.7)
    assert round1(2.25) == 2.3
    assert round1(2.35) == 2.4
    assert round1(-0.25) == -0.3


def test_largest_gap_first_ties_by_name_at_most_five() -> None:
    factors = ["tag:a", "tag:b", "tag:c", "tag:d", "tag:e", "tag:f"]
    # Each factor has 3 days of its own, at moods 5.0, 5.5 ... 7.5: gaps -1.5, -0.9, -0.3, 0.3, 0.9, 1.5.
    rows: list[tuple[float | None, set[str]]] = []
    for index, factor in enumerate(factors):
        rows += [(5 + index * 0.5, {factor})] * 3
    comparisons = compare_factors(days_of(*rows))
    assert [c.factor for c in comparisons] == ["tag:a", "tag:f", "tag:b", "tag:e", "tag:c"]
    assert [(c.with_, c.without) for c in comparisons[:2]] == [(5.0, 6.5), (7.5, 6.0)]


def test_a_lower_mood_gap_ranks_by_its_size() -> None:
    days = days_of(
        *[(2, {"tag:low"})] * 3,
        *[(7, {"tag:high"})] * 3,
        *[(6, set())] * 3,
    )
    comparisons = compare_factors(days)
    assert [c.factor for c in comparisons] == ["tag:low", "tag:high"]
    assert comparisons[0].with_ < comparisons[0].without


def test_equal_gaps_sort_by_factor_name() -> None:
    days = days_of(*[(7, {"tag:b", "tag:a"})] * 3, *[(5, set())] * 3)
    assert [c.factor for c in compare_factors(days)] == ["tag:a", "tag:b"]


def test_with_is_named_with_on_the_wire() -> None:
    comparison = FactorComparison(factor="tag:walk", with_=7.0, without=5.0, days_with=3, days_without=4)
    wire = msgspec.json.decode(msgspec.json.encode(comparison))
    assert wire == {"factor": "tag:walk", "with": 7.0, "without": 5.0, "days_with": 3, "days_without": 4}
    assert msgspec.json.decode(msgspec.json.encode(comparison), type=FactorComparison) == comparison


# --- support_prompt ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((None, None, None, None, None), False),
        ((6.0, 6.0, 20, 3, 0), False),
        ((3.0, 3.0, None, None, None), True),
        ((2.0, 1.5, None, None, None), True),
        ((3.1, 3.0, None, None, None), False),
        ((3.0, 3.1, None, None, None), False),
        ((2.0, None, None, None, None), False),
        ((None, 2.0, None, None, None), False),
        ((2.0, 6.0, None, None, None), False),
        ((None, None, 13, None, None), False),
        ((None, None, 12, None, None), True),
        ((None, None, 0, None, None), True),
        ((None, None, None, 9, None), False),
        ((None, None, None, 10, None), True),
        ((None, None, None, 27, None), True),
        ((None, None, None, None, 0), False),
        ((None, None, None, None, 1), True),
        ((None, None, None, 3, 1), True),
    ],
)
def test_support_prompt(
    args: tuple[float | None, float | None, int | None, int | None, int | None], expected: bool
) -> None:
    assert support_prompt(*args) is expected


def test_the_support_prompt_sees_the_rounded_weekly_moods() -> None:
    stats = WeekStats(week_start=START, days_logged=5, checkins=5, mood_avg=3.04)
    insight = weekly_insight(stats, [], **Signals({**NO_SIGNALS, "mood_avg_last_week": 3.049}))
    assert insight.mood_avg == 3.0
    assert insight.support_prompt is True


# --- wording ----------------------------------------------------------------------------------

CATEGORIES = ["enjoyment", "meaning", "self_care", "social", "professional_support"]
PRACTICES = ["loving_kindness", "self_compassion_break", "compassionate_letter", "breathing", "other"]
TAGS = ["walk", "work", "sleep", "family", "rain", "gym"]
FACTORS = [f"activity:{c}" for c in CATEGORIES] + [f"practice:{p}" for p in PRACTICES] + [f"tag:{t}" for t in TAGS]

averages = st.none() | st.floats(min_value=1, max_value=10, allow_nan=False)
ratings = st.none() | st.floats(min_value=0, max_value=10, allow_nan=False)


@st.composite
def week_stats(draw: st.DrawFn) -> WeekStats:
    done = draw(st.integers(0, 6))
    return WeekStats(
        week_start=START,
        days_logged=draw(st.integers(0, 7)),
        checkins=draw(st.integers(0, 20)),
        mood_avg=draw(averages),
        mood_avg_prev4=draw(averages),
        practice_counts=draw(st.dictionaries(st.sampled_from(PRACTICES), st.integers(0, 9))),
        felt_genuine_avg=draw(ratings),
        felt_genuine_prev4=draw(ratings),
        experiments_done=done,
        experiments_better_than_predicted=draw(st.integers(0, done)),
        experiment_mood_gap_avg=draw(st.none() | st.floats(min_value=-9, max_value=9)),
        belief_shift_avg=draw(st.none() | st.floats(min_value=-100, max_value=100)),
        activity_counts=draw(st.dictionaries(st.sampled_from(CATEGORIES), st.integers(0, 9))),
    )


@st.composite
def last_28_days(draw: st.DrawFn) -> list[DayFacts]:
    moods = draw(st.lists(st.none() | st.integers(1, 10), min_size=28, max_size=28))
    factors = draw(st.lists(st.frozensets(st.sampled_from(FACTORS), max_size=5), min_size=28, max_size=28))
    return [
        DayFacts(day=START - timedelta(days=27 - i), mood_avg=mood, factors=day_factors)
        for i, (mood, day_factors) in enumerate(zip(moods, factors, strict=True))
    ]


signals = st.builds(
    Signals,
    mood_avg_last_week=averages,
    latest_who5_raw=st.none() | st.integers(0, 25),
    latest_phq9_total=st.none() | st.integers(0, 27),
    latest_phq9_item9=st.none() | st.integers(0, 3),
)


def assert_kind_words(text: str) -> None:
    lowered = text.lower()
    for word in FORBIDDEN:
        assert word not in lowered, f"{word!r} in {text!r}"


@settings(max_examples=400, deadline=None)
@given(stats=week_stats(), days=last_28_days(), signals=signals)
def test_no_highlight_or_suggestion_shames_blames_or_diagnoses(
    stats: WeekStats, days: list[DayFacts], signals: Signals
) -> None:
    insight = weekly_insight(stats, days, **signals)
    assert 1 <= len(insight.highlights) <= HIGHLIGHTS_MAX
    for text in [*insight.highlights, insight.suggestion.text]:
        assert_kind_words(text)
    labels = {factor_label(c.factor) for c in insight.mood_with_vs_without}
    for text in insight.highlights:
        if any(text.startswith(label + " ") for label in labels):
            assert "tends to go with a" in text
    if insight.support_prompt:
        assert insight.suggestion.kind == "reach_out"
    else:
        assert insight.suggestion.kind != "reach_out"
    assert weekly_insight(stats, days, **signals) == insight
    assert msgspec.json.decode(msgspec.json.encode(insight), type=WeeklyInsight) == insight


@settings(max_examples=200, deadline=None)
@given(stats=week_stats(), days=last_28_days())
def test_every_suggestion_is_reach_out_when_support_is_prompted(stats: WeekStats, days: list[DayFacts]) -> None:
    comparisons = compare_factors(days)
    assert suggestion(stats, comparisons, True).kind == "reach_out"
    assert_kind_words(suggestion(stats, comparisons, False).text)


def test_every_factor_label_reads_as_tends_to_go_with() -> None:
    for factor in FACTORS:
        for with_, without in ((8.0, 5.0), (4.0, 7.0)):
            comparison = FactorComparison(factor=factor, with_=with_, without=without, days_with=3, days_without=3)
            stats = WeekStats(week_start=START, days_logged=4, checkins=4)
            found = [text for text in highlights(stats, [comparison]) if "mood (" in text]
            if factor == "activity:professional_support" and with_ < without:
                assert found == []  # a lower mood beside seeking help is never worded
                continue
            direction = "higher" if with_ > without else "lower"
            assert found == [
                f"{factor_label(factor)} tends to go with a {direction} mood ({with_:.1f} vs {without:.1f})."
            ]
            assert_kind_words(found[0])


def test_a_small_gap_gets_no_sentence() -> None:
    comparison = FactorComparison(factor="tag:walk", with_=6.4, without=6.0, days_with=3, days_without=3)
    stats = WeekStats(week_start=START, days_logged=4, checkins=4)
    assert not any("tends to go with" in text for text in highlights(stats, [comparison]))


def test_long_tags_are_shortened() -> None:
    label = factor_label("tag:" + "x" * 300)
    assert len(label) < 60
    assert label.endswith('…"')


def test_experiments_that_felt_better_are_counted() -> None:
    stats = WeekStats(week_start=START, days_logged=3, experiments_done=3, experiments_better_than_predicted=2)
    assert "2 of your 3 experiments felt better than you predicted." in highlights(stats, [])
    one = msgspec.structs.replace(stats, experiments_done=1, experiments_better_than_predicted=1)
    assert "Your as-if experiment felt better than you predicted." in highlights(one, [])
    none_better = msgspec.structs.replace(stats, experiments_better_than_predicted=0)
    assert "You tried 3 as-if experiments this week." in highlights(none_better, [])


def test_felt_genuine_is_mentioned_only_when_it_rose() -> None:
    stats = WeekStats(
        week_start=START,
        days_logged=3,
        practice_counts={"loving_kindness": 3},
        felt_genuine_avg=6.5,
        felt_genuine_prev4=5.8,
    )
    assert "Loving-kindness phrases felt a little more true than before (6.5 vs 5.8 out of 10)." in highlights(
        stats, []
    )
    for before in (6.5, 7.0, None):
        same = msgspec.structs.replace(stats, felt_genuine_prev4=before)
        assert not any("more true" in text for text in highlights(same, []))


def test_a_quiet_week_is_not_a_failure() -> None:
    texts = highlights(WeekStats(week_start=START), [])
    assert texts == ["A quiet week here, and that is okay. This space is ready whenever you want it."]


def test_counts_not_fractions_of_the_week() -> None:
    stats = WeekStats(week_start=START, days_logged=1, checkins=1, practice_counts={"breathing": 1, "other": 0})
    texts = highlights(stats, [])
    assert texts[0] == "You logged something on 1 day this week, including 1 mood check-in."
    assert "You practised 1 time: 1 breathing." in texts
    assert not any("of 7" in text for text in texts)


def test_suggestions_follow_the_week() -> None:
    quiet = WeekStats(week_start=START)
    assert suggestion(quiet, [], False).kind == "as_if_experiment"
    tried = msgspec.structs.replace(quiet, experiments_done=1)
    assert suggestion(tried, [], False).kind == "practice"
    practised = msgspec.structs.replace(tried, practice_counts={"breathing": 2})
    assert suggestion(practised, [], False) == Suggestion(kind="reflect", text=suggestion(practised, [], False).text)
    social = FactorComparison(factor="activity:social", with_=7.0, without=5.0, days_with=4, days_without=10)
    lower = FactorComparison(factor="activity:enjoyment", with_=4.0, without=7.0, days_with=4, days_without=10)
    chosen = suggestion(practised, [lower, social], False)
    assert chosen.kind == "activity"
    assert chosen.text.startswith("Time with other people tends to go with a higher mood")
    assert suggestion(practised, [lower], False).kind == "reflect"


def test_reach_out_is_gentle_and_says_they_deserve_support() -> None:
    text = suggestion(WeekStats(week_start=START), [], True).text
    assert "deserve support" in text
    assert "someone you trust" in text
    assert_kind_words(text)


def test_the_insight_rounds_its_averages() -> None:
    stats = WeekStats(week_start=START, days_logged=2, checkins=2, mood_avg=6.25, felt_genuine_prev4=4.04)
    insight = weekly_insight(stats, [], **NO_SIGNALS)
    assert (insight.mood_avg, insight.felt_genuine_prev4) == (6.3, 4.0)
    assert msgspec.json.decode(msgspec.json.encode(insight))["week_start"] == "2025-03-03"


def test_same_input_same_output() -> None:
    days = days_of(*[(7, {"tag:walk", "activity:social"})] * 4, *[(4, {"practice:breathing"})] * 4)
    stats = WeekStats(week_start=START, days_logged=6, checkins=8, mood_avg=5.5, experiments_done=1)
    first = weekly_insight(stats, days, **NO_SIGNALS)
    assert weekly_insight(stats, list(reversed(days)), **NO_SIGNALS) == first
    assert msgspec.json.encode(weekly_insight(stats, days, **NO_SIGNALS)) == msgspec.json.encode(first)


# --- purity -----------------------------------------------------------------------------------

ALLOWED_THIRD_PARTY = ("msgspec", "schemas", "service.insights")
IO_STDLIB = frozenset({"socket", "ssl", "asyncio", "http", "urllib", "sqlite3", "subprocess", "selectors"})


def test_the_insight_rules_import_only_stdlib_msgspec_and_schemas() -> None:
    root = Path(__file__).resolve().parents[2]
    modules = sorted((root / "service" / "insights").rglob("*.py"))
    offending = []
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if not node.level else []  # relative imports stay in the package
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                stdlib = top in sys.stdlib_module_names and top not in IO_STDLIB
                if not stdlib and not any(name == ok or name.startswith(ok + ".") for ok in ALLOWED_THIRD_PARTY):
                    offending.append(f"{path.relative_to(root)}: {name}")
    assert offending == []
