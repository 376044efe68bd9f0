"""Fixtures starting real ``portside serve`` processes, on SQLite and on PostgreSQL.

Every test runs once per database (``[sqlite]`` and ``[postgres]``). Servers are
started lazily, once per database and *profile* (a set of config overrides and users),
and shared by the tests of the session; tests isolate themselves with unique repository
names (:func:`unique_repo`). The PostgreSQL runs are skipped with a reason when the
server at ``127.0.0.1:5432`` is unreachable, unless ``PORTSIDE_TEST_POSTGRES=1`` demands
them, in which case an unreachable server is an error.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from functional.client import RegistryClient
from portside.db.engine import Database, create_db_engine
from portside.services.users import UserService
from support.server import (
    POSTGRES_ADMIN_URI,
    RunningRegistry,
    postgres_database,
    running_registry,
)

#: Password of every test user (users differ by name only).
PASSWORDS = {name: f"{name}-secret-pw" for name in ("alice", "bob", "carol")}

#: ``SSRF_ALLOWED_HOSTS`` that lets a server call test servers on loopback.
LOOPBACK = ["127.0.0.0/8", "::1", "localhost"]

#: Config overrides and users of each kind of server the tests need.
PROFILES: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    # Most tests: private repositories on push, small limits so that they are cheap to
    # exceed, and no login-failure limit (every test comes from 127.0.0.1).
    # Outbound calls (callbacks, webhooks, upstreams) may reach loopback test servers.
    "main": ({"LOGIN_FAILURE_LIMIT": 0, "MAXIMUM_LAYER_SIZE": "1Mi",
              "MAXIMUM_MANIFEST_SIZE": "64Ki", "SSRF_ALLOWED_HOSTS": LOOPBACK},
             ("alice", "bob", "carol")),
    # Repositories created by a push are public; anonymous pulls allowed.
    "public": ({"LOGIN_FAILURE_LIMIT": 0, "CREATE_PRIVATE_REPO_ON_PUSH": False},
               ("alice", "bob")),
    # Public repositories, but anonymous access switched off.
    "anonymous-off": ({"LOGIN_FAILURE_LIMIT": 0, "CREATE_PRIVATE_REPO_ON_PUSH": False,
                       "FEATURE_ANONYMOUS_ACCESS": False}, ("alice",)),
    # Brute-force protection after three failures.
    "login-limit": ({"LOGIN_FAILURE_LIMIT": 3}, ("alice",)),
    # Quay's first-user bootstrap on an empty registry.
    "initialize": ({"LOGIN_FAILURE_LIMIT": 0, "FEATURE_USER_INITIALIZE": True}, ()),
    # Plain passwords refused on /v2; application-specific tokens expire after an hour.
    "strict-credentials": ({"LOGIN_FAILURE_LIMIT": 0,
                            "FEATURE_REQUIRE_ENCRYPTED_BASIC_AUTH": True,
                            "APP_SPECIFIC_TOKEN_EXPIRATION": "1h"}, ("alice",)),
    # Repository mirroring: a worker pass every second, rollback of failed syncs
    # ("mirror-best-effort": without), upstreams on loopback.
    "mirror": ({"LOGIN_FAILURE_LIMIT": 0, "FEATURE_REPO_MIRROR": True,
                "REPO_MIRROR_INTERVAL": 1, "REPO_MIRROR_ROLLBACK": True,
                "SSRF_ALLOWED_HOSTS": LOOPBACK}, ("alice", "bob")),
    "mirror-best-effort": ({"LOGIN_FAILURE_LIMIT": 0, "FEATURE_REPO_MIRROR": True,
                            "REPO_MIRROR_INTERVAL": 1, "SSRF_ALLOWED_HOSTS": LOOPBACK},
                           ("alice",)),
    # Pull-through proxy-cache organizations with upstreams on loopback; cached
    # repositories private ("proxy-cache-public": public, anonymous pulls allowed).
    "proxy-cache": ({"LOGIN_FAILURE_LIMIT": 0, "FEATURE_PROXY_CACHE": True,
                     "SSRF_ALLOWED_HOSTS": LOOPBACK}, ("alice", "bob", "carol")),
    "proxy-cache-public": ({"LOGIN_FAILURE_LIMIT": 0, "FEATURE_PROXY_CACHE": True,
                            "CREATE_PRIVATE_REPO_ON_PUSH": False,
                            "SSRF_ALLOWED_HOSTS": LOOPBACK}, ("alice",)),
}


def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used (``None`` if it can)."""
    try:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN_URI, connect_timeout=3):
            return None
    except Exception as exc:
        return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def create_users(registry: RunningRegistry, users: tuple[str, ...]) -> None:
    """Create ``users`` in the server's database, as ``portside user create`` does.

    In-process rather than through the CLI: one subprocess per user costs a second each.
    """
    if not users:
        return
    db = Database(create_db_engine(registry.config["DB_URI"]))
    try:
        service = UserService(db, [])
        for name in users:
            service.create_user(name, PASSWORDS[name])
    finally:
        db.dispose()


