"""Operator calls need the admin token; without one configured there is no admin access."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import msgspec
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from service.app import create_app
from service.db.tables import records
from service.settings import Settings
from tests.integration.conftest import Client, anonymous, assert_problem, bearer, serve
from tests.integration.processes import eventually

ADMIN_TOKEN = "admin-" + "a" * 40


@pytest.fixture
async def admin_client(settings: Settings, database: str) -> AsyncIterator[Client]:
    async with serve(create_app(msgspec.structs.replace(settings, admin_token=ADMIN_TOKEN))) as client:
        yield client


async def test_no_admin_access_without_a_configured_token(client: Client) -> None:
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer None"}):
        assert_problem(await client.post("/admin/insights/run", json={}, headers=headers), 401)


async def test_a_missing_or_wrong_token_is_401(admin_client: Client) -> None:
    assert_problem(await admin_client.post("/admin/insights/run", json={}), 401)
    wrong = {"Authorization": f"Bearer {ADMIN_TOKEN}x"}
    assert_problem(await admin_client.post("/admin/insights/run", json={}, headers=wrong), 401)
    user = await anonymous(admin_client)  # a person's access token is no admin token
    assert_problem(await admin_client.post("/admin/insights/run", json={}, headers=bearer(user)), 401)


async def test_week_start_must_be_a_monday(admin_client: Client) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = await admin_client.post("/admin/insights/run", json={"week_start": "2026-11-17"}, headers=headers)
    assert_problem(response, 422, path="week_start")


async def test_running_insights_for_one_person_is_accepted_and_done_by_a_worker(
    admin_client: Client, engine: AsyncEngine, worker: subprocess.Popen[bytes]
) -> None:
    tokens = await anonymous(admin_client)
    now = datetime.now(UTC).isoformat()
    body = {
        "device_id": str(uuid.uuid4()),
        "batch_id": str(uuid.uuid4()),
        "mutations": [
            {
                "id": str(uuid.uuid4()),
                "kind": "mood_checkin",
                "op": "upsert",
                "base_version": 0,
                "changed_at": now,
                "data": {"occurred_at": now, "mood": 6},
            }
        ],
    }
    assert (await admin_client.post("/v1/sync", json=body, headers=bearer(tokens))).status_code == 200
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = await admin_client.post("/admin/insights/run", json={"user_id": tokens["user_id"]}, headers=headers)
    assert response.status_code == 202, response.text
    assert response.json()["job_id"].startswith("insights:")

    async def insight_written() -> bool:
        async with engine.connect() as conn:
            kinds = (await conn.execute(select(records.c.kind))).scalars().all()
        return "weekly_insight" in kinds

    await eventually(insight_written)
