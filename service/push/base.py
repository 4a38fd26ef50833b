"""The one interface every push provider meets, and the only words a push may carry."""

from __future__ import annotations

from typing import Protocol
from uuid import UUID

import msgspec

# Generic on purpose: no mood, no score, nothing the person wrote.
WORDING = {
    "weekly_insight_ready": ("Your week", "Your weekly reflection is ready."),
    "experiment_follow_up": ("Your experiment", "How did your experiment go?"),
    "practice_reminder": ("A kind moment", "A minute for yourself, whenever you like."),
}


class PushMessage(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    title: str
    body: str
    record_id: UUID | None  # data payload: the kind and a record id only
    collapse_key: str  # a duplicate replaces rather than repeats

    @classmethod
    def for_kind(cls, kind: str, record_id: UUID | None, collapse_key: str) -> PushMessage:
        title, body = WORDING[kind]
        return cls(kind=kind, title=title, body=body, record_id=record_id, collapse_key=collapse_key)


class PushTarget(msgspec.Struct, frozen=True, kw_only=True):
    device_id: UUID
    platform: str
    token: str


class PushOutcome(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    token_invalid: bool = False
    retryable: bool = False  # the provider was busy or unreachable: try again later
    detail: str = ""
    provider: str | None = None  # the service that answered, when a router chose it

    @property
    def status(self) -> str:
        """The delivery's status on this device."""
        if self.ok:
            return "sent"
        return "invalid_token" if self.token_invalid else "retrying" if self.retryable else "failed"


class PushProvider(Protocol):
    name: str

    async def send(self, target: PushTarget, message: PushMessage) -> PushOutcome: ...
