"""Liveness and readiness as an orchestrator sees them."""

from __future__ import annotations

import msgspec

from service.app import create_app
from service.settings import Settings
from tests.integration.conftest import Client, serve

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
UNREACHABLE_POSTGRES = "postgresql://postgres@127.0.0.1:1/kindsync"


async def test_ready_when_postgres_and_redis_answer(client: Client) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"postgres": True, "redis": True}}


async def test_not_ready_without_redis_but_still_alive(settings: Settings, database: str) -> None:
    app = create_app(msgspec.structs.replace(settings, redis_url=UNREACHABLE_REDIS))
    async with serve(app) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"] == {"postgres": True, "redis": False}
        assert (await client.get("/healthz")).status_code == 200


async def test_not_ready_without_postgres(settings: Settings) -> None:
    app = create_app(msgspec.structs.replace(settings, database_url=UNREACHABLE_POSTGRES))
    async with serve(app) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"] == {"postgres": False, "redis": True}
