"""Applying a device's mutation to a record: the contract's conflict rules.

Three-way, field by field, against the version the device based its change
on (taken from history). Nothing a person wrote is dropped: when the
device's own text loses an overlapping edit, its proposed state is written
to history as a version of its own, directly followed by the merged one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from uuid import UUID

import msgspec

from service.sync.model import Conflict, HistoryEntry, Mutation, MutationError, Record, Result, Stamp, Written
from service.sync.text import merge_text

ZERO_DEVICE = UUID(int=0)
# The stamp of the last delete or restore sits beside the fields' stamps.
DELETED = "deleted"


class Refused(Exception):
    """The mutation cannot apply; the rest of the batch goes on."""

    def __init__(self, error: MutationError) -> None:
        super().__init__(error.message)
        self.error = error


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    """What the rules need to know about record kinds, handed in by the caller."""

    long_text: frozenset[str]
    sets: frozenset[str]
    # Validates a whole state and adds server-set fields; raises Refused.
    finalize: Callable[[str, dict[str, Any]], dict[str, Any]]
    # Adds server-set fields to a state already checked whole (Mutation.whole); without it, finalize.
    complete: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None


class Outcome(msgspec.Struct, kw_only=True):
    merged: bool
    record: Record
    conflicts: list[Conflict]
    versions: list[Written]


def apply_mutation(
    current: Record | None, history: Mapping[int, HistoryEntry], mutation: Mutation, policy: Policy
) -> Outcome:
    """The new state of one record after `mutation`; raises Refused."""
    if mutation.base_version > (current.version if current else 0):
        raise Refused(
            MutationError(
                code="base_version_ahead",
                message=f"base_version {mutation.base_version} is above the server's version "
                f"{current.version if current else 0}",
                path="base_version",
            )
        )
    if current is None:
        return _create(mutation, policy)
    if current.kind != mutation.kind:
        raise Refused(MutationError(code="invalid", message=f"this id belongs to a {current.kind} record", path="kind"))
    if mutation.base_version == current.version or _only_this_device_since(current, history, mutation):
        return _apply_plain(current, mutation, policy)
    base = {} if mutation.base_version == 0 else _data_at(history, mutation.base_version)
    return _merge(current, base, mutation, policy)


def apply_batch(
    records: dict[UUID, Record],
    history: dict[UUID, dict[int, HistoryEntry]],
    applied_fingerprints: dict[bytes, int],
    mutations: list[Mutation | Result],
    policy: Policy,
) -> tuple[list[Result], list[Written]]:
    """Apply mutations in order; `records`, `history` and `applied_fingerprints`
    (fingerprint -> the version it produced) are updated in place.

    A `Result` among the mutations is one refused before the rules ran (for
    instance by validation) and is passed through in its place.
    """
    results: list[Result] = []
    written: list[Written] = []
    for mutation in mutations:
        if isinstance(mutation, Result):
            results.append(mutation)
            continue
        current = records.get(mutation.id)
        if (done := applied_fingerprints.get(mutation.fingerprint)) is not None:
            # The version this mutation produced back then, not the record's latest:
            # a device building on it gets its next edit merged with anything newer.
            results.append(Result(id=mutation.id, status="duplicate", version=done))
            continue
        try:
            outcome = apply_mutation(current, history.get(mutation.id, {}), mutation, policy)
        except Refused as refused:
            results.append(Result(id=mutation.id, status="rejected", error=refused.error))
            continue
        records[mutation.id] = outcome.record
        entries = history.setdefault(mutation.id, {})
        for version in outcome.versions:
            entries[version.version] = version
        written.extend(outcome.versions)
        applied_fingerprints[mutation.fingerprint] = outcome.record.version
        results.append(
            Result(
                id=mutation.id,
                status="merged" if outcome.merged else "applied",
                version=outcome.record.version,
                record=outcome.record if outcome.merged else None,
                conflicts=outcome.conflicts,
            )
        )
    return results, written


def _create(mutation: Mutation, policy: Policy) -> Outcome:
    stamp = Stamp(mutation.changed_at, mutation.device_id)
    deleted = mutation.op == "delete"
    if deleted:
        data: dict[str, Any] = {}
    elif mutation.whole is not None and policy.complete is not None:
        data = policy.complete(mutation.kind, mutation.whole)
    else:
        data = policy.finalize(mutation.kind, mutation.data)
    record = Record(
        id=mutation.id,
        kind=mutation.kind,
        version=1,
        deleted=deleted,
        data=data,
        stamps={DELETED: stamp} if deleted else dict.fromkeys(data, stamp),
        changed_at=mutation.changed_at,
        device_id=mutation.device_id,
    )
    return Outcome(merged=False, record=record, conflicts=[], versions=[_written(record, mutation)])


def _only_this_device_since(current: Record, history: Mapping[int, HistoryEntry], mutation: Mutation) -> bool:
    """Versions after the base were all written by this device: its own earlier
    changes, which its later change already builds on, are no conflict."""
    later = range(mutation.base_version + 1, current.version + 1)
    return all((entry := history.get(v)) is not None and entry.device_id == mutation.device_id for v in later)


def _data_at(history: Mapping[int, HistoryEntry], version: int) -> dict[str, Any] | None:
    entry = history.get(version)
    return entry.data if entry is not None else None


def _apply_plain(current: Record, mutation: Mutation, policy: Policy) -> Outcome:
    """No concurrent change: the device's change applies as it is."""
    stamp = Stamp(mutation.changed_at, mutation.device_id)
    if mutation.op == "delete":
        if current.deleted:
            return Outcome(merged=False, record=current, conflicts=[], versions=[])
        stamps = {**current.stamps, DELETED: stamp}
        return _next(current, mutation, deleted=True, data=current.data, stamps=stamps, merged=False)
    changed = {field for field, value in mutation.data.items() if current.data.get(field) != value}
    if not changed and not current.deleted:
        return Outcome(merged=False, record=current, conflicts=[], versions=[])
    data = policy.finalize(mutation.kind, {**current.data, **mutation.data})
    stamps = {**current.stamps, **dict.fromkeys(changed, stamp)}
    if current.deleted:
        stamps[DELETED] = stamp
    return _next(current, mutation, deleted=False, data=data, stamps=stamps, merged=False)


