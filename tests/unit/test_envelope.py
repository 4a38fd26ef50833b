"""Envelope encryption: what people write is sealed under their own data key, and only opens for them.

A leak here is silent (the app keeps working while text sits readable in the
database or a backup), so the properties check the bytes that would be
stored, not just that a round trip works.
"""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from schemas.records import ANSWER_RULES, KINDS, PRIVATE_FIELDS, Invalid, validate_full
from service.envelope import (
    KEY_BYTES,
    NONCE_BYTES,
    DataKey,
    EnvelopeError,
    MasterKeys,
    WrappedKey,
    reveal,
    seal_for,
    split,
)

OWNER = UUID(int=0xA11CE)
OTHER_OWNER = UUID(int=0xB0B)
RECORD = UUID(int=0x5EC0)
OTHER_RECORD = UUID(int=0x5EC1)
AT = "2026-11-20T21:04:00+01:00"
# What a person might write; none of it is a field name, a choice or a tag below.
SENTENCES = [
    "I always fail at everything.",
    "Everyone misses a deadline sometimes.",
    "May I be safe",
    "Ich war heute geduldig mit mir.",
    "Je mérite de la douceur 🌱",
    "Called my sister after the appointment",
    "对自己温柔一点",
    'He said "no" \\ and I said\nokay',
]
EMOTIONS = ["grateful", "tired", "anxious", "hopeful", "ashamed", "überwältigt", "😌 relieved"]
TAGS = ["work", "sleep", "family", "walk"]
TIMEZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Adelaide"]
NOTE = "A long day, but I was kind to myself."
PRIVATE: dict[str, Any] = {"note": NOTE, "emotions": ["calm", "tired of pretending"]}

# --- realistic record data ------------------------------------------------------------------

# Any text a phone can send: no NUL (refused by the schema) and no lone surrogates (not UTF-8).
typed = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=60)
words = st.one_of(st.sampled_from(SENTENCES), typed)
item = st.one_of(st.sampled_from(SENTENCES), typed.filter(bool))
emotion = st.one_of(st.sampled_from(EMOTIONS), typed.filter(bool))
moment = st.datetimes(
    min_value=datetime(2020, 1, 1),
    max_value=datetime(2035, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=1)), timezone(-timedelta(hours=5, minutes=30))]),
).map(datetime.isoformat)
mood = st.integers(1, 10)
percent = st.integers(0, 100)
clock = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.integers(0, 59))
answers = st.sampled_from(sorted(ANSWER_RULES)).flatmap(
    lambda instrument: st.fixed_dictionaries(
        {
            "instrument": st.just(instrument),
            "answers": st.lists(
                st.integers(ANSWER_RULES[instrument][1], ANSWER_RULES[instrument][2]),
                min_size=ANSWER_RULES[instrument][0],
                max_size=ANSWER_RULES[instrument][0],
            ),
        }
    )
)

# kind -> (required fields, fields a device may leave out)
FIELDS: dict[str, tuple[dict[str, st.SearchStrategy[Any]], dict[str, st.SearchStrategy[Any]]]] = {
    "mood_checkin": (
        {"occurred_at": moment, "mood": mood},
        {
            "energy": st.none() | st.integers(1, 5),
            "emotions": st.lists(emotion, max_size=4),
            "tags": st.lists(st.sampled_from(TAGS), max_size=3),
            "note": st.none() | words,
        },
    ),
    "journal_entry": (
        {"occurred_at": moment, "body": words},
        {
            "title": st.none() | words,
            "prompt": st.none() | words,
            "tags": st.lists(st.sampled_from(TAGS), max_size=3),
        },
    ),
    "self_talk": (
        {"occurred_at": moment, "critical_thought": words, "compassionate_response": words, "belief_before": percent},
        {"situation": st.none() | words, "belief_after": st.none() | percent},
    ),
    "as_if_experiment": (
        {
            "planned_for": moment,
            "target_belief": words,
            "intention": words,
            "predicted_mood": mood,
            "belief_before": percent,
            "status": st.sampled_from(["planned", "done", "skipped"]),
        },
        {
            "behaviours": st.lists(words, max_size=4),
            "follow_up_at": st.none() | moment,
            "actual_mood": st.none() | mood,
            "outcome": st.none() | words,
            "learned": st.none() | words,
            "belief_after": st.none() | percent,
        },
    ),
    "practice_session": (
        {
            "occurred_at": moment,
            "practice": st.sampled_from(
                ["loving_kindness", "self_compassion_break", "compassionate_letter", "breathing", "other"]
            ),
            "duration_s": st.integers(0, 24 * 3600),
        },
        {
            "phrases": st.lists(words, max_size=4),
            "felt_genuine": st.none() | st.integers(0, 10),
            "mood_before": st.none() | mood,
            "mood_after": st.none() | mood,
        },
    ),
    "activity": (
        {
            "occurred_at": moment,
            "category": st.sampled_from(["enjoyment", "meaning", "self_care", "social", "professional_support"]),
            "description": words,
            "with_others": st.booleans(),
        },
        {"predicted_mood": st.none() | mood, "mood_after": st.none() | mood},
    ),
    "assessment": ({"occurred_at": moment}, {}),
    "preferences": (
        {},
        {
            "timezone": st.sampled_from(TIMEZONES),
            "reminders_enabled": st.booleans(),
            "reminder_time": st.none() | clock,
            "quiet_start": clock,
            "quiet_end": clock,
            "weekly_day": st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]),
            "insight_push": st.booleans(),
        },
    ),
}


