"""The auth rules of the contract, through HTTP on the real app, Postgres and Redis."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jwt
import msgspec
import pytest
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from service.app import create_app
from service.db.tables import users
from service.settings import Settings
from tests.integration.conftest import Client, anonymous, assert_problem, serve, signup

PASSWORD = "correct horse battery"
DEVICE_ID = "0190f0a4-4a3e-7000-8000-0000000000a1"
TOKEN_FIELDS = {"user_id", "access_token", "refresh_token", "expires_in"}


# --- helpers -----------------------------------------------------------------


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> Any:
    return await client.post("/v1/auth/login", json={"email": email, "password": password})


async def refresh(client: httpx.AsyncClient, refresh_token: str) -> Any:
    return await client.post("/v1/auth/refresh", json={"refresh_token": refresh_token})


async def logout(client: httpx.AsyncClient, refresh_token: str) -> Any:
    return await client.post("/v1/auth/logout", json={"refresh_token": refresh_token})


async def put_device(client: httpx.AsyncClient, access_token: str | None) -> Any:
    """The protected route used to tell whether an access token is accepted."""
    headers = {"Authorization": f"Bearer {access_token}"} if access_token is not None else {}
    return await client.put(f"/v1/devices/{DEVICE_ID}", json={"platform": "ios"}, headers=headers)


def assert_tokens(body: Any, settings: Settings) -> None:
    assert set(body) == TOKEN_FIELDS, body
    uuid.UUID(body["user_id"])
    assert isinstance(body["access_token"], str)
    assert body["access_token"]
    assert isinstance(body["refresh_token"], str)
    assert body["refresh_token"]
    assert body["expires_in"] == settings.access_token_ttl_s


def claims(user_id: str, *, expires_in_s: int = 600, issuer: str = "kindsync") -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": user_id,
        "iat": now,
        "exp": now + expires_in_s,
        "iss": issuer,
        "jti": uuid.uuid4().hex[:16],
        "extras": {"sid": str(uuid.uuid4())},
    }


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


@asynccontextmanager
async def other_app(settings: Settings) -> AsyncIterator[Client]:
    """A second app on the same database and Redis, with other settings.

    `create_app` reconfigures the root logger; it is put back afterwards so the
    session's app keeps logging as it did.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        async with serve(create_app(settings)) as other:
            yield other
    finally:
        root.handlers = handlers
        root.setLevel(level)


# --- signup ------------------------------------------------------------------


async def test_signup_answers_tokens(client: Client, settings: Settings) -> None:
    response = await client.post("/v1/auth/signup", json={"email": "ada@example.org", "password": PASSWORD})
    assert response.status_code == 201, response.text
    body = response.json()
    assert_tokens(body, settings)
    # The access token is for this user and lives the configured time.
    payload = jwt.decode(body["access_token"], settings.secret_key, algorithms=["HS256"], issuer="kindsync")
    assert payload["sub"] == body["user_id"]
    assert payload["exp"] - payload["iat"] == settings.access_token_ttl_s
    assert (await put_device(client, body["access_token"])).status_code == 200


async def test_signup_normalises_email(client: Client, engine: AsyncEngine) -> None:
    tokens = await signup(client, email="  Ada@Example.ORG ")
    response = await login(client, "ada@example.org")
    assert response.status_code == 200, response.text
    assert response.json()["user_id"] == tokens["user_id"]
    # Login normalises the same way.
    response = await login(client, " ADA@example.org")
    assert response.status_code == 200, response.text
    async with engine.connect() as conn:
        stored = (await conn.execute(select(users.c.email).where(users.c.id == uuid.UUID(tokens["user_id"])))).scalar()
    assert stored == "ada@example.org"


async def test_signup_short_password_is_422_naming_password(client: Client) -> None:
    response = await client.post("/v1/auth/signup", json={"email": "ada@example.org", "password": "123456789"})
    assert_problem(response, 422, path="password")
    # Exactly ten characters is enough.
    response = await client.post("/v1/auth/signup", json={"email": "ada@example.org", "password": "1234567890"})
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("email", ["not-an-email", "ada@", "@example.org", "ada example@example.org", "ada@example"])
async def test_signup_bad_email_is_422_naming_email(client: Client, email: str) -> None:
    response = await client.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
    assert_problem(response, 422, path="email")


