"""The application factory: builds services from a config and wires the HTTP layers.

No import-time singletons: everything hangs off the object ``create_app`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from portside.api.app import create_api
from portside.api.errors import error_json
from portside.api.health import ApiRequestMetrics, HealthEndpoints
from portside.api.logs import export_service_for
from portside.api.notifications import image_expiry_announcer_for, notification_delivery_for
from portside.api.oauth import create_oauth
from portside.api.signin import csrf_token
from portside.auth.limits import LoginFailureLimiter
from portside.auth.permissions import Policy
from portside.auth.secrets import SecretBox, secret_box_for
from portside.auth.tokens import TokenService
from portside.config import PortsideConfig
from portside.db.engine import Database, create_db_engine
from portside.registry.app import RegistryApp
from portside.registry.context import RegistryContext
from portside.services.app_tokens import AppTokenService
from portside.services.audit import LogBuffer
from portside.services.autoprune import AutoPruneService
from portside.services.blobs import BlobService
from portside.services.catalog import CatalogService
from portside.services.gc import garbage_collector_for
from portside.services.log_exports import EXPORT_QUEUE
from portside.services.login_audit import RegistryLoginAudit
from portside.services.manifests import ManifestService
from portside.services.notification_delivery import IMAGE_EXPIRY_INTERVAL_S
from portside.services.notification_events import NOTIFICATION_QUEUE
from portside.services.outbound import OutboundPolicy
from portside.services.proxy_cache import ProxyCache
from portside.services.queue import WorkQueue
from portside.services.quotas import QuotaGuard
from portside.services.repositories import RepositoryService
from portside.services.sessions import SessionService
from portside.services.uploads import UploadService
from portside.services.users import UserService
from portside.storage.drivers import create_driver
from portside.storage.placements import Placements
from portside.workers.mirror_worker import mirror_worker_for
from portside.workers.periodic import PeriodicJob, run_forever
from portside.workers.queue_worker import QueueHandler, QueueWorker

log = logging.getLogger(__name__)

#: Threads per worker process for blocking work (database writes, storage, hashing).
WORKER_THREADS = 16
#: Threads per worker process for the per-request permission and metadata reads:
#: SQLite answers in microseconds, so one thread (fewest lock hand-offs) is fastest;
#: PostgreSQL has network round trips worth overlapping.
READ_THREADS_SQLITE = 1
READ_THREADS_POSTGRESQL = 4


@dataclass
class Services:
    """Every domain service, built once from the config."""

    config: PortsideConfig
    db: Database
    registry: RegistryContext
    sessions: SessionService
    #: Encrypts secrets stored in the database (robot tokens).
    secret_box: SecretBox
    #: The SSRF policy and timeouts of every outbound call to a user-set URL.
    outbound: OutboundPolicy

    def close(self) -> None:
        """Stop the read threads and release database connections."""
        self.registry.read_executor.shutdown(wait=False)
        self.db.dispose()


def build_placements(config: PortsideConfig) -> Placements:
    """Instantiate every configured storage location."""
    drivers = {
        name: create_driver(driver_name, params)
        for name, (driver_name, params) in config.DISTRIBUTED_STORAGE_CONFIG.items()
    }
    return Placements(drivers, list(config.DISTRIBUTED_STORAGE_PREFERENCE))


def build_services(config: PortsideConfig, migrate: bool = True) -> Services:
    """Connect to the database (migrating it if asked) and build the services."""
    db = Database(create_db_engine(config.DB_URI, config.DB_CONNECTION_ARGS))
    if migrate:
        from portside.db.migrate import upgrade  # Alembic is only needed here

        upgrade(db.engine)
    policy = Policy(
        anonymous_access=config.FEATURE_ANONYMOUS_ACCESS,
        create_namespace_on_push=config.CREATE_NAMESPACE_ON_PUSH,
        proxy_cache=config.FEATURE_PROXY_CACHE,
        proxy_cache_public=not config.CREATE_PRIVATE_REPO_ON_PUSH,
    )
    placements = build_placements(config)
    tokens = TokenService(db, audience=config.SERVER_HOSTNAME,
                          lifetime_s=config.REGISTRY_JWT_EXPIRATION_S)
    tokens.load_keys()
    secret_box = secret_box_for(config.DATABASE_SECRET_KEY, config.DB_URI)
    log_buffer = LogBuffer(db)
    registry = RegistryContext(
        users=UserService(
            db, list(config.SUPER_USERS), secret_box,
            app_tokens=config.FEATURE_APP_SPECIFIC_TOKENS,
            require_encrypted_passwords=config.FEATURE_REQUIRE_ENCRYPTED_BASIC_AUTH,
        ),
        repositories=RepositoryService(db, config.CREATE_PRIVATE_REPO_ON_PUSH),
        blobs=BlobService(db),
        uploads=UploadService(db, placements, config.maximum_layer_size_bytes),
        manifests=ManifestService(
            db, config.maximum_manifest_size_bytes, placements,
            quotas=(QuotaGuard(config.DEFAULT_SYSTEM_REJECT_QUOTA_BYTES)
                    if config.FEATURE_QUOTA_MANAGEMENT else None)),
        catalog=CatalogService(db, policy),
        tokens=tokens,
        placements=placements,
        policy=policy,
        login_limiter=LoginFailureLimiter(config.LOGIN_FAILURE_LIMIT,
                                          config.LOGIN_FAILURE_WINDOW_S),
        server_hostname=(config.SERVER_HOSTNAME
                         if "SERVER_HOSTNAME" in config.model_fields_set else None),
        url_scheme=config.PREFERRED_URL_SCHEME,
        proxy_storage=config.FEATURE_PROXY_STORAGE,
        read_executor=ThreadPoolExecutor(
            READ_THREADS_SQLITE if db.is_sqlite else READ_THREADS_POSTGRESQL,
            thread_name_prefix="portside-read",
        ),
        pull_log=log_buffer,
        login_audit=(RegistryLoginAudit(log_buffer) if config.ACTION_LOG_AUDIT_LOGINS
                     else None),
    )
    outbound = OutboundPolicy(config.SSRF_ALLOWED_HOSTS, config.OUTBOUND_CONNECT_TIMEOUT_S,
                              config.OUTBOUND_READ_TIMEOUT_S)
    if config.FEATURE_PROXY_CACHE:
        registry.proxy_cache = ProxyCache(
            db, secret_box, outbound, registry.manifests, registry.blobs, registry.uploads,
            create_public=not config.CREATE_PRIVATE_REPO_ON_PUSH)
    return Services(config=config, db=db, registry=registry, sessions=SessionService(db),
                    secret_box=secret_box, outbound=outbound)


def queue_handlers(services: Services) -> list[QueueHandler]:
    """The work-queue consumers that run inside the server in the all-in-one mode."""
    exports = export_service_for(services)
    return [QueueHandler(EXPORT_QUEUE, exports.run, lease_s=300),
            QueueHandler(NOTIFICATION_QUEUE, notification_delivery_for(services).run,
                         lease_s=120)]


def background_jobs(services: Services) -> list[PeriodicJob]:
    """The housekeeping that runs inside the server in the all-in-one mode."""
    config = services.config
    uploads = services.registry.uploads
    jobs = [
        PeriodicJob("session-cleanup", 3600, services.sessions.purge_expired),
        PeriodicJob(
            "upload-cleanup",
            config.BLOB_UPLOAD_CLEANUP_INTERVAL_S,
            lambda: uploads.cleanup_expired(config.BLOB_UPLOAD_EXPIRATION_S),
        ),
    ]
    if config.FEATURE_GARBAGE_COLLECTION and not config.read_only:
        # Every process schedules it; a pass that finds another one running (advisory
        # lock on PostgreSQL, a file lock beside the SQLite database) skips.
        collector = garbage_collector_for(services)
        jobs.append(PeriodicJob("garbage-collection", config.GARBAGE_COLLECTION_FREQUENCY,
                                collector.run))
    retention = config.expired_app_token_retention
    if config.FEATURE_APP_SPECIFIC_TOKENS and retention is not None:
        app_tokens = AppTokenService(services.db)
        jobs.append(PeriodicJob("app-token-cleanup", 3600,
                                lambda: app_tokens.purge_expired(retention)))
    jobs.append(PeriodicJob("image-expiry-notifications", IMAGE_EXPIRY_INTERVAL_S,
                            image_expiry_announcer_for(services).run_pass))
    # Read-only mode: nothing that deletes registry content runs.
    if config.FEATURE_AUTO_PRUNE and not config.read_only:
        jobs.append(PeriodicJob("auto-prune", config.AUTO_PRUNE_INTERVAL_S,
                                AutoPruneService(services.db).run_pass))
    return jobs


class PortsideApp:
    """The ASGI entry point: ``/v2`` goes straight to the registry (its hot paths skip
    the general router and middleware); everything else, and lifespan, to Starlette."""

    def __init__(self, services: Services, registry: RegistryApp, rest: Starlette) -> None:
        self.services = services
        self._registry = registry
        self._rest = rest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v2/"):
            await self._registry(scope, receive, send)
        else:
            await self._rest(scope, receive, send)


async def _not_found(request: Request, _exc: Exception) -> Response:
    """404 from the outer router. A path holding a decoded newline (``%0A``) never
    matches a mount's pattern, so even ``/api/v1/...`` can end up here: answer those in
    the API's JSON error shape, like every other API error."""
    if request.url.path.startswith("/api/"):
        return error_json(404, "not_found", "Not Found")
    return PlainTextResponse("Not Found", status_code=404)


