"""Access tokens (signed JWTs) and refresh tokens (opaque, stored hashed)."""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Self, cast
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
# Access tokens a process keeps as verified (VerifiedToken): about one per active device.
KEPT_TOKENS = 10_000
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


class VerifiedToken(Token):
    """An access token whose signature is checked once per process, not on every request.

    A phone sends the same token with every request for its whole life (15 minutes by default),
    and checking it (PyJWT: base64, JSON, HMAC) was a seventh of a small sync's CPU. Tokens that
    passed are kept, keyed by their exact text and the checks asked for; each use still checks
    the expiry, so a kept token is refused from the moment it expires.
    """

    _passed: ClassVar[OrderedDict[tuple[Any, ...], VerifiedToken]] = OrderedDict()

    @classmethod
    def decode(
        cls,
        encoded_token: str,
        secret: str,
        algorithm: str,
        audience: str | Sequence[str] | None = None,
        issuer: str | Sequence[str] | None = None,
        require_claims: Sequence[str] | None = None,
        verify_exp: bool = True,
        verify_nbf: bool = True,
        strict_audience: bool = False,
    ) -> Self:
        checks = (audience, issuer, require_claims, verify_exp, verify_nbf, strict_audience)
        key = (encoded_token, secret, algorithm, *(tuple(c) if isinstance(c, list) else c for c in checks))
        kept = cls._passed.get(key)
        if kept is not None and (not verify_exp or kept.exp > datetime.now(UTC)):
            cls._passed.move_to_end(key)
            return cast(Self, kept)
        cls._passed.pop(key, None)
        token = super().decode(
            encoded_token, secret, algorithm, audience, issuer, require_claims, verify_exp, verify_nbf, strict_audience
        )
        cls._passed[key] = token
        if len(cls._passed) > KEPT_TOKENS:
            cls._passed.popitem(last=False)
        return token


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
        token_cls=VerifiedToken,
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
