"""Access tokens (signed JWTs) and refresh tokens (opaque, stored hashed)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import UUID

import msgspec
from litestar.config.app import AppConfig
from litestar.connection import ASGIConnection
from litestar.security.jwt import JWTAuth, Token

ISSUER = "kindsync"
SIGNING_ALGORITHM = "HS256"
# Routes reachable without an access token (admin routes check their own).
BEARER_SCHEME = "BearerToken"
BEARER: list[dict[str, list[str]]] = [{BEARER_SCHEME: []}]
PUBLIC_PATHS = (r"^/v1/auth/", r"^/healthz$", r"^/readyz$", r"^/schema", r"^/metrics$", r"^/admin/")


class Principal(msgspec.Struct, frozen=True):
    """Who a request acts for, read from its access token alone."""

    user_id: UUID
    session_id: UUID | None


async def principal_from_token(token: Token, _connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
    """Trust the signed token: no database round trip on every request."""
    try:
        user_id = UUID(token.sub)
        session = token.extras.get("sid")
        return Principal(user_id=user_id, session_id=UUID(session) if session else None)
    except (ValueError, TypeError, AttributeError):
        return None


def jwt_auth(secret_key: str, access_ttl_s: int) -> JWTAuth[Principal]:
    """Bearer auth for every `/v1` route except `/v1/auth/*`."""
    return JWTAuth[Principal](
        retrieve_user_handler=principal_from_token,
        token_secret=secret_key,
        algorithm=SIGNING_ALGORITHM,
        default_token_expiration=timedelta(seconds=access_ttl_s),
        accepted_issuers=[ISSUER],
        exclude=list(PUBLIC_PATHS),
        description="Access token from /v1/auth/*; it lives 15 minutes by default.",
        openapi_security_scheme_name=BEARER_SCHEME,
    )


def protect_only_v1(auth: JWTAuth[Principal]) -> Callable[[AppConfig], AppConfig]:
    """Install bearer auth, declaring it in OpenAPI only on the routes that need it.

    JWTAuth declares the bearer requirement for every operation; the public
    routes (health, auth, schema) would then wrongly document a token. The
    protected controllers declare `BEARER` themselves instead.
    """

    def on_app_init(config: AppConfig) -> AppConfig:
        config = auth.on_app_init(config)
        if config.openapi_config is not None:
            declared = config.openapi_config.security or []
            config.openapi_config.security = [req for req in declared if req != auth.security_requirement] or None
        return config

    return on_app_init


def issue_access_token(auth: JWTAuth[Principal], user_id: UUID, session_id: UUID) -> str:
    return auth.create_token(
        identifier=str(user_id),
        token_issuer=ISSUER,
        token_unique_jwt_id=secrets.token_hex(8),
        token_extras={"sid": str(session_id)},
    )


def new_refresh_token() -> tuple[str, bytes]:
    """A random token for the client and the digest kept in the database."""
    token = secrets.token_urlsafe(32)
    return token, refresh_token_digest(token)


def refresh_token_digest(token: str) -> bytes:
    """Tokens carry 256 random bits, so a plain SHA-256 is a safe lookup key."""
    return hashlib.sha256(token.encode()).digest()
