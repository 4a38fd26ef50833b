"""Device clocks are trusted, within reason."""

from __future__ import annotations

from datetime import datetime, timedelta

MAX_SKEW = timedelta(minutes=5)


def clamp(changed_at: datetime, now: datetime) -> datetime:
    """A time more than five minutes ahead counts as now: a phone whose clock
    runs fast must not win every conflict forever."""
    return now if changed_at > now + MAX_SKEW else changed_at
