"""The schema as SQLAlchemy Core tables; migrations are generated against it.

Every table that holds a person's data carries `user_id`, so the data can be
sharded by person later (each table distributed on `user_id`).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _created_at() -> Column[object]:
    return Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now())


def _owner() -> Column[object]:
    return Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False)


users = Table(
    "users",
    metadata,
    Column("id", Uuid, primary_key=True),
    # Stored trimmed and lower-cased; NULL for anonymous accounts.
    Column("email", Text, nullable=True),
    Column("password_hash", Text, nullable=True),
    _created_at(),
    UniqueConstraint("email"),
)

# One family per sign-in: every refresh token rotated from it shares the
# family, so the re-use of a rotated token can revoke the whole chain.
refresh_families = Table(
    "refresh_families",
    metadata,
    Column("id", Uuid, primary_key=True),
    _owner(),
    _created_at(),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Index(None, "user_id"),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("token_hash", LargeBinary, primary_key=True),
    Column("family_id", Uuid, ForeignKey("refresh_families.id", ondelete="CASCADE"), nullable=False),
    _owner(),
    Column("issued_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=True),
    Index(None, "family_id"),
    Index(None, "expires_at"),
)

devices = Table(
    "devices",
    metadata,
    _owner(),
    Column("id", Uuid, nullable=False),
    Column("platform", Text, nullable=False),
    Column("push_token", Text, nullable=True),
    Column("push_enabled", Boolean, nullable=False, server_default="false"),
    Column("app_version", Text, nullable=True),
    Column("locale", Text, nullable=True),
    Column("timezone", Text, nullable=True),
    _created_at(),
    Column("last_seen_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("user_id", "id"),
    # A push token reaches one device only; NULLs do not collide.
    UniqueConstraint("push_token"),
    CheckConstraint("platform IN ('ios', 'android', 'web')", name="platform"),
)

# One row per person: the lock that serialises their writes, and the counter
# that numbers their changes. Writes hold the row from the moment they take
# numbers until they commit, so changes become visible in number order and a
# pull that remembers the last number it saw never skips one.
sync_state = Table(
    "sync_state",
    metadata,
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("last_seq", BigInteger, nullable=False, server_default="0"),
)

# Each person's data key, wrapped under the master key named by master_key_id.
# Deleting the row is what makes their sealed text unreadable everywhere.
data_keys = Table(
    "data_keys",
    metadata,
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("master_key_id", Text, nullable=False),
    Column("wrapped", LargeBinary, nullable=False),
    _created_at(),
    Column("rewrapped_at", DateTime(timezone=True), nullable=True),
)

# The current state of each record, numbered by the change that last touched it.
records = Table(
    "records",
    metadata,
    _owner(),
    Column("id", Uuid, nullable=False),
    Column("kind", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("deleted", Boolean, nullable=False),
    # The plain fields; the private ones are in `sealed` (service/envelope.py).
    Column("data", JSONB, nullable=False),
    Column("sealed", LargeBinary, nullable=True),
    # {field: [changed_at, device_id]}: who last set each field, and when; nil for the row's own
    # changed_at and device_id. MessagePack: only the sync path reads them, whole
    # (service/db/sync.py, pack_stamps).
    Column("stamps", LargeBinary, nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False),
    Column("device_id", Uuid, nullable=True),
    Column("seq", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("user_id", "id"),
    Index(None, "user_id", "seq"),
)

# Every version of every record, appended and never changed.
#
# Its owner has no foreign key: checking one cost Postgres a tenth of writing a batch of new
# records (a probe and a lock of the person's `users` row for each version). Nothing is left
# without its person all the same. Every writer of versions first claims change numbers in the
# person's `sync_state` row (a sync batch's write, insights.store), whose key is checked: an erase
# deleting that row (by the cascade from `users`) waits for the writer's commit, and a writer
# coming after finds no person. A trigger on `users` (users_erase_history, migration 0009) then
# deletes the person's versions, after the cascades, in a statement that sees what was committed.
record_versions = Table(
    "record_versions",
    metadata,
    Column("user_id", Uuid, nullable=False),
    Column("record_id", Uuid, nullable=False),
    Column("version", Integer, nullable=False),
    Column("kind", Text, nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("data", JSONB, nullable=False),
    Column("sealed", LargeBinary, nullable=True),
    Column("changed_at", DateTime(timezone=True), nullable=False),
    Column("device_id", Uuid, nullable=True),
    # Digest of the mutation that produced this version: recognises re-sends.
    Column("fingerprint", LargeBinary, nullable=True),
    _created_at(),
    PrimaryKeyConstraint("user_id", "record_id", "version"),
)

# What each batch answered, so a retry gets the same answer.
sync_batches = Table(
    "sync_batches",
    metadata,
    _owner(),
    Column("batch_id", Uuid, nullable=False),
    Column("request_hash", LargeBinary, nullable=False),
    # msgpack of the results, sealed under the data key; kept in the row while the row fits in a
    # page, as a batch of up to about 110 new records does (migration 0010, toast_tuple_target).
    Column("results", LargeBinary, nullable=False),
    Column("mutations", Integer, nullable=False),
    # How many of them merged or were rejected: the operator's hourly figures (the results are sealed).
    Column("merged", Integer, nullable=False, server_default="0"),
    Column("rejected", Integer, nullable=False, server_default="0"),
    _created_at(),
    PrimaryKeyConstraint("user_id", "batch_id"),
    Index(None, "created_at"),
)

# The last cursor each device pulled to: tombstones are purged only past all of them.
device_cursors = Table(
    "device_cursors",
    metadata,
    _owner(),
    Column("device_id", Uuid, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("user_id", "device_id"),
)

# Events written in the same transaction as the change they describe; a relay
# moves them to the job queue, so losing Redis loses no event. Payloads carry
# ids and kinds only, never what a person wrote.
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    _owner(),
    Column("kind", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    _created_at(),
    Column("published_at", DateTime(timezone=True), nullable=True),
    Index("ix_outbox_unpublished", "id", postgresql_where=text("published_at IS NULL")),
)

# The last run of each way weekly insights are computed ("due" evenings, "requested" by an operator).
insight_runs = Table(
    "insight_runs",
    metadata,
    Column("trigger", Text, primary_key=True),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Column("users", Integer, nullable=False),
)

# Pushes planned for a person, one per dedupe key; delivery fills in the rest.
notifications = Table(
    "notifications",
    metadata,
    _owner(),
    Column("dedupe_key", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("record_id", Uuid, nullable=True),
    Column("due_at", DateTime(timezone=True), nullable=False),
    # planned, cancelled, sent, failed
    Column("status", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("provider_result", Text, nullable=True),
    _created_at(),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    PrimaryKeyConstraint("user_id", "dedupe_key"),
    Index("ix_notifications_due", "due_at", postgresql_where=text("status = 'planned'")),
)

# What became of a notification on each of the person's devices.
deliveries = Table(
    "deliveries",
    metadata,
    _owner(),
    Column("dedupe_key", Text, nullable=False),
    Column("device_id", Uuid, nullable=False),
    # sent, failed, invalid_token, retrying
    Column("status", Text, nullable=False),
    Column("provider", Text, nullable=False),
    Column("detail", Text, nullable=True),
    Column("attempts", Integer, nullable=False, server_default="1"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("user_id", "dedupe_key", "device_id"),
    Index(None, "updated_at"),
)