def _valid(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    try:
        return validate_full(kind, data)
    except Invalid:
        assume(False)
        raise


def records(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    """A kind's data as the server stores it: validated, every field present."""
    required, optional = FIELDS[kind]
    raw = st.fixed_dictionaries(required, optional=optional)
    if kind == "assessment":
        raw = st.builds(lambda base, scored: {**base, **scored}, raw, answers)
    return raw.map(lambda data: _valid(kind, data))


def private_texts(data: dict[str, Any]) -> list[str]:
    """Every string a person wrote into the record's private fields, list items one by one."""
    texts: list[str] = []
    for name in PRIVATE_FIELDS & data.keys():
        value = data[name]
        texts.extend(value if isinstance(value, list) else [value] if isinstance(value, str) else [])
    return texts


def new_key(owner: UUID = OWNER) -> DataKey:
    return DataKey(owner, os.urandom(KEY_BYTES))


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


KEY = new_key()


def test_every_kind_has_a_strategy() -> None:
    """A new record kind must join the properties below before it ships."""
    assert FIELDS.keys() == KINDS.keys()


# --- sealing records --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), record_id=st.uuids())
def test_a_sealed_record_opens_whole_and_its_text_is_nowhere_in_the_clear(
    kind: str, data: st.DataObject, record_id: UUID
) -> None:
    """The person reads back exactly what they wrote; the stored bytes show none of it."""
    record = data.draw(records(kind), label="record")
    plain, sealed = KEY.seal(record_id, record)

    assert KEY.open(record_id, plain, sealed) == record
    assert not PRIVATE_FIELDS & plain.keys()
    # The fields the insights query (numbers, times, choices, tags) stay plain and unchanged.
    expected_plain = {name: value for name, value in record.items() if name not in PRIVATE_FIELDS}
    assert plain == expected_plain
    assert (sealed is None) == (not PRIVATE_FIELDS & record.keys())

    stored = [msgspec.msgpack.encode(plain), msgspec.json.encode(plain), sealed or b""]
    # A text that happens to equal a plain value (a tag, a field name, a date) is not a leak.
    innocent = msgspec.msgpack.encode(expected_plain) + msgspec.json.encode(expected_plain)
    for text in private_texts(record):
        needle = text.encode()
        if len(text) < 4 or needle in innocent:
            continue
        for stored_bytes in stored:
            assert needle not in stored_bytes, f"{text!r} is readable in the stored bytes"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_records_sealed_together_each_open_to_their_own_data_and_no_nonce_repeats(data: st.DataObject) -> None:
    """A batch's records are sealed in one go (one draw of randomness for all their nonces):
    each still opens to exactly its own data, for its own record only, and no two share a nonce."""
    batch = data.draw(
        st.lists(
            st.tuples(st.uuids(), st.sampled_from(sorted(KINDS)).flatmap(records)),
            max_size=12,
            unique_by=lambda item: item[0],
        ),
        label="records",
    )

    sealed_all = KEY.seal_all(batch)

    assert len(sealed_all) == len(batch)
    for (record_id, record), (plain, sealed) in zip(batch, sealed_all, strict=True):
        assert KEY.open(record_id, plain, sealed) == record
        assert (sealed is None) == (not PRIVATE_FIELDS & record.keys())
        for other_id, _ in batch:
            if other_id != record_id and sealed is not None:
                with pytest.raises(EnvelopeError):
                    KEY.open(other_id, plain, sealed)
    nonces = [sealed[1 : 1 + NONCE_BYTES] for _, sealed in sealed_all if sealed is not None]
    assert len(set(nonces)) == len(nonces)


def test_a_blob_opens_only_for_its_owner_its_record_and_their_key() -> None:
    """A blob copied to another person or record, or tried with another key, stays shut."""
    raw = os.urandom(KEY_BYTES)
    key = DataKey(OWNER, raw)
    data = validate_full("mood_checkin", {"occurred_at": AT, "mood": 6, **PRIVATE})
    plain, sealed = key.seal(RECORD, data)
    assert sealed is not None
    assert DataKey(OWNER, raw).open(RECORD, plain, sealed) == data

    same_key_other_owner = DataKey(OTHER_OWNER, raw)
    with pytest.raises(EnvelopeError):
        same_key_other_owner.open(RECORD, plain, sealed)
    with pytest.raises(EnvelopeError):
        key.open(OTHER_RECORD, plain, sealed)
    with pytest.raises(EnvelopeError):
        new_key(OWNER).open(RECORD, plain, sealed)
    with pytest.raises(EnvelopeError):
        new_key(OTHER_OWNER).open(RECORD, plain, sealed)


def test_a_tampered_blob_does_not_open_and_the_error_shows_no_text() -> None:
    """Any flipped byte (format, nonce, ciphertext, tag) is refused, and the message is safe to log."""
    data = validate_full("journal_entry", {"occurred_at": AT, "title": "Evening", "body": SENTENCES[0]})
    plain, sealed = KEY.seal(RECORD, data)
    assert sealed is not None
    for index in range(len(sealed)):
        for mask in (0x01, 0x80):
            tampered = bytearray(sealed)
            tampered[index] ^= mask
            with pytest.raises(EnvelopeError) as caught:
                KEY.open(RECORD, plain, bytes(tampered))
            message = str(caught.value)
            assert "Evening" not in message
            assert SENTENCES[0] not in message
    for cut in (b"", sealed[:1], sealed[:-1], sealed + b"\x00"):
        with pytest.raises(EnvelopeError):
            KEY.open(RECORD, plain, cut)


@pytest.mark.parametrize(
    ("kind", "data"),
    [
        # As a device may send it; validate_full would add note=None and emotions=[], which are sealed.
        ("mood_checkin", {"occurred_at": AT, "mood": 6, "energy": 3, "tags": ["work"]}),
        ("assessment", validate_full("assessment", {"occurred_at": AT, "instrument": "gad7", "answers": [0] * 7})),
        ("preferences", validate_full("preferences", {"timezone": "Europe/Berlin"})),
        ("journal_entry", {}),  # a deleted record keeps no data
    ],
)
def test_a_record_with_nothing_private_is_stored_plain_with_no_blob(kind: str, data: dict[str, Any]) -> None:
    """Nothing to decrypt later: the row reads back even without the person's key."""
    plain, sealed = KEY.seal(RECORD, data)
    assert sealed is None
    assert plain == data
    assert reveal(None, RECORD, plain, None) == data
    assert reveal(KEY, RECORD, plain, None) == data


def test_reveal_refuses_a_blob_without_a_key() -> None:
    """A record whose owner's key was destroyed says so, instead of showing half a record."""
    data = validate_full("mood_checkin", {"occurred_at": AT, "mood": 6, **PRIVATE})
    plain, sealed = KEY.seal(RECORD, data)
    assert sealed is not None
    assert reveal(KEY, RECORD, plain, sealed) == data
    with pytest.raises(EnvelopeError, match="no data key"):
        reveal(None, RECORD, plain, sealed)


def test_seal_for_needs_the_owners_key_only_when_something_is_private() -> None:
    """Text is never stored in the clear for want of a key; numbers alone need none."""
    data = validate_full("mood_checkin", {"occurred_at": AT, "mood": 6, **PRIVATE})
    with pytest.raises(EnvelopeError, match="no data key"):
        seal_for({}, OWNER, RECORD, data)
    with pytest.raises(EnvelopeError):
        seal_for({OTHER_OWNER: new_key(OTHER_OWNER)}, OWNER, RECORD, data)

    numbers = {"occurred_at": AT, "mood": 6, "energy": 2, "tags": ["sleep"]}
    assert seal_for({}, OWNER, RECORD, numbers) == (numbers, None)

    plain, sealed = seal_for({OWNER: KEY}, OWNER, RECORD, data)
    assert split(data)[0] == plain
    assert KEY.open(RECORD, plain, sealed) == data


# --- master keys --------------------------------------------------------------------------------


def test_a_data_key_wrapped_under_an_old_master_key_survives_rotation() -> None:
    """After a new master key comes in and `keys rotate` runs, the old one can go and text still opens."""
    k1, k2 = os.urandom(KEY_BYTES), os.urandom(KEY_BYTES)
    old = MasterKeys([("k1", k1)])
    both = MasterKeys.parse(f"k2:{b64(k2)},k1:{b64(k1)}")
    only_new = MasterKeys.parse(f"k2:{b64(k2)}")
    assert both.current_id == "k2"
    assert both.ids == ["k2", "k1"]

    data_key, wrapped = old.new_data_key(OWNER)
    assert wrapped.master_key_id == "k1"
    data = validate_full(
        "self_talk",
        {
            "occurred_at": AT,
            "critical_thought": SENTENCES[0],
            "compassionate_response": SENTENCES[1],
            "belief_before": 80,
        },
    )
    plain, sealed = data_key.seal(RECORD, data)

    assert both.unwrap(OWNER, wrapped).open(RECORD, plain, sealed) == data
    with pytest.raises(EnvelopeError, match="'k1'"):
        only_new.unwrap(OWNER, wrapped)

    rewrapped = both.rewrap(OWNER, wrapped)
    assert rewrapped.master_key_id == "k2"
    assert only_new.unwrap(OWNER, rewrapped).open(RECORD, plain, sealed) == data
    with pytest.raises(EnvelopeError, match="'k2'"):
        old.unwrap(OWNER, rewrapped)


def test_a_wrapped_data_key_unwraps_only_for_its_owner() -> None:
    """Copying one person's wrapped key onto another person's row gives that person nothing."""
    keys = MasterKeys([("k1", os.urandom(KEY_BYTES))])
    _, wrapped = keys.new_data_key(OWNER)
    with pytest.raises(EnvelopeError):
        keys.unwrap(OTHER_OWNER, wrapped)
    with pytest.raises(EnvelopeError):
        keys.rewrap(OTHER_OWNER, wrapped)
    flipped = bytearray(wrapped.wrapped)
    flipped[-1] ^= 1
    with pytest.raises(EnvelopeError):
        keys.unwrap(OWNER, WrappedKey(wrapped.master_key_id, bytes(flipped)))


def test_wrapping_the_same_key_twice_gives_different_bytes() -> None:
    """A fresh nonce each time: equal stored bytes would tell which rows share a key."""
    keys = MasterKeys([("k1", os.urandom(KEY_BYTES))])
    data_key, wrapped = keys.new_data_key(OWNER)
    again, third = keys.rewrap(OWNER, wrapped), keys.rewrap(OWNER, wrapped)
    assert len({wrapped.wrapped, again.wrapped, third.wrapped}) == 3

    payload = b"the same key under every wrapping"
    blob = data_key.seal_bytes(b"batch", RECORD, payload)
    for each in (wrapped, again, third):
        assert keys.unwrap(OWNER, each).open_bytes(b"batch", RECORD, blob) == payload
    assert KEY.seal_bytes(b"batch", RECORD, payload) != KEY.seal_bytes(b"batch", RECORD, payload)


def test_a_generated_master_key_reads_back_in_either_base64_alphabet() -> None:
    """What `keys generate` prints works pasted as is, or re-encoded by a tool that prefers +/ and padding."""
    entry = MasterKeys.generate("x")
    key_id, _, encoded = entry.partition(":")
    assert key_id == "x"
    raw = base64.urlsafe_b64decode(encoded)
    assert len(raw) == KEY_BYTES

    as_printed = MasterKeys.parse(entry)
    assert as_printed.current_id == "x"
    assert as_printed.ids == ["x"]
    forms = [b64(raw), b64(raw).rstrip("="), base64.urlsafe_b64encode(raw).decode().rstrip("="), f" {b64(raw)} "]
    data_key, wrapped = as_printed.new_data_key(OWNER)
    blob = data_key.seal_bytes(b"batch", RECORD, b"payload")
    for form in forms:
        same = MasterKeys.parse(f"x:{form}")
        assert same.unwrap(OWNER, wrapped).open_bytes(b"batch", RECORD, blob) == b"payload"
    assert MasterKeys.generate("x") != entry


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param(" , ,", id="only-commas"),
        pytest.param(f"k1:{b64(bytes(16))}", id="16-bytes"),
        pytest.param(f"k1:{b64(bytes(24))}", id="24-bytes"),
        pytest.param(f"k1:{b64(bytes(31))}", id="31-bytes"),
        pytest.param(f"k1:{b64(bytes(33))}", id="33-bytes"),
        pytest.param(f"k1:{b64(bytes(64))}", id="64-bytes"),
        pytest.param("k1:not*base64!", id="not-base64"),
        pytest.param(f"k1:{b64(bytes(32))[:-2]}", id="truncated"),
        pytest.param(b64(bytes(32)), id="no-id"),
        pytest.param(f":{b64(bytes(32))}", id="empty-id"),
        pytest.param(f"my key:{b64(bytes(32))}", id="space-in-id"),
        pytest.param(f"k/1:{b64(bytes(32))}", id="slash-in-id"),
        pytest.param(f"{'k' * 65}:{b64(bytes(32))}", id="id-too-long"),
        pytest.param(f"k1:{b64(bytes(32))},k1:{b64(os.urandom(32))}", id="duplicate-ids"),
        pytest.param(f"k2:{b64(bytes(32))},k1:nope!", id="second-bad"),
    ],
)
def test_bad_master_keys_are_refused_at_startup(text: str) -> None:
    """A typo in MASTER_KEYS stops the service with a reason, instead of wrapping keys under garbage."""
    with pytest.raises(EnvelopeError) as caught:
        MasterKeys.parse(text)
    assert b64(bytes(32)) not in str(caught.value)


