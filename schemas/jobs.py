"""Names of the background jobs: the API enqueues by name, never by import."""

from __future__ import annotations

PURGE_EXPIRED_SESSIONS = "purge_expired_sessions"
PURGE_TOMBSTONES = "purge_tombstones"
ON_RECORDS_CHANGED = "on_records_changed"
COMPUTE_INSIGHTS = "compute_insights"
INSIGHTS_DUE = "insights_due"
DELIVER_DUE = "deliver_due"
PLAN_PRACTICE_REMINDERS = "plan_practice_reminders"
PRUNE_OUTBOX = "prune_outbox"

# Outbox event kinds, and the job each one becomes.
RECORDS_CHANGED = "records_changed"
EVENT_JOBS = {RECORDS_CHANGED: ON_RECORDS_CHANGED}
