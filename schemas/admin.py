"""Operator calls."""

from __future__ import annotations

from datetime import date
from uuid import UUID

from schemas.base import ClientInput, ServerOutput


class InsightsRun(ClientInput):
    week_start: date | None = None  # a Monday; default each person's last complete week
    user_id: UUID | None = None  # default everyone


class JobAccepted(ServerOutput):
    job_id: str
