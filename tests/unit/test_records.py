"""Record data checks: every kind, every rule, errors that name the path and the limit."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec import inspect as mi

from schemas.base import NO_NUL_PATTERN, without_nul_check
from schemas.records import (
    KINDS,
    LONG_TEXT_FIELDS,
    PATCH_KINDS,
    READ_ONLY_KINDS,
    SET_FIELDS,
    Invalid,
    validate_create,
    validate_full,
    validate_merged,
    validate_patch,
)
from schemas.sync import SyncRequest
from tests.unit.test_envelope import FIELDS
from tests.unit.test_envelope import answers as envelope_answers

AT = "2026-11-20T21:04:00+01:00"
NUL_REFUSED = "must not contain the NUL character (U+0000)"
VALID: dict[str, dict[str, Any]] = {
    "mood_checkin": {
        "occurred_at": AT,
        "mood": 6,
        "energy": 3,
        "emotions": ["calm", "tired"],
        "tags": ["work"],
        "note": "A long day, but I was kind to myself.",
    },
    "journal_entry": {
        "occurred_at": AT,
        "title": "Evening",
        "body": "Today I noticed the critic and answered it.",
        "prompt": "What went well?",
        "tags": ["reflection"],
    },
    "self_talk": {
        "occurred_at": AT,
        "situation": "Missed a deadline",
        "critical_thought": "I always fail.",
        "compassionate_response": "Everyone misses one sometimes.",
        "belief_before": 80,
        "belief_after": 40,
    },
    "as_if_experiment": {
        "planned_for": "2026-11-21T09:00:00+01:00",
        "target_belief": "I deserve kindness",
        "intention": "Take a real lunch break",
        "behaviours": ["lunch away from the desk"],
        "predicted_mood": 4,
        "belief_before": 30,
        "follow_up_at": "2026-11-21T18:00:00+01:00",
        "status": "planned",
        "actual_mood": None,
        "outcome": None,
        "learned": None,
        "belief_after": None,
    },
    "practice_session": {
        "occurred_at": AT,
        "practice": "loving_kindness",
        "phrases": ["May I be safe", "May I be kind to myself"],
        "duration_s": 600,
        "felt_genuine": 6,
        "mood_before": 4,
        "mood_after": 6,
    },
    "activity": {
        "occurred_at": AT,
        "category": "social",
        "description": "Walk with a friend",
        "with_others": True,
        "predicted_mood": 5,
        "mood_after": 7,
    },
    "assessment": {"occurred_at": AT, "instrument": "phq9", "answers": [0, 1, 0, 2, 0, 0, 1, 0, 0]},
    "preferences": {
        "timezone": "Europe/Berlin",
        "reminders_enabled": True,
        "reminder_time": "20:30",
        "quiet_start": "22:00",
        "quiet_end": "07:30",
        "weekly_day": "sun",
        "insight_push": False,
    },
}
REQUIRED: dict[str, list[str]] = {
    "mood_checkin": ["occurred_at", "mood"],
    "journal_entry": ["occurred_at", "body"],
    "self_talk": ["occurred_at", "critical_thought", "compassionate_response", "belief_before"],
    "as_if_experiment": ["planned_for", "target_belief", "intention", "predicted_mood", "belief_before", "status"],
    "practice_session": ["occurred_at", "practice", "duration_s"],
    "activity": ["occurred_at", "category", "description", "with_others"],
    "assessment": ["occurred_at", "instrument", "answers"],
    "preferences": [],
}


def invalid(kind: str, data: object, *, patch: bool = False, nul_free: bool = False) -> Invalid:
    with pytest.raises(Invalid) as caught:
        (validate_patch if patch else validate_full)(kind, data, nul_free=nul_free)
    return caught.value


def with_(kind: str, **changes: Any) -> dict[str, Any]:
    return {**VALID[kind], **changes}


def test_every_client_kind_is_covered() -> None:
    assert set(KINDS) == set(VALID) == set(REQUIRED)
    assert {"weekly_insight"} == READ_ONLY_KINDS
    assert not READ_ONLY_KINDS & set(KINDS)
    assert {"tags", "emotions"} == SET_FIELDS
    contract_long_text = "body note outcome learned critical_thought compassionate_response situation intention"
    contract_long_text += " description"
    assert set(contract_long_text.split()) == LONG_TEXT_FIELDS


@pytest.mark.parametrize("kind", sorted(VALID))
def test_a_valid_full_record_is_accepted_unchanged(kind: str) -> None:
    assert validate_full(kind, VALID[kind]) == VALID[kind]


@pytest.mark.parametrize(("kind", "field"), [(k, f) for k, fields in REQUIRED.items() for f in fields])
def test_a_missing_required_field_is_named(kind: str, field: str) -> None:
    data = dict(VALID[kind])
    del data[field]
    error = invalid(kind, data)
    assert (error.path, error.message) == (f"data.{field}", "is required")


def test_defaults_fill_every_field_of_a_minimal_record() -> None:
    assert validate_full("mood_checkin", {"occurred_at": AT, "mood": 5}) == {
        "occurred_at": AT,
        "mood": 5,
        "energy": None,
        "emotions": [],
        "tags": [],
        "note": None,
    }
    assert validate_full("preferences", {}) == {
        "timezone": "UTC",
        "reminders_enabled": False,
        "reminder_time": None,
        "quiet_start": "22:00",
        "quiet_end": "08:00",
        "weekly_day": "sun",
        "insight_push": True,
    }
    for kind in KINDS:
        minimal = {field: VALID[kind][field] for field in REQUIRED[kind]}
        assert tuple(validate_full(kind, minimal)) == KINDS[kind].__struct_fields__


@pytest.mark.parametrize(
    ("kind", "changes", "path", "message"),
    [
        ("mood_checkin", {"mood": 0}, "data.mood", "must be between 1 and 10"),
        ("mood_checkin", {"mood": 11}, "data.mood", "must be between 1 and 10"),
        ("mood_checkin", {"energy": 6}, "data.energy", "must be between 1 and 5"),
        ("mood_checkin", {"mood": "7"}, "data.mood", "must be an integer"),
        ("mood_checkin", {"mood": 7.0}, "data.mood", "must be an integer"),
        ("mood_checkin", {"mood": True}, "data.mood", "must be an integer"),
        ("mood_checkin", {"energy": "high"}, "data.energy", "must be an integer or null"),
        ("mood_checkin", {"tags": "work"}, "data.tags", "must be a list"),
        ("mood_checkin", {"tags": [f"t{i}" for i in range(51)]}, "data.tags", "must be at most 50 items"),
        ("mood_checkin", {"emotions": ["calm", 3]}, "data.emotions[1]", "must be a string"),
        ("mood_checkin", {"emotions": ["calm", ""]}, "data.emotions[1]", "must be between 1 and 500 characters"),
        ("mood_checkin", {"tags": ["x" * 501]}, "data.tags[0]", "must be between 1 and 500 characters"),
        ("mood_checkin", {"note": "x" * 20_001}, "data.note", "must be at most 20000 characters"),
        ("mood_checkin", {"note": "a\x00b"}, "data.note", "must not contain the NUL character (U+0000)"),
        ("journal_entry", {"body": "x" * 20_001}, "data.body", "must be at most 20000 characters"),
        ("journal_entry", {"body": None}, "data.body", "must be a string"),
        ("journal_entry", {"title": "x" * 201}, "data.title", "must be at most 200 characters"),
        ("journal_entry", {"prompt": "x" * 501}, "data.prompt", "must be at most 500 characters"),
        ("journal_entry", {"tags": ["ok", "bad\x00"]}, "data.tags[1]", "must not contain the NUL character (U+0000)"),
        ("self_talk", {"belief_before": 101}, "data.belief_before", "must be between 0 and 100"),
        ("self_talk", {"belief_after": -1}, "data.belief_after", "must be between 0 and 100"),
        ("self_talk", {"critical_thought": "x" * 20_001}, "data.critical_thought", "must be at most 20000 characters"),
        ("as_if_experiment", {"status": "maybe"}, "data.status", "must be one of: planned, done, skipped"),
        ("as_if_experiment", {"target_belief": "x" * 20_001}, "data.target_belief", "must be at most 20000 characters"),
        ("as_if_experiment", {"behaviours": ["b"] * 51}, "data.behaviours", "must be at most 50 items"),
        ("as_if_experiment", {"behaviours": ["x" * 501]}, "data.behaviours[0]", "must be at most 500 characters"),
        ("as_if_experiment", {"actual_mood": 0}, "data.actual_mood", "must be between 1 and 10"),
        ("practice_session", {"duration_s": -1}, "data.duration_s", "must be between 0 and 86400"),
        ("practice_session", {"felt_genuine": 11}, "data.felt_genuine", "must be between 0 and 10"),
        ("practice_session", {"phrases": ["p"] * 51}, "data.phrases", "must be at most 50 items"),
        (
            "practice_session",
            {"practice": "yoga"},
            "data.practice",
            "must be one of: loving_kindness, self_compassion_break, compassionate_letter, breathing, other",
        ),
        ("activity", {"with_others": 1}, "data.with_others", "must be true or false"),
        (
            "activity",
            {"category": 3},
            "data.category",
            "must be one of: enjoyment, meaning, self_care, social, professional_support",
        ),
        ("activity", {"description": "x" * 20_001}, "data.description", "must be at most 20000 characters"),
        ("assessment", {"instrument": "bdi"}, "data.instrument", "must be one of: who5, phq9, gad7, scs_sf"),
        ("assessment", {"answers": [0] * 51}, "data.answers", "must be at most 50 items"),
        ("assessment", {"answers": [0, "1"]}, "data.answers[1]", "must be an integer"),
        ("preferences", {"timezone": "Mars/Olympus"}, "data.timezone", "must be an IANA time zone name"),
        ("preferences", {"timezone": "localtime"}, "data.timezone", "must be an IANA time zone name"),
        (
            "preferences",
            {"reminder_time": "24:00"},
            "data.reminder_time",
            "must be a time as HH:MM (00:00 to 23:59) or null",
        ),
        ("preferences", {"quiet_start": "7:30"}, "data.quiet_start", "must be a time as HH:MM (00:00 to 23:59)"),
        ("preferences", {"quiet_end": "07:30\n"}, "data.quiet_end", "must be a time as HH:MM (00:00 to 23:59)"),
        (
            "preferences",
            {"weekly_day": "sunday"},
            "data.weekly_day",
            "must be one of: mon, tue, wed, thu, fri, sat, sun",
        ),
        ("preferences", {"insight_push": "yes"}, "data.insight_push", "must be true or false"),
    ],
)
def test_a_broken_rule_names_the_path_and_the_limit(
    kind: str, changes: dict[str, Any], path: str, message: str
) -> None:
    for patch in (False, True):
        error = invalid(kind, with_(kind, **changes) if not patch else changes, patch=patch)
        assert (error.path, error.message) == (path, message)
        assert str(error) == f"{path}: {message}"
        if message != NUL_REFUSED:
            # Text known to hold no NUL is not searched for one; every other rule holds as it is.
            error = invalid(kind, with_(kind, **changes) if not patch else changes, patch=patch, nul_free=True)
            assert (error.path, error.message) == (path, message)


def test_the_types_that_skip_the_nul_check_keep_every_other_constraint() -> None:
    nul_check = repr(NO_NUL_PATTERN)
    assert nul_check in repr(mi.type_info(SyncRequest))
    originals: list[type[msgspec.Struct]] = [*KINDS.values(), *PATCH_KINDS.values(), SyncRequest]
    for original in originals:
        variant = without_nul_check(original)
        assert issubclass(variant, original)
        described = repr(mi.type_info(original))
        assert repr(mi.type_info(variant)).replace("NulFree", "") == described.replace(nul_check, "None")


@pytest.mark.parametrize("kind", sorted(VALID))
def test_an_unknown_field_is_named(kind: str) -> None:
    for patch in (False, True):
        error = invalid(kind, with_(kind, colour="blue"), patch=patch)
        assert (error.path, error.message) == ("data.colour", "unknown field")


@pytest.mark.parametrize("data", [[], "text", None, 3])
def test_data_that_is_not_an_object_is_rejected_whole(data: object) -> None:
    error = invalid("journal_entry", data)
    assert (error.path, error.message) == ("data", "must be an object")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2026-11-20T21:04:00", "must carry a time zone offset (e.g. Z or +01:00)"),
        ("yesterday", "must be an RFC 3339 date-time with offset"),
        (1_700_000_000, "must be an RFC 3339 date-time with offset"),
    ],
)
def test_a_datetime_needs_an_offset(value: object, message: str) -> None:
    error = invalid("mood_checkin", with_("mood_checkin", occurred_at=value))
    assert (error.path, error.message) == ("data.occurred_at", message)
    error = invalid("as_if_experiment", {"follow_up_at": value}, patch=True)
    expected = message if "offset (" in message else message + " or null"  # a value that is a date-time is not a null
    assert (error.path, error.message) == ("data.follow_up_at", expected)


def test_datetimes_keep_their_offset() -> None:
    out = validate_full("mood_checkin", with_("mood_checkin", occurred_at="2026-11-20T21:04:00.250-05:30"))
    assert out["occurred_at"] == "2026-11-20T21:04:00.250000-05:30"
    assert (
        validate_full("mood_checkin", with_("mood_checkin", occurred_at="2026-11-20T20:04:00+00:00"))["occurred_at"]
        == "2026-11-20T20:04:00Z"
    )


def test_sets_are_sorted_and_deduplicated() -> None:
    out = validate_full("mood_checkin", with_("mood_checkin", tags=["b", "a", "b"], emotions=["sad", "calm", "sad"]))
    assert (out["tags"], out["emotions"]) == (["a", "b"], ["calm", "sad"])
    assert validate_patch("journal_entry", {"tags": ["z", "y", "z"]}) == {"tags": ["y", "z"]}


def test_lists_keep_their_order_and_repeats() -> None:
    phrases = ["May I be kind", "May I be safe", "May I be kind"]
    assert validate_full("practice_session", with_("practice_session", phrases=phrases))["phrases"] == phrases


@pytest.mark.parametrize("field", ["score", "band"])
def test_score_and_band_are_the_servers(field: str) -> None:
    for patch in (False, True):
        error = invalid("assessment", with_("assessment", **{field: 3}), patch=patch)
        assert (error.path, error.message) == (f"data.{field}", "is set by the server")


@pytest.mark.parametrize(
    ("instrument", "count", "low", "high"),
    [("who5", 5, 0, 5), ("phq9", 9, 0, 3), ("gad7", 7, 0, 3), ("scs_sf", 12, 1, 5)],
)
def test_answers_follow_the_instrument(instrument: str, count: int, low: int, high: int) -> None:
    for answers in ([low] * count, [high] * count):
        assert (
            validate_full("assessment", with_("assessment", instrument=instrument, answers=answers))["answers"]
            == answers
        )
    for wrong_count in (count - 1, count + 1, 0):
        error = invalid("assessment", with_("assessment", instrument=instrument, answers=[low] * wrong_count))
        assert (error.path, error.message) == ("data.answers", f"must have exactly {count} answers for {instrument}")
    for outside in (low - 1, high + 1):
        answers = [low] * count
        answers[count - 1] = outside
        error = invalid("assessment", with_("assessment", instrument=instrument, answers=answers))
        assert error.path == f"data.answers[{count - 1}]"
        assert "must be between" in error.message


def test_answer_range_error_names_the_instrument() -> None:
    error = invalid("assessment", with_("assessment", instrument="phq9", answers=[0, 0, 0, 4, 0, 0, 0, 0, 0]))
    assert (error.path, error.message) == ("data.answers[3]", "must be between 0 and 3 for phq9")
    error = invalid("assessment", with_("assessment", instrument="scs_sf", answers=[3] * 11 + [0]))
    assert (error.path, error.message) == ("data.answers[11]", "must be between 1 and 5 for scs_sf")


def test_a_patch_accepts_a_subset_and_returns_only_it() -> None:
    assert validate_patch("mood_checkin", {"mood": 3}) == {"mood": 3}
    assert validate_patch("mood_checkin", {"note": None, "energy": None}) == {"note": None, "energy": None}
    assert validate_patch("as_if_experiment", {"status": "done", "actual_mood": 8}) == {
        "status": "done",
        "actual_mood": 8,
    }
    assert validate_patch("preferences", {"timezone": "America/New_York"}) == {"timezone": "America/New_York"}
    assert validate_patch("journal_entry", {}) == {}


def test_a_patch_checks_types_but_not_cross_field_rules() -> None:
    assert validate_patch("assessment", {"answers": [1, 2]}) == {"answers": [1, 2]}
    error = invalid("mood_checkin", {"mood": None}, patch=True)
    assert (error.path, error.message) == ("data.mood", "must be an integer")
    error = invalid("preferences", {"timezone": "Nowhere/City"}, patch=True)
    assert error.path == "data.timezone"


def test_an_unknown_or_read_only_kind_is_a_key_error() -> None:
    for kind in ("weekly_insight", "dream_log"):
        with pytest.raises(KeyError):
            validate_full(kind, {})
        with pytest.raises(KeyError):
            validate_patch(kind, {})


def test_the_full_limits_are_accepted() -> None:
    data = with_(
        "journal_entry", body="x" * 20_000, title="t" * 200, prompt="p" * 500, tags=[f"t{i}" for i in range(50)]
    )
    assert validate_full("journal_entry", data)["body"] == "x" * 20_000


def test_msgpack_datetimes_are_checked_too() -> None:
    aware = datetime(2026, 11, 20, 20, 4, tzinfo=UTC)
    assert (
        validate_full("mood_checkin", with_("mood_checkin", occurred_at=aware))["occurred_at"] == "2026-11-20T20:04:00Z"
    )
    error = invalid("mood_checkin", with_("mood_checkin", occurred_at=aware.replace(tzinfo=None)))
    assert (error.path, error.message) == ("data.occurred_at", "must carry a time zone offset (e.g. Z or +01:00)")


@settings(max_examples=40, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_fast_whole_record_check_gives_what_the_full_conversion_gives(kind: str, data: st.DataObject) -> None:
    """validate_merged (every write's path) must store exactly what validate_full would, and refuse what it refuses."""
    required, optional = FIELDS[kind]
    raw = st.fixed_dictionaries(required, optional=optional)
    if kind == "assessment":
        raw = st.builds(lambda base, scored: {**base, **scored}, raw, envelope_answers)
    first, second = data.draw(raw), data.draw(raw)
    assert outcome(lambda: validate_merged(kind, validate_patch(kind, first))) == outcome(
        lambda: validate_full(kind, first)
    )
    # Text known to hold no NUL (as the drawn text holds none) is checked alike without looking for one.
    for check in (validate_full, validate_patch):
        assert outcome(partial(check, kind, first, nul_free=True)) == outcome(partial(check, kind, first))
    if isinstance(first, dict):
        assert validate_create(kind, first, nul_free=True) == validate_create(kind, first)
    # A create checked whole once: the same change (and fingerprint) as checked field by field.
    checked = validate_create(kind, first) if isinstance(first, dict) else None
    if checked is None:
        assert isinstance(outcome(lambda: validate_full(kind, first)), tuple)
    else:
        assert checked == (validate_patch(kind, first), validate_full(kind, first))
    stored = outcome(lambda: validate_full(kind, first))
    if isinstance(stored, dict):
        # A stored record changed by an update: the merged state, as a sync builds it.
        change = outcome(lambda: validate_patch(kind, second))
        if isinstance(change, dict):
            changed = {**stored, **change}
            assert outcome(lambda: validate_merged(kind, changed)) == outcome(lambda: validate_full(kind, changed))
            # A union of two devices' sets arrives unsorted and may repeat an item.
            union = {**changed, **{k: [*reversed(changed[k]), *changed[k][:1]] for k in SET_FIELDS & changed.keys()}}
            assert outcome(lambda: validate_merged(kind, union)) == outcome(lambda: validate_full(kind, union))


def outcome(check: Callable[[], dict[str, Any]]) -> dict[str, Any] | tuple[str, str]:
    """What a check stored, or the path it refused."""
    try:
        return check()
    except Invalid as invalid:
        return ("refused", invalid.path)
