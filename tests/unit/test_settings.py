"""Settings come from the environment, with errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.envelope import MasterKeys
from service.settings import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, Settings, SettingsError


def test_defaults_follow_the_contract(tmp_path: Path) -> None:
    settings = Settings.from_env({}, secret_file=tmp_path / "secret")
    assert settings.database_url == DEFAULT_DATABASE_URL == "postgresql://postgres@127.0.0.1:5432/kindsync"
    assert settings.redis_url == DEFAULT_REDIS_URL == "redis://127.0.0.1:6379/0"
    assert settings.port == 8000
    assert settings.admin_token is None
    assert settings.push_provider == "log"
    assert settings.access_token_ttl_s == 15 * 60
    assert settings.apns_url == "https://api.push.apple.com"
    assert settings.fcm_url == "https://fcm.googleapis.com"


def test_environment_overrides(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"PORT": "9001", "ADMIN_TOKEN": "t" * 40, "PUSH_PROVIDER": "real", "ACCESS_TOKEN_TTL": "60"},
        secret_file=tmp_path / "secret",
    )
    assert (settings.port, settings.admin_token, settings.push_provider) == (9001, "t" * 40, "real")
    assert settings.access_token_ttl_s == 60


def test_a_development_secret_is_generated_once_and_kept(tmp_path: Path) -> None:
    secret_file = tmp_path / ".kindsync" / "secret_key"
    first = Settings.from_env({}, secret_file=secret_file).secret_key
    second = Settings.from_env({}, secret_file=secret_file).secret_key
    assert first == second
    assert len(first) >= 32
    assert secret_file.stat().st_mode & 0o077 == 0, "only the owner may read the secret"


def test_production_needs_a_real_secret(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="SECRET_KEY must be set"):
        Settings.from_env({"KINDSYNC_ENV": "production"}, secret_file=tmp_path / "secret")
    with pytest.raises(SettingsError, match="at least 32"):
        Settings.from_env({"KINDSYNC_ENV": "production", "SECRET_KEY": "short"}, secret_file=tmp_path / "s")
    assert not (tmp_path / "secret").exists(), "production never writes a development secret"
    production = {"KINDSYNC_ENV": "production", "SECRET_KEY": "s" * 32}
    with pytest.raises(SettingsError, match="MASTER_KEYS must be set"):
        Settings.from_env(production, secret_file=tmp_path / "s")
    assert not (tmp_path / "master_keys").exists(), "production never writes a development master key"
    ok = Settings.from_env({**production, "MASTER_KEYS": MasterKeys.generate("k1")}, secret_file=tmp_path / "s")
    assert ok.is_production


def test_a_development_master_key_is_generated_once_and_kept(tmp_path: Path) -> None:
    secret_file = tmp_path / ".kindsync" / "secret_key"
    first = Settings.from_env({}, secret_file=secret_file).master_keys
    assert Settings.from_env({}, secret_file=secret_file).master_keys == first
    assert MasterKeys.parse(first).current_id.startswith("dev-")
    kept = secret_file.parent / "master_keys"
    assert kept.stat().st_mode & 0o077 == 0, "only the owner may read the master key"


def test_an_unreadable_master_key_file_is_an_error_never_replaced(tmp_path: Path) -> None:
    """A new key would not open the data keys wrapped under the old one: stop instead."""
    kept = tmp_path / "master_keys"
    kept.write_text("not a key\n")
    with pytest.raises(SettingsError, match="MASTER_KEYS: each master key is written id:base64key"):
        Settings.from_env({}, secret_file=tmp_path / "secret")
    assert kept.read_text() == "not a key\n"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("k1:" + "A" * 10, "must be 32 bytes"),
        ("k1:%%%", "is not base64"),
        ("bad id!:" + MasterKeys.generate("x").split(":")[1], "letters, digits"),
        (MasterKeys.generate("same") + "," + MasterKeys.generate("same"), "ids must differ"),
        (",", "at least one master key"),
    ],
)
def test_bad_master_keys_are_named(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({"MASTER_KEYS": value}, secret_file=tmp_path / "secret")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PORT", "eighty", "PORT must be a number"),
        ("PORT", "70000", "PORT must be between 1 and 65535"),
        ("PUSH_PROVIDER", "carrier-pigeon", "PUSH_PROVIDER must be one of log, real"),
        ("KINDSYNC_ENV", "staging", "KINDSYNC_ENV must be one of"),
        ("ACCESS_TOKEN_TTL", "5", "ACCESS_TOKEN_TTL must be at least 30"),
    ],
)
def test_bad_values_name_the_variable(tmp_path: Path, name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({name: value}, secret_file=tmp_path / "secret")
