"""A person can take away everything kindsync holds about them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.conftest import Client, assert_problem, bearer, signup
from tests.integration.pushes import Recorder, follow_up_at
from workers.jobs.push import deliver


async def test_export_holds_records_with_history_devices_and_notifications(client: Client, engine: AsyncEngine) -> None:
    tokens = await signup(client, email="export@example.org")
    other = await signup(client, email="someone-else@example.org")
    device_id = str(uuid.uuid4())
    put = await client.put(
        f"/v1/devices/{device_id}", json={"platform": "android", "push_token": "t-1"}, headers=bearer(tokens)
    )
    assert put.status_code == 200
    record_id, now = str(uuid.uuid4()), datetime.now(UTC).isoformat()
    for base, body in ((0, "first words"), (1, "second words")):
        data = {"occurred_at": now, "body": body} if base == 0 else {"body": body}
        mutation = {
            "id": record_id,
            "kind": "journal_entry",
            "op": "upsert",
            "base_version": base,
            "changed_at": now,
            "data": data,
        }
        sync = {"device_id": device_id, "batch_id": str(uuid.uuid4()), "mutations": [mutation]}
        assert (await client.post("/v1/sync", json=sync, headers=bearer(tokens))).status_code == 200
    due = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    await follow_up_at(client, engine, tokens, due)
    await deliver(engine, Recorder(), due)

    response = await client.get("/v1/account/export", headers=bearer(tokens))
    assert response.status_code == 200, response.text
    export = response.json()
    assert (export["user_id"], export["email"]) == (tokens["user_id"], "export@example.org")
    journal = next(r for r in export["records"] if r["record"]["id"] == record_id)
    assert journal["record"]["data"]["body"] == "second words"
    assert [v["data"]["body"] for v in journal["history"]] == ["second words", "first words"]
    assert [d["device_id"] for d in export["devices"]] == [device_id]
    assert [(n["kind"], n["status"]) for n in export["notifications"]] == [("experiment_follow_up", "sent")]
    assert other["user_id"] not in response.text

    assert_problem(await client.get("/v1/account/export"), 401)
