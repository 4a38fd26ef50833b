"""The values the merge rules work on: records, mutations, and what came of them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import msgspec

Op = Literal["upsert", "delete"]
Resolution = Literal["merged_text", "union", "kept_yours", "kept_theirs"]
Status = Literal["applied", "merged", "duplicate", "rejected"]
ErrorCode = Literal["unknown_kind", "read_only_kind", "base_version_ahead", "invalid"]


class Stamp(msgspec.Struct, frozen=True, array_like=True):
    """When, and on which device, a value was written: the later one wins."""

    at: datetime
    device: UUID

    def beats(self, other: Stamp) -> bool:
        """Later time wins; a tie goes to the greater device id."""
        return (self.at, str(self.device)) > (other.at, str(other.device))


class Record(msgspec.Struct, kw_only=True):
    """A record's current state, with a stamp per field for per-field decisions."""

    id: UUID
    kind: str
    version: int
    deleted: bool
    data: dict[str, Any]
    stamps: dict[str, Stamp]
    changed_at: datetime
    device_id: UUID | None


class Mutation(msgspec.Struct, kw_only=True):
    """One queued change from a device, already validated field by field."""

    id: UUID
    kind: str
    op: Op
    base_version: int
    changed_at: datetime  # clamped to the server clock
    device_id: UUID
    data: dict[str, Any]  # the whole record for a create, changed fields for an update, {} for a delete
    fingerprint: bytes
    # The data already checked as a whole record, with every field (Policy.complete), when it was sent as one.
    whole: dict[str, Any] | None = None


class HistoryEntry(msgspec.Struct, kw_only=True):
    version: int
    deleted: bool
    data: dict[str, Any]
    changed_at: datetime
    device_id: UUID | None


class Conflict(msgspec.Struct, kw_only=True):
    field: str
    yours: Any
    theirs: Any
    resolution: Resolution


class Written(HistoryEntry, kw_only=True):
    """A version to append to history. It is a HistoryEntry as it stands, so a later mutation of
    the same record in the batch reads it without a copy being made for each version."""

    record_id: UUID
    kind: str
    device_id: UUID
    fingerprint: bytes | None


class MutationError(msgspec.Struct, kw_only=True):
    code: ErrorCode
    message: str
    path: str


class Result(msgspec.Struct, kw_only=True):
    id: UUID
    status: Status
    version: int | None = None
    record: Record | None = None
    conflicts: list[Conflict] = []
    error: MutationError | None = None