@dataclass
class Deployment:
    """A running server of one profile on one database, and how to talk to it."""

    registry: RunningRegistry
    backend: str
    profile: str
    clients: list[RegistryClient] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return self.registry.url

    def client(self, username: str | None = None, password: str | None = None,
               ) -> RegistryClient:
        """A client for ``username`` (its test password unless given), or anonymous."""
        if username is not None and password is None:
            password = PASSWORDS[username]
        client = RegistryClient(self.url, username, password)
        self.clients.append(client)
        return client

    def close_clients(self) -> None:
        """Close every client handed out so far."""
        for client in self.clients:
            client.close()
        self.clients.clear()

    def log_size(self) -> int:
        """Current length of the server's log (to look only at what follows)."""
        path = self.registry.log_path
        return path.stat().st_size if path.exists() else 0

    def unhandled_errors(self, since: int = 0) -> str:
        """Tracebacks the server logged after byte ``since`` of its log ("" if none)."""
        with self.registry.log_path.open("rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace")
        return text if "Traceback" in text or "unhandled error" in text else ""

    def restart(self, kill: bool = False) -> None:
        """Restart the server (``kill=True``: SIGKILL first, as in a crash)."""
        for client in self.clients:
            client.drop_connections()
            client.forget_tokens()
        self.registry.restart(kill=kill)


class RegistryPool:
    """Starts servers on first use, one per profile, all on the same database kind."""

    def __init__(self, backend: str, make_root: Callable[[str], Any],
                 stack: contextlib.ExitStack) -> None:
        self.backend = backend
        self._make_root = make_root
        self._stack = stack
        self._running: dict[str, Deployment] = {}

    def get(self, profile: str) -> Deployment:
        """The server of ``profile``, started (with its users) if needed."""
        deployment = self._running.get(profile)
        if deployment is not None:
            return deployment
        overrides, users = PROFILES[profile]
        db_uri = None
        if self.backend == "postgres":
            db_uri = self._stack.enter_context(postgres_database())
        root = self._make_root(f"{self.backend}-{profile}")
        registry = self._stack.enter_context(running_registry(root, db_uri=db_uri, **overrides))
        create_users(registry, users)
        deployment = Deployment(registry, self.backend, profile)
        self._running[profile] = deployment
        return deployment


@pytest.fixture(scope="session", params=[
    pytest.param("sqlite"),
    pytest.param("postgres", marks=pytest.mark.postgres),
])
def backend(request: pytest.FixtureRequest) -> str:
    """The database kind: ``sqlite`` or ``postgres``."""
    if request.param == "postgres":
        problem = postgres_problem()
        if problem is not None:
            message = f"PostgreSQL unreachable at {POSTGRES_ADMIN_URI}: {problem}"
            if os.environ.get("PORTSIDE_TEST_POSTGRES") == "1":
                pytest.fail(f"{message} (PORTSIDE_TEST_POSTGRES=1 requires it)")
            pytest.skip(f"{message} (set PORTSIDE_TEST_POSTGRES=1 to make this an error)")
    return str(request.param)


@pytest.fixture(scope="session")
def registries(backend: str, tmp_path_factory: pytest.TempPathFactory,
               ) -> Iterator[RegistryPool]:
    """Lazily started servers on ``backend``, stopped at the end of the session."""
    with contextlib.ExitStack() as stack:
        yield RegistryPool(backend, lambda name: tmp_path_factory.mktemp(name), stack)


def _deployment(registries: RegistryPool, profile: str) -> Iterator[Deployment]:
    deployment = registries.get(profile)
    log_offset = deployment.log_size()
    yield deployment
    deployment.close_clients()
    # Whatever the test asserted, the server must not have failed internally.
    crashes = deployment.unhandled_errors(since=log_offset)
    assert not crashes, f"the server logged unhandled errors:\n{crashes}"


@pytest.fixture
def registry(registries: RegistryPool) -> Iterator[Deployment]:
    """The ``main`` server: private repositories on push, users alice, bob and carol."""
    yield from _deployment(registries, "main")


@pytest.fixture
def public_registry(registries: RegistryPool) -> Iterator[Deployment]:
    """A server that makes pushed repositories public; anonymous pulls allowed."""
    yield from _deployment(registries, "public")


@pytest.fixture
def anonymous_off_registry(registries: RegistryPool) -> Iterator[Deployment]:
    """Public repositories, ``FEATURE_ANONYMOUS_ACCESS: false``."""
    yield from _deployment(registries, "anonymous-off")


@pytest.fixture
def login_limit_registry(registries: RegistryPool) -> Iterator[Deployment]:
    """``LOGIN_FAILURE_LIMIT: 3``."""
    yield from _deployment(registries, "login-limit")


@pytest.fixture
def initialize_registry(registries: RegistryPool) -> Iterator[Deployment]:
    """An empty registry with ``FEATURE_USER_INITIALIZE: true``."""
    yield from _deployment(registries, "initialize")


@pytest.fixture
def strict_credentials_registry(registries: RegistryPool) -> Iterator[Deployment]:
    """``FEATURE_REQUIRE_ENCRYPTED_BASIC_AUTH: true``, ``APP_SPECIFIC_TOKEN_EXPIRATION: 1h``."""
    yield from _deployment(registries, "strict-credentials")


@pytest.fixture
def alice(registry: Deployment) -> RegistryClient:
    """alice on the main server."""
    return registry.client("alice")


@pytest.fixture
def bob(registry: Deployment) -> RegistryClient:
    """bob on the main server."""
    return registry.client("bob")


@pytest.fixture
def anonymous(registry: Deployment) -> RegistryClient:
    """A caller without credentials on the main server."""
    return registry.client()


def unique_repo(namespace: str, hint: str = "repo") -> str:
    """A repository name no other test uses: ``<namespace>/<hint>-<random>``."""
    return f"{namespace}/{hint}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def repo() -> str:
    """A fresh repository name in alice's namespace."""
    return unique_repo("alice")
