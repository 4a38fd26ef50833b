"""Liveness and readiness answers."""

from __future__ import annotations

from typing import Literal

from schemas.base import ServerOutput


class Alive(ServerOutput):
    status: Literal["ok"] = "ok"


class Readiness(ServerOutput):
    status: Literal["ok", "unavailable"]
    checks: dict[str, bool]