def _merge(current: Record, base: dict[str, Any] | None, mutation: Mutation, policy: Policy) -> Outcome:
    """The record changed since the device's base: decide field by field."""
    yours_at = Stamp(mutation.changed_at, mutation.device_id)
    theirs_at = _record_stamp(current)
    if mutation.op == "delete" or current.deleted:
        return _delete_against_edit(current, base, mutation, policy, yours_at)

    data, stamps = dict(current.data), dict(current.stamps)
    conflicts: list[Conflict] = []
    your_text_lost = False
    for field, yours in mutation.data.items():
        theirs = current.data.get(field)
        their_stamp = current.stamps.get(field, theirs_at)
        if yours == theirs:
            continue
        if base is not None:
            before = base.get(field)
            if yours == before:
                continue  # only theirs changed it
            if theirs == before:
                data[field], stamps[field] = yours, yours_at  # only yours changed it
                continue
            # Text on both sides (a null base counts as empty) merges word by word.
            if field in policy.long_text and isinstance(theirs, str) and isinstance(yours, str):
                text = merge_text(before if isinstance(before, str) else "", theirs, yours)
                if text is not None:
                    data[field] = text
                    stamps[field] = _later(yours_at, their_stamp)
                    conflicts.append(Conflict(field=field, yours=yours, theirs=theirs, resolution="merged_text"))
                    continue
            if field in policy.sets:
                data[field] = _union(before, theirs, yours)
                stamps[field] = _later(yours_at, their_stamp)
                conflicts.append(Conflict(field=field, yours=yours, theirs=theirs, resolution="union"))
                continue
        # Both changed it differently (or the base is gone): the later change wins.
        if yours_at.beats(their_stamp):
            data[field], stamps[field] = yours, yours_at
            conflicts.append(Conflict(field=field, yours=yours, theirs=theirs, resolution="kept_yours"))
        else:
            conflicts.append(Conflict(field=field, yours=yours, theirs=theirs, resolution="kept_theirs"))
            your_text_lost = your_text_lost or field in policy.long_text

    proposal = _proposal(current, base, mutation) if your_text_lost else None
    if data == current.data and proposal is None:
        return Outcome(merged=True, record=current, conflicts=conflicts, versions=[])
    data = policy.finalize(mutation.kind, data)
    return _next(
        current, mutation, deleted=False, data=data, stamps=stamps, merged=True, conflicts=conflicts, proposal=proposal
    )


