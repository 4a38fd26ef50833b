"""Firebase Cloud Messaging HTTP v1, authenticated with a service account.

The OAuth2 access token (from a signed JWT assertion) is cached until shortly
before it expires. Errors are handled as Google documents them: UNREGISTERED
and SENDER_ID_MISMATCH report a dead token; 429 and 5xx are retried with
backoff that honours Retry-After; a 401 renews the access token once; other
errors are the payload's and are not retried.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import structlog

from service.push.base import PushMessage, PushOutcome, PushTarget
from service.push.retry import is_busy, retry_delay

log = structlog.get_logger(__name__)

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
ATTEMPTS = 3
DEAD_TOKEN = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})
EARLY_RENEWAL_S = 300


def read_service_account(value: str) -> dict[str, Any]:
    """JSON text as it is, or the JSON of the file it names."""
    text = value if value.lstrip().startswith("{") else Path(value).read_text()
    account: dict[str, Any] = json.loads(text)
    return account


class FCMProvider:
    name = "fcm"

    def __init__(
        self,
        *,
        service_account: dict[str, Any],
        url: str,
        token_url: str | None,
        client: httpx.AsyncClient,
        backoff_s: float = 0.5,
    ) -> None:
        self._account = service_account
        self._send_url = f"{url.rstrip('/')}/v1/projects/{service_account['project_id']}/messages:send"
        self._token_url = token_url or service_account["token_uri"]
        self._client = client
        self._backoff_s = backoff_s
        self._access: tuple[str, float] | None = None
        self._lock = asyncio.Lock()

    async def _access_token(self, *, renew: bool = False) -> str:
        async with self._lock:
            if renew or self._access is None or time.time() > self._access[1]:
                now = int(time.time())
                assertion = jwt.encode(
                    {
                        "iss": self._account["client_email"],
                        "scope": SCOPE,
                        "aud": self._token_url,
                        "iat": now,
                        "exp": now + 3600,
                    },
                    self._account["private_key"],
                    algorithm="RS256",
                    headers={"kid": self._account.get("private_key_id", "")},
                )
                response = await self._client.post(
                    self._token_url,
                    data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion},
                )
                response.raise_for_status()
                answer = response.json()
                self._access = (answer["access_token"], time.time() + answer["expires_in"] - EARLY_RENEWAL_S)
            return self._access[0]

    async def send(self, target: PushTarget, message: PushMessage) -> PushOutcome:
        body = {
            "message": {
                "token": target.token,
                "notification": {"title": message.title, "body": message.body},
                "data": {"kind": message.kind, "record_id": str(message.record_id) if message.record_id else ""},
                "android": {
                    "collapse_key": message.collapse_key[:100],
                    "priority": "NORMAL" if message.kind == "practice_reminder" else "HIGH",
                    "ttl": "86400s",
                },
            }
        }
        renewed = False
        for attempt in range(1, ATTEMPTS + 1):
            try:
                token = await self._access_token()
                response = await self._client.post(
                    self._send_url, json=body, headers={"Authorization": f"Bearer {token}"}
                )
            except httpx.HTTPError as error:
                log.warning("fcm_unreachable", error=type(error).__name__, attempt=attempt)
                await asyncio.sleep(retry_delay(None, attempt, self._backoff_s))
                continue
            if response.status_code == 200:
                return PushOutcome(ok=True, detail="200")
            code = _error_code(response)
            if code in DEAD_TOKEN:
                return PushOutcome(ok=False, token_invalid=True, detail=f"{response.status_code} {code}")
            if response.status_code == 401 and not renewed:
                await self._access_token(renew=True)
                renewed = True
                continue
            if is_busy(response.status_code):
                await asyncio.sleep(retry_delay(response, attempt, self._backoff_s))
                continue
            return PushOutcome(ok=False, detail=f"{response.status_code} {code}")
        return PushOutcome(ok=False, retryable=True, detail="busy or unreachable after retries")


def _error_code(response: httpx.Response) -> str:
    """The FCM error code from `error.details`, else the status name."""
    try:
        error = response.json().get("error", {})
    except ValueError:
        return ""
    for detail in error.get("details", []):
        if detail.get("errorCode"):
            return str(detail["errorCode"])
    return str(error.get("status", ""))