@pytest.mark.parametrize("missing", ["email", "password"])
async def test_signup_missing_field_is_422_naming_it(client: Client, missing: str) -> None:
    body = {"email": "ada@example.org", "password": PASSWORD}
    del body[missing]
    response = await client.post("/v1/auth/signup", json=body)
    assert_problem(response, 422, path=missing)


async def test_signup_unknown_field_is_422_naming_it(client: Client) -> None:
    response = await client.post(
        "/v1/auth/signup", json={"email": "ada@example.org", "password": PASSWORD, "nickname": "ada"}
    )
    body = assert_problem(response, 422, path="nickname")
    assert "nickname" in body["detail"]
    # Nothing was created: the same email can still sign up.
    await signup(client, email="ada@example.org")


@pytest.mark.parametrize("second", ["ada@example.org", "ADA@Example.org", " ada@example.org "])
async def test_signup_email_taken_is_409(client: Client, second: str) -> None:
    first = await signup(client, email="ada@example.org")
    response = await client.post("/v1/auth/signup", json={"email": second, "password": "another password 2"})
    assert_problem(response, 409)
    # The first account keeps its password.
    response = await login(client, "ada@example.org")
    assert response.status_code == 200, response.text
    assert response.json()["user_id"] == first["user_id"]
    assert (await login(client, "ada@example.org", "another password 2")).status_code == 401


async def test_password_is_stored_as_argon2id_hash(client: Client, engine: AsyncEngine) -> None:
    first = await signup(client, email="ada@example.org")
    second = await signup(client, email="grace@example.org")
    async with engine.connect() as conn:
        rows = (await conn.execute(select(users.c.id, users.c.password_hash))).all()
    hashes = {str(row.id): row.password_hash for row in rows}
    for tokens in (first, second):
        stored = hashes[tokens["user_id"]]
        assert stored.startswith("$argon2id$"), stored
        assert PASSWORD not in stored
    # Salted: the same password does not give the same hash.
    assert hashes[first["user_id"]] != hashes[second["user_id"]]


# --- anonymous ---------------------------------------------------------------


async def test_anonymous_account_has_no_email_and_its_token_works(
    client: Client, settings: Settings, engine: AsyncEngine
) -> None:
    response = await client.post("/v1/auth/anonymous", json={})
    assert response.status_code == 201, response.text
    tokens = response.json()
    assert_tokens(tokens, settings)
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(users.c.email, users.c.password_hash).where(users.c.id == uuid.UUID(tokens["user_id"]))
            )
        ).one()
    assert row.email is None
    assert row.password_hash is None
    device = await put_device(client, tokens["access_token"])
    assert device.status_code == 200, device.text
    assert device.json()["platform"] == "ios"


async def test_anonymous_accounts_are_distinct_and_refreshable(client: Client) -> None:
    first = await anonymous(client)
    second = await anonymous(client)
    assert first["user_id"] != second["user_id"]
    response = await refresh(client, first["refresh_token"])
    assert response.status_code == 200, response.text
    assert response.json()["user_id"] == first["user_id"]


async def test_anonymous_rejects_unknown_field(client: Client) -> None:
    response = await client.post("/v1/auth/anonymous", json={"email": "ada@example.org"})
    assert_problem(response, 422, path="email")


# --- login -------------------------------------------------------------------


async def test_login_with_right_password(client: Client, settings: Settings) -> None:
    tokens = await signup(client, email="ada@example.org")
    response = await login(client, "ada@example.org")
    assert response.status_code == 200, response.text
    body = response.json()
    assert_tokens(body, settings)
    assert body["user_id"] == tokens["user_id"]
    assert body["refresh_token"] != tokens["refresh_token"]
    assert (await put_device(client, body["access_token"])).status_code == 200


async def test_login_unknown_email_and_wrong_password_answer_the_same(client: Client) -> None:
    await signup(client, email="ada@example.org")
    wrong_password = await login(client, "ada@example.org", "not the right password")
    unknown_email = await login(client, "nobody@example.org", "not the right password")
    assert_problem(wrong_password, 401)
    assert_problem(unknown_email, 401)
    assert wrong_password.json() == unknown_email.json()
    assert wrong_password.content == unknown_email.content
    assert wrong_password.headers["content-type"] == unknown_email.headers["content-type"]
    assert wrong_password.headers.get("www-authenticate") == unknown_email.headers.get("www-authenticate")


