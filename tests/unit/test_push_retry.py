"""Busy providers are retried when they say, or after a growing backoff."""

from __future__ import annotations

import httpx
import pytest

from service.push.retry import is_busy, retry_delay


@pytest.mark.parametrize(("status", "busy"), [(200, False), (400, False), (410, False), (429, True), (503, True)])
def test_busy_answers(status: int, busy: bool) -> None:
    assert is_busy(status) is busy


def test_retry_after_is_honoured_else_the_backoff_grows() -> None:
    told = httpx.Response(429, headers={"retry-after": "7"})
    assert retry_delay(told, attempt=1, backoff_s=0.5) == 7.0
    assert retry_delay(httpx.Response(429, headers={"retry-after": "0"}), attempt=3, backoff_s=0.5) == 0.0
    assert retry_delay(httpx.Response(503), attempt=3, backoff_s=0.5) == 1.5
    assert retry_delay(None, attempt=2, backoff_s=0.5) == 1.0  # unreachable: no answer at all
