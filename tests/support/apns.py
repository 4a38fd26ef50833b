"""A local APNs: HTTP/2 over TLS, checking what Apple checks, answering what Apple answers.

The real client (service/push/apns.py) runs against it. It verifies the
provider token (ES256, key id, team, age), the headers and the payload, and a
test can tell it how to answer a device token: a status, a reason, and a
Retry-After.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, RequestReceived, StreamEnded

MAX_PAYLOAD = 4096


@dataclass
class Answer:
    status: int
    reason: str | None = None
    retry_after: int | None = None
    times: int = 1_000_000  # how many requests get this answer before success


@dataclass
class Received:
    token: str
    headers: dict[str, str]
    payload: dict[str, Any]


@dataclass
class FakeAPNs:
    public_key_pem: str
    key_id: str
    team_id: str
    topic: str
    answers: dict[str, Answer] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    issued_at_seen: set[int] = field(default_factory=set)
    revoked_tokens: set[str] = field(default_factory=set)  # provider tokens to call expired
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self, ssl_context: ssl.SSLContext) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        port = self._server.sockets[0].getsockname()[1]
        return f"https://localhost:{port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for handler in list(self._handlers):
                handler.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
        conn = H2Connection(config=H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, RequestReceived):
                        streams[event.stream_id] = (dict(event.headers), bytearray())  # type: ignore[arg-type]
                    elif isinstance(event, DataReceived):
                        streams[event.stream_id][1].extend(event.data)
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, StreamEnded):
                        headers, body = streams.pop(event.stream_id)
                        status, extra, answer = self._answer(headers, bytes(body))
                        response = [(":status", str(status)), ("apns-id", "00000000-0000-0000-0000-000000000000")]
                        conn.send_headers(event.stream_id, response + extra, end_stream=answer is None)
                        if answer is not None:
                            conn.send_data(event.stream_id, answer, end_stream=True)
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, ssl.SSLError, asyncio.CancelledError):
            pass  # the client left, or the fake is stopping: a handler just ends
        finally:
            if handler is not None:
                self._handlers.discard(handler)
            writer.close()

    def _answer(self, headers: dict[str, str], body: bytes) -> tuple[int, list[tuple[str, str]], bytes | None]:
        def error(
            status: int, reason: str, extra: list[tuple[str, str]] | None = None
        ) -> tuple[int, list[tuple[str, str]], bytes | None]:
            return status, extra or [], json.dumps({"reason": reason}).encode()

        path = headers.get(":path", "")
        if headers.get(":method") != "POST" or not path.startswith("/3/device/"):
            return error(404, "BadPath")
        token = path.removeprefix("/3/device/")
        bearer = headers.get("authorization", "").removeprefix("bearer ")
        try:
            claims = jwt.decode(bearer, self.public_key_pem, algorithms=["ES256"], options={"verify_exp": False})
            key_id = jwt.get_unverified_header(bearer).get("kid")
        except jwt.PyJWTError:
            return error(403, "InvalidProviderToken")
        if key_id != self.key_id or claims.get("iss") != self.team_id:
            return error(403, "InvalidProviderToken")
        if bearer in self.revoked_tokens or time.time() - claims["iat"] > 3600:
            return error(403, "ExpiredProviderToken")
        self.issued_at_seen.add(claims["iat"])
        if headers.get("apns-topic") != self.topic:
            return error(400, "BadTopic")
        if headers.get("apns-push-type") not in ("alert", "background"):
            return error(400, "InvalidPushType")
        if len(body) > MAX_PAYLOAD:
            return error(413, "PayloadTooLarge")
        try:
            payload = json.loads(body)
        except ValueError:
            return error(400, "PayloadEmpty")
        self.received.append(Received(token=token, headers=headers, payload=payload))
        answer = self.answers.get(token)
        if answer is None or answer.times <= 0:
            return 200, [], None
        answer.times -= 1
        extra = [("retry-after", str(answer.retry_after))] if answer.retry_after is not None else []
        return error(answer.status, answer.reason or "", extra)
