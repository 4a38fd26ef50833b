"""The record kinds a device may write, and the checks a mutation's data passes before any merge.

A create carries the whole record (validate_full); an update carries only changed fields
(validate_patch), checked field by field with the same constraints, and the merged state is
checked whole again. Errors name the field's path and the rule in plain words, because they
go back to a phone that must tell a person what to fix.
"""

from __future__ import annotations

import re
import typing
import zoneinfo
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import inspect as mi

from schemas.base import NO_NUL_PATTERN, ClientInput, text, without_nul_check

TEXT_MAX = 20_000
TITLE_MAX = 200
ITEM_MAX = 500
LIST_MAX = 50
TIMEZONE_MAX = 64
DURATION_MAX_S = 24 * 3600  # one sitting; anything longer is a stuck timer, not a practice
HHMM_PATTERN = "^([01][0-9]|2[0-3]):[0-5][0-9]$"

LongText = Annotated[str, text(max_length=TEXT_MAX)]
Title = Annotated[str, text(max_length=TITLE_MAX)]
ShortText = Annotated[str, text(max_length=ITEM_MAX)]
# A blank tag or emotion is a slip of the thumb, not something to keep.
SetItem = Annotated[str, text(min_length=1, max_length=ITEM_MAX)]
StrSet = Annotated[list[SetItem], msgspec.Meta(max_length=LIST_MAX, description="A set: duplicates dropped, sorted")]
StrList = Annotated[list[ShortText], msgspec.Meta(max_length=LIST_MAX)]
Moment = Annotated[datetime, msgspec.Meta(tz=True, description="RFC 3339 with offset")]
Mood = Annotated[int, msgspec.Meta(ge=1, le=10)]
Energy = Annotated[int, msgspec.Meta(ge=1, le=5)]
Percent = Annotated[int, msgspec.Meta(ge=0, le=100)]
Rating = Annotated[int, msgspec.Meta(ge=0, le=10)]
# The anchored pattern already excludes NUL; max_length stops a trailing newline slipping past `$`.
ClockTime = Annotated[str, msgspec.Meta(min_length=5, max_length=5, pattern=HHMM_PATTERN, description="HH:MM, 24-hour")]
TimeZoneName = Annotated[str, text(min_length=1, max_length=TIMEZONE_MAX, description="IANA time zone name")]
# The widest range of any instrument; validate_full checks each instrument's own range and count.
Answers = Annotated[list[Annotated[int, msgspec.Meta(ge=0, le=5)]], msgspec.Meta(max_length=LIST_MAX)]

