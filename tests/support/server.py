"""Start real Portside servers (``portside serve`` subprocesses) for tests.

Each server gets its own folder with a config.yaml, a SQLite database (or a fresh
PostgreSQL database) and local (or S3) storage, and listens on a free loopback port.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

POSTGRES_ADMIN_URI = os.environ.get(
    "PORTSIDE_TEST_POSTGRES_URI", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningRegistry:
    """A Portside server started by a test."""

    root: Path
    port: int
    config: dict[str, Any]
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.root / "server.log"

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``, as used in image references."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:1234`` (``https`` when it serves TLS)."""
        scheme = "https" if self.config.get("SSL_CERTIFICATE_PATH") else "http"
        return f"{scheme}://{self.host}"

    @property
    def config_path(self) -> Path:
        """The config.yaml the server runs with."""
        return self.root / "config.yaml"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PORTSIDE_CONFIG"] = str(self.config_path)
        return env

    def start(self) -> None:
        """Start (or restart) the server and wait until it answers."""
        self.config_path.write_text(yaml.safe_dump(self.config))
        log = self.log_path.open("ab")
        # A session of its own: stop() can then signal granian's worker processes too.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "portside", "serve", "--port", str(self.port)],
            cwd=self.root, env=self._env(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                # Only "is it up?": a TLS server's own certificate is tested elsewhere.
                urllib.request.urlopen(f"{self.url}/v2/", timeout=1,
                                       context=ssl._create_unverified_context())
            except urllib.error.HTTPError:
                return  # 401: it is up
            except OSError:
                time.sleep(0.1)
                continue
            return
        raise RuntimeError(f"server did not start:\n{self.log_path.read_text()[-3000:]}")

    def stop(self, kill: bool = False) -> None:
        """Stop the server (``kill=True``: SIGKILL, as in a crash).

        A crash kills the whole process group: killing only ``portside serve`` would
        leave its granian worker running, still serving the port (and the restarted
        server would share the port with it).
        """
        if self.process is None:
            return
        if kill:
            self._kill_group()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._kill_group()
            self.process.wait()
        self._kill_group()  # any worker that outlived its parent
        self.process = None

    def _kill_group(self) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def restart(self, kill: bool = False) -> None:
        """Stop and start again with the same config and data."""
        self.stop(kill=kill)
        self.start()

    def create_user(self, name: str, password: str, superuser: bool = False) -> None:
        """Create a user with the CLI against this server's database."""
        args = [sys.executable, "-m", "portside", "user", "create", name, "--password-stdin"]
        if superuser:
            args.append("--superuser")
        subprocess.run(args, input=f"{password}\n".encode(), cwd=self.root, env=self._env(),
                       check=True, capture_output=True)


def base_config(root: Path, port: int, db_uri: str | None = None,
                storage: dict[str, Any] | None = None) -> dict[str, Any]:
    """A config for a test server in ``root``."""
    return {
        "SERVER_HOSTNAME": f"127.0.0.1:{port}",
        "DB_URI": db_uri or f"sqlite:///{root / 'portside.db'}",
        "DISTRIBUTED_STORAGE_CONFIG": storage
        or {"default": ["LocalStorage", {"storage_path": str(root / "storage")}]},
        "DISTRIBUTED_STORAGE_PREFERENCE": ["default"],
    }


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database; dropped afterwards. Yields its URI."""
    import psycopg

    name = f"portside_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URI, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URI.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URI, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def running_registry(root: Path, db_uri: str | None = None,
                     storage: dict[str, Any] | None = None,
                     **overrides: Any) -> Iterator[RunningRegistry]:
    """Start a server in ``root`` with extra config keys; stop it afterwards."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = base_config(root, port, db_uri, storage)
    config.update(overrides)
    registry = RunningRegistry(root=root, port=port, config=config)
    registry.start()
    try:
        yield registry
    finally:
        registry.stop()


def postgres_available() -> bool:
    """True if the test PostgreSQL server answers."""
    try:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN_URI, connect_timeout=3):
            return True
    except Exception:
        return False
