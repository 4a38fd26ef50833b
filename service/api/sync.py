"""`/v1/sync`: one round trip pushes queued changes and pulls what is new.

Bodies are JSON or MessagePack, decoded here with decoders built once; the
answer follows the `Accept` header, else the request's own content type.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency, Provide
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Operation, RequestBody
from litestar.params import FromPath, JSONBody
from litestar.response.base import ASGIResponse
from litestar.security.jwt import Token
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.base import without_nul_check
from schemas.problems import FieldError
from schemas.sync import BatchReceipt, Manifest, SyncRequest, SyncResponse
from service.auth.tokens import BEARER, Principal
from service.db import keys as data_keys
from service.db import sync as queries
from service.db.engine import DriverPool
from service.envelope import MasterKeys
from service.problems import ProblemError, problem_specs
from service.sync_batch import Syncer

# The key of the app's Syncer in the app's state (service.app.create_app).
SYNCER = "syncer"
JSON = "application/json"
MSGPACK = "application/msgpack"
_MSGPACK_TYPES = frozenset({MSGPACK, "application/x-msgpack", "application/vnd.msgpack"})
_decoders: dict[str, msgspec.json.Decoder[SyncRequest] | msgspec.msgpack.Decoder[SyncRequest]] = {
    JSON: msgspec.json.Decoder(SyncRequest),
    MSGPACK: msgspec.msgpack.Decoder(SyncRequest),
}
# A JSON text can hold U+0000 only as the escape \u0000 (msgspec refuses the raw byte): a body
# without those six bytes has no NUL in any string, and is decoded, and its records checked,
# without looking for one in each (schemas.base.without_nul_check). The bytes may also be a
# string's own text (an escaped backslash, then "u0000"); such a body is checked as any other.
_NUL_ESCAPE = b"\\u0000"
_nul_free_json: msgspec.json.Decoder[SyncRequest] = msgspec.json.Decoder(without_nul_check(SyncRequest))
_encoders: dict[str, msgspec.json.Encoder | msgspec.msgpack.Encoder] = {
    JSON: msgspec.json.Encoder(),
    MSGPACK: msgspec.msgpack.Encoder(),
}


def _media_type(header: str | None) -> str | None:
    if header is None:
        return None
    value = header.split(";", 1)[0].strip().lower()
    return MSGPACK if value in _MSGPACK_TYPES else JSON if value in (JSON, "*/*", "application/*") else None


def _answer_type(request: Request[Any, Any, Any], request_type: str) -> str:
    for part in (request.headers.get("accept") or "").split(","):
        if (chosen := _media_type(part)) is not None and part.strip().split(";")[0] != "*/*":
            return chosen
    return request_type


def decode_request(content_type: str | None, body: bytes) -> tuple[SyncRequest, str, bool]:
    """The request, its media type, and whether its strings are known to hold no NUL."""
    media_type = _media_type(content_type or JSON)
    if media_type is None:
        raise ProblemError(415, "unsupported-media-type", f"Send {JSON} or {MSGPACK}.")
    try:
        if media_type == JSON and _NUL_ESCAPE not in body:
            return _nul_free_json.decode(body), media_type, True
        return _decoders[media_type].decode(body), media_type, False
    except msgspec.ValidationError as error:
        message, _, where = str(error).partition(" - at `$")
        path = where.rstrip("`").lstrip(".")
        raise ProblemError(
            422, "invalid", f"{path or 'body'}: {message}", errors=[FieldError(path=path, message=message)]
        ) from None
    except msgspec.DecodeError as error:
        raise ProblemError(400, "malformed-request", f"The body is not valid {media_type}: {error}") from None


async def _sync_body_for_openapi(data: JSONBody[SyncRequest]) -> None:
    """Never called: OpenAPI documents a route's body from a `data` parameter,
    and the sync handler decodes its body itself (JSON or MessagePack)."""


@dataclass
class _SyncOperation(Operation):
    """The documented body is accepted as MessagePack too."""

    def __post_init__(self) -> None:
        if isinstance(self.request_body, RequestBody) and JSON in self.request_body.content:
            self.request_body.content[MSGPACK] = self.request_body.content[JSON]


_SYNC_RESPONSES = {
    200: ResponseSpec(SyncResponse, description="Results of the pushed mutations and the pulled changes"),
    **problem_specs(400, 401, 409, 410, 413, 415, 422, 426),
}


class SyncController(Controller):
    path = "/v1/sync"
    tags = ["sync"]
    security = BEARER

    @post(
        "/",
        status_code=200,
        responses=_SYNC_RESPONSES,
        dependencies={"_documented_body": Provide(_sync_body_for_openapi)},
        operation_class=_SyncOperation,
        description="The body is a SyncRequest as application/json or application/msgpack; "
        "the answer follows Accept, else the request's content type.",
    )
    async def sync(self, request: Request[Principal, Token, Any]) -> ASGIResponse:
        """Push this device's queued mutations and pull every change it has not seen.

        The Syncer comes from the app's state (create_app), not as a dependency, and the answer
        is returned as the bytes to send: Litestar's resolving of a dependency and its making of
        a Response were together a twentieth of the API's work for a sync that pulls nothing
        (counted in instructions, callgrind), the commonest request of a phone in use."""
        sync_request, media_type, nul_free = decode_request(request.headers.get("content-type"), await request.body())
        syncer: Syncer = request.app.state[SYNCER]
        answer = await syncer.sync(request.user.user_id, sync_request, nul_free=nul_free)
        answer_type = _answer_type(request, media_type)
        return ASGIResponse(body=_encoders[answer_type].encode(answer), media_type=answer_type)

    @get("/batches/{batch_id:uuid}", responses=problem_specs(401, 404))
    async def receipt(
        self,
        request: Request[Principal, Token, Any],
        batch_id: FromPath[UUID],
        driver_pool: NamedDependency[DriverPool],
        master_keys: NamedDependency[MasterKeys],
    ) -> BatchReceipt:
        """What became of a batch this user sent, without sending anything again."""
        async with driver_pool.connection() as conn:
            # Whoever sent a batch has a data key: it is made with their first write.
            key = await data_keys.read(conn, master_keys, request.user.user_id)
            stored = await queries.find_batch(conn, key, batch_id) if key else None
        if stored is None:
            raise ProblemError(404, "not-found", "No batch with this id was received from you.")
        return BatchReceipt(batch_id=batch_id, results=stored.results)

    @get("/manifest", responses=problem_specs(401))
    async def manifest(self, request: Request[Principal, Token, Any], engine: NamedDependency[AsyncEngine]) -> Manifest:
        """Counts and a checksum of every live record, for an honest "all synced"."""
        async with engine.connect() as conn:
            live = await queries.live_versions(conn, request.user.user_id)
        digest = hashlib.sha256()
        by_kind: dict[str, int] = {}
        count = 0
        for record_id, kind, version in sorted(live, key=lambda item: str(item[0])):
            digest.update(f"{record_id}:{version}\n".encode())
            by_kind[kind] = by_kind.get(kind, 0) + 1
            count += 1
        return Manifest(records=count, by_kind=by_kind, checksum=digest.hexdigest())
