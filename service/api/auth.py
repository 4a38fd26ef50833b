"""`/v1/auth/*`: sign up (with email or anonymously), log in, refresh, log out."""

from __future__ import annotations

import re
from typing import Any

from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.auth import AnonymousSignup, Credentials, LoginCredentials, RefreshRequest, Tokens
from service.auth.passwords import Passwords
from service.auth.sessions import Sessions
from service.auth.throttle import LoginThrottle
from service.db import accounts
from service.problems import ProblemError, invalid, problem_specs

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")


def normalize_email(email: str) -> str:
    return email.strip().lower()


def _bad_credentials() -> ProblemError:
    # One answer for an unknown email and a wrong password.
    return ProblemError(401, "invalid-credentials", "The email or password is not right.")


class AuthController(Controller):
    path = "/v1/auth"
    tags = ["auth"]

    @post("/signup", status_code=HTTP_201_CREATED, responses=problem_specs(400, 409, 422))
    async def signup(
        self,
        data: JSONBody[Credentials],
        engine: NamedDependency[AsyncEngine],
        passwords: NamedDependency[Passwords],
        sessions: NamedDependency[Sessions],
    ) -> Tokens:
        """Create an account with email and password; answers the first tokens."""
        email = normalize_email(data.email)
        if not _EMAIL.match(email):
            raise invalid("email", "must be an email address such as name@example.org")
        password_hash = await passwords.hash(data.password)
        try:
            async with engine.begin() as conn:
                user_id = await accounts.create_account(conn, email, password_hash)
                return await sessions.open(conn, user_id)
        except accounts.EmailTaken:
            raise ProblemError(409, "email-taken", "An account with this email already exists.") from None

    @post("/anonymous", status_code=HTTP_201_CREATED, responses=problem_specs(400, 422))
    async def anonymous(
        self, data: JSONBody[AnonymousSignup], engine: NamedDependency[AsyncEngine], sessions: NamedDependency[Sessions]
    ) -> Tokens:
        """Create an account with no email, so people may start privately."""
        async with engine.begin() as conn:
            user_id = await accounts.create_account(conn, None, None)
            return await sessions.open(conn, user_id)

    @post("/login", status_code=HTTP_200_OK, responses=problem_specs(400, 401, 422, 429))
    async def login(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[LoginCredentials],
        engine: NamedDependency[AsyncEngine],
        passwords: NamedDependency[Passwords],
        sessions: NamedDependency[Sessions],
        login_throttle: NamedDependency[LoginThrottle],
    ) -> Tokens:
        """Log in with email and password. Repeated failures answer 429 for a while."""
        email = normalize_email(data.email)
        address = request.client.host if request.client else "unknown"
        wait = await login_throttle.retry_after(email, address)
        if wait is not None:
            raise ProblemError(
                429,
                "too-many-attempts",
                f"Too many failed logins; try again in {wait} seconds.",
                headers={"Retry-After": str(wait)},
            )
        async with engine.connect() as conn:
            account = await accounts.find_account(conn, email)
        if account is None or not await passwords.verify(account.password_hash, data.password):
            await login_throttle.record_failure(email, address)
            raise _bad_credentials()
        await login_throttle.record_success(email, address)
        rehashed = None
        if account.password_hash and passwords.needs_rehash(account.password_hash):
            rehashed = await passwords.hash(data.password)
        async with engine.begin() as conn:
            if rehashed:
                await accounts.set_password_hash(conn, account.id, rehashed)
            return await sessions.open(conn, account.id)

    @post("/refresh", status_code=HTTP_200_OK, responses=problem_specs(400, 401, 422))
    async def refresh(
        self, data: JSONBody[RefreshRequest], engine: NamedDependency[AsyncEngine], sessions: NamedDependency[Sessions]
    ) -> Tokens:
        """Trade a refresh token for new tokens; each refresh token works once."""
        async with engine.begin() as conn:
            tokens = await sessions.rotate(conn, data.refresh_token)
        if tokens is None:
            raise ProblemError(401, "invalid-refresh-token", "This session has ended; please log in again.")
        return tokens

    @post("/logout", status_code=HTTP_204_NO_CONTENT, responses=problem_specs(400, 422))
    async def logout(
        self, data: JSONBody[RefreshRequest], engine: NamedDependency[AsyncEngine], sessions: NamedDependency[Sessions]
    ) -> None:
        """End the session the refresh token belongs to, on this device."""
        async with engine.begin() as conn:
            await sessions.close(conn, data.refresh_token)
