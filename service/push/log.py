"""The development provider: a push is a log line (never the token or any text)."""

from __future__ import annotations

import structlog

from service.push.base import PushMessage, PushOutcome, PushTarget

log = structlog.get_logger(__name__)


class LogProvider:
    name = "log"

    async def send(self, target: PushTarget, message: PushMessage) -> PushOutcome:
        log.info(
            "push_sent",
            provider=self.name,
            kind=message.kind,
            device_id=str(target.device_id),
            platform=target.platform,
        )
        return PushOutcome(ok=True, detail="logged")
