"""The `weekly_insight` record's data: the server writes it, phones only read it through sync.

Averages are rounded to 1 decimal before they land here, so what a phone shows is what the rules
reasoned about. A null average means there was nothing to average, never zero.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

import msgspec

from schemas.base import ServerOutput

SuggestionKind = Literal["reach_out", "as_if_experiment", "practice", "activity", "reflect"]


class FactorComparison(ServerOutput, kw_only=True):
    """Mean daily mood on days with a factor and on days without it, over the last 28 days.

    `factor` is "activity:<category>", "practice:<practice>" or "tag:<tag>". A comparison, not a
    cause: the highlights word it as "tends to go with".
    """

    factor: str
    # `with` is a Python keyword; the wire keeps the contract's name.
    with_: float = msgspec.field(name="with")
    without: float
    days_with: int
    days_without: int


class Suggestion(ServerOutput, kw_only=True):
    kind: SuggestionKind
    text: str


class WeeklyInsight(ServerOutput, kw_only=True):
    """One person's Monday-to-Sunday week in their own time zone; `*_prev4` cover the 4 weeks before."""

    week_start: date
    days_logged: int
    checkins: int
    mood_avg: float | None
    mood_avg_prev4: float | None
    practice_counts: dict[str, int]
    felt_genuine_avg: float | None
    felt_genuine_prev4: float | None
    experiments_done: int
    experiments_better_than_predicted: int
    experiment_mood_gap_avg: float | None
    belief_shift_avg: float | None
    activity_counts: dict[str, int]
    mood_with_vs_without: list[FactorComparison]
    highlights: list[str]
    suggestion: Suggestion
    support_prompt: bool
