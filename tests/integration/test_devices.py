"""`/v1/devices/{device_id}` through HTTP, against the real app and Postgres."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.tables import devices, users
from tests.integration.conftest import Client, anonymous, assert_problem, bearer, signup

DEVICE_FIELDS = {"device_id", "platform", "push_enabled", "app_version", "locale", "timezone", "last_seen_at"}


def registration(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "platform": "ios",
        "push_token": "apns-token-1",
        "app_version": "1.4.2",
        "locale": "en-GB",
        "timezone": "Europe/London",
    }
    body.update(changes)
    return body


def url(device_id: uuid.UUID | str) -> str:
    return f"/v1/devices/{device_id}"


async def put_device(client: Client, tokens: Any, device_id: uuid.UUID, **changes: Any) -> dict[str, Any]:
    response = await client.put(url(device_id), json=registration(**changes), headers=bearer(tokens))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def device_rows(engine: AsyncEngine) -> list[Row[Any]]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(devices).order_by(devices.c.created_at))).all())


async def device_row(engine: AsyncEngine, tokens: Any, device_id: uuid.UUID) -> Row[Any] | None:
    async with engine.connect() as conn:
        result = await conn.execute(
            select(devices).where(devices.c.user_id == uuid.UUID(tokens["user_id"]), devices.c.id == device_id)
        )
        return result.one_or_none()


async def holders(engine: AsyncEngine, push_token: str) -> list[Row[Any]]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(devices).where(devices.c.push_token == push_token))).all())


async def test_register_answers_the_device(client: Client, engine: AsyncEngine) -> None:
    tokens = await signup(client)
    device_id = uuid.uuid4()

    response = await client.put(url(device_id), json=registration(), headers=bearer(tokens))

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == DEVICE_FIELDS
    assert body["device_id"] == str(device_id)
    assert body["platform"] == "ios"
    assert body["push_enabled"] is True
    assert body["app_version"] == "1.4.2"
    assert body["locale"] == "en-GB"
    assert body["timezone"] == "Europe/London"
    assert datetime.fromisoformat(body["last_seen_at"]).tzinfo is not None
    row = await device_row(engine, tokens, device_id)
    assert row is not None
    assert row.push_token == "apns-token-1"
    assert row.push_enabled is True


@pytest.mark.parametrize("token_field", [{"push_token": None}, {}], ids=["null-token", "absent-token"])
async def test_register_without_token_has_push_disabled(
    client: Client, engine: AsyncEngine, token_field: dict[str, Any]
) -> None:
    tokens = await anonymous(client)
    device_id = uuid.uuid4()
    body = {key: value for key, value in registration(platform="android").items() if key != "push_token"}
    body.update(token_field)

    response = await client.put(url(device_id), json=body, headers=bearer(tokens))

    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == DEVICE_FIELDS
    assert answer["platform"] == "android"
    assert answer["push_enabled"] is False
    row = await device_row(engine, tokens, device_id)
    assert row is not None
    assert row.push_token is None
    assert row.push_enabled is False


async def test_register_only_required_platform_leaves_optional_fields_null(client: Client) -> None:
    tokens = await anonymous(client)
    device_id = uuid.uuid4()

    response = await client.put(url(device_id), json={"platform": "web"}, headers=bearer(tokens))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["device_id"] == str(device_id)
    assert body["platform"] == "web"
    assert body["push_enabled"] is False
    assert body["app_version"] is None
    assert body["locale"] is None
    assert body["timezone"] is None


async def test_register_is_idempotent(client: Client, engine: AsyncEngine) -> None:
    tokens = await signup(client)
    device_id = uuid.uuid4()

    first = await put_device(client, tokens, device_id)
    second = await put_device(client, tokens, device_id)

    assert {k: v for k, v in second.items() if k != "last_seen_at"} == {
        k: v for k, v in first.items() if k != "last_seen_at"
    }
    assert second["push_enabled"] is True
    assert datetime.fromisoformat(second["last_seen_at"]) >= datetime.fromisoformat(first["last_seen_at"])
    rows = await device_rows(engine)
    assert len(rows) == 1
    assert rows[0].id == device_id
    assert rows[0].push_token == "apns-token-1"


async def test_register_again_updates_the_device(client: Client, engine: AsyncEngine) -> None:
    tokens = await signup(client)
    device_id = uuid.uuid4()
    await put_device(client, tokens, device_id)

    body = await put_device(
        client, tokens, device_id, app_version="1.5.0", locale="de-DE", timezone="Europe/Berlin", platform="android"
    )

    assert body["app_version"] == "1.5.0"
    assert body["locale"] == "de-DE"
    assert body["timezone"] == "Europe/Berlin"
    assert body["platform"] == "android"
    rows = await device_rows(engine)
    assert len(rows) == 1
    assert (rows[0].app_version, rows[0].locale, rows[0].timezone) == ("1.5.0", "de-DE", "Europe/Berlin")


async def test_new_token_replaces_the_old_one(client: Client, engine: AsyncEngine) -> None:
    tokens = await signup(client)
    device_id = uuid.uuid4()
    await put_device(client, tokens, device_id, push_token="old-token")

    body = await put_device(client, tokens, device_id, push_token="new-token")

    assert body["push_enabled"] is True
    row = await device_row(engine, tokens, device_id)
    assert row is not None
    assert row.push_token == "new-token"
    assert row.push_enabled is True
    assert await holders(engine, "old-token") == []
    assert len(await device_rows(engine)) == 1


async def test_null_token_switches_push_off(client: Client, engine: AsyncEngine) -> None:
    tokens = await signup(client)
    device_id = uuid.uuid4()
    await put_device(client, tokens, device_id, push_token="some-token")

    body = await put_device(client, tokens, device_id, push_token=None)

    assert body["push_enabled"] is False
    row = await device_row(engine, tokens, device_id)
    assert row is not None
    assert row.push_token is None
    assert row.push_enabled is False


@pytest.mark.parametrize("same_user", [False, True], ids=["other-user", "same-user"])
async def test_token_held_by_another_device_moves(client: Client, engine: AsyncEngine, same_user: bool) -> None:
    first_owner = await signup(client, email="first@example.org")
    second_owner = first_owner if same_user else await signup(client, email="second@example.org")
    first_device, second_device = uuid.uuid4(), uuid.uuid4()
    await put_device(client, first_owner, first_device, push_token="shared-token")

    body = await put_device(client, second_owner, second_device, push_token="shared-token", platform="android")

    assert body["push_enabled"] is True
    old = await device_row(engine, first_owner, first_device)
    assert old is not None, "the device that lost the token must still exist"
    assert old.push_token is None
    assert old.push_enabled is False
    new = await device_row(engine, second_owner, second_device)
    assert new is not None
    assert new.push_token == "shared-token"
    assert new.push_enabled is True
    assert [(row.user_id, row.id) for row in await holders(engine, "shared-token")] == [
        (uuid.UUID(second_owner["user_id"]), second_device)
    ]


async def test_invalidated_token_stays_off_until_a_new_token_arrives(client: Client, engine: AsyncEngine) -> None:
    tokens = await signup(client)
    device_id = uuid.uuid4()
    await put_device(client, tokens, device_id, push_token="doomed-token")
    # What the push worker does when APNs or FCM calls the token invalid.
    async with engine.begin() as conn:
        await conn.execute(update(devices).where(devices.c.push_token == "doomed-token").values(push_enabled=False))

    again = await put_device(client, tokens, device_id, push_token="doomed-token")
    assert again["push_enabled"] is False
    # An app update with the same token does not switch it back on either.
    updated = await put_device(client, tokens, device_id, push_token="doomed-token", app_version="1.5.0")
    assert updated["push_enabled"] is False
    row = await device_row(engine, tokens, device_id)
    assert row is not None
    assert row.push_enabled is False

    fresh = await put_device(client, tokens, device_id, push_token="fresh-token")

    assert fresh["push_enabled"] is True
    row = await device_row(engine, tokens, device_id)
    assert row is not None
    assert row.push_token == "fresh-token"
    assert row.push_enabled is True


async def test_delete_removes_the_device(client: Client, engine: AsyncEngine) -> None:
    tokens = await signup(client)
    device_id, other_id = uuid.uuid4(), uuid.uuid4()
    await put_device(client, tokens, device_id, push_token="token-a")
    await put_device(client, tokens, other_id, push_token="token-b")

    response = await client.delete(url(device_id), headers=bearer(tokens))

    assert response.status_code == 204, response.text
    assert response.content == b""
    assert await device_row(engine, tokens, device_id) is None
    assert await holders(engine, "token-a") == []
    assert await device_row(engine, tokens, other_id) is not None, "only the named device goes"


async def test_delete_unknown_device_answers_204(client: Client, engine: AsyncEngine) -> None:
    tokens = await signup(client)
    await put_device(client, tokens, uuid.uuid4())

    response = await client.delete(url(uuid.uuid4()), headers=bearer(tokens))

    assert response.status_code == 204, response.text
    assert len(await device_rows(engine)) == 1


async def test_delete_twice_answers_204_both_times(client: Client) -> None:
    tokens = await signup(client)
    device_id = uuid.uuid4()
    await put_device(client, tokens, device_id)

    first = await client.delete(url(device_id), headers=bearer(tokens))
    second = await client.delete(url(device_id), headers=bearer(tokens))

    assert (first.status_code, second.status_code) == (204, 204)


async def test_another_user_cannot_touch_a_device_with_the_same_id(client: Client, engine: AsyncEngine) -> None:
    alice = await signup(client, email="alice@example.org")
    bob = await signup(client, email="bob@example.org")
    device_id = uuid.uuid4()
    await put_device(client, alice, device_id, push_token="alice-token")
    before = await device_row(engine, alice, device_id)
    assert before is not None

    # Bob, who has no device of that id, deletes it: nothing of Alice's goes.
    blind = await client.delete(url(device_id), headers=bearer(bob))
    assert blind.status_code == 204, blind.text
    assert await device_row(engine, alice, device_id) is not None, "Bob's DELETE removed Alice's device"

    bobs = await put_device(
        client, bob, device_id, platform="android", push_token="bob-token", app_version="9.9", timezone="Asia/Tokyo"
    )
    assert bobs["device_id"] == str(device_id)
    assert bobs["platform"] == "android"
    deleted = await client.delete(url(device_id), headers=bearer(bob))
    assert deleted.status_code == 204, deleted.text

    after = await device_row(engine, alice, device_id)
    assert after is not None, "Bob's DELETE removed Alice's device"
    assert after._asdict() == before._asdict()
    assert await device_row(engine, bob, device_id) is None
    assert await holders(engine, "bob-token") == []


async def test_another_users_put_does_not_change_the_answer_for_the_owner(client: Client) -> None:
    alice = await signup(client, email="alice@example.org")
    bob = await signup(client, email="bob@example.org")
    device_id = uuid.uuid4()
    await put_device(client, alice, device_id, push_token="alice-token")
    await put_device(client, bob, device_id, platform="web", push_token=None, locale="ja-JP")

    again = await put_device(client, alice, device_id, push_token="alice-token")

    assert again["platform"] == "ios"
    assert again["locale"] == "en-GB"
    assert again["push_enabled"] is True


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"platform": "symbian"}, "platform"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"push_token": "t" * 4097}, "push_token"),
        ({"colour": "blue"}, "colour"),
        ({"platform": None}, "platform"),
    ],
    ids=["platform", "timezone", "push-token-too-long", "unknown-field", "platform-null"],
)
async def test_invalid_registration_is_422_naming_the_field(
    client: Client, engine: AsyncEngine, changes: dict[str, Any], path: str
) -> None:
    tokens = await signup(client)

    response = await client.put(url(uuid.uuid4()), json=registration(**changes), headers=bearer(tokens))

    assert_problem(response, 422, path=path)
    assert await device_rows(engine) == []


async def test_missing_platform_is_422_naming_it(client: Client) -> None:
    tokens = await signup(client)

    response = await client.put(url(uuid.uuid4()), json={"push_token": "x"}, headers=bearer(tokens))

    assert_problem(response, 422, path="platform")


@pytest.mark.parametrize("field", ["push_token", "app_version", "locale"])
async def test_nul_character_in_text_is_422_not_500(client: Client, engine: AsyncEngine, field: str) -> None:
    """Postgres cannot store U+0000 in text; valid JSON carrying it is bad input, not a server error."""
    tokens = await signup(client)

    response = await client.put(url(uuid.uuid4()), json=registration(**{field: "en\u0000GB"}), headers=bearer(tokens))

    assert_problem(response, 422, path=field)
    assert await device_rows(engine) == []


async def test_push_token_at_the_limit_is_accepted(client: Client, engine: AsyncEngine) -> None:
    tokens = await signup(client)
    device_id = uuid.uuid4()

    body = await put_device(client, tokens, device_id, push_token="t" * 4096)

    assert body["push_enabled"] is True
    row = await device_row(engine, tokens, device_id)
    assert row is not None
    assert row.push_token == "t" * 4096


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
async def test_non_uuid_device_id_is_a_client_error(client: Client, method: str) -> None:
    tokens = await signup(client)

    response = await client.request(method, url("not-a-uuid"), json=registration(), headers=bearer(tokens))

    assert 400 <= response.status_code < 500, response.text
    assert_problem(response, response.status_code)


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
async def test_no_bearer_token_is_401(client: Client, engine: AsyncEngine, method: str) -> None:
    response = await client.request(method, url(uuid.uuid4()), json=registration())

    assert_problem(response, 401)
    assert response.headers["www-authenticate"].lower().startswith("bearer")
    assert await device_rows(engine) == []


async def test_forged_bearer_token_is_401(client: Client, engine: AsyncEngine) -> None:
    tokens = await signup(client)
    forged = {"access_token": tokens["access_token"][:-4] + "AAAA"}

    response = await client.put(url(uuid.uuid4()), json=registration(), headers=bearer(forged))

    assert_problem(response, 401)
    assert await device_rows(engine) == []


async def test_token_of_a_deleted_account_is_401_not_500(client: Client, engine: AsyncEngine) -> None:
    gone = await signup(client, email="gone@example.org")
    stays = await signup(client, email="stays@example.org")
    kept_device = uuid.uuid4()
    await put_device(client, stays, kept_device, push_token="kept-token")
    async with engine.begin() as conn:
        await conn.execute(delete(users).where(users.c.id == uuid.UUID(gone["user_id"])))

    plain = await client.put(url(uuid.uuid4()), json=registration(push_token=None), headers=bearer(gone))
    assert_problem(plain, 401)
    # Trying to take another person's token must not take it away from them either.
    grabbing = await client.put(url(uuid.uuid4()), json=registration(push_token="kept-token"), headers=bearer(gone))
    assert_problem(grabbing, 401)

    kept = await device_row(engine, stays, kept_device)
    assert kept is not None
    assert kept.push_token == "kept-token"
    assert kept.push_enabled is True
    assert len(await device_rows(engine)) == 1


async def test_concurrent_registrations_of_one_token_leave_one_holder(client: Client, engine: AsyncEngine) -> None:
    alice = await signup(client, email="alice@example.org")
    bob = await signup(client, email="bob@example.org")
    phones = [(alice, uuid.uuid4()) for _ in range(3)] + [(bob, uuid.uuid4()) for _ in range(2)]
    registered = [(uuid.UUID(owner["user_id"]), device_id) for owner, device_id in phones]

    for round_number in range(5):
        push_token = f"contested-token-{round_number}"
        # The client runs the app in this event loop: these requests overlap.
        responses = await asyncio.gather(
            *(
                client.put(url(device_id), json=registration(push_token=push_token), headers=bearer(owner))
                for owner, device_id in phones
            )
        )

        assert [r.status_code for r in responses] == [200] * len(phones), [r.text for r in responses]
        assert all(r.json()["push_enabled"] is True for r in responses)
        holding = await holders(engine, push_token)
        assert len(holding) == 1, holding
        assert holding[0].push_enabled is True
        assert (holding[0].user_id, holding[0].id) in registered
        assert len(await device_rows(engine)) == len(phones)
