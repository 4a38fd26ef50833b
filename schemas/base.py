"""Base Structs: options set once, reused by every wire type."""

from __future__ import annotations

import msgspec


class ClientInput(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What a client sends: an unknown field is an error naming its path."""


class ServerOutput(msgspec.Struct, kw_only=True):
    """What the server answers with."""


class JobPayload(msgspec.Struct, kw_only=True):
    """Job arguments stay lenient so old and new workers can share a queue."""
