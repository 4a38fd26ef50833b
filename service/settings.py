"""Configuration read from the environment once, then passed in.

Nothing reads the environment after start-up: `create_app(settings)` and the
worker's startup receive a `Settings`, which keeps tests free to run several
configurations side by side.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, TypeVar

import msgspec

from service.envelope import EnvelopeError, MasterKeys

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/kindsync"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_SECRET_FILE = Path(".kindsync") / "secret_key"
MIN_SECRET_LENGTH = 32

Environment = Literal["development", "test", "production"]
PushProvider = Literal["log", "real"]

T = TypeVar("T")


class SettingsError(ValueError):
    """The environment holds a value kindsync cannot start with."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    secret_key: str
    # `id:base64key,...`, current first: they wrap each person's data key (service/envelope.py).
    master_keys: str
    env: Environment = "development"
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    host: str = "127.0.0.1"
    port: int = 8000
    admin_token: str | None = None
    log_level: str = "INFO"
    # Sessions
    access_token_ttl_s: int = 15 * 60
    refresh_token_ttl_s: int = 60 * 24 * 3600
    # Failed logins allowed per account and per client address in one window.
    login_max_failures: int = 5
    login_max_failures_per_ip: int = 50
    login_window_s: int = 15 * 60
    # Argon2id cost; the defaults are RFC 9106's second recommended profile.
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 64 * 1024
    # API processes sharing the port: one per container is usual; more use a machine's cores
    # (each process then counts its own /metrics).
    api_processes: int = 1
    # Database pool of one API process, for all but sync (whose connections are its own, below):
    # kept open, and opened for a burst (a worker keeps 5 and opens up to db_max_overflow more).
    db_pool_size: int = 5
    db_max_overflow: int = 10
    # The sync path's own connections in one API process (service.db.engine.DriverPool).
    db_sync_pool_size: int = 10
    # Sync: deletions are kept this long; an older cursor must start over.
    tombstone_retention_days: int = 90
    # Workers
    worker_heartbeat_s: float = 5.0
    worker_shutdown_grace_s: int = 20
    # Where a worker serves its Prometheus metrics (on HOST); 0 serves none.
    worker_metrics_port: int = 9101
    # /admin/health: how long one check may take, and how old a waiting event or job may grow.
    health_check_timeout_s: float = 1.0
    health_backlog_max_age_s: float = 300.0
    # Push
    push_provider: PushProvider = "log"
    apns_key_id: str | None = None
    apns_team_id: str | None = None
    apns_topic: str | None = None
    apns_private_key: str | None = None
    apns_url: str = "https://api.push.apple.com"
    fcm_service_account: str | None = None
    fcm_url: str = "https://fcm.googleapis.com"
    fcm_token_url: str | None = None

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        secret_file: Path = DEFAULT_SECRET_FILE,
    ) -> Settings:
        """Build settings from environment variables (names as in the contract)."""
        env = os.environ if environ is None else environ
        get = _Reader(env)
        kind = get.choice("KINDSYNC_ENV", ("development", "test", "production"), "development")
        secret = env.get("SECRET_KEY") or None
        if secret is None:
            if kind == "production":
                raise SettingsError("SECRET_KEY must be set when KINDSYNC_ENV=production")
            secret = _development_secret(secret_file)
        elif kind == "production" and len(secret) < MIN_SECRET_LENGTH:
            raise SettingsError(f"SECRET_KEY must be at least {MIN_SECRET_LENGTH} characters in production")
        master_keys = env.get("MASTER_KEYS") or None
        if master_keys is None:
            if kind == "production":
                raise SettingsError("MASTER_KEYS must be set when KINDSYNC_ENV=production")
            master_keys = _development_master_key(secret_file.parent / "master_keys")
        try:
            MasterKeys.parse(master_keys)
        except EnvelopeError as error:
            raise SettingsError(f"MASTER_KEYS: {error}") from None
        return cls(
            secret_key=secret,
            master_keys=master_keys,
            env=kind,  # type: ignore[arg-type]
            database_url=get.text("DATABASE_URL", DEFAULT_DATABASE_URL),
            redis_url=get.text("REDIS_URL", DEFAULT_REDIS_URL),
            host=get.text("HOST", "127.0.0.1"),
            port=get.integer("PORT", 8000, low=1, high=65535),
            admin_token=env.get("ADMIN_TOKEN") or None,
            log_level=get.choice("LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"), "INFO"),
            access_token_ttl_s=get.integer("ACCESS_TOKEN_TTL", 15 * 60, low=30),
            refresh_token_ttl_s=get.integer("REFRESH_TOKEN_TTL", 60 * 24 * 3600, low=60),
            login_max_failures=get.integer("LOGIN_MAX_FAILURES", 5, low=1),
            login_max_failures_per_ip=get.integer("LOGIN_MAX_FAILURES_PER_IP", 50, low=1),
            login_window_s=get.integer("LOGIN_WINDOW", 15 * 60, low=1),
            argon2_time_cost=get.integer("ARGON2_TIME_COST", 3, low=1),
            argon2_memory_kib=get.integer("ARGON2_MEMORY_KIB", 64 * 1024, low=8),
            api_processes=get.integer("API_PROCESSES", 1, low=1, high=64),
            db_pool_size=get.integer("DB_POOL_SIZE", 5, low=1),
            db_max_overflow=get.integer("DB_MAX_OVERFLOW", 10, low=0),
            db_sync_pool_size=get.integer("DB_SYNC_POOL_SIZE", 10, low=1),
            tombstone_retention_days=get.integer("TOMBSTONE_RETENTION_DAYS", 90, low=1),
            worker_heartbeat_s=get.number("WORKER_HEARTBEAT", 5.0, low=0.1),
            worker_shutdown_grace_s=get.integer("WORKER_SHUTDOWN_GRACE", 20, low=0),
            worker_metrics_port=get.integer("WORKER_METRICS_PORT", 9101, low=0, high=65535),
            health_check_timeout_s=get.number("HEALTH_CHECK_TIMEOUT", 1.0, low=0.05),
            health_backlog_max_age_s=get.number("HEALTH_BACKLOG_MAX_AGE", 300.0, low=1.0),
            push_provider=get.choice("PUSH_PROVIDER", ("log", "real"), "log"),  # type: ignore[arg-type]
            apns_key_id=env.get("APNS_KEY_ID") or None,
            apns_team_id=env.get("APNS_TEAM_ID") or None,
            apns_topic=env.get("APNS_TOPIC") or None,
            apns_private_key=env.get("APNS_PRIVATE_KEY") or None,
            apns_url=get.text("APNS_URL", "https://api.push.apple.com"),
            fcm_service_account=env.get("FCM_SERVICE_ACCOUNT") or None,
            fcm_url=get.text("FCM_URL", "https://fcm.googleapis.com"),
            fcm_token_url=env.get("FCM_TOKEN_URL") or None,
        )


