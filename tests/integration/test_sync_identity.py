"""Records are told apart by id, never by content."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from tests.integration.conftest import Client, anonymous, bearer


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