def test_an_entry_written_the_wrong_way_round_never_shows_the_key() -> None:
    """The error reaches start-up logs: it must not carry the key an operator put in the id's place."""
    key_id, _, key = MasterKeys.generate("k1").partition(":")
    with pytest.raises(EnvelopeError) as caught:
        MasterKeys.parse(f"{key}:{key_id}")
    assert key not in str(caught.value)
    assert key.rstrip("=")[:20] not in str(caught.value)


@pytest.mark.parametrize("key_id", ["", "bad id", "k/1", "k" * 65, "ключ", "k1\n"])
def test_generate_refuses_an_id_parse_would_refuse(key_id: str) -> None:
    """`keys generate` never prints an entry the service would then refuse to start with."""
    with pytest.raises(EnvelopeError):
        MasterKeys.generate(key_id)


def test_a_master_key_of_the_right_length_with_a_good_id_is_accepted() -> None:
    """The longest allowed id and every allowed character work."""
    key_id = ("Az09._-" * 10)[:64]
    keys = MasterKeys.parse(f"{key_id}:{b64(bytes(32))}")
    assert keys.current_id == key_id


# --- sealed bytes (a batch's stored answer) -------------------------------------------------------


def test_sealed_batch_bytes_open_only_for_the_same_purpose_and_batch() -> None:
    """A stored batch answer cannot be replayed as another batch's answer, or read as a record."""
    payload = msgspec.msgpack.encode([{"id": str(RECORD), "note": NOTE}])
    blob = KEY.seal_bytes(b"batch", RECORD, payload)
    assert NOTE.encode() not in blob
    assert KEY.open_bytes(b"batch", RECORD, blob) == payload

    with pytest.raises(EnvelopeError):
        KEY.open_bytes(b"record", RECORD, blob)
    with pytest.raises(EnvelopeError):
        KEY.open(RECORD, {}, blob)
    with pytest.raises(EnvelopeError):
        KEY.open_bytes(b"batch", OTHER_RECORD, blob)
    with pytest.raises(EnvelopeError):
        DataKey(OTHER_OWNER, os.urandom(KEY_BYTES)).open_bytes(b"batch", RECORD, blob)
