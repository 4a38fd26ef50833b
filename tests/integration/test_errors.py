"""The error format, the served OpenAPI schema and request ids, through HTTP."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.tables import users
from tests.integration.conftest import Client, anonymous, assert_problem, bearer

MAX_BODY = 2 * 1024 * 1024
SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
PUBLIC_ROUTES = {
    "/healthz": "get",
    "/readyz": "get",
    "/v1/auth/signup": "post",
    "/v1/auth/anonymous": "post",
    "/v1/auth/login": "post",
    "/v1/auth/refresh": "post",
    "/v1/auth/logout": "post",
}
JSON = {"content-type": "application/json"}


async def user_count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.scalar(select(func.count()).select_from(users))) or 0)


async def openapi(client: Client) -> dict[str, Any]:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    assert ref.startswith("#/components/schemas/"), ref
    resolved: dict[str, Any] = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return resolved


# --- the OpenAPI schema -----------------------------------------------------------------------------------------


async def test_openapi_schema_is_served_as_3_1(client: Client) -> None:
    response = await client.get("/schema/openapi.json")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/")
    document = response.json()
    assert document["openapi"].startswith("3.1")
    assert document["info"]["title"]
    assert document["info"]["version"]


async def test_openapi_schema_lists_every_route(client: Client) -> None:
    document = await openapi(client)

    paths = document["paths"]
    for path, method in PUBLIC_ROUTES.items():
        assert method in paths.get(path, {}), f"{method.upper()} {path} is not documented"
    devices = paths.get("/v1/devices/{device_id}", {})
    assert {"put", "delete"} <= set(devices), devices.keys()


async def test_openapi_documents_errors_as_problem_details(client: Client) -> None:
    document = await openapi(client)

    responses = document["paths"]["/v1/auth/signup"]["post"]["responses"]
    errors = {status: spec for status, spec in responses.items() if not status.startswith("2")}
    assert {"400", "409", "422"} <= set(errors), responses.keys()
    for status, spec in errors.items():
        assert set(spec["content"]) == {"application/problem+json"}, (status, spec)
        reference = spec["content"]["application/problem+json"]["schema"]
        assert reference.get("$ref", "").endswith("/Problem"), (status, reference)
        schema = resolve(document, reference)
        assert {"type", "title", "status", "detail", "errors"} <= set(schema["properties"]), schema
        field_error = resolve(document, schema["properties"]["errors"]["items"])
        assert {"path", "message"} <= set(field_error["properties"]), field_error


async def test_openapi_documents_device_errors_as_problem_details(client: Client) -> None:
    document = await openapi(client)

    put = document["paths"]["/v1/devices/{device_id}"]["put"]["responses"]
    assert {"200", "401", "422"} <= set(put), put.keys()
    for status in ("401", "422"):
        assert "application/problem+json" in put[status]["content"], (status, put[status])
    assert "204" in document["paths"]["/v1/devices/{device_id}"]["delete"]["responses"]


async def test_openapi_declares_the_bearer_scheme_on_protected_routes(client: Client) -> None:
    document = await openapi(client)

    schemes = document["components"]["securitySchemes"]
    bearer_schemes = [
        name
        for name, scheme in schemes.items()
        if scheme.get("type") == "http" and scheme.get("scheme", "").lower() == "bearer"
    ]
    assert bearer_schemes, schemes
    for method in ("put", "delete"):
        operation = document["paths"]["/v1/devices/{device_id}"][method]
        requirements = operation.get("security", document.get("security", []))
        assert any(set(requirement) & set(bearer_schemes) for requirement in requirements), (method, requirements)


async def test_openapi_does_not_demand_a_token_on_public_routes(client: Client) -> None:
    """A generated client must not think it needs an access token to sign up, log in or probe health."""
    document = await openapi(client)

    demanding = {}
    for path, method in PUBLIC_ROUTES.items():
        operation = document["paths"][path][method]
        requirements = operation.get("security", document.get("security", []))
        if requirements and {} not in requirements:
            demanding[f"{method.upper()} {path}"] = requirements

    assert demanding == {}, f"documented as needing a token: {demanding}"


async def test_interactive_docs_are_served(client: Client) -> None:
    response = await client.get("/schema")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "<html" in response.text.lower()
    assert "openapi.json" in response.text


# --- framework errors as problem details ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/v1/nope", "/v1/devices"])
async def test_unknown_route_is_404_problem(client: Client, path: str) -> None:
    response = await client.get(path)

    body = assert_problem(response, 404)
    assert body["type"].endswith("not-found")


async def test_wrong_method_is_405_problem(client: Client) -> None:
    response = await client.get("/v1/auth/signup")

    assert_problem(response, 405)
    assert "POST" in response.headers["allow"]


async def test_malformed_json_is_400_problem(client: Client, engine: AsyncEngine) -> None:
    response = await client.post("/v1/auth/signup", content=b'{"email": "ada@example.org", "password": ', headers=JSON)

    assert_problem(response, 400)
    assert await user_count(engine) == 0


async def test_body_over_2_mib_is_413_and_writes_nothing(client: Client, engine: AsyncEngine) -> None:
    prefix = b'{"email": "big@example.org", "password": "'
    suffix = b'"}'
    body = prefix + b"p" * (MAX_BODY + 1 - len(prefix) - len(suffix)) + suffix
    assert len(body) == MAX_BODY + 1
    json.loads(body)  # well-formed: only its size is wrong

    response = await client.post("/v1/auth/signup", content=body, headers=JSON)

    problem = assert_problem(response, 413)
    assert problem["type"].endswith("too-large")
    assert await user_count(engine) == 0


async def test_body_of_exactly_2_mib_is_not_413(client: Client) -> None:
    prefix = b'{"email": "big@example.org", "password": "'
    suffix = b'"}'
    body = prefix + b"p" * (MAX_BODY - len(prefix) - len(suffix)) + suffix

    response = await client.post("/v1/auth/signup", content=body, headers=JSON)

    # Within the body limit the password's own limit answers instead.
    assert_problem(response, 422, path="password")


async def test_wrong_json_type_is_422_naming_the_field(client: Client, engine: AsyncEngine) -> None:
    response = await client.post("/v1/auth/signup", json={"email": 12345, "password": "correct horse battery"})

    body = assert_problem(response, 422, path="email")
    assert "email" in body["detail"]
    assert await user_count(engine) == 0


async def test_json_array_instead_of_object_is_422(client: Client) -> None:
    response = await client.post("/v1/auth/signup", json=["ada@example.org", "correct horse battery"])

    assert_problem(response, 422)


async def test_nul_character_in_signup_email_is_422_not_500(client: Client, engine: AsyncEngine) -> None:
    """Postgres cannot store U+0000 in text; valid JSON carrying it is bad input, not a server error."""
    response = await client.post(
        "/v1/auth/signup", json={"email": "ada\u0000@example.org", "password": "correct horse battery"}
    )

    assert_problem(response, 422, path="email")
    assert await user_count(engine) == 0


async def test_nul_character_in_login_email_is_not_500(client: Client) -> None:
    response = await client.post("/v1/auth/login", json={"email": "ada\u0000@example.org", "password": "whatever"})

    assert 400 <= response.status_code < 500, response.text
    assert_problem(response, response.status_code)


# --- request ids ----------------------------------------------------------------------------------------------------

Send = Callable[[Client, dict[str, str]], Awaitable[httpx.Response]]


async def _ok(client: Client, headers: dict[str, str]) -> httpx.Response:
    return await client.get("/healthz", headers=headers)


async def _created(client: Client, headers: dict[str, str]) -> httpx.Response:
    return await client.post("/v1/auth/anonymous", json={}, headers=headers)


async def _not_found(client: Client, headers: dict[str, str]) -> httpx.Response:
    return await client.get("/nope", headers=headers)


async def _wrong_method(client: Client, headers: dict[str, str]) -> httpx.Response:
    return await client.get("/v1/auth/signup", headers=headers)


async def _no_token(client: Client, headers: dict[str, str]) -> httpx.Response:
    return await client.put(f"/v1/devices/{uuid.uuid4()}", json={"platform": "ios"}, headers=headers)


async def _malformed(client: Client, headers: dict[str, str]) -> httpx.Response:
    return await client.post("/v1/auth/signup", content=b"{", headers={**headers, **JSON})


async def _too_large(client: Client, headers: dict[str, str]) -> httpx.Response:
    return await client.post("/v1/auth/signup", content=b" " * (MAX_BODY + 1), headers={**headers, **JSON})


async def _invalid(client: Client, headers: dict[str, str]) -> httpx.Response:
    return await client.post("/v1/auth/signup", json={"email": 1, "password": 2}, headers=headers)


REQUESTS: dict[str, tuple[Send, int]] = {
    "ok": (_ok, 200),
    "created": (_created, 201),
    "not-found": (_not_found, 404),
    "wrong-method": (_wrong_method, 405),
    "no-token": (_no_token, 401),
    "malformed": (_malformed, 400),
    "too-large": (_too_large, 413),
    "invalid": (_invalid, 422),
}


@pytest.mark.parametrize("case", REQUESTS)
async def test_every_response_carries_a_request_id(client: Client, case: str) -> None:
    send, status = REQUESTS[case]

    response = await send(client, {})

    assert response.status_code == status, response.text
    assert SAFE_REQUEST_ID.match(response.headers.get("x-request-id", "")), response.headers


@pytest.mark.parametrize("case", ["ok", "invalid", "not-found", "no-token"])
async def test_sane_request_id_is_echoed(client: Client, case: str) -> None:
    send, status = REQUESTS[case]

    response = await send(client, {"X-Request-ID": "abc-123"})

    assert response.status_code == status, response.text
    assert response.headers.get("x-request-id") == "abc-123", response.headers


@pytest.mark.parametrize(
    "offered",
    [b"abc 123", b"has spaces in it", b"a" * 200, "abc-123\u00e9".encode(), b"<script>"],
    ids=["space", "spaces", "200-chars", "non-ascii", "markup"],
)
async def test_insane_request_id_is_replaced(client: Client, offered: bytes) -> None:
    response = await client.get("/healthz", headers={b"X-Request-ID": offered})

    assert response.status_code == 200, response.text
    request_id = response.headers["x-request-id"]
    assert request_id.encode() != offered
    assert SAFE_REQUEST_ID.match(request_id), request_id


RawResponse = tuple[int, dict[bytes, bytes], bytes]


async def raw_get(app: Litestar, path: str, headers: list[tuple[bytes, bytes]]) -> RawResponse:
    """A GET with header bytes exactly as a server hands them to the app.

    httpx re-encodes header values as UTF-8 text, so a byte such as 0xff,
    which HTTP allows in a header value and uvicorn passes on as is, can only
    be sent to the app through ASGI directly.
    """
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver.local"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver.local", 80),
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body


async def test_request_id_that_is_not_utf8_is_replaced_not_500(app: Litestar, client: Client) -> None:
    status, headers, body = await raw_get(app, "/healthz", [(b"x-request-id", b"abc-\xff")])

    assert status == 200, body
    request_id = headers.get(b"x-request-id", b"").decode()
    assert SAFE_REQUEST_ID.match(request_id), headers
    assert request_id != "abc-"


async def test_generated_request_ids_differ(client: Client) -> None:
    first = await client.get("/healthz")
    second = await client.get("/healthz")

    assert first.headers["x-request-id"] != second.headers["x-request-id"]


# --- never a stack trace --------------------------------------------------------------------------------------------


async def test_no_answer_ever_carries_a_traceback(client: Client) -> None:
    tokens = await anonymous(client)
    device = f"/v1/devices/{uuid.uuid4()}"
    answers = [
        *[await send(client, {}) for send, _ in REQUESTS.values()],
        await client.post("/v1/auth/signup", content=b"\xff\xfe\x00", headers=JSON),
        await client.post("/v1/auth/signup", content=b"", headers=JSON),
        await client.post("/v1/auth/signup", content=b"null", headers=JSON),
        await client.post("/v1/auth/signup", json={"email": "ada\u0000@example.org", "password": "x" * 12}),
        await client.post("/v1/auth/login", json={"email": "ada\u0000@example.org", "password": "x" * 12}),
        await client.post("/v1/auth/refresh", json={"refresh_token": "not-a-token"}),
        await client.post("/v1/auth/refresh", json={"refresh_token": "x" * 10_000}),
        await client.put(device, json={"platform": "ios", "push_token": "a\u0000b"}, headers=bearer(tokens)),
        await client.put(device, json={"platform": "ios", "locale": {"nested": True}}, headers=bearer(tokens)),
        await client.put(device, content=b'{"platform": "ios"', headers={**bearer(tokens), **JSON}),
        await client.put("/v1/devices/not-a-uuid", json={"platform": "ios"}, headers=bearer(tokens)),
        await client.put(device, json={"platform": "ios"}, headers={"Authorization": "Bearer not.a.jwt"}),
        await client.put(device, json={"platform": "ios"}, headers={"Authorization": "Basic YTpi"}),
        await client.delete(device, headers={"Authorization": "Bearer"}),
    ]

    for response in answers:
        assert "Traceback" not in response.text, response.text
        assert 'File "' not in response.text, response.text
        if response.status_code >= 400:
            assert response.headers["content-type"].startswith("application/problem+json"), response.text
