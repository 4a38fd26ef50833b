"""The real FCM client against a local FCM with its OAuth token endpoint."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from service.push.base import WORDING, PushMessage, PushTarget
from service.push.fcm import FCMProvider
from tests.integration.processes import free_port
from tests.support.credentials import service_account_key
from tests.support.fcm import Answer, FakeFCM

EMAIL, PROJECT = "push@kindsync-test.iam.gserviceaccount.com", "kindsync-test"
MESSAGE = PushMessage.for_kind("weekly_insight_ready", None, "weekly_insight_ready:2026-11-16")


@pytest.fixture
async def fcm() -> AsyncIterator[tuple[FakeFCM, FCMProvider]]:
    private_pem, public_pem = service_account_key()
    fake = FakeFCM(public_key_pem=public_pem, client_email=EMAIL, project_id=PROJECT)
    url = await fake.start(free_port())
    account = {
        "project_id": PROJECT,
        "client_email": EMAIL,
        "private_key": private_pem,
        "private_key_id": "k1",
        "token_uri": f"{url}/token",
    }
    async with httpx.AsyncClient() as client:
        yield fake, FCMProvider(service_account=account, url=url, token_url=None, client=client, backoff_s=0.01)
    await fake.stop()


def target(token: str = "fcm-token-1") -> PushTarget:
    return PushTarget(device_id=uuid.uuid4(), platform="android", token=token)


async def test_a_push_is_sent_with_a_cached_access_token(fcm: tuple[FakeFCM, FCMProvider]) -> None:
    fake, provider = fcm
    assert (await provider.send(target(), MESSAGE)).ok
    assert (await provider.send(target("fcm-token-2"), MESSAGE)).ok
    assert fake.tokens_issued == 1, "the access token is cached until it expires"
    sent = fake.received[0]
    assert (sent["notification"]["title"], sent["notification"]["body"]) == WORDING[MESSAGE.kind]
    assert sent["data"] == {"kind": MESSAGE.kind, "record_id": ""}
    assert sent["android"]["collapse_key"] == MESSAGE.collapse_key


@pytest.mark.parametrize(("status", "code"), [(404, "UNREGISTERED"), (403, "SENDER_ID_MISMATCH")])
async def test_a_dead_token_is_reported_at_once(fcm: tuple[FakeFCM, FCMProvider], status: int, code: str) -> None:
    fake, provider = fcm
    fake.answers["dead"] = Answer(status, code)
    outcome = await provider.send(target("dead"), MESSAGE)
    assert (outcome.ok, outcome.token_invalid) == (False, True)
    assert len(fake.received) == 1


async def test_a_payload_error_is_not_retried(fcm: tuple[FakeFCM, FCMProvider]) -> None:
    fake, provider = fcm
    fake.answers["bad"] = Answer(400, "INVALID_ARGUMENT")
    outcome = await provider.send(target("bad"), MESSAGE)
    assert (outcome.ok, outcome.token_invalid) == (False, False)
    assert len(fake.received) == 1


@pytest.mark.parametrize(("status", "code"), [(429, "QUOTA_EXCEEDED"), (503, "UNAVAILABLE")])
async def test_busy_answers_are_retried(fcm: tuple[FakeFCM, FCMProvider], status: int, code: str) -> None:
    fake, provider = fcm
    fake.answers["busy"] = Answer(status, code, retry_after=0, times=2)
    assert (await provider.send(target("busy"), MESSAGE)).ok
    assert len(fake.received) == 3


async def test_an_expired_access_token_is_renewed(fcm: tuple[FakeFCM, FCMProvider]) -> None:
    fake, provider = fcm
    assert (await provider.send(target(), MESSAGE)).ok
    fake.expired.update(fake._valid)
    assert (await provider.send(target(), MESSAGE)).ok
    assert fake.tokens_issued == 2
