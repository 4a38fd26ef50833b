"""Liveness and readiness answers."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from schemas.base import ServerOutput


class Alive(ServerOutput):
    status: Literal["ok"] = "ok"


class Readiness(ServerOutput):
    status: Literal["ok", "unavailable"]
    checks: dict[str, bool]


HealthStatus = Literal["ok", "degraded", "down"]


class Dependency(ServerOutput):
    ok: bool
    latency_ms: float | None = None


class Migrations(ServerOutput):
    current: str | None
    head: str | None


class Workers(ServerOutput):
    """`alive` is null when Redis, where workers beat, cannot be asked."""

    alive: int | None
    last_heartbeat_age_s: float | None


class Queue(ServerOutput):
    depth: int | None
    oldest_age_s: float | None


class Outbox(ServerOutput):
    pending: int | None
    oldest_age_s: float | None


class Push(ServerOutput):
    sent_1h: int | None
    failed_1h: int | None
    invalid_tokens_1h: int | None


class Insights(ServerOutput):
    last_run_at: datetime | None
    users: int | None


class SyncLastHour(ServerOutput):
    batches_1h: int | None
    mutations_1h: int | None
    merged_1h: int | None
    rejected_1h: int | None


class HealthChecks(ServerOutput):
    postgres: Dependency
    redis: Dependency
    migrations: Migrations
    workers: Workers
    queue: Queue
    outbox: Outbox
    push: Push
    insights: Insights
    sync: SyncLastHour


class AdminHealth(ServerOutput):
    """`failing` names the checks behind a degraded or down status; null figures could not be read in time."""

    status: HealthStatus
    version: str
    checks: HealthChecks
    failing: list[str] = []
