"""Accounts and tokens on the wire."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from schemas.base import ClientInput, ServerOutput, text

PASSWORD_MIN = 10
PASSWORD_MAX = 1024
EMAIL_MAX = 254
REFRESH_TOKEN_MAX = 256

Email = Annotated[str, text(min_length=3, max_length=EMAIL_MAX, description="Email address")]
Password = Annotated[
    str, text(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX, description=f"At least {PASSWORD_MIN} characters")
]
RefreshToken = Annotated[str, text(min_length=1, max_length=REFRESH_TOKEN_MAX)]


class Credentials(ClientInput):
    email: Email
    password: Password


class LoginCredentials(ClientInput):
    """Login does not re-check the signup rules: a wrong password is just wrong."""

    email: Annotated[str, text(max_length=EMAIL_MAX)]
    password: Annotated[str, text(max_length=PASSWORD_MAX)]


class AnonymousSignup(ClientInput):
    """An empty object: people may start without an email."""


class RefreshRequest(ClientInput):
    refresh_token: RefreshToken


class Tokens(ServerOutput):
    user_id: UUID
    access_token: str
    refresh_token: str
    expires_in: int
