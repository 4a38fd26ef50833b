"""The one place where the API's parts are built and wired together."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from importlib.metadata import version

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin

from schemas.base import MAX_BODY_BYTES
from service import heap
from service.api.account import AccountController
from service.api.admin import AdminController
from service.api.auth import AuthController
from service.api.devices import DeviceController
from service.api.health import healthz, readyz
from service.api.metrics import metrics
from service.api.records import RecordController
from service.api.sync import SYNCER, SyncController
from service.auth.passwords import Passwords
from service.auth.sessions import Sessions
from service.auth.throttle import LoginThrottle
from service.auth.tokens import jwt_auth, protect_only_v1
from service.db.engine import API_SERVER_SETTINGS, SYNC_SERVER_SETTINGS, DriverPool, create_engine
from service.db.migrate import head_revision
from service.envelope import MasterKeys
from service.health import HealthCheck
from service.logs import configure_logging
from service.metrics import ApiMetrics
from service.outbox import RelayWake
from service.problems import EXCEPTION_HANDLERS
from service.queue import create_redis
from service.request_context import RequestContext
from service.settings import Settings
from service.sync_batch import Syncer


def app_from_environment() -> Litestar:
    """The app of one of several API processes (API_PROCESSES), each reading the same environment."""
    app = create_app(Settings.from_env())
    heap.settle()
    return app


def create_app(settings: Settings) -> Litestar:
    configure_logging(settings.log_level)
    engine = create_engine(settings, server_settings=API_SERVER_SETTINGS)
    # The sync path's own connections (DriverPool); everything else uses the engine's.
    driver_pool = DriverPool(
        settings.database_url, size=settings.db_sync_pool_size, server_settings=SYNC_SERVER_SETTINGS
    )
    redis = create_redis(settings)
    auth = jwt_auth(settings.secret_key, settings.access_token_ttl_s)
    master_keys = MasterKeys.parse(settings.master_keys)
    api_metrics = ApiMetrics()
    passwords = Passwords(time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib)
    sessions = Sessions(auth, access_ttl_s=settings.access_token_ttl_s, refresh_ttl_s=settings.refresh_token_ttl_s)
    throttle = LoginThrottle(
        redis,
        secret_key=settings.secret_key,
        max_per_account=settings.login_max_failures,
        max_per_address=settings.login_max_failures_per_ip,
        window_s=settings.login_window_s,
    )

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        # Each is closed whatever became of the ones before.
        async with AsyncExitStack() as stack:
            stack.push_async_callback(engine.dispose)
            stack.push_async_callback(driver_pool.close)
            stack.push_async_callback(redis.aclose)
            # First, before the pool it sends on is closed.
            stack.push_async_callback(relay_wake.close)
            yield

    relay_wake = RelayWake(driver_pool)
    syncer = Syncer(
        pool=driver_pool,
        tombstone_retention=timedelta(days=settings.tombstone_retention_days),
        master_keys=master_keys,
        on_applied=api_metrics.observe_sync,
        on_event=relay_wake.poke,
    )

    def singleton(value: object) -> Provide:
        return Provide(lambda: value, use_cache=True, sync_to_thread=False)

    app = Litestar(
        route_handlers=[
            healthz,
            readyz,
            metrics,
            AuthController,
            DeviceController,
            SyncController,
            RecordController,
            AdminController,
            AccountController,
        ],
        dependencies={
            "settings": singleton(settings),
            "engine": singleton(engine),
            "driver_pool": singleton(driver_pool),
            "redis": singleton(redis),
            "passwords": singleton(passwords),
            "sessions": singleton(sessions),
            "login_throttle": singleton(throttle),
            "master_keys": singleton(master_keys),
            "api_metrics": singleton(api_metrics),
            "health_check": singleton(
                HealthCheck(
                    engine,
                    redis,
                    version=version("kindsync"),
                    head=head_revision(),
                    timeout_s=settings.health_check_timeout_s,
                    backlog_max_age_s=settings.health_backlog_max_age_s,
                    heartbeat_s=settings.worker_heartbeat_s,
                )
            ),
        },
        lifespan=[lifespan],
        on_app_init=[protect_only_v1(auth)],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=MAX_BODY_BYTES,
        openapi_config=OpenAPIConfig(
            title="kindsync",
            version=version("kindsync"),
            description="Backend of the kindsync self-compassion companion app. "
            "Errors are RFC 9457 problem details (application/problem+json).",
            path="/schema",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
        ),
        logging_config=None,
        state=State({"settings": settings, SYNCER: syncer}),
    )
    # Outermost, around routing and auth: every answer gets a request id.
    app.asgi_handler = RequestContext(app.asgi_handler, observe=api_metrics.observe_request)
    return app
