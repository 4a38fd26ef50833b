"""Even shares of keep-alive connections across the API processes (API_PROCESSES > 1).

The kernel places each new connection on one of the processes' SO_REUSEPORT sockets by a hash of
its addresses. With a few long-lived connections (a reverse proxy's upstream pool, sixteen phones
syncing back to back) the split can stay twelve to four for as long as they live, and the busier
process sets everyone's latency while the other idles. So each process publishes how many
connections it holds, and one holding more than its share answers a request with
`Connection: close`: the client connects again, as HTTP/1.1 clients do for any server, and the
kernel places the new connection afresh, until the shares are even.
"""

from __future__ import annotations

import time
from collections.abc import Callable, MutableSequence

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

# At most one connection closed per process in this many seconds: the counts the processes
# publish lag a little, and closing several at once would overshoot.
CLOSE_EVERY_S = 0.05


class Shares:
    """Connections held by each API process, in memory they share: one slot each."""

    def __init__(self, counts: MutableSequence[int], slot: int) -> None:
        self._counts = counts
        self._slot = slot

    def publish(self, held: int) -> None:
        self._counts[self._slot] = held

    def over_share(self, held: int) -> bool:
        """Whether this process, holding `held` connections, holds more than an even share."""
        self.publish(held)
        counts = list(self._counts)
        even_share = -(-sum(counts) // len(counts))  # rounded up: an odd one out may stay
        return held > even_share


class EvenShares:
    """ASGI middleware: close a connection after its answer while this process holds more than
    its share (`held()` tells how many it holds)."""

    def __init__(self, app: ASGIApp, shares: Shares, held: Callable[[], int]) -> None:
        self._app = app
        self._shares = shares
        self._held = held
        self._last_close = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self._app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and self._should_close():
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self._app(scope, receive, send_closing)

    def _should_close(self) -> bool:
        now = time.monotonic()
        if now - self._last_close < CLOSE_EVERY_S or not self._shares.over_share(self._held()):
            return False
        self._last_close = now
        return True
