"""Base Structs: options set once, reused by every wire type."""

from __future__ import annotations

from typing import Annotated

import msgspec

# The largest request body the API reads (a 413 beyond it).
MAX_BODY_BYTES = 2 * 1024 * 1024

# Postgres text cannot hold U+0000, and no person types it: refuse it up front.
NO_NUL_PATTERN = "^[^\\x00]*$"


def text(*, max_length: int, min_length: int = 0, description: str | None = None) -> msgspec.Meta:
    """Constraints of a client-sent string: a length range and no NUL character."""
    return msgspec.Meta(min_length=min_length, max_length=max_length, pattern=NO_NUL_PATTERN, description=description)


ShortText = Annotated[str, text(max_length=200)]


class ClientInput(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What a client sends: an unknown field is an error naming its path."""


class ServerOutput(msgspec.Struct, kw_only=True):
    """What the server answers with."""


class JobPayload(msgspec.Struct, kw_only=True):
    """Job arguments stay lenient so old and new workers can share a queue."""
