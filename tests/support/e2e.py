"""Shared helpers of the end-to-end tests: prerequisites, test images, test registries.

A missing client binary or test image skips the test with the reason, unless
``PORTSIDE_E2E_REQUIRED=1`` is set (as CI does): then it fails, so that a broken CI
machine cannot pass by skipping everything.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from support.clients import OCILayout
from support.server import RunningRegistry, running_registry

REQUIRED = os.environ.get("PORTSIDE_E2E_REQUIRED") == "1"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
TEST_IMAGES = Path(os.environ.get("PORTSIDE_TEST_IMAGES", PROJECT_ROOT / ".cache" / "testimages"))

#: Every layout the suite uses, with the tag it is published under in the layout.
LAYOUT_TAGS = {
    "debian-minbase": "latest",
    "debian-python": "latest",
    "multiarch-index": "latest",
    "big-layers": "latest",
    "helm-artifact": "0.1.0",
}

#: Log lines that mean the server failed a request (a 500), whatever the client did next.
SERVER_ERROR_MARKERS = ("unhandled error", "Traceback (most recent call last)")

USER = "alice"
PASSWORD = "alice-e2e-password"


def unavailable(reason: str) -> NoReturn:
    """Skip for a missing prerequisite; fail instead when CI requires everything."""
    if REQUIRED:
        pytest.fail(f"{reason} (PORTSIDE_E2E_REQUIRED=1)", pytrace=False)
    pytest.skip(reason)


def need_binary(name: str, preferred: str | None = None) -> str:
    """The path of a client binary (``preferred`` first), or skip/fail."""
    if preferred and os.access(preferred, os.X_OK):
        return preferred
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed (Debian package needed for e2e tests)")
    return path


def need_layout(name: str) -> tuple[Path, str]:
    """A test image layout and its tag, or skip/fail with how to build them."""
    path = TEST_IMAGES / name
    tag = LAYOUT_TAGS[name]
    if not (path / "index.json").is_file():
        unavailable(f"test image {path} is missing; build it with `make test-images`")
    try:
        OCILayout(path).descriptor(tag)
    except (KeyError, ValueError) as exc:
        unavailable(f"test image {path} is unusable: {exc}; rebuild with `make test-images`")
    return path, tag


@dataclass
class Registry:
    """A running Portside with one user who owns the namespace ``user``."""

    server: RunningRegistry
    user: str = USER
    password: str = PASSWORD

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``."""
        return self.server.host

    @property
    def creds(self) -> str:
        """``user:password`` as skopeo takes it."""
        return f"{self.user}:{self.password}"

    def ref(self, repo: str, reference: str = "latest") -> str:
        """``docker://host/<repo>:<tag>`` (or ``@digest``)."""
        sep = "@" if reference.startswith("sha256:") else ":"
        return f"docker://{self.host}/{repo}{sep}{reference}"

    def http(self, auth: bool = True) -> httpx.Client:
        """An HTTP client for the registry (Basic auth as the user unless ``auth=False``)."""
        return httpx.Client(base_url=self.server.url, timeout=60,
                            auth=(self.user, self.password) if auth else None)


@contextlib.contextmanager
def start_registry(root: Path, db_uri: str | None = None,
                   storage: dict[str, Any] | None = None,
                   **config: Any) -> Iterator[Registry]:
    """A Portside server in ``root`` with the test user created.

    When the block ends normally, the server log must hold no unhandled error: clients
    often retry or fall back after a 500, so a passing client is not proof enough.
    """
    with running_registry(root, db_uri=db_uri, storage=storage, **config) as server:
        server.create_user(USER, PASSWORD)
        yield Registry(server)
    log = server.log_path.read_text(errors="replace")
    for marker in SERVER_ERROR_MARKERS:
        if marker in log:
            at = log.index(marker)
            raise AssertionError(f"{server.log_path} reports a server error:\n"
                                 f"{log[max(at - 200, 0):at + 4000]}")