class _Reader:
    """Typed reads of environment variables with errors that name the variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def text(self, name: str, default: str) -> str:
        return self._env.get(name) or default

    def choice(self, name: str, allowed: tuple[str, ...], default: str) -> str:
        value = self._env.get(name) or default
        if value not in allowed:
            raise SettingsError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        return value

    def integer(self, name: str, default: int, *, low: int, high: int | None = None) -> int:
        return self._bounded(name, default, int, low, high)

    def number(self, name: str, default: float, *, low: float) -> float:
        return self._bounded(name, default, float, low, None)

    def _bounded(self, name: str, default: T, parse: Callable[[str], T], low: T, high: T | None) -> T:
        raw = self._env.get(name)
        if not raw:
            return default
        try:
            value = parse(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a number; got {raw!r}") from None
        if value < low or (high is not None and value > high):  # type: ignore[operator]
            limit = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise SettingsError(f"{name} must be {limit}; got {raw!r}")
        return value


def _development_secret(path: Path) -> str:
    """Keep one generated secret per checkout so tokens survive restarts."""
    if path.exists() and len(path.read_text().strip()) < MIN_SECRET_LENGTH:
        path.unlink()  # too short to sign with; only tokens signed with it are lost
    return _kept(path, lambda: secrets.token_urlsafe(48))


def _development_master_key(path: Path) -> str:
    """Keep one generated master key per checkout: without it, what was written cannot be read again.

    An unreadable file is an error (from_env says so), never replaced: a new key would not open the old data keys.
    """
    # A random id: a database shared with another checkout then names the key it lacks.
    return _kept(path, lambda: MasterKeys.generate(f"dev-{secrets.token_hex(4)}"))


def _kept(path: Path, generate: Callable[[], str]) -> str:
    """A value generated once into a file only the owner may read.

    The file appears whole or not at all (a hard link of a finished file), and the first one
    made wins: the API and a worker starting at the same moment end up with the same value.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        draft.touch(mode=0o600)
        try:
            draft.write_text(generate() + "\n")
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()
