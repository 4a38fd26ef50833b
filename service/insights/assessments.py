"""Scores and band names of the self-report questionnaires a person may fill in.

Pure arithmetic, kept apart from I/O so each cut-off is tested by hand. Bands are the names the
instruments' authors published, never a diagnosis: the app words them gently.
"""

from __future__ import annotations

from typing import Any

from schemas.records import ANSWER_RULES

# SCS-SF (Raes, Pommier, Neff & Van Gucht 2011): the self-judgment (11, 12), isolation (4, 8) and
# over-identification (1, 9) items are reverse-scored. 1-based item numbers.
SCS_SF_REVERSED = frozenset({1, 4, 8, 9, 11, 12})

# (highest score in the band, band name), lowest band first.
# WHO-5 raw 0-25 (Topp, Østergaard, Søndergaard & Bech 2015, Psychother Psychosom 84:167-176):
# a raw score below 13 indicates poor wellbeing, 7 or below (percentage 28 or below) likely
# depression. We name the three ranges without the clinical word.
WHO5_BANDS = ((7, "very low wellbeing"), (12, "low wellbeing"), (25, "adequate wellbeing"))
# PHQ-9 (Kroenke, Spitzer & Williams 2001).
PHQ9_BANDS = ((4, "minimal"), (9, "mild"), (14, "moderate"), (19, "moderately severe"), (27, "severe"))
# GAD-7 (Spitzer, Kroenke, Williams & Löwe 2006).
GAD7_BANDS = ((4, "minimal"), (9, "mild"), (14, "moderate"), (21, "severe"))
# SCS / SCS-SF mean 1-5, Neff's convention: 1.00-2.49 low, 2.50-3.50 moderate, 3.51-5.00 high.
SCS_SF_BANDS = ((2.49, "low"), (3.50, "moderate"), (5.0, "high"))

_BANDS: dict[str, tuple[tuple[float, str], ...]] = {
    "who5": WHO5_BANDS,
    "phq9": PHQ9_BANDS,
    "gad7": GAD7_BANDS,
    "scs_sf": SCS_SF_BANDS,
}


def score(instrument: str, answers: list[int]) -> tuple[float | int, str]:
    """(score, band): the raw total, or for SCS-SF the mean with reverse-scored items, to 2 decimals.

    Raises ValueError for an unknown instrument or answers of the wrong count or range; records
    reach here validated, so that is a programming error, not a person's.
    """
    if instrument not in ANSWER_RULES:
        raise ValueError(f"unknown instrument {instrument!r}")
    count, low, high = ANSWER_RULES[instrument]
    if len(answers) != count or any(not low <= answer <= high for answer in answers):
        raise ValueError(f"{instrument} takes {count} answers between {low} and {high}")
    value: float | int
    if instrument == "scs_sf":
        items = [6 - answer if number in SCS_SF_REVERSED else answer for number, answer in enumerate(answers, 1)]
        # n/12 never lands on a half-hundredth, so round() has no tie to break.
        value = round(sum(items) / len(items), 2)
    else:
        value = sum(answers)
    return value, _band(_BANDS[instrument], value)


def _band(bands: tuple[tuple[float, str], ...], value: float) -> str:
    for highest, name in bands:
        if value <= highest:
            return name
    raise AssertionError(f"{value} is above every band")  # unreachable: answers were range-checked


def derive(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """The record's data with the fields the server sets (an assessment's score and band);
    the data of other kinds is answered as it is, not copied."""
    if kind != "assessment":
        return data
    value, band = score(data["instrument"], data["answers"])
    return {**data, "score": value, "band": band}
