"""A person's phones and browsers, and where their pushes go."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from schemas.base import ClientInput, ServerOutput, text

Platform = Literal["ios", "android", "web"]
PUSH_TOKEN_MAX = 4096


class DeviceRegistration(ClientInput):
    platform: Platform
    push_token: Annotated[str, text(min_length=1, max_length=PUSH_TOKEN_MAX)] | None = None
    app_version: Annotated[str, text(max_length=64)] | None = None
    locale: Annotated[str, text(max_length=35, description="BCP 47 language tag")] | None = None
    timezone: Annotated[str, text(max_length=64, description="IANA time zone name")] | None = None


class Device(ServerOutput):
    device_id: UUID
    platform: Platform
    push_enabled: bool
    app_version: str | None
    locale: str | None
    timezone: str | None
    last_seen_at: datetime