def _delete_against_edit(
    current: Record, base: dict[str, Any] | None, mutation: Mutation, policy: Policy, yours_at: Stamp
) -> Outcome:
    """A delete and a concurrent edit: the later of the two wins; an edit made
    after the delete brings the record back. Each side is timed by its own
    change, not by the record's latest time, which an unrelated earlier change
    from a fast clock may have set."""
    deleting = mutation.op == "delete"
    if deleting and current.deleted:
        return Outcome(merged=False, record=current, conflicts=[], versions=[])
    theirs_at = _latest_edit_since(current, base) if deleting else current.stamps.get(DELETED, _record_stamp(current))
    yours_later = theirs_at is None or yours_at.beats(theirs_at)
    conflict = Conflict(
        field=DELETED,
        yours=deleting,
        theirs=current.deleted,
        resolution="kept_yours" if yours_later else "kept_theirs",
    )
    if deleting:
        if not yours_later:
            return Outcome(merged=True, record=current, conflicts=[conflict], versions=[])
        stamps = {**current.stamps, DELETED: yours_at}
        return _next(
            current, mutation, deleted=True, data=current.data, stamps=stamps, merged=True, conflicts=[conflict]
        )
    if yours_later:
        data = policy.finalize(mutation.kind, {**current.data, **mutation.data})
        stamps = {**current.stamps, **dict.fromkeys(mutation.data, yours_at), DELETED: yours_at}
        return _next(current, mutation, deleted=False, data=data, stamps=stamps, merged=True, conflicts=[conflict])
    # The edit lost to the delete: keep what the person wrote in history.
    return _next(
        current,
        mutation,
        deleted=True,
        data=current.data,
        stamps=current.stamps,
        merged=True,
        conflicts=[conflict],
        proposal=_proposal(current, base, mutation),
    )


def _latest_edit_since(current: Record, base: dict[str, Any] | None) -> Stamp | None:
    """When the record was last edited after the base (any field, if the base is gone)."""
    fields = current.data if base is None else [f for f in current.data if current.data.get(f) != base.get(f)]
    stamps = [current.stamps.get(field, _record_stamp(current)) for field in fields]
    return max(stamps, key=lambda s: (s.at, str(s.device))) if stamps else None


def _record_stamp(current: Record) -> Stamp:
    """For records written before per-field stamps: the record's own time."""
    return Stamp(current.changed_at, current.device_id or ZERO_DEVICE)


def _proposal(current: Record, base: dict[str, Any] | None, mutation: Mutation) -> dict[str, Any]:
    """The state the device proposed: what it had seen, with its changes."""
    return {**(base if base is not None else current.data), **mutation.data}


def _next(
    current: Record,
    mutation: Mutation,
    *,
    deleted: bool,
    data: dict[str, Any],
    stamps: dict[str, Stamp],
    merged: bool,
    conflicts: list[Conflict] | None = None,
    proposal: dict[str, Any] | None = None,
) -> Outcome:
    versions: list[Written] = []
    version = current.version
    if proposal is not None:
        version += 1
        versions.append(
            Written(
                record_id=current.id,
                kind=current.kind,
                version=version,
                deleted=False,
                data=proposal,
                changed_at=mutation.changed_at,
                device_id=mutation.device_id,
                fingerprint=None,
            )
        )
    record = Record(
        id=current.id,
        kind=current.kind,
        version=version + 1,
        deleted=deleted,
        data=data,
        stamps=stamps,
        changed_at=max(current.changed_at, mutation.changed_at),
        device_id=mutation.device_id,
    )
    versions.append(_written(record, mutation))
    return Outcome(merged=merged, record=record, conflicts=conflicts or [], versions=versions)


def _written(record: Record, mutation: Mutation) -> Written:
    return Written(
        record_id=record.id,
        kind=record.kind,
        version=record.version,
        deleted=record.deleted,
        data=record.data,
        changed_at=mutation.changed_at,
        device_id=mutation.device_id,
        fingerprint=mutation.fingerprint,
    )


def _later(a: Stamp, b: Stamp) -> Stamp:
    return a if a.beats(b) else b


def _union(base: Any, theirs: Any, yours: Any) -> list[str]:
    """Base plus what either side added, minus what either side removed."""
    before, t, y = set(base or []), set(theirs or []), set(yours or [])
    return sorted((before | t | y) - (before - t) - (before - y))
