"""A local FCM: the OAuth2 token endpoint and `messages:send`, as Google answers them.

The real client (service/push/fcm.py) runs against it over HTTP. It verifies
the service account's signed assertion (RS256, audience, scope), hands out
access tokens that it can later call expired, checks the message, and a test
can tell it how to answer a device token.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
import uvicorn
from litestar import Litestar, Request, Response, post

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"


@dataclass
class Answer:
    status: int
    code: str
    retry_after: int | None = None
    times: int = 1_000_000


@dataclass
class FakeFCM:
    public_key_pem: str
    client_email: str
    project_id: str
    answers: dict[str, Answer] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)
    tokens_issued: int = 0
    expired: set[str] = field(default_factory=set)
    base_url: str = ""
    _valid: set[str] = field(default_factory=set)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    def app(self) -> Litestar:
        @post("/token", status_code=200)
        async def token(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
            form = await request.form()
            try:
                claims = jwt.decode(
                    str(form.get("assertion")),
                    self.public_key_pem,
                    algorithms=["RS256"],
                    audience=f"{self.base_url}/token",
                )
            except jwt.PyJWTError:
                return Response({"error": "invalid_grant"}, status_code=400)
            if claims.get("iss") != self.client_email or claims.get("scope") != SCOPE:
                return Response({"error": "invalid_grant"}, status_code=400)
            access = secrets.token_urlsafe(16)
            self._valid.add(access)
            self.tokens_issued += 1
            return Response({"access_token": access, "expires_in": 3599, "token_type": "Bearer"})

        @post(f"/v1/projects/{self.project_id}/messages:send", status_code=200)
        async def send(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
            access = request.headers.get("authorization", "").removeprefix("Bearer ")
            if access not in self._valid or access in self.expired:
                return error(401, "UNAUTHENTICATED", "UNAUTHENTICATED")
            body = await request.json()
            message = body.get("message", {})
            if "token" not in message or "notification" not in message:
                return error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")
            self.received.append(message)
            answer = self.answers.get(message["token"])
            if answer is None or answer.times <= 0:
                return Response({"name": f"projects/{self.project_id}/messages/{time.time_ns()}"})
            answer.times -= 1
            headers = {"retry-after": str(answer.retry_after)} if answer.retry_after is not None else {}
            return error(answer.status, answer.code, answer.code, headers)

        def error(status: int, name: str, code: str, headers: dict[str, str] | None = None) -> Response[Any]:
            body = {
                "error": {
                    "code": status,
                    "status": name,
                    "message": code,
                    "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}],
                }
            }
            return Response(body, status_code=status, headers=headers or {})

        return Litestar([token, send], logging_config=None)

    async def start(self, port: int) -> str:
        self.base_url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            self.app(), host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:  # noqa: ASYNC110 (uvicorn offers a flag, not an event)
            await asyncio.sleep(0.01)
        return self.base_url

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