async def test_login_is_throttled_after_repeated_failures(client: Client, settings: Settings) -> None:
    await signup(client, email="ada@example.org")
    await signup(client, email="grace@example.org")
    for _ in range(settings.login_max_failures):
        assert_problem(await login(client, "ada@example.org", "wrong password!"), 401)
    # Even the right password now waits.
    response = await login(client, "ada@example.org")
    body = assert_problem(response, 429)
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit(), retry_after
    assert 1 <= int(retry_after) <= settings.login_window_s
    assert retry_after in body["detail"]
    # The counter follows the normalised email.
    assert_problem(await login(client, " ADA@example.org "), 429)
    # Another account is not held back by it.
    other = await login(client, "grace@example.org")
    assert other.status_code == 200, other.text


async def test_login_throttle_per_address(client: Client, settings: Settings) -> None:
    await signup(client, email="ada@example.org")
    strict = msgspec.structs.replace(settings, login_max_failures_per_ip=3)
    async with other_app(strict) as other:
        for index in range(3):
            response = await login(other, f"guess{index}@example.org", "wrong password!")
            assert_problem(response, 401)
        # No single account reached its limit, but this address did.
        response = await login(other, "ada@example.org")
        assert_problem(response, 429)
        retry_after = response.headers["retry-after"]
        assert retry_after.isdigit(), retry_after
        assert 1 <= int(retry_after) <= settings.login_window_s


async def test_successful_login_clears_the_account_counter(client: Client, settings: Settings) -> None:
    await signup(client, email="ada@example.org")
    below_limit = settings.login_max_failures - 1
    for _ in range(below_limit):
        assert_problem(await login(client, "ada@example.org", "wrong password!"), 401)
    assert (await login(client, "ada@example.org")).status_code == 200
    for _ in range(below_limit):
        assert_problem(await login(client, "ada@example.org", "wrong password!"), 401)
    response = await login(client, "ada@example.org")
    assert response.status_code == 200, response.text


# --- refresh -----------------------------------------------------------------


async def test_refresh_rotates_both_tokens(client: Client, settings: Settings) -> None:
    old = await signup(client)
    response = await refresh(client, old["refresh_token"])
    assert response.status_code == 200, response.text
    new = response.json()
    assert_tokens(new, settings)
    assert new["user_id"] == old["user_id"]
    assert new["access_token"] != old["access_token"]
    assert new["refresh_token"] != old["refresh_token"]
    assert (await put_device(client, new["access_token"])).status_code == 200
    # The new refresh token is itself good for one more rotation.
    assert (await refresh(client, new["refresh_token"])).status_code == 200


async def test_reused_refresh_token_revokes_the_family(client: Client) -> None:
    first = await signup(client)
    second = (await refresh(client, first["refresh_token"])).json()
    third_response = await refresh(client, second["refresh_token"])
    assert third_response.status_code == 200, third_response.text
    third = third_response.json()
    # The first token, already spent, comes back: someone else may hold it.
    assert_problem(await refresh(client, first["refresh_token"]), 401)
    # The whole chain is gone, including the newest token.
    assert_problem(await refresh(client, third["refresh_token"]), 401)
    assert_problem(await refresh(client, second["refresh_token"]), 401)


async def test_refresh_with_garbage_is_401(client: Client) -> None:
    await signup(client)
    for token in ("garbage", "x" * 256, "eyJhbGciOiJIUzI1NiJ9.e30.c2ln"):
        assert_problem(await refresh(client, token), 401)


async def test_refresh_revocation_spares_other_sessions(client: Client) -> None:
    first = await signup(client, email="ada@example.org")
    phone = (await login(client, "ada@example.org")).json()
    tablet = (await login(client, "ada@example.org")).json()
    assert (await refresh(client, first["refresh_token"])).status_code == 200
    assert_problem(await refresh(client, first["refresh_token"]), 401)  # re-use: that family is revoked
    for session in (phone, tablet):
        response = await refresh(client, session["refresh_token"])
        assert response.status_code == 200, response.text


