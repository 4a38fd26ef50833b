"""The real APNs client against a local APNs speaking HTTP/2 over TLS."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest

from service.push.apns import APNsProvider
from service.push.base import WORDING, PushMessage, PushTarget
from tests.support.apns import Answer, FakeAPNs
from tests.support.credentials import LocalTLS, apns_key

KEY_ID, TEAM_ID, TOPIC = "KEY1234567", "TEAM123456", "app.kindsync.ios"


@pytest.fixture
async def apns() -> AsyncIterator[tuple[FakeAPNs, APNsProvider, str]]:
    tls = LocalTLS()
    private_pem, public_pem = apns_key()
    fake = FakeAPNs(public_key_pem=public_pem, key_id=KEY_ID, team_id=TEAM_ID, topic=TOPIC)
    url = await fake.start(tls.server)
    async with httpx.AsyncClient(http2=True, verify=tls.client) as client:
        provider = APNsProvider(
            url=url, key_id=KEY_ID, team_id=TEAM_ID, topic=TOPIC, private_key=private_pem, client=client, backoff_s=0.01
        )
        yield fake, provider, private_pem
    await fake.stop()


def target(token: str = "a" * 64) -> PushTarget:
    return PushTarget(device_id=uuid.uuid4(), platform="ios", token=token)


MESSAGE = PushMessage.for_kind("experiment_follow_up", uuid.uuid4(), "experiment_follow_up:abc")


async def test_a_push_carries_generic_words_and_deliberate_headers(apns: tuple[FakeAPNs, APNsProvider, str]) -> None:
    fake, provider, _ = apns
    outcome = await provider.send(target(), MESSAGE)
    assert outcome.ok
    [got] = fake.received
    assert (got.payload["aps"]["alert"]["title"], got.payload["aps"]["alert"]["body"]) == WORDING[MESSAGE.kind]
    assert set(got.payload) == {"aps", "kind", "record_id"}, "the kind and a record id, nothing else"
    assert got.headers["apns-push-type"] == "alert"
    assert got.headers["apns-priority"] == "10"
    assert int(got.headers["apns-expiration"]) > time.time()
    assert len(got.headers["apns-collapse-id"]) <= 64


@pytest.mark.parametrize(("status", "reason"), [(410, "Unregistered"), (400, "BadDeviceToken")])
async def test_a_dead_token_is_reported_at_once(
    apns: tuple[FakeAPNs, APNsProvider, str], status: int, reason: str
) -> None:
    fake, provider, _ = apns
    fake.answers["b" * 64] = Answer(status, reason)
    outcome = await provider.send(target("b" * 64), MESSAGE)
    assert (outcome.ok, outcome.token_invalid) == (False, True)
    assert len(fake.received) == 1, "not retried"


async def test_a_payload_error_is_recorded_and_not_retried(apns: tuple[FakeAPNs, APNsProvider, str]) -> None:
    fake, provider, _ = apns
    fake.answers["c" * 64] = Answer(400, "BadCollapseId")
    outcome = await provider.send(target("c" * 64), MESSAGE)
    assert (outcome.ok, outcome.token_invalid) == (False, False)
    assert "BadCollapseId" in outcome.detail
    assert len(fake.received) == 1


@pytest.mark.parametrize(("status", "reason"), [(429, "TooManyRequests"), (503, "ServiceUnavailable")])
async def test_busy_answers_are_retried_honouring_retry_after(
    apns: tuple[FakeAPNs, APNsProvider, str], status: int, reason: str
) -> None:
    fake, provider, _ = apns
    fake.answers["d" * 64] = Answer(status, reason, retry_after=0, times=2)
    outcome = await provider.send(target("d" * 64), MESSAGE)
    assert outcome.ok
    assert len(fake.received) == 3


async def test_an_expired_provider_token_is_renewed(apns: tuple[FakeAPNs, APNsProvider, str]) -> None:
    fake, provider, private_pem = apns
    stale = jwt.encode(
        {"iss": TEAM_ID, "iat": int(time.time()) - 4000}, private_pem, algorithm="ES256", headers={"kid": KEY_ID}
    )
    provider._token = (stale, time.time())  # a token APNs now calls expired, still in the cache
    outcome = await provider.send(target(), MESSAGE)
    assert outcome.ok
    assert len(fake.received) == 1
