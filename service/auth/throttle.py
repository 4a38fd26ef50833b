"""Failed-login counters in Redis, per account and per client address.

Fixed windows: each failure increments a counter that expires with its
window; while a counter is at its limit, logins for it answer 429 with the
seconds left. When Redis cannot be reached the throttle lets logins through
(Argon2 itself keeps guessing slow) rather than locking everyone out.
"""

from __future__ import annotations

import hashlib
import hmac

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)


class LoginThrottle:
    def __init__(
        self,
        redis: Redis,
        *,
        secret_key: str,
        max_per_account: int,
        max_per_address: int,
        window_s: int,
    ) -> None:
        self._redis = redis
        self._secret = secret_key.encode()
        self._limits = {"acct": max_per_account, "addr": max_per_address}
        self._window_s = window_s

    def _keys(self, email: str, address: str) -> dict[str, str]:
        # Keys carry a keyed digest, never the email or address itself.
        def digest(value: str) -> str:
            return hmac.new(self._secret, value.encode(), hashlib.sha256).hexdigest()[:32]

        return {
            "acct": f"kindsync:login-fail:acct:{digest(email)}",
            "addr": f"kindsync:login-fail:addr:{digest(address)}",
        }

    async def retry_after(self, email: str, address: str) -> int | None:
        """Seconds until a login may be tried again, or None when allowed now."""
        keys = self._keys(email, address)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys.values():
                    pipe.get(key)
                    pipe.ttl(key)
                answers = await pipe.execute()
        except RedisError:
            log.warning("login_throttle_unavailable")
            return None
        waits = []
        for index, kind in enumerate(keys):
            count, ttl = answers[2 * index], answers[2 * index + 1]
            if count is not None and int(count) >= self._limits[kind]:
                waits.append(max(int(ttl), 1))
        return max(waits) if waits else None

    async def record_failure(self, email: str, address: str) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for key in self._keys(email, address).values():
                    pipe.incr(key)
                    pipe.expire(key, self._window_s, nx=True)
                await pipe.execute()
        except RedisError:
            log.warning("login_throttle_unavailable")

    async def record_success(self, email: str, address: str) -> None:
        """A right password clears the account's counter, not the address's."""
        try:
            await self._redis.delete(self._keys(email, address)["acct"])
        except RedisError:
            log.warning("login_throttle_unavailable")