async def test_concurrent_refreshes_of_one_token(client: Client) -> None:
    tokens = await signup(client)
    # The client runs the app in this event loop: the five refreshes overlap.
    responses = await asyncio.gather(*(refresh(client, tokens["refresh_token"]) for _ in range(5)))
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200, 401, 401, 401, 401], [r.text for r in responses]
    winner = next(response for response in responses if response.status_code == 200).json()
    for response in responses:
        if response.status_code != 200:
            assert_problem(response, 401)
    # The other uses count as re-use: the family is revoked, the winner's token too.
    assert_problem(await refresh(client, winner["refresh_token"]), 401)


# --- logout ------------------------------------------------------------------


async def test_logout_ends_the_session(client: Client) -> None:
    tokens = await signup(client)
    response = await logout(client, tokens["refresh_token"])
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert_problem(await refresh(client, tokens["refresh_token"]), 401)


async def test_logout_after_rotation_ends_the_session(client: Client) -> None:
    first = await signup(client)
    second = (await refresh(client, first["refresh_token"])).json()
    assert (await logout(client, second["refresh_token"])).status_code == 204
    assert_problem(await refresh(client, second["refresh_token"]), 401)


async def test_logout_with_unknown_token_is_204(client: Client) -> None:
    tokens = await signup(client)
    assert (await logout(client, "never-issued-token")).status_code == 204
    # And it touched nobody's session.
    assert (await refresh(client, tokens["refresh_token"])).status_code == 200


async def test_logout_revokes_only_that_family(client: Client) -> None:
    await signup(client, email="ada@example.org")
    phone = (await login(client, "ada@example.org")).json()
    tablet = (await login(client, "ada@example.org")).json()
    assert (await logout(client, phone["refresh_token"])).status_code == 204
    assert_problem(await refresh(client, phone["refresh_token"]), 401)
    response = await refresh(client, tablet["refresh_token"])
    assert response.status_code == 200, response.text


# --- access tokens -----------------------------------------------------------


async def test_missing_access_token_is_401_with_www_authenticate(client: Client) -> None:
    response = await put_device(client, None)
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].lower().startswith("bearer")


async def test_malformed_authorization_header_is_401(client: Client) -> None:
    response = await client.put(
        f"/v1/devices/{DEVICE_ID}", json={"platform": "ios"}, headers={"Authorization": "Bearer not.a.jwt"}
    )
    assert_problem(response, 401)


async def test_hand_built_valid_token_is_accepted(client: Client, settings: Settings) -> None:
    """The control for the refusals below: a correctly signed token of ours passes."""
    tokens = await signup(client)
    token = jwt.encode(claims(tokens["user_id"]), settings.secret_key, algorithm="HS256")
    response = await put_device(client, token)
    assert response.status_code == 200, response.text


async def test_token_signed_with_another_key_is_401(client: Client) -> None:
    tokens = await signup(client)
    forged = jwt.encode(claims(tokens["user_id"]), "some-other-secret-" + "z" * 40, algorithm="HS256")
    assert_problem(await put_device(client, forged), 401)


async def test_expired_token_is_401(client: Client, settings: Settings) -> None:
    tokens = await signup(client)
    payload = claims(tokens["user_id"], expires_in_s=-60)
    payload["iat"] -= settings.access_token_ttl_s
    expired = jwt.encode(payload, settings.secret_key, algorithm="HS256")
    assert_problem(await put_device(client, expired), 401)


async def test_a_token_used_a_moment_ago_is_401_once_it_expires(client: Client, settings: Settings) -> None:
    """Verified tokens are kept per process; each use still checks the expiry."""
    tokens = await signup(client)
    soon = jwt.encode(claims(tokens["user_id"], expires_in_s=2), settings.secret_key, algorithm="HS256")
    assert (await put_device(client, soon)).status_code == 200
    assert (await put_device(client, soon)).status_code == 200
    await asyncio.sleep(2.5)
    assert_problem(await put_device(client, soon), 401)


async def test_token_from_another_issuer_is_401(client: Client, settings: Settings) -> None:
    tokens = await signup(client)
    token = jwt.encode(claims(tokens["user_id"], issuer="someone-else"), settings.secret_key, algorithm="HS256")
    assert_problem(await put_device(client, token), 401)


