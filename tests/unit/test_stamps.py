"""Who last set each field, and when, as a record's row keeps it (service/db/sync.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from service.db.sync import open_stamps, pack_stamps
from service.sync.merge import DELETED
from service.sync.model import Stamp

T0 = datetime(2026, 11, 30, 21, 4, tzinfo=UTC)
PHONE, TABLET = UUID(int=1), UUID(int=2)
FIELDS = ("occurred_at", "mood", "energy", "note", "tags", DELETED)

# Few times and devices, so that many stamps are the record's own, or nearly (same time, other
# device; same device, other time), and some are equal without being the same object.
times = st.sampled_from([T0, T0 + timedelta(microseconds=1), T0 - timedelta(days=3)])
devices = st.sampled_from([PHONE, TABLET])
stamps = st.builds(Stamp, times, devices)


@given(
    st.dictionaries(st.sampled_from(FIELDS), stamps, max_size=6),
    times,
    st.one_of(st.none(), devices),
    st.booleans(),
)
def test_stamps_are_read_back_as_they_were_written(
    written: dict[str, Stamp], changed_at: datetime, device_id: UUID | None, shared: bool
) -> None:
    if shared and written:
        # As a new record's: one stamp object for every field.
        written = dict.fromkeys(written, next(iter(written.values())))
    packed = pack_stamps(written, changed_at, device_id)
    assert open_stamps(packed, changed_at, device_id) == written


def test_a_new_records_stamps_are_a_fraction_of_their_whole_size() -> None:
    """Every field of a new record was set at the record's own time on its device: the row's
    changed_at and device_id say so, and the stamps hold only the field names."""
    own = Stamp(T0, PHONE)
    written = dict.fromkeys(("occurred_at", "title", "body", "prompt", "tags"), own)
    packed = pack_stamps(written, T0, PHONE)
    assert len(packed) * 3 < len(msgspec.msgpack.encode(written))
    assert open_stamps(packed, T0, PHONE) == written


def test_an_edited_field_keeps_its_own_stamp_beside_the_records() -> None:
    """After an edit on the tablet, the edited field is the record's own stamp and the others
    keep the phone's earlier one."""
    earlier, edited = Stamp(T0 - timedelta(hours=1), PHONE), Stamp(T0, TABLET)
    written = {"occurred_at": earlier, "mood": edited, "note": earlier}
    packed = pack_stamps(written, T0, TABLET)
    assert msgspec.msgpack.decode(packed)["mood"] is None
    assert open_stamps(packed, T0, TABLET) == written


def test_this_release_writes_a_new_records_own_stamps_as_nil() -> None:
    """From release 0010 on, a field stamped at its record's own time on its own device (every
    field of a new record) is written as nil, a fifth less of the row; release 0009, which may
    serve beside it during a rolling update, reads nils, as every release since 0008 does."""
    own = Stamp(T0, PHONE)
    written = dict.fromkeys(("occurred_at", "mood"), own)
    packed = pack_stamps(written, T0, PHONE)
    assert msgspec.msgpack.decode(packed) == {"occurred_at": None, "mood": None}
    assert open_stamps(packed, T0, PHONE) == written