def create_app(config: PortsideConfig, migrate: bool = True,
               run_workers: bool = True) -> PortsideApp:
    """Build the ASGI application for ``config``."""
    services = build_services(config, migrate=migrate)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        # Database calls and file I/O run in worker threads. A few threads keep the
        # cores busy; dozens mostly add lock hand-offs and context switches.
        anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
        # Everything loaded so far lives as long as the process: keep the cycle
        # collector from scanning it again and again.
        gc.freeze()
        tasks = []
        if run_workers:
            tasks = [asyncio.create_task(run_forever(job)) for job in background_jobs(services)]
            tasks.append(asyncio.create_task(
                QueueWorker(WorkQueue(services.db), queue_handlers(services)).run()))
            if config.FEATURE_REPO_MIRROR and not config.read_only:
                tasks.append(asyncio.create_task(mirror_worker_for(services).run()))
        # Pull entries are buffered in this process, so every process flushes its own.
        if services.registry.pull_log is not None:
            tasks.append(asyncio.create_task(services.registry.pull_log.run()))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            # Let the pull flusher write what it still holds before the engine goes.
            await asyncio.gather(*tasks, return_exceptions=True)
            health.close()
            services.close()

    registry = RegistryApp(services.registry, read_only=config.read_only)
    health = HealthEndpoints(services)
    rest = Starlette(
        routes=[
            # "/v2" without the slash still reaches the registry's base endpoint.
            Mount("/v2", app=registry),
            Mount("/api/v1", app=ApiRequestMetrics(create_api(services))),
            Route("/csrf_token", csrf_token, methods=["GET"]),
            *health.routes(),
            Mount("/oauth", app=create_oauth(services)),
        ],
        lifespan=lifespan,
        exception_handlers={404: _not_found},
    )
    rest.state.services = services  # for /csrf_token, read like the API's routes
    return PortsideApp(services, registry, rest)
