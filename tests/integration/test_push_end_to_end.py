"""A real worker with PUSH_PROVIDER=real delivers through the local APNs and FCM."""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from arq.connections import ArqRedis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.jobs import DELIVER_DUE
from service.db.tables import deliveries, notifications
from service.settings import Settings
from tests.integration.conftest import Client, bearer
from tests.integration.processes import environment, eventually, free_port, start
from tests.integration.pushes import follow_up_at, person
from tests.support.apns import FakeAPNs
from tests.support.credentials import LocalTLS, apns_key, service_account_key
from tests.support.fcm import FakeFCM


async def test_a_real_worker_reaches_an_iphone_and_an_android_phone(
    client: Client, engine: AsyncEngine, redis: ArqRedis, settings: Settings, tmp_path: Path
) -> None:
    tls = LocalTLS()
    ca_file = tls.write_ca(tmp_path / "ca.pem")
    apns_private, apns_public = apns_key()
    fcm_private, fcm_public = service_account_key()
    apns = FakeAPNs(public_key_pem=apns_public, key_id="KEY1234567", team_id="TEAM123456", topic="app.kindsync")
    fcm = FakeFCM(public_key_pem=fcm_public, client_email="push@kindsync.test", project_id="kindsync-test")
    apns_url = await apns.start(tls.server)
    fcm_url = await fcm.start(free_port())
    worker: subprocess.Popen[bytes] | None = None
    try:
        # No quiet hours (start equals end), so the push goes now at any time of day.
        tokens = await person(client, {"quiet_start": "00:00", "quiet_end": "00:00"}, devices=0)
        for platform, token in (("ios", "a" * 64), ("android", "android-token")):
            device = {"platform": platform, "push_token": token}
            response = await client.put(f"/v1/devices/{uuid.uuid4()}", json=device, headers=bearer(tokens))
            assert response.status_code == 200
        await follow_up_at(client, engine, tokens, datetime.now(UTC) - timedelta(minutes=1))

        account = {
            "project_id": "kindsync-test",
            "client_email": "push@kindsync.test",
            "private_key": fcm_private,
            "private_key_id": "k1",
            "token_uri": f"{fcm_url}/token",
        }
        worker = start(
            ["worker"],
            environment(
                settings,
                PUSH_PROVIDER="real",
                APNS_URL=apns_url,
                APNS_KEY_ID="KEY1234567",
                APNS_TEAM_ID="TEAM123456",
                APNS_TOPIC="app.kindsync",
                APNS_PRIVATE_KEY=apns_private,
                FCM_URL=fcm_url,
                FCM_SERVICE_ACCOUNT=json.dumps(account),
                SSL_CERT_FILE=str(ca_file),
            ),
        )
        # Enqueued now; the worker's own 30-second cron may get there first, which is as good.
        job = await redis.enqueue_job(DELIVER_DUE)
        assert job is not None
        await job.result(timeout=30)

        async def follow_up_sent() -> bool:
            async with engine.connect() as conn:
                query = select(notifications.c.status).where(notifications.c.kind == "experiment_follow_up")
                return (await conn.execute(query)).scalars().all() == ["sent"]

        await eventually(follow_up_sent)
        assert [r.token for r in apns.received if r.payload["kind"] == "experiment_follow_up"] == ["a" * 64]
        assert [m["token"] for m in fcm.received if m["data"]["kind"] == "experiment_follow_up"] == ["android-token"]
        async with engine.connect() as conn:
            query = select(deliveries.c.provider, deliveries.c.status).where(
                deliveries.c.dedupe_key.like("experiment_follow_up:%")
            )
            assert sorted((await conn.execute(query)).all()) == [("apns", "sent"), ("fcm", "sent")]
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        await apns.stop()
        await fcm.stop()
