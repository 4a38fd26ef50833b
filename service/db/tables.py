"""The schema as SQLAlchemy Core tables; migrations are generated against it.

Every table that holds a person's data carries `user_id`, so the data can be
sharded by person later (each table distributed on `user_id`).
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
)

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
