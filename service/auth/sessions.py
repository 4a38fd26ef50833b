"""Opening, rotating and closing sign-in sessions (refresh-token families)."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from litestar.security.jwt import JWTAuth
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.auth import Tokens
from service.auth.tokens import Principal, issue_access_token, new_refresh_token, refresh_token_digest
from service.db import accounts


class Sessions:
    def __init__(self, auth: JWTAuth[Principal], *, access_ttl_s: int, refresh_ttl_s: int) -> None:
        self._auth = auth
        self._access_ttl_s = access_ttl_s
        self._refresh_ttl = timedelta(seconds=refresh_ttl_s)

    async def open(self, conn: AsyncConnection, user_id: UUID) -> Tokens:
        refresh, digest = new_refresh_token()
        family_id = await accounts.start_session(conn, user_id, digest, self._refresh_ttl)
        return self._tokens(user_id, family_id, refresh)

    async def rotate(self, conn: AsyncConnection, refresh_token: str) -> Tokens | None:
        """New tokens, or None when the token is unknown, spent or revoked.

        Commit even on None: a re-used token has just revoked its family.
        """
        refresh, digest = new_refresh_token()
        result = await accounts.rotate(conn, refresh_token_digest(refresh_token), digest, self._refresh_ttl)
        if result.outcome is not accounts.Rotation.ROTATED or result.user_id is None or result.family_id is None:
            return None
        return self._tokens(result.user_id, result.family_id, refresh)

    async def close(self, conn: AsyncConnection, refresh_token: str) -> None:
        await accounts.revoke_by_token(conn, refresh_token_digest(refresh_token))

    def _tokens(self, user_id: UUID, family_id: UUID, refresh: str) -> Tokens:
        return Tokens(
            user_id=user_id,
            access_token=issue_access_token(self._auth, user_id, family_id),
            refresh_token=refresh,
            expires_in=self._access_ttl_s,
        )
