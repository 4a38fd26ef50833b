"""`/v1/records/{kind}/{id}`: one record now, and every version it had."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.security.jwt import Token
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.sync import Change, HistoryVersion
from service.auth.tokens import BEARER, Principal
from service.db import keys as data_keys
from service.db import sync as queries
from service.envelope import MasterKeys
from service.problems import ProblemError, problem_specs


def _not_found() -> ProblemError:
    # The same answer whether the record is someone else's or does not exist.
    return ProblemError(404, "not-found", "No such record.")


class RecordController(Controller):
    path = "/v1/records/{kind:str}/{record_id:uuid}"
    tags = ["records"]
    security = BEARER

    @get("/", responses=problem_specs(401, 404))
    async def current(
        self,
        request: Request[Principal, Token, Any],
        kind: FromPath[str],
        record_id: FromPath[UUID],
        engine: NamedDependency[AsyncEngine],
        master_keys: NamedDependency[MasterKeys],
    ) -> Change:
        """The record as it is now (a deleted one answers with `deleted: true`)."""
        user_id = request.user.user_id
        async with engine.connect() as conn:
            key = await data_keys.load(conn, master_keys, user_id)
            change = await queries.get_record(conn, user_id, key, kind, record_id)
        if change is None:
            raise _not_found()
        return change

    @get("/history", responses=problem_specs(401, 404))
    async def history(
        self,
        request: Request[Principal, Token, Any],
        kind: FromPath[str],
        record_id: FromPath[UUID],
        engine: NamedDependency[AsyncEngine],
        master_keys: NamedDependency[MasterKeys],
    ) -> list[HistoryVersion]:
        """Every version of the record, newest first: nothing a merge replaced is lost."""
        user_id = request.user.user_id
        async with engine.connect() as conn:
            key = await data_keys.load(conn, master_keys, user_id)
            versions = await queries.record_history(conn, user_id, key, kind, record_id)
        if not versions:
            raise _not_found()
        return versions
