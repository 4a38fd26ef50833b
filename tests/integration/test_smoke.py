from __future__ import annotations

from tests.integration.conftest import Client, bearer, signup


async def test_signup_then_register_device(client: Client) -> None:
    tokens = await signup(client)
    response = await client.put(
        "/v1/devices/0190f0a4-4a3e-7000-8000-000000000001",
        json={
            "platform": "ios",
            "push_token": "abc",
            "app_version": "1.0",
            "locale": "en-GB",
            "timezone": "Europe/London",
        },
        headers=bearer(tokens),
    )
    assert response.status_code == 200, response.text
    assert response.json()["push_enabled"] is True
