"""Apple Push Notification service over HTTP/2, with token (ES256 JWT) authentication.

One long-lived HTTP/2 connection pool per worker. The provider token is
renewed after 40 minutes (Apple accepts 20 to 60) or at once when APNs calls
it expired. Responses are handled as Apple documents them: a token APNs calls
unregistered or bad is reported dead; 429 and 5xx are retried with backoff
that honours Retry-After; other errors are the payload's and are not retried.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import httpx
import jwt
import msgspec
import structlog

from service.push.base import PushMessage, PushOutcome, PushTarget
from service.push.retry import is_busy, retry_delay

log = structlog.get_logger(__name__)

TOKEN_LIFETIME_S = 40 * 60
ATTEMPTS = 3
DEAD_TOKEN = frozenset({"BadDeviceToken", "Unregistered", "DeviceTokenNotForTopic"})
_payload = msgspec.json.Encoder()


def read_secret(value: str) -> str:
    """PEM text as it is, or the text of the file it names."""
    return value if value.lstrip().startswith("-----BEGIN") else Path(value).read_text()


class APNsProvider:
    name = "apns"

    def __init__(
        self,
        *,
        url: str,
        key_id: str,
        team_id: str,
        topic: str,
        private_key: str,
        client: httpx.AsyncClient,
        backoff_s: float = 0.5,
    ) -> None:
        self._url = url.rstrip("/")
        self._key_id, self._team_id, self._topic = key_id, team_id, topic
        self._private_key = read_secret(private_key)
        self._client = client
        self._backoff_s = backoff_s
        self._token: tuple[str, float] | None = None

    def _provider_token(self, *, renew: bool = False) -> str:
        now = time.time()
        if renew or self._token is None or now - self._token[1] > TOKEN_LIFETIME_S:
            issued = int(now)
            token = jwt.encode(
                {"iss": self._team_id, "iat": issued},
                self._private_key,
                algorithm="ES256",
                headers={"kid": self._key_id},
            )
            self._token = (token, now)
        return self._token[0]

    async def send(self, target: PushTarget, message: PushMessage) -> PushOutcome:
        body = _payload.encode(
            {
                "aps": {"alert": {"title": message.title, "body": message.body}, "sound": "default"},
                "kind": message.kind,
                "record_id": str(message.record_id) if message.record_id else None,
            }
        )
        headers = {
            "apns-topic": self._topic,
            "apns-push-type": "alert",
            "apns-priority": "10" if message.kind != "practice_reminder" else "5",
            # A day to reach a phone that is off; after that the push has lost its moment.
            "apns-expiration": str(int(time.time()) + 24 * 3600),
            # A repeat of the same notification replaces the first on the phone.
            "apns-collapse-id": hashlib.sha256(message.collapse_key.encode()).hexdigest()[:64],
        }
        renewed = False
        for attempt in range(1, ATTEMPTS + 1):
            headers["authorization"] = f"bearer {self._provider_token()}"
            try:
                response = await self._client.post(
                    f"{self._url}/3/device/{target.token}", content=body, headers=headers
                )
            except httpx.TransportError as error:
                log.warning("apns_unreachable", error=type(error).__name__, attempt=attempt)
                await asyncio.sleep(retry_delay(None, attempt, self._backoff_s))
                continue
            if response.status_code == 200:
                return PushOutcome(ok=True, detail="200")
            reason = _reason(response)
            if response.status_code == 410 or reason in DEAD_TOKEN:
                return PushOutcome(ok=False, token_invalid=True, detail=f"{response.status_code} {reason}")
            if response.status_code == 403 and reason == "ExpiredProviderToken" and not renewed:
                self._provider_token(renew=True)
                renewed = True
                continue
            if is_busy(response.status_code):
                await asyncio.sleep(retry_delay(response, attempt, self._backoff_s))
                continue
            return PushOutcome(ok=False, detail=f"{response.status_code} {reason}")  # the payload's fault
        return PushOutcome(ok=False, retryable=True, detail="busy or unreachable after retries")


def _reason(response: httpx.Response) -> str:
    try:
        return str(response.json().get("reason", ""))
    except ValueError:
        return ""
