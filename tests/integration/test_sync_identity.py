"""Who a record belongs to: told apart by id, never by content; never a person who is gone."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.tables import users
from tests.integration.conftest import Client, anonymous, assert_problem, bearer


async def test_identical_content_in_two_records_is_two_records(client: Client) -> None:
    tokens = await anonymous(client)
    now = datetime.now(UTC).isoformat()
    same = {"occurred_at": now, "mood": 5}
    ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    request = {
        "device_id": str(uuid.uuid4()),
        "batch_id": str(uuid.uuid4()),
        "mutations": [
            {
                "id": record_id,
                "kind": "mood_checkin",
                "op": "upsert",
                "base_version": 0,
                "changed_at": now,
                "data": same,
            }
            for record_id in ids
        ],
    }
    response = await client.post("/v1/sync", json=request, headers=bearer(tokens))
    assert response.status_code == 200, response.text
    assert [r["status"] for r in response.json()["results"]] == ["applied", "applied"]
    manifest = (await client.get("/v1/sync/manifest", headers=bearer(tokens))).json()
    assert manifest["records"] == 2


async def test_a_token_that_outlives_its_account_is_401_not_500(client: Client, engine: AsyncEngine) -> None:
    tokens = await anonymous(client)
    async with engine.begin() as conn:
        await conn.execute(delete(users))
    now = datetime.now(UTC).isoformat()
    for mutations in (
        [],
        [
            {
                "id": str(uuid.uuid4()),
                "kind": "mood_checkin",
                "op": "upsert",
                "base_version": 0,
                "changed_at": now,
                "data": {"occurred_at": now, "mood": 5},
            }
        ],
    ):
        body = {"device_id": str(uuid.uuid4()), "batch_id": str(uuid.uuid4()), "mutations": mutations}
        assert_problem(await client.post("/v1/sync", json=body, headers=bearer(tokens)), 401)


async def test_a_record_made_offline_and_edited_again_before_syncing_keeps_both_edits(client: Client) -> None:
    """The second edit is sent with base_version 0 (nothing was confirmed yet) and only its change."""
    tokens = await anonymous(client)
    record_id, now = str(uuid.uuid4()), datetime.now(UTC).isoformat()
    create = {"occurred_at": now, "body": "I walked in the rain"}
    mutations = [
        {
            "id": record_id,
            "kind": "journal_entry",
            "op": "upsert",
            "base_version": 0,
            "changed_at": now,
            "data": create,
        },
        {
            "id": record_id,
            "kind": "journal_entry",
            "op": "upsert",
            "base_version": 0,
            "changed_at": now,
            "data": {"body": "I walked in the rain and it was fine"},
        },
    ]
    body = {"device_id": str(uuid.uuid4()), "batch_id": str(uuid.uuid4()), "mutations": mutations}
    response = await client.post("/v1/sync", json=body, headers=bearer(tokens))
    assert [r["status"] for r in response.json()["results"]] == ["applied", "applied"], response.text
    record = (await client.get(f"/v1/records/journal_entry/{record_id}", headers=bearer(tokens))).json()
    assert record["data"]["body"] == "I walked in the rain and it was fine"
    assert record["version"] == 2
