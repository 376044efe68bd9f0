"""Fixtures for end-to-end tests with real clients (skopeo, podman, buildah, docker).

Prerequisites (client binaries, the test images in ``.cache/testimages``) are checked by
the helpers in :mod:`support.e2e`: missing ones skip, or fail under
``PORTSIDE_E2E_REQUIRED=1``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.clients import Buildah, Podman, Skopeo
from support.e2e import Registry, need_binary, start_registry


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """One registry (SQLite, local storage, private repositories) per test module."""
    with start_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="module")
def public_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry whose repositories are created public on first push.

    There is no API to change a repository's visibility yet, so this is how a test gets
    a public repository.
    """
    with start_registry(tmp_path_factory.mktemp("public-registry"),
                        CREATE_PRIVATE_REPO_ON_PUSH=False) as reg:
        yield reg


@pytest.fixture
def skopeo(tmp_path: Path) -> Skopeo:
    """skopeo with private state; add server logs to ``.logs`` for failure reports."""
    return Skopeo(need_binary("skopeo"), tmp_path / "skopeo-state")


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[Podman]:
    """podman with private vfs storage."""
    client = Podman(need_binary("podman"), tmp_path / "podman-state")
    yield client
    client.close()


@pytest.fixture
def buildah(tmp_path: Path) -> Iterator[Buildah]:
    """buildah with private vfs storage."""
    client = Buildah(need_binary("buildah"), tmp_path / "buildah-state")
    yield client
    client.close()
