"""`POST /v1/sync` and its receipts on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec

from schemas.base import ClientInput, ServerOutput, text

MAX_MUTATIONS = 500
PULL_LIMIT_DEFAULT = 500
PULL_LIMIT_MAX = 1000
PROTOCOL_VERSIONS = frozenset({1})

Resolution = Literal["merged_text", "union", "kept_yours", "kept_theirs"]
Status = Literal["applied", "merged", "duplicate", "rejected"]
ErrorCode = Literal["unknown_kind", "read_only_kind", "base_version_ahead", "invalid"]


class MutationIn(ClientInput):
    id: UUID
    kind: Annotated[str, text(max_length=64)]
    op: Literal["upsert", "delete"]
    base_version: Annotated[int, msgspec.Meta(ge=0)]
    changed_at: Annotated[datetime, msgspec.Meta(tz=True)]
    # Checked per kind after decoding, so one bad record is rejected alone.
    data: dict[str, Any] | None = None


class SyncRequest(ClientInput):
    device_id: UUID
    batch_id: UUID
    cursor: Annotated[str, text(max_length=512)] | None = None
    pull_limit: Annotated[int, msgspec.Meta(ge=1, le=PULL_LIMIT_MAX)] = PULL_LIMIT_DEFAULT
    mutations: list[MutationIn] = []
    protocol: int = 1


class Conflict(ServerOutput):
    field: str
    yours: Any
    theirs: Any
    resolution: Resolution


class MutationError(ServerOutput):
    code: ErrorCode
    message: str
    path: str


class Change(ServerOutput):
    """A record as it is now on the server."""

    id: UUID
    kind: str
    version: int
    deleted: bool
    data: dict[str, Any]
    changed_at: datetime
    updated_at: datetime


class MutationResult(ServerOutput):
    id: UUID
    status: Status
    version: int | None = None
    record: Change | None = None
    conflicts: list[Conflict] = []
    error: MutationError | None = None


class SyncResponse(ServerOutput):
    results: list[MutationResult]
    changes: list[Change]
    cursor: str
    has_more: bool


class BatchReceipt(ServerOutput):
    batch_id: UUID
    results: list[MutationResult]


class Manifest(ServerOutput):
    records: int
    by_kind: dict[str, int]
    checksum: str


class HistoryVersion(ServerOutput):
    version: int
    deleted: bool
    data: dict[str, Any]
    changed_at: datetime
    device_id: UUID | None
