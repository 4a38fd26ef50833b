"""The contract's conflict rules, one example each, straight through the pure core."""

from __future__ import annotations

import ast
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from service.sync.clock import MAX_SKEW, clamp
from service.sync.merge import Outcome, Policy, Refused, apply_batch, apply_mutation
from service.sync.model import HistoryEntry, Mutation, Op, Record
from service.sync.text import merge_text
from tests.simulator import Device, MemoryServer

A = UUID("00000000-0000-0000-0000-00000000000a")
B = UUID("00000000-0000-0000-0000-00000000000b")
C = UUID("00000000-0000-0000-0000-00000000000c")
RECORD = UUID("0190f4a0-0000-7000-8000-000000000001")
T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
POLICY = Policy(long_text=frozenset({"body", "note"}), sets=frozenset({"tags"}), finalize=lambda kind, data: data)
BASE = {"mood": 5, "note": "I felt calm today at the lake", "tags": ["calm", "lake"]}


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def mutation(
    device: UUID, base: int, minutes: float, data: dict[str, Any] | None = None, op: Op = "upsert"
) -> Mutation:
    fingerprint = hashlib.sha256(repr((device, base, minutes, data, op)).encode()).digest()
    return Mutation(
        id=RECORD,
        kind="mood_checkin",
        op=op,
        base_version=base,
        changed_at=at(minutes),
        device_id=device,
        data=data or {},
        fingerprint=fingerprint,
    )


