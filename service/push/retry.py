"""When to try a provider again: what both APNs and FCM document for busy answers."""

from __future__ import annotations

import httpx


def is_busy(status: int) -> bool:
    """429 and 5xx: the provider will take the push later."""
    return status == 429 or status >= 500


def retry_delay(response: httpx.Response | None, attempt: int, backoff_s: float) -> float:
    """The provider's Retry-After (in seconds) when it gives one, else a backoff growing with the attempt."""
    value = response.headers.get("retry-after", "") if response is not None else ""
    return float(value) if value.isdigit() else backoff_s * attempt