async def test_tampered_payload_is_401(client: Client) -> None:
    victim = await signup(client, email="ada@example.org")
    attacker = await signup(client, email="mallory@example.org")
    header, payload, signature = attacker["access_token"].split(".")
    # Claim to be someone else, keeping the original signature.
    decoded = json.loads(b64url_decode(payload))
    decoded["sub"] = victim["user_id"]
    swapped = ".".join((header, b64url_json(decoded), signature))
    assert_problem(await put_device(client, swapped), 401)
    # A single changed character in the payload is refused as well.
    middle = len(payload) // 2
    flipped_char = "A" if payload[middle] != "A" else "B"
    flipped = ".".join((header, payload[:middle] + flipped_char + payload[middle + 1 :], signature))
    assert_problem(await put_device(client, flipped), 401)
    # The untouched token still works, so the refusals are about the tampering.
    assert (await put_device(client, attacker["access_token"])).status_code == 200


async def test_alg_none_token_is_401(client: Client) -> None:
    tokens = await signup(client)
    unsigned = ".".join((b64url_json({"alg": "none", "typ": "JWT"}), b64url_json(claims(tokens["user_id"])), ""))
    assert_problem(await put_device(client, unsigned), 401)


# --- privacy -----------------------------------------------------------------


def json_lines(text: str) -> list[dict[str, Any]]:
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


async def test_a_requests_log_line_carries_its_id_and_the_id_ends_with_the_request(
    settings: Settings, capfd: pytest.CaptureFixture[str]
) -> None:
    """An operator finds a request's line by the id its answer carried. The app runs in this
    test's own task (serve), so an id left bound after the answer would be on the next line."""
    capfd.readouterr()
    async with other_app(msgspec.structs.replace(settings, log_level="INFO")) as app:
        answered = await app.get("/healthz", headers={"X-Request-ID": "trace-42"})
        structlog.get_logger("kindsync.test").info("after_the_request")
    events = json_lines(capfd.readouterr().out)

    assert answered.headers["x-request-id"] == "trace-42"
    requests = [event for event in events if event.get("event") == "request"]
    assert [(e.get("path"), e.get("status"), e.get("request_id")) for e in requests] == [("/healthz", 200, "trace-42")]
    [after] = [event for event in events if event.get("event") == "after_the_request"]
    assert "request_id" not in after, after


async def test_requests_are_not_logged_above_info(settings: Settings, capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    async with other_app(msgspec.structs.replace(settings, log_level="WARNING")) as app:
        assert (await app.get("/healthz")).status_code == 200
        structlog.get_logger("kindsync.test").warning("after_the_request")
    events = json_lines(capfd.readouterr().out)

    # The warning shows that lines are written at all; the request's line is below the level.
    assert [event.get("event") for event in events] == ["after_the_request"], events


async def test_logs_never_hold_passwords_or_tokens(settings: Settings, capfd: pytest.CaptureFixture[str]) -> None:
    verbose = msgspec.structs.replace(settings, log_level="INFO")
    email = "privacy-check@example.org"
    password = "my very secret passphrase 42"
    wrong_password = "a wrong secret passphrase 43"
    short_password = "shortpw99"
    capfd.readouterr()
    async with other_app(verbose) as app:
        signed_up = await signup(app, email=email, password=password)
        assert_problem(await login(app, email, wrong_password), 401)
        assert_problem(
            await app.post("/v1/auth/signup", json={"email": "x@example.org", "password": short_password}), 422
        )
        logged_in = (await login(app, email, password)).json()
        rotated = (await refresh(app, logged_in["refresh_token"])).json()
        assert_problem(await refresh(app, logged_in["refresh_token"]), 401)  # re-use
        assert (await put_device(app, signed_up["access_token"])).status_code == 200
        assert (await logout(app, signed_up["refresh_token"])).status_code == 204
    captured = capfd.readouterr()
    output = captured.out + captured.err

    events = json_lines(captured.out)
    logged_paths = {event.get("path") for event in events if event.get("event") == "request"}
    # The check below can only pass for the right reason if requests were logged at all.
    assert {"/v1/auth/signup", "/v1/auth/login", "/v1/auth/refresh", "/v1/auth/logout"} <= logged_paths, output

    secrets = {
        "password": password,
        "wrong password": wrong_password,
        "short password": short_password,
        "email": email,
    }
    for name, tokens in (("signup", signed_up), ("login", logged_in), ("refresh", rotated)):
        secrets[f"{name} access token"] = tokens["access_token"]
        secrets[f"{name} refresh token"] = tokens["refresh_token"]
    for name, value in secrets.items():
        assert value not in output, f"the {name} was logged"