class Store:
    """One record and its history, kept the way a caller of apply_mutation keeps them."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.record: Record | None = None
        self.history: dict[int, HistoryEntry] = {}
        if data is not None:
            self.apply(mutation(C, 0, 0, data))

    def apply(self, m: Mutation) -> Outcome:
        outcome = apply_mutation(self.record, self.history, m, POLICY)
        self.record = outcome.record
        for v in outcome.versions:
            self.history[v.version] = v
        return outcome

    @property
    def data(self) -> dict[str, Any]:
        assert self.record is not None
        return self.record.data


def theirs_then_yours(theirs: dict[str, Any], yours: dict[str, Any], their_minutes: float = 1, your_minutes: float = 2):
    """B changes version 1 first, then A sends a change also based on version 1."""
    store = Store(BASE)
    store.apply(mutation(B, 1, their_minutes, theirs))
    return store, store.apply(mutation(A, 1, your_minutes, yours))


def resolutions(outcome: Outcome) -> dict[str, str]:
    return {c.field: c.resolution for c in outcome.conflicts}


def test_a_field_changed_on_one_side_only_takes_that_side() -> None:
    # mood: only theirs changed it (yours re-sent the base value); note: only yours changed it.
    store, outcome = theirs_then_yours({"mood": 7}, {"mood": 5, "note": "I felt calm today at the sea"})
    assert outcome.merged
    assert store.data == {**BASE, "mood": 7, "note": "I felt calm today at the sea"}
    assert outcome.conflicts == []
    assert [v.version for v in outcome.versions] == [3]


def test_both_sides_changed_a_field_to_the_same_value() -> None:
    store, outcome = theirs_then_yours({"mood": 8}, {"mood": 8, "tags": ["calm"]})
    assert store.data == {**BASE, "mood": 8, "tags": ["calm"]}
    assert "mood" not in resolutions(outcome), "nothing to resolve when both agree"


def test_long_text_edits_in_different_places_merge() -> None:
    store, outcome = theirs_then_yours(
        {"note": "Honestly I felt calm today at the lake"}, {"note": "I felt calm today at the quiet lake"}
    )
    assert store.data["note"] == "Honestly I felt calm today at the quiet lake"
    assert resolutions(outcome) == {"note": "merged_text"}
    (conflict,) = outcome.conflicts
    assert (conflict.yours, conflict.theirs) == (
        "I felt calm today at the quiet lake",
        "Honestly I felt calm today at the lake",
    )


def test_a_long_entry_edited_near_its_start_and_its_end_keeps_both_edits() -> None:
    middle = " ".join(f"sentence {n} of a long evening entry." for n in range(80))
    base = f"Today {middle} Tomorrow."
    theirs = f"Today, gently, {middle} Tomorrow."
    yours = f"Today {middle} Tomorrow I rest."
    assert merge_text(base, theirs, yours) == f"Today, gently, {middle} Tomorrow I rest."
    assert merge_text(base, yours, theirs) == merge_text(base, theirs, yours)


def test_a_long_entry_extended_at_its_end_by_both_sides_is_an_overlap() -> None:
    base = " ".join(f"line {n}." for n in range(200))
    assert merge_text(base, f"{base} first", f"{base} second") is None
    assert merge_text(base, f"{base} same", f"{base} same") == f"{base} same"


def test_overlapping_text_edits_the_later_change_wins_yours() -> None:
    store, outcome = theirs_then_yours(
        {"note": "I felt tired today at the lake"}, {"note": "I felt anxious today at the lake"}, 1, 2
    )
    assert store.data["note"] == "I felt anxious today at the lake"
    assert resolutions(outcome) == {"note": "kept_yours"}
    assert [v.version for v in outcome.versions] == [3]
    assert store.history[2].data["note"] == "I felt tired today at the lake", "their text stays in history"


def test_overlapping_text_edits_yours_lost_is_kept_in_history_as_its_own_version() -> None:
    store, outcome = theirs_then_yours(
        {"note": "I felt tired today at the lake"}, {"note": "I felt anxious today at the lake", "mood": 3}, 2, 1
    )
    assert store.data["note"] == "I felt tired today at the lake"
    assert resolutions(outcome) == {"note": "kept_theirs"}  # mood: only yours changed it
    proposal, merged = outcome.versions
    assert (proposal.version, merged.version) == (3, 4)
    assert outcome.record.version == 4
    assert proposal.data == {**BASE, "note": "I felt anxious today at the lake", "mood": 3}
    assert (proposal.deleted, proposal.device_id, proposal.fingerprint) == (False, A, None)
    assert merged.data == {**BASE, "note": "I felt tired today at the lake", "mood": 3}
    assert store.history[3].data["note"] == "I felt anxious today at the lake"


def test_sets_are_base_plus_what_either_added_minus_what_either_removed() -> None:
    store = Store({**BASE, "tags": ["a", "b", "c"]})
    store.apply(mutation(B, 1, 1, {"tags": ["a", "b", "d"]}))  # removed c, added d
    outcome = store.apply(mutation(A, 1, 2, {"tags": ["b", "c", "e"]}))  # removed a, added e
    assert store.data["tags"] == ["b", "d", "e"]
    assert resolutions(outcome) == {"tags": "union"}


def test_other_fields_the_later_change_wins() -> None:
    store, outcome = theirs_then_yours({"mood": 7}, {"mood": 3}, 2, 1)
    assert store.data["mood"] == 7
    assert resolutions(outcome) == {"mood": "kept_theirs"}
    assert [v.version for v in outcome.versions] == [], "nothing changed, nothing written"

    store, outcome = theirs_then_yours({"mood": 7}, {"mood": 3}, 1, 2)
    assert store.data["mood"] == 3
    assert resolutions(outcome) == {"mood": "kept_yours"}


@pytest.mark.parametrize(("theirs_by", "yours_by", "winner"), [(B, A, 7), (A, B, 3)])
def test_other_fields_a_tie_goes_to_the_greater_device_id(theirs_by: UUID, yours_by: UUID, winner: int) -> None:
    store = Store(BASE)
    store.apply(mutation(theirs_by, 1, 1, {"mood": 7}))
    outcome = store.apply(mutation(yours_by, 1, 1, {"mood": 3}))
    assert store.data["mood"] == winner
    assert resolutions(outcome) == {"mood": "kept_theirs" if winner == 7 else "kept_yours"}


def test_an_edit_after_a_concurrent_delete_brings_the_record_back() -> None:
    store = Store(BASE)
    store.apply(mutation(B, 1, 1, op="delete"))
    outcome = store.apply(mutation(A, 1, 2, {"mood": 2}))
    assert store.record is not None
    assert not store.record.deleted
    assert store.data == {**BASE, "mood": 2}
    assert resolutions(outcome) == {"deleted": "kept_yours"}


def test_an_edit_before_a_concurrent_delete_stays_deleted_and_is_kept_in_history() -> None:
    store = Store(BASE)
    store.apply(mutation(B, 1, 2, op="delete"))
    outcome = store.apply(mutation(A, 1, 1, {"note": "written before the delete"}))
    assert store.record is not None
    assert store.record.deleted
    assert resolutions(outcome) == {"deleted": "kept_theirs"}
    proposal, tombstone = outcome.versions
    assert (proposal.version, tombstone.version) == (3, 4)
    assert not proposal.deleted
    assert proposal.data["note"] == "written before the delete"
    assert tombstone.deleted


def test_a_delete_after_a_concurrent_edit_wins() -> None:
    store = Store(BASE)
    store.apply(mutation(B, 1, 1, {"mood": 9}))
    outcome = store.apply(mutation(A, 1, 2, op="delete"))
    assert store.record is not None
    assert store.record.deleted
    assert store.record.version == 3
    assert resolutions(outcome) == {"deleted": "kept_yours"}
    assert store.history[2].data["mood"] == 9


def test_a_delete_before_a_concurrent_edit_loses() -> None:
    store = Store(BASE)
    store.apply(mutation(B, 1, 2, {"mood": 9}))
    outcome = store.apply(mutation(A, 1, 1, op="delete"))
    assert store.record is not None
    assert not store.record.deleted
    assert store.data["mood"] == 9
    assert resolutions(outcome) == {"deleted": "kept_theirs"}
    assert outcome.versions == []


@pytest.mark.parametrize("yours_delete", [False, True], ids=["edit-after-delete", "delete-after-edit"])
def test_delete_against_edit_compares_with_the_concurrent_change_not_the_records_latest_time(
    yours_delete: bool,
) -> None:
    store = Store(BASE)
    store.apply(mutation(C, 1, 5, {"mood": 7}))  # v2 at +5 (C's clock runs fast)
    # v3 at +1, concurrent with A's change below: B, whose clock is right, deletes or edits.
    store.apply(mutation(B, 2, 1, {"mood": 2}) if yours_delete else mutation(B, 2, 1, op="delete"))
    # A, also based on v2, changes the record at +3: later than B's change, so A wins.
    outcome = store.apply(mutation(A, 2, 3, op="delete") if yours_delete else mutation(A, 2, 3, {"mood": 4}))
    assert store.record is not None
    assert store.record.deleted is yours_delete
    assert resolutions(outcome) == {"deleted": "kept_yours"}


def test_when_the_base_version_is_gone_each_field_goes_to_the_later_change() -> None:
    store = Store(BASE)
    store.apply(mutation(B, 1, 10, {"mood": 9}))  # v2: mood at +10
    store.apply(mutation(B, 2, 1, {"note": "an older note"}))  # v3: note at +1
    del store.history[1]  # history of version 1 purged
    outcome = store.apply(mutation(A, 1, 5, {"mood": 2, "note": "a newer note"}))
    assert store.data["mood"] == 9
    assert store.data["note"] == "a newer note"
    assert resolutions(outcome) == {"mood": "kept_theirs", "note": "kept_yours"}


def test_a_base_version_above_the_servers_is_refused() -> None:
    store = Store(BASE)
    with pytest.raises(Refused) as refused:
        store.apply(mutation(A, 2, 1, {"mood": 2}))
    assert refused.value.error.code == "base_version_ahead"
    assert refused.value.error.path == "base_version"
    with pytest.raises(Refused) as refused:
        apply_mutation(None, {}, mutation(A, 1, 1, {"mood": 2}), POLICY)
    assert refused.value.error.code == "base_version_ahead"


def test_two_mutations_of_one_device_in_a_batch_on_the_same_base_are_no_conflict() -> None:
    store = Store(BASE)
    assert store.record is not None
    records = {RECORD: store.record}
    history = {RECORD: store.history}
    results, written = apply_batch(
        records,
        history,
        {},
        [mutation(A, 1, 1, {"note": "first thought"}), mutation(A, 1, 2, {"note": "second thought", "mood": 6})],
        POLICY,
    )
    assert [(r.status, r.version, r.conflicts) for r in results] == [("applied", 2, []), ("applied", 3, [])]
    assert [w.version for w in written] == [2, 3]
    assert records[RECORD].data == {**BASE, "note": "second thought", "mood": 6}


def test_a_mutation_already_applied_is_a_duplicate() -> None:
    store = Store(BASE)
    assert store.record is not None
    records, history, seen = {RECORD: store.record}, {RECORD: store.history}, dict[bytes, int]()
    edit = mutation(A, 1, 1, {"mood": 2})
    first, _ = apply_batch(records, history, seen, [edit], POLICY)
    again, written = apply_batch(records, history, seen, [edit], POLICY)
    assert [r.status for r in first] == ["applied"]
    assert [(r.status, r.version) for r in again] == [("duplicate", 2)]
    assert written == []
    assert sorted(history[RECORD]) == [1, 2]


def test_a_clock_more_than_five_minutes_ahead_counts_as_now() -> None:
    assert timedelta(minutes=5) == MAX_SKEW
    assert clamp(at(6), T0) == T0
    assert clamp(at(5), T0) == at(5), "exactly five minutes ahead is still trusted"
    assert clamp(at(-60), T0) == at(-60)


async def test_a_device_with_a_fast_clock_does_not_win_a_later_change() -> None:
    server = MemoryServer(now=T0)
    fast, honest = Device(A), Device(B)
    fast.edit("mood_checkin", RECORD, dict(BASE), at(-10))
    await fast.sync(server)
    await honest.sync(server)
    fast.edit("mood_checkin", RECORD, {"mood": 1}, at(60))  # its clock is an hour ahead
    honest.edit("mood_checkin", RECORD, {"mood": 9}, at(1))
    await fast.sync(server)  # counted as now: T0
    server.advance(minutes=2)
    await honest.sync(server)
    await fast.sync(server)
    assert server.records[RECORD].data["mood"] == 9
    assert fast.store[RECORD].data["mood"] == honest.store[RECORD].data["mood"] == 9


BANNED = ("sqlalchemy", "asyncpg", "litestar", "redis", "arq", "httpx", "socket", "service.db", "service.api")


def _imported_modules(path: Path, package: str) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base]) if base else ".".join(parent)
            names.append(base)
            names.extend(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_the_sync_rules_import_no_io_library() -> None:
    root = Path(__file__).resolve().parents[2]
    modules = sorted((root / "service" / "sync").rglob("*.py"))
    assert modules, "service/sync has modules"
    offending = []
    for path in modules:
        package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
        for name in _imported_modules(path, package):
            if any(name == banned or name.startswith(banned + ".") for banned in BANNED):
                offending.append(f"{path.relative_to(root)}: {name}")
    assert offending == []


def test_the_import_check_sees_relative_and_from_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from .. import db\nfrom ..api.sync import x\nimport socket\nfrom service import api\n")
    names = _imported_modules(module, "service.sync")
    for expected in ("service.db", "service.api.sync", "socket", "service.api"):
        assert expected in names
