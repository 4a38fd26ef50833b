"""`/v1/account`: what kindsync holds about the person, for them to take away."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get
from litestar.di import NamedDependency
from litestar.security.jwt import Token
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.account import Export
from service.auth.tokens import BEARER, Principal
from service.db import account
from service.db import keys as data_keys
from service.envelope import MasterKeys
from service.problems import ProblemError, problem_specs


class AccountController(Controller):
    path = "/v1/account"
    tags = ["account"]
    security = BEARER

    @get("/export", responses=problem_specs(401))
    async def export(
        self,
        request: Request[Principal, Token, Any],
        engine: NamedDependency[AsyncEngine],
        master_keys: NamedDependency[MasterKeys],
    ) -> Export:
        """Every record with its whole history, the devices, and the notifications, as JSON."""
        async with engine.connect() as conn:
            found = await account.export(conn, master_keys, request.user.user_id)
        if found is None:
            raise ProblemError(401, "unauthorized", "This account no longer exists.")
        return found

    @delete("/", status_code=204, responses=problem_specs(401))
    async def erase(self, request: Request[Principal, Token, Any], engine: NamedDependency[AsyncEngine]) -> None:
        """Delete everything of the person: records, history, devices, sessions, notifications.

        Their data key goes first, in a transaction of its own: from then on no copy of their
        text opens, whatever happens to the rest. A retry after a failure finishes the erase.
        """
        async with engine.begin() as conn:
            await data_keys.destroy(conn, request.user.user_id)
        async with engine.begin() as conn:
            await account.erase(conn, request.user.user_id)
