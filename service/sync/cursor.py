"""Opaque pull cursors: the last change number a device saw, and when.

The time lets a cursor older than the tombstone retention be refused (the
device must start over), since deletions older than that may be gone.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

import msgspec

_FORMAT = 1


class Position(msgspec.Struct, frozen=True, array_like=True):
    format: int
    seq: int
    issued: int  # unix seconds


class BadCursor(ValueError):
    """Not a cursor this server issued."""


def encode(seq: int, now: datetime) -> str:
    raw = msgspec.msgpack.encode(Position(_FORMAT, seq, int(now.timestamp())))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(cursor: str) -> Position:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = msgspec.msgpack.decode(raw, type=Position)
    except (binascii.Error, ValueError, msgspec.DecodeError) as error:
        raise BadCursor("not a cursor from this server") from error
    if position.format != _FORMAT or position.seq < 0:
        raise BadCursor("not a cursor from this server")
    return position


def issued_at(position: Position) -> datetime:
    return datetime.fromtimestamp(position.issued, UTC)
