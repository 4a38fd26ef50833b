"""When things happen in a person's own week and day: pure, on local times."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
EVENING = time(19, 0)


def reflected_week(local_day: date) -> date:
    """The Monday of the week a weekly_day evening reflects on: the week ending on
    the latest Sunday not after that day (on a Sunday evening, the week ending today)."""
    sunday = local_day - timedelta(days=(local_day.weekday() + 1) % 7)
    return sunday - timedelta(days=6)


def in_quiet_hours(moment: time, start: time, end: time) -> bool:
    """Quiet hours may run past midnight (22:00 to 08:00)."""
    if start == end:
        return False
    return start <= moment < end if start < end else moment >= start or moment < end


def after_quiet_hours(local_now: datetime, start: time, end: time) -> datetime:
    """Now, or the end of quiet hours when now is inside them: deferred, never dropped."""
    if not in_quiet_hours(local_now.time(), start, end):
        return local_now
    ends = datetime.combine(local_now.date(), end, local_now.tzinfo)
    return ends if ends > local_now else ends + timedelta(days=1)


DAILY_PUSH_CAP = 2


def next_send(local_now: datetime, quiet_start: time, quiet_end: time, sent_today: int) -> datetime | None:
    """None to send now; else when to try again. Quiet hours and the daily cap
    defer a push to a later moment, never drop it."""
    if sent_today >= DAILY_PUSH_CAP:
        tomorrow = datetime.combine(local_now.date() + timedelta(days=1), quiet_end, local_now.tzinfo)
        return after_quiet_hours(tomorrow, quiet_start, quiet_end)
    later = after_quiet_hours(local_now, quiet_start, quiet_end)
    return None if later == local_now else later
