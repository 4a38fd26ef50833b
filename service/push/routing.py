"""`PUSH_PROVIDER=real`: each device's push goes through its platform's service."""

from __future__ import annotations

import os
import ssl

import httpx
import msgspec

from service.push.apns import APNsProvider
from service.push.base import PushMessage, PushOutcome, PushProvider, PushTarget
from service.push.fcm import FCMProvider, read_service_account
from service.settings import Settings, SettingsError


class ByPlatform:
    name = "real"

    def __init__(self, apns: PushProvider, fcm: PushProvider) -> None:
        # FCM serves Android and web push alike.
        self._providers = {"ios": apns, "android": fcm, "web": fcm}

    async def send(self, target: PushTarget, message: PushMessage) -> PushOutcome:
        chosen = self._providers[target.platform]
        return msgspec.structs.replace(await chosen.send(target, message), provider=chosen.name)


def tls_context() -> ssl.SSLContext:
    """The system's trust store, or the CA bundle named by SSL_CERT_FILE."""
    return ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE") or None)


def real_providers(settings: Settings) -> tuple[ByPlatform, list[httpx.AsyncClient]]:
    """APNs and FCM from the settings, with the long-lived clients to close at shutdown."""
    required = {
        "APNS_KEY_ID": settings.apns_key_id,
        "APNS_TEAM_ID": settings.apns_team_id,
        "APNS_TOPIC": settings.apns_topic,
        "APNS_PRIVATE_KEY": settings.apns_private_key,
        "FCM_SERVICE_ACCOUNT": settings.fcm_service_account,
    }
    missing = [name for name, value in required.items() if not value]
    if missing:
        raise SettingsError(f"PUSH_PROVIDER=real needs {', '.join(missing)}")
    given = {name: str(value) for name, value in required.items()}
    limits = httpx.Limits(max_connections=20, keepalive_expiry=600)
    apns_client = httpx.AsyncClient(http2=True, verify=tls_context(), limits=limits, timeout=10)
    fcm_client = httpx.AsyncClient(verify=tls_context(), limits=limits, timeout=10)
    apns = APNsProvider(
        url=settings.apns_url,
        key_id=given["APNS_KEY_ID"],
        team_id=given["APNS_TEAM_ID"],
        topic=given["APNS_TOPIC"],
        private_key=given["APNS_PRIVATE_KEY"],
        client=apns_client,
    )
    fcm = FCMProvider(
        service_account=read_service_account(given["FCM_SERVICE_ACCOUNT"]),
        url=settings.fcm_url,
        token_url=settings.fcm_token_url,
        client=fcm_client,
    )
    return ByPlatform(apns, fcm), [apns_client, fcm_client]
