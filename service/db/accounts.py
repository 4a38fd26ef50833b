"""Queries for people, their sign-in sessions and refresh-token rotation."""

from __future__ import annotations

import enum
from datetime import datetime, timedelta
from uuid import UUID, uuid4

import msgspec
from sqlalchemy import delete, exists, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.tables import refresh_families, refresh_tokens, users


class EmailTaken(Exception):
    """Another account already signed up with this email."""


class Account(msgspec.Struct, frozen=True):
    id: UUID
    password_hash: str | None


class Rotation(enum.Enum):
    ROTATED = "rotated"
    UNKNOWN = "unknown"  # never issued, expired, or its family revoked
    REUSED = "reused"  # already rotated once: the family is now revoked


class RotationResult(msgspec.Struct, frozen=True):
    outcome: Rotation
    user_id: UUID | None = None
    family_id: UUID | None = None


async def create_account(conn: AsyncConnection, email: str | None, password_hash: str | None) -> UUID:
    user_id = uuid4()
    try:
        async with conn.begin_nested():
            await conn.execute(insert(users).values(id=user_id, email=email, password_hash=password_hash))
    except IntegrityError as error:
        raise EmailTaken from error
    return user_id


async def find_account(conn: AsyncConnection, email: str) -> Account | None:
    row = (await conn.execute(select(users.c.id, users.c.password_hash).where(users.c.email == email))).first()
    return Account(id=row.id, password_hash=row.password_hash) if row else None


async def set_password_hash(conn: AsyncConnection, user_id: UUID, password_hash: str) -> None:
    await conn.execute(update(users).where(users.c.id == user_id).values(password_hash=password_hash))


async def start_session(conn: AsyncConnection, user_id: UUID, token_hash: bytes, ttl: timedelta) -> UUID:
    """A new refresh-token family with its first token."""
    family_id = uuid4()
    await conn.execute(insert(refresh_families).values(id=family_id, user_id=user_id))
    await _insert_token(conn, family_id, user_id, token_hash, ttl)
    return family_id


async def rotate(conn: AsyncConnection, old_hash: bytes, new_hash: bytes, ttl: timedelta) -> RotationResult:
    """Spend one refresh token for the next in its family.

    The row lock makes two concurrent uses of one token meet in order: the
    second sees it spent and revokes the family, as a stolen token would.
    The caller commits even when the answer is a refusal, so a revocation
    holds.
    """
    row = (
        await conn.execute(
            select(
                refresh_tokens.c.family_id,
                refresh_tokens.c.user_id,
                refresh_tokens.c.used_at,
                refresh_tokens.c.expires_at,
                refresh_families.c.revoked_at,
                func.now().label("now"),
            )
            .join(refresh_families, refresh_families.c.id == refresh_tokens.c.family_id)
            .where(refresh_tokens.c.token_hash == old_hash)
            .with_for_update(of=refresh_tokens)
        )
    ).first()
    if row is None or row.revoked_at is not None:
        return RotationResult(Rotation.UNKNOWN)
    if row.used_at is not None:
        await revoke_family(conn, row.family_id)
        return RotationResult(Rotation.REUSED, row.user_id, row.family_id)
    now: datetime = row.now
    if row.expires_at <= now:
        return RotationResult(Rotation.UNKNOWN)
    await conn.execute(update(refresh_tokens).where(refresh_tokens.c.token_hash == old_hash).values(used_at=now))
    await _insert_token(conn, row.family_id, row.user_id, new_hash, ttl)
    return RotationResult(Rotation.ROTATED, row.user_id, row.family_id)


async def revoke_by_token(conn: AsyncConnection, token_hash: bytes) -> None:
    family = select(refresh_tokens.c.family_id).where(refresh_tokens.c.token_hash == token_hash).scalar_subquery()
    await conn.execute(
        update(refresh_families)
        .where(refresh_families.c.id == family, refresh_families.c.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )


async def revoke_family(conn: AsyncConnection, family_id: UUID) -> None:
    await conn.execute(
        update(refresh_families)
        .where(refresh_families.c.id == family_id, refresh_families.c.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )


async def purge_expired_sessions(conn: AsyncConnection, revoked_grace: timedelta) -> int:
    """Drop families that are revoked (after a grace) or whose tokens all expired."""
    live_token = exists().where(
        refresh_tokens.c.family_id == refresh_families.c.id, refresh_tokens.c.expires_at > func.now()
    )
    result = await conn.execute(
        delete(refresh_families).where(or_(refresh_families.c.revoked_at < func.now() - revoked_grace, ~live_token))
    )
    return result.rowcount or 0


async def _insert_token(
    conn: AsyncConnection, family_id: UUID, user_id: UUID, token_hash: bytes, ttl: timedelta
) -> None:
    await conn.execute(
        insert(refresh_tokens).values(
            token_hash=token_hash, family_id=family_id, user_id=user_id, expires_at=func.now() + ttl
        )
    )
