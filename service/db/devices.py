"""Queries for a person's devices and the push token each one holds."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, delete, false, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.devices import Device, DeviceRegistration
from service.db.errors import owner_gone
from service.db.tables import devices


class OwnerGone(Exception):
    """The account behind a still-valid access token no longer exists."""


async def register(conn: AsyncConnection, user_id: UUID, device_id: UUID, reg: DeviceRegistration) -> Device:
    """Create or replace a device; its push token leaves any other device.

    Push stays off after a provider called the token invalid, until the app
    registers a different token. Registrations of one token are serialised
    by a transaction lock on the token, so two devices racing for it end with
    exactly one holder instead of a unique-constraint error.
    """
    try:
        async with conn.begin_nested():
            return await _register_once(conn, user_id, device_id, reg)
    except IntegrityError as error:
        if owner_gone(error):
            raise OwnerGone from error
        raise


async def _register_once(conn: AsyncConnection, user_id: UUID, device_id: UUID, reg: DeviceRegistration) -> Device:
    if reg.push_token is not None:
        await conn.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(reg.push_token, 0))))
        await conn.execute(
            update(devices)
            .where(
                devices.c.push_token == reg.push_token,
                or_(devices.c.user_id != user_id, devices.c.id != device_id),
            )
            .values(push_token=None, push_enabled=False)
        )
    values = {
        "user_id": user_id,
        "id": device_id,
        "platform": reg.platform,
        "push_token": reg.push_token,
        "push_enabled": reg.push_token is not None,
        "app_version": reg.app_version,
        "locale": reg.locale,
        "timezone": reg.timezone,
    }
    new = insert(devices).values(values)
    push_enabled: ColumnElement[bool] = (
        false()
        if reg.push_token is None
        else or_(devices.c.push_token.is_distinct_from(new.excluded.push_token), devices.c.push_enabled)
    )
    statement = new.on_conflict_do_update(
        index_elements=[devices.c.user_id, devices.c.id],
        set_={
            "platform": new.excluded.platform,
            "push_token": new.excluded.push_token,
            "push_enabled": push_enabled,
            "app_version": new.excluded.app_version,
            "locale": new.excluded.locale,
            "timezone": new.excluded.timezone,
            "last_seen_at": func.now(),
        },
    ).returning(
        devices.c.id,
        devices.c.platform,
        devices.c.push_enabled,
        devices.c.app_version,
        devices.c.locale,
        devices.c.timezone,
        devices.c.last_seen_at,
    )
    return device_of((await conn.execute(statement)).one())


def device_of(row: Any) -> Device:
    """A devices row as the app sees it (never its push token)."""
    return Device(
        device_id=row.id,
        platform=row.platform,
        push_enabled=row.push_enabled,
        app_version=row.app_version,
        locale=row.locale,
        timezone=row.timezone,
        last_seen_at=row.last_seen_at,
    )


async def remove(conn: AsyncConnection, user_id: UUID, device_id: UUID) -> None:
    await conn.execute(delete(devices).where(devices.c.user_id == user_id, devices.c.id == device_id))
