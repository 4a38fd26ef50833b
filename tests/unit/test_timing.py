"""A person's evening, week and quiet hours, in their own time."""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from service.insights.timing import after_quiet_hours, in_quiet_hours, next_send, reflected_week

AUCKLAND = ZoneInfo("Pacific/Auckland")


@pytest.mark.parametrize(
    ("day", "week"),
    [
        (date(2026, 11, 22), date(2026, 11, 16)),  # a Sunday evening reflects on the week ending today
        (date(2026, 11, 23), date(2026, 11, 16)),  # a Monday evening on the week that ended yesterday
        (date(2026, 11, 21), date(2026, 11, 9)),  # a Saturday evening on the last complete week
    ],
)
def test_the_week_an_evening_reflects_on(day: date, week: date) -> None:
    assert reflected_week(day) == week
    assert week.weekday() == 0


@pytest.mark.parametrize(
    ("moment", "quiet"),
    [(time(21, 59), False), (time(22, 0), True), (time(3, 0), True), (time(7, 59), True), (time(8, 0), False)],
)
def test_quiet_hours_across_midnight(moment: time, quiet: bool) -> None:
    assert in_quiet_hours(moment, time(22, 0), time(8, 0)) is quiet


def test_same_start_and_end_means_no_quiet_hours() -> None:
    assert not in_quiet_hours(time(3, 0), time(8, 0), time(8, 0))


def test_deferred_to_the_end_of_quiet_hours_never_dropped() -> None:
    late = datetime(2026, 11, 22, 23, 30, tzinfo=AUCKLAND)
    assert after_quiet_hours(late, time(22, 0), time(8, 0)) == datetime(2026, 11, 23, 8, 0, tzinfo=AUCKLAND)
    early = datetime(2026, 11, 23, 6, 0, tzinfo=AUCKLAND)
    assert after_quiet_hours(early, time(22, 0), time(8, 0)) == datetime(2026, 11, 23, 8, 0, tzinfo=AUCKLAND)
    evening = datetime(2026, 11, 22, 19, 5, tzinfo=AUCKLAND)
    assert after_quiet_hours(evening, time(22, 0), time(8, 0)) == evening


def test_a_push_goes_now_unless_quiet_or_over_the_daily_cap() -> None:
    quiet = (time(22, 0), time(8, 0))
    evening = datetime(2026, 11, 22, 19, 0, tzinfo=AUCKLAND)
    assert next_send(evening, *quiet, sent_today=0) is None
    assert next_send(evening, *quiet, sent_today=1) is None
    assert next_send(evening, *quiet, sent_today=2) == datetime(2026, 11, 23, 8, 0, tzinfo=AUCKLAND)
    night = datetime(2026, 11, 22, 23, 0, tzinfo=AUCKLAND)
    assert next_send(night, *quiet, sent_today=0) == datetime(2026, 11, 23, 8, 0, tzinfo=AUCKLAND)
