"""Helpers for tests that plan and deliver notifications."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from service.push.base import PushMessage, PushOutcome, PushTarget
from tests.integration.conftest import Client, anonymous, bearer
from workers.jobs.events import on_records_changed

SENTINEL = "my sister said I am too much"


class Recorder:
    """Stands in for APNs and FCM: keeps what would have reached each device."""

    name = "recorder"

    def __init__(self) -> None:
        self.sent: list[tuple[PushTarget, PushMessage]] = []

    async def send(self, target: PushTarget, message: PushMessage) -> PushOutcome:
        self.sent.append((target, message))
        return PushOutcome(ok=True)


async def person(client: Client, prefs: dict[str, Any], devices: int = 2) -> Any:
    tokens = await anonymous(client)
    for n in range(devices):
        device = {"platform": "ios", "push_token": f"token-{uuid.uuid4()}-{n}"}
        assert (await client.put(f"/v1/devices/{uuid.uuid4()}", json=device, headers=bearer(tokens))).status_code == 200
    await sync(client, tokens, [("preferences", tokens["user_id"], {"timezone": "Pacific/Auckland", **prefs})])
    return tokens


async def sync(client: Client, tokens: Any, records: list[tuple[str, str, dict[str, Any]]]) -> None:
    body = {
        "device_id": str(uuid.uuid4()),
        "batch_id": str(uuid.uuid4()),
        "mutations": [
            {
                "id": rid,
                "kind": kind,
                "op": "upsert",
                "base_version": 0,
                "changed_at": datetime.now(UTC).isoformat(),
                "data": data,
            }
            for kind, rid, data in records
        ],
    }
    response = await client.post("/v1/sync", json=body, headers=bearer(tokens))
    assert all(r["status"] == "applied" for r in response.json()["results"]), response.text


async def follow_up_at(client: Client, engine: AsyncEngine, tokens: Any, due: datetime) -> None:
    """An experiment whose follow-up is due at `due`, planned as the outbox consumer plans it."""
    record_id = str(uuid.uuid4())
    await sync(
        client,
        tokens,
        [
            (
                "as_if_experiment",
                record_id,
                {
                    "planned_for": due.isoformat(),
                    "target_belief": "I deserve kindness",
                    "intention": SENTINEL,
                    "behaviours": [SENTINEL],
                    "predicted_mood": 4,
                    "belief_before": 20,
                    "follow_up_at": due.isoformat(),
                    "status": "planned",
                },
            )
        ],
    )
    await on_records_changed(
        {"engine": engine}, {"user_id": tokens["user_id"], "records": [[record_id, "as_if_experiment", 1, False]]}
    )
