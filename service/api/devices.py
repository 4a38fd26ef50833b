"""`/v1/devices/{device_id}`: where a person's pushes go."""

from __future__ import annotations

from functools import cache
from typing import Any
from uuid import UUID
from zoneinfo import available_timezones

from litestar import Controller, Request, delete, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.security.jwt import Token
from litestar.status_codes import HTTP_204_NO_CONTENT
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.devices import Device, DeviceRegistration
from service.auth.tokens import BEARER, Principal
from service.db import devices
from service.problems import ProblemError, invalid, problem_specs


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def _account_gone() -> ProblemError:
    return ProblemError(401, "unauthorized", "This account no longer exists.")


class DeviceController(Controller):
    path = "/v1/devices"
    tags = ["devices"]
    security = BEARER

    @put("/{device_id:uuid}", responses=problem_specs(400, 401, 422))
    async def register(
        self,
        request: Request[Principal, Token, Any],
        device_id: FromPath[UUID],
        data: JSONBody[DeviceRegistration],
        engine: NamedDependency[AsyncEngine],
    ) -> Device:
        """Register or update a device. A new push token replaces the old one and
        leaves any other device that held it; repeating the call changes nothing."""
        if data.timezone is not None and data.timezone not in _time_zones():
            raise invalid("timezone", "must be an IANA time zone name such as Europe/Berlin")
        try:
            async with engine.begin() as conn:
                return await devices.register(conn, request.user.user_id, device_id, data)
        except devices.OwnerGone:
            raise _account_gone() from None

    @delete("/{device_id:uuid}", status_code=HTTP_204_NO_CONTENT, responses=problem_specs(401))
    async def remove(
        self, request: Request[Principal, Token, Any], device_id: FromPath[UUID], engine: NamedDependency[AsyncEngine]
    ) -> None:
        """Forget a device: no more pushes reach it. Unknown ids answer 204 too."""
        async with engine.begin() as conn:
            await devices.remove(conn, request.user.user_id, device_id)
