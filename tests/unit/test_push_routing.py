"""`PUSH_PROVIDER=real` sends each device's push through its platform's service."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from service.push.base import PushMessage, PushOutcome, PushTarget
from service.push.routing import ByPlatform, real_providers
from service.settings import Settings, SettingsError


class Named:
    def __init__(self, name: str) -> None:
        self.name = name
        self.got: list[str] = []

    async def send(self, target: PushTarget, message: PushMessage) -> PushOutcome:
        self.got.append(target.platform)
        return PushOutcome(ok=True)


async def test_ios_goes_to_apns_android_and_web_to_fcm() -> None:
    apns, fcm = Named("apns"), Named("fcm")
    router = ByPlatform(apns, fcm)
    message = PushMessage.for_kind("practice_reminder", None, "practice_reminder:2026-11-20")
    for platform in ("ios", "android", "web"):
        await router.send(PushTarget(device_id=uuid.uuid4(), platform=platform, token="t"), message)
    assert (apns.got, fcm.got) == (["ios"], ["android", "web"])


def test_real_push_names_every_missing_setting(tmp_path: Path) -> None:
    settings = Settings.from_env({"PUSH_PROVIDER": "real", "APNS_KEY_ID": "K"}, secret_file=tmp_path / "s")
    with pytest.raises(SettingsError, match="APNS_TEAM_ID, APNS_TOPIC, APNS_PRIVATE_KEY, FCM_SERVICE_ACCOUNT"):
        real_providers(settings)
