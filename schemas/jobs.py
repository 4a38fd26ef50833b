"""Names of the background jobs: the API enqueues by name, never by import."""

from __future__ import annotations

PURGE_EXPIRED_SESSIONS = "purge_expired_sessions"
PURGE_TOMBSTONES = "purge_tombstones"