Instrument = Literal["who5", "phq9", "gad7", "scs_sf"]
ExperimentStatus = Literal["planned", "done", "skipped"]
Practice = Literal["loving_kindness", "self_compassion_break", "compassionate_letter", "breathing", "other"]
Category = Literal["enjoyment", "meaning", "self_care", "social", "professional_support"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
# instrument -> (number of items, lowest answer, highest answer)
ANSWER_RULES: dict[str, tuple[int, int, int]] = {
    "who5": (5, 0, 5),
    "phq9": (9, 0, 3),
    "gad7": (7, 0, 3),
    "scs_sf": (12, 1, 5),
}


class RecordData(ClientInput):
    """A record's data as a device sends it: unknown fields are errors.

    msgspec applies kw_only to the fields of the class that sets it, so each kind sets it again:
    required and defaulted fields then keep the contract's order.
    """


class MoodCheckin(RecordData, kw_only=True):
    occurred_at: Moment
    mood: Mood
    energy: Energy | None = None
    emotions: StrSet = []
    tags: StrSet = []
    note: LongText | None = None


class JournalEntry(RecordData, kw_only=True):
    occurred_at: Moment
    title: Title | None = None
    body: LongText
    prompt: ShortText | None = None
    tags: StrSet = []


class SelfTalk(RecordData, kw_only=True):
    occurred_at: Moment
    situation: LongText | None = None
    critical_thought: LongText
    compassionate_response: LongText
    belief_before: Percent
    belief_after: Percent | None = None


class AsIfExperiment(RecordData, kw_only=True):
    planned_for: Moment
    target_belief: LongText
    intention: LongText
    behaviours: StrList = []
    predicted_mood: Mood
    belief_before: Percent
    follow_up_at: Moment | None = None
    status: ExperimentStatus
    actual_mood: Mood | None = None
    outcome: LongText | None = None
    learned: LongText | None = None
    belief_after: Percent | None = None


class PracticeSession(RecordData, kw_only=True):
    occurred_at: Moment
    practice: Practice
    phrases: StrList = []
    duration_s: Annotated[int, msgspec.Meta(ge=0, le=DURATION_MAX_S)]
    felt_genuine: Rating | None = None
    mood_before: Mood | None = None
    mood_after: Mood | None = None


class Activity(RecordData, kw_only=True):
    occurred_at: Moment
    category: Category
    description: LongText
    with_others: bool
    predicted_mood: Mood | None = None
    mood_after: Mood | None = None


class Assessment(RecordData, kw_only=True):
    """`score` and `band` are the server's (service.insights.assessments.derive)."""

    occurred_at: Moment
    instrument: Instrument
    answers: Answers


class Preferences(RecordData, kw_only=True):
    """A singleton with defaults, so a first create may carry only what the person changed."""

    timezone: TimeZoneName = "UTC"
    reminders_enabled: bool = False
    reminder_time: ClockTime | None = None
    quiet_start: ClockTime = "22:00"
    quiet_end: ClockTime = "08:00"
    weekly_day: Weekday = "sun"
    insight_push: bool = True


KINDS: dict[str, type[RecordData]] = {
    "mood_checkin": MoodCheckin,
    "journal_entry": JournalEntry,
    "self_talk": SelfTalk,
    "as_if_experiment": AsIfExperiment,
    "practice_session": PracticeSession,
    "activity": Activity,
    "assessment": Assessment,
    "preferences": Preferences,
}
READ_ONLY_KINDS = frozenset({"weekly_insight"})
# Fields the server computes; stored data carries them, so strip them before validating a merged state.
SERVER_SET_FIELDS: dict[str, frozenset[str]] = {"assessment": frozenset({"score", "band"})}
# Merged as text when both sides edit them (the contract's list; target_belief is a statement, kept whole).
LONG_TEXT_FIELDS = frozenset(
    {
        "body",
        "note",
        "outcome",
        "learned",
        "critical_thought",
        "compassionate_response",
        "situation",
        "intention",
        "description",
    }
)
SET_FIELDS = frozenset({"tags", "emotions"})
# Stored encrypted under the person's own key (service/envelope.py): everything written in
# their own words. Tags stay readable because the weekly insight counts them in SQL; the
# other fields are numbers, times and choices.
PRIVATE_FIELDS = LONG_TEXT_FIELDS | {"target_belief", "title", "prompt", "phrases", "behaviours", "emotions"}


def _patch_struct(full: type[RecordData]) -> type[RecordData]:
    """The same fields and constraints, each optional: an update carries only what changed."""
    hints = typing.get_type_hints(full, include_extras=True)
    fields = [(name, hints[name] | msgspec.UnsetType, msgspec.UNSET) for name in full.__struct_fields__]
    patch = msgspec.defstruct(f"{full.__name__}Patch", fields, bases=(RecordData,), module=__name__, kw_only=True)
    return typing.cast(type[RecordData], patch)


def _struct_info(cls: type[RecordData]) -> mi.StructType:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return info


PATCH_KINDS: dict[str, type[RecordData]] = {kind: _patch_struct(cls) for kind, cls in KINDS.items()}
# The same, for data whose strings are known to hold no NUL (without_nul_check): text from a
# request proven free of it, and values already stored (Postgres's jsonb cannot hold one, and
# every value was checked on its way in).
_NUL_FREE_KINDS: dict[str, type[RecordData]] = {kind: without_nul_check(cls) for kind, cls in KINDS.items()}
_NUL_FREE_PATCH_KINDS: dict[str, type[RecordData]] = {kind: without_nul_check(cls) for kind, cls in PATCH_KINDS.items()}
_TYPE_INFO = {
    cls: _struct_info(cls)
    for kinds in (KINDS, PATCH_KINDS, _NUL_FREE_KINDS, _NUL_FREE_PATCH_KINDS)
    for cls in kinds.values()
}
# Each kind's defaults in stored form, for validate_merged.
_DEFAULTS: dict[str, dict[str, Any]] = {
    kind: {
        field.encode_name: msgspec.to_builtins(
            field.default if field.default is not msgspec.NODEFAULT else field.default_factory()
        )
        for field in msgspec.structs.fields(cls)
        if field.required is False
    }
    for kind, cls in KINDS.items()
}
# "localtime" and "posixrules" are files of the host's zone database, not zone names a phone would send.
_TIMEZONES = frozenset(zoneinfo.available_timezones()) - {"localtime", "posixrules"}


class Invalid(Exception):
    """A record's data broke a rule: `path` like "data.mood", `message` naming the rule or limit."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def validate_full(kind: str, data: object, *, nul_free: bool = False) -> dict[str, Any]:
    """A whole record (a create, or a merged state), normalised with every field present.
    `nul_free`: its strings are known to hold no NUL, and are not searched for one.

    Raises KeyError for a kind with no client Struct (unknown or read-only) and Invalid otherwise.
    """
    record = _convert((_NUL_FREE_KINDS if nul_free else KINDS)[kind], kind, data)
    _check_fields(kind, record)
    if isinstance(record, Assessment):
        _check_answers(record.instrument, record.answers)
    return _normalise(record)


def validate_merged(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """A whole state made of values already in stored form: a validated change over a stored
    record, or a merge of such values.

    Checked exactly as validate_full checks, but not converted back field by field: its values
    already are what that conversion would give, so only missing fields get their defaults and
    sets are sorted again. This is the hot path of every write. Values in stored form hold no
    NUL: their strings are not searched for one.
    """
    record = _convert(_NUL_FREE_KINDS[kind], kind, data)
    _check_fields(kind, record)
    if isinstance(record, Assessment):
        _check_answers(record.instrument, record.answers)
    out = dict(data)
    for name, default in _DEFAULTS[kind].items():
        if name not in out:
            out[name] = list(default) if isinstance(default, list) else default
    _sort_sets(out)
    return out


def validate_create(
    kind: str, data: dict[str, Any], *, nul_free: bool = False
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """A record sent whole (a create, as the app sends one), checked once: what validate_patch
    would give for it, and what validate_full gives. None when it is not a valid whole record:
    validate_patch then decides, for a change sent with base_version 0 may hold only some fields.
    """
    try:
        whole = validate_full(kind, data, nul_free=nul_free)
    except Invalid:
        return None
    # Every field sent is in the whole record (an unknown one is refused): fewer to look at.
    return {name: whole[name] for name in data}, whole


def validate_patch(kind: str, data: object, *, nul_free: bool = False) -> dict[str, Any]:
    """Only the fields an update carries; cross-field rules wait for the merged state."""
    record = _convert((_NUL_FREE_PATCH_KINDS if nul_free else PATCH_KINDS)[kind], kind, data)
    _check_fields(kind, record)
    return _normalise(record)


def _convert(cls: type[RecordData], kind: str, data: object) -> RecordData:
    server_set = SERVER_SET_FIELDS.get(kind)
    if server_set and isinstance(data, dict) and (sent_by_client := sorted(server_set & data.keys())):
        raise Invalid(f"data.{sent_by_client[0]}", "is set by the server")
    try:
        return msgspec.convert(data, cls)
    except msgspec.ValidationError as exc:
        raise _invalid(_TYPE_INFO[cls], str(exc)) from None


def _check_fields(kind: str, record: RecordData) -> None:
    """Rules msgspec constraints cannot say."""
    if kind != "preferences":
        return
    timezone = getattr(record, "timezone", msgspec.UNSET)
    if timezone is not msgspec.UNSET and timezone not in _TIMEZONES:
        raise Invalid("data.timezone", "must be an IANA time zone name")


def _check_answers(instrument: str, answers: list[int]) -> None:
    count, low, high = ANSWER_RULES[instrument]
    if len(answers) != count:
        raise Invalid("data.answers", f"must have exactly {count} answers for {instrument}")
    for index, answer in enumerate(answers):
        if not low <= answer <= high:
            raise Invalid(f"data.answers[{index}]", f"must be between {low} and {high} for {instrument}")


def _normalise(record: RecordData) -> dict[str, Any]:
    """JSON-ready builtins (RFC 3339 datetimes keep their offset); sets sorted and de-duplicated."""
    out: dict[str, Any] = msgspec.to_builtins(record)
    _sort_sets(out)
    return out


def _sort_sets(data: dict[str, Any]) -> None:
    """Sort and de-duplicate the set fields in place; a list of one is left as it is (half the
    time of the whole normalisation went to sorting those)."""
    for name in SET_FIELDS:
        values = data.get(name)
        if values is not None and len(values) > 1:
            data[name] = sorted(set(values))


# --- msgspec's error text -> a path and plain words -------------------------------------------

_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_STEP = re.compile(r"\.(\w+)|\[(\d+)\]")
_FIELD = re.compile(r"^Object (?P<what>contains unknown|missing required) field `(?P<name>[^`]*)`$")
# msgspec sorts a Literal's values; error text lists them in the contract's order (mon..sun).
_ENUM_ORDER = {
    frozenset(typing.get_args(enum)): typing.get_args(enum)
    for enum in (Instrument, ExperimentStatus, Practice, Category, Weekday)
}
_TYPE_WORDS: dict[type[mi.Type], str] = {
    mi.IntType: "an integer",
    mi.FloatType: "a number",
    mi.StrType: "a string",
    mi.BoolType: "true or false",
    mi.ListType: "a list",
    mi.DateTimeType: "an RFC 3339 date-time with offset",
    mi.StructType: "an object",
    mi.DictType: "an object",
}


def _invalid(info: mi.StructType, error: str) -> Invalid:
    match = _AT.match(error)
    assert match is not None  # the pattern matches any text
    msg, at = match["msg"], match["path"] or ""
    path = "data" + at
    field = _FIELD.match(msg)
    if field:
        words = "unknown field" if field["what"] == "contains unknown" else "is required"
        return Invalid(f"{path}.{field['name']}", words)
    return Invalid(path, _describe(msg, _type_at(info, at)))


def _type_at(info: mi.Type, at: str) -> mi.Type | None:
    """The type a path points at, through fields and list items."""
    node: mi.Type | None = info
    for name, index in _STEP.findall(at):
        node = _strip_optional(node)
        if name and isinstance(node, mi.StructType):
            node = next((_plain(f.type) for f in node.fields if f.encode_name == name), None)
        elif index and isinstance(node, mi.ListType):
            node = _plain(node.item_type)
        else:
            return None
    return node


def _plain(node: mi.Type) -> mi.Type:
    """Without the description wrappers (Metadata) that hide the constrained type."""
    if isinstance(node, mi.Metadata):
        return _plain(node.type)
    if isinstance(node, mi.UnionType):
        return mi.UnionType(tuple(_plain(t) for t in node.types))
    return node


def _strip_optional(node: mi.Type | None) -> mi.Type | None:
    if isinstance(node, mi.UnionType):
        rest = [t for t in node.types if not isinstance(t, mi.NoneType)]
        return rest[0] if len(rest) == 1 else node
    return node


def _describe(msg: str, node: mi.Type | None) -> str:
    nullable = isinstance(node, mi.UnionType) and any(isinstance(t, mi.NoneType) for t in node.types)
    node = _strip_optional(node)
    if isinstance(node, mi.LiteralType):
        values = _ENUM_ORDER.get(frozenset(node.values), node.values)
        return "must be one of: " + ", ".join(map(str, values)) + (" or null" if nullable else "")
    if isinstance(node, mi.IntType) and re.match(r"^Expected `int` [<>]=? ", msg):
        return _range_words(node.ge, node.le)
    if isinstance(node, mi.StrType) and node.pattern == HHMM_PATTERN:
        return "must be a time as HH:MM (00:00 to 23:59)" + (" or null" if nullable else "")
    if isinstance(node, mi.StrType) and "of length" in msg:
        return _length_words(node.min_length, node.max_length, "characters")
    if isinstance(node, mi.ListType) and "of length" in msg:
        return _length_words(node.min_length, node.max_length, "items")
    if isinstance(node, mi.StrType) and "matching regex" in msg:
        return "must not contain the NUL character (U+0000)" if node.pattern == NO_NUL_PATTERN else "has a wrong format"
    if "with a timezone component" in msg:
        return "must carry a time zone offset (e.g. Z or +01:00)"
    if msg.startswith("Invalid RFC3339"):
        return "must be an RFC 3339 date-time with offset" + (" or null" if nullable else "")
    if msg.startswith("Expected `") and node is not None:
        words = _TYPE_WORDS.get(type(node), "of another type")
        return f"must be {words}" + (" or null" if nullable else "")
    return msg


def _range_words(ge: int | None, le: int | None) -> str:
    if ge is not None and le is not None:
        return f"must be between {ge} and {le}"
    return f"must be at least {ge}" if ge is not None else f"must be at most {le}"


def _length_words(least: int | None, most: int | None, unit: str) -> str:
    if least and most is not None:
        return f"must be between {least} and {most} {unit}" if least != most else f"must be exactly {most} {unit}"
    return f"must be at most {most} {unit}" if most is not None else f"must be at least {least} {unit}"
