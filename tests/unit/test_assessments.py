"""Questionnaire scores and bands, each worked out by hand."""

from __future__ import annotations

import pytest

from service.insights.assessments import SCS_SF_REVERSED, derive, score


def scs_sf_answers(items: list[int]) -> list[int]:
    """Answers whose item scores, after reverse scoring, are `items`."""
    return [6 - item if number in SCS_SF_REVERSED else item for number, item in enumerate(items, 1)]


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ([0, 0, 0, 0, 0], (0, "very low wellbeing")),
        ([1, 1, 2, 1, 2], (7, "very low wellbeing")),
        ([2, 1, 2, 1, 2], (8, "low wellbeing")),
        ([2, 2, 3, 2, 3], (12, "low wellbeing")),
        ([3, 2, 3, 2, 3], (13, "adequate wellbeing")),
        ([5, 5, 5, 5, 5], (25, "adequate wellbeing")),
    ],
)
def test_who5_is_the_raw_total(answers: list[int], expected: tuple[int, str]) -> None:
    assert score("who5", answers) == expected


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ([0] * 9, (0, "minimal")),
        ([1, 1, 1, 1, 0, 0, 0, 0, 0], (4, "minimal")),
        ([1, 1, 1, 1, 1, 0, 0, 0, 0], (5, "mild")),
        ([1, 1, 1, 1, 1, 1, 1, 1, 1], (9, "mild")),
        ([2, 1, 1, 1, 1, 1, 1, 1, 1], (10, "moderate")),
        ([2, 2, 2, 2, 2, 1, 1, 1, 1], (14, "moderate")),
        ([2, 2, 2, 2, 2, 2, 1, 1, 1], (15, "moderately severe")),
        ([3, 3, 3, 2, 2, 2, 2, 1, 1], (19, "moderately severe")),
        ([3, 3, 3, 3, 2, 2, 2, 1, 1], (20, "severe")),
        ([3] * 9, (27, "severe")),
    ],
)
def test_phq9_bands(answers: list[int], expected: tuple[int, str]) -> None:
    assert score("phq9", answers) == expected


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ([0] * 7, (0, "minimal")),
        ([1, 1, 1, 1, 0, 0, 0], (4, "minimal")),
        ([1, 1, 1, 1, 1, 0, 0], (5, "mild")),
        ([2, 2, 1, 1, 1, 1, 1], (9, "mild")),
        ([2, 2, 2, 1, 1, 1, 1], (10, "moderate")),
        ([2, 2, 2, 2, 2, 2, 2], (14, "moderate")),
        ([3, 2, 2, 2, 2, 2, 2], (15, "severe")),
        ([3] * 7, (21, "severe")),
    ],
)
def test_gad7_bands(answers: list[int], expected: tuple[int, str]) -> None:
    assert score("gad7", answers) == expected


def test_scs_sf_reverse_scores_items_1_4_8_9_11_12() -> None:
    # item:      1  2  3  4  5  6  7  8  9 10 11 12
    answers = [4, 3, 2, 5, 1, 2, 3, 4, 2, 1, 5, 3]
    # reversed:  2  3  2  1  1  2  3  2  4  1  1  3  -> 25 / 12 = 2.0833 -> 2.08
    # (without reverse scoring it would be 35 / 12 = 2.92, another band)
    assert score("scs_sf", answers) == (2.08, "low")


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ([5, 1, 1, 5, 1, 1, 1, 5, 5, 1, 5, 5], (1.0, "low")),  # least self-compassion possible
        ([1, 5, 5, 1, 5, 5, 5, 1, 1, 5, 1, 1], (5.0, "high")),  # most
        ([3] * 12, (3.0, "moderate")),
        ([5] * 12, (3.0, "moderate")),  # six items reverse to 1: (6 * 5 + 6 * 1) / 12
    ],
)
def test_scs_sf_extremes(answers: list[int], expected: tuple[float, str]) -> None:
    assert score("scs_sf", answers) == expected


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2], (2.42, "low")),  # 29 / 12 = 2.4167
        ([3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2], (2.5, "moderate")),  # 30 / 12
        ([4, 4, 4, 4, 4, 4, 3, 3, 3, 3, 3, 3], (3.5, "moderate")),  # 42 / 12
        ([4, 4, 4, 4, 4, 4, 4, 3, 3, 3, 3, 3], (3.58, "high")),  # 43 / 12 = 3.5833
        ([4, 4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3], (3.42, "moderate")),  # 41 / 12 = 3.4167
    ],
)
def test_scs_sf_band_boundaries_and_rounding(items: list[int], expected: tuple[float, str]) -> None:
    assert score("scs_sf", scs_sf_answers(items)) == expected


def test_raw_totals_are_integers_and_the_scs_sf_mean_a_float() -> None:
    assert isinstance(score("phq9", [1] * 9)[0], int)
    assert isinstance(score("scs_sf", [3] * 12)[0], float)


@pytest.mark.parametrize(
    ("instrument", "answers"),
    [("bdi", [0] * 21), ("who5", [0] * 4), ("phq9", [4] + [0] * 8), ("scs_sf", [0] * 12), ("gad7", [-1] + [0] * 6)],
)
def test_bad_input_is_a_programming_error(instrument: str, answers: list[int]) -> None:
    with pytest.raises(ValueError, match=r"unknown instrument|takes"):
        score(instrument, answers)


def test_derive_adds_score_and_band_to_an_assessment_only() -> None:
    data = {"occurred_at": "2026-11-20T21:04:00+01:00", "instrument": "phq9", "answers": [2, 1, 1, 1, 1, 1, 1, 1, 1]}
    assert derive("assessment", data) == {**data, "score": 10, "band": "moderate"}
    assert "score" not in data, "the caller's dict is left alone"
    mood = {"occurred_at": "2026-11-20T21:04:00+01:00", "mood": 5}
    assert derive("mood_checkin", mood) == mood
