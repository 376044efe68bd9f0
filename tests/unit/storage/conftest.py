"""Fixtures running every storage test against each driver.

``storage`` is parametrized over ``local`` (a fresh directory) and ``s3`` (a fresh key
prefix in a bucket of a real moto S3 server, started once per session on loopback).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from portside.storage import LocalStorage, StorageDriver
from portside.storage.s3 import S3Storage
from support.s3server import S3Endpoint, create_bucket, running_s3_server


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    """A moto S3 server for the whole session (only started if an S3 test runs)."""
    with running_s3_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def s3_bucket(s3_endpoint: S3Endpoint) -> str:
    """One bucket shared by the session; tests are isolated by key prefix."""
    return create_bucket(s3_endpoint)


@pytest.fixture
def make_s3(request: pytest.FixtureRequest) -> Callable[..., S3Storage]:
    """A factory for S3Storage instances on the test server, each under a fresh prefix.

    Configured the Quay way (``host``/``port``/``is_secure``); keyword arguments override
    the constructor parameters, ``bucket`` the bucket.
    """

    def make(bucket: str | None = None, **kwargs: Any) -> S3Storage:
        endpoint: S3Endpoint = request.getfixturevalue("s3_endpoint")
        params: dict[str, Any] = {
            "s3_access_key": endpoint.access_key,
            "s3_secret_key": endpoint.secret_key,
            "host": endpoint.host,
            "port": endpoint.port,
            "is_secure": False,
            "storage_path": f"/tests/{uuid.uuid4().hex}/",
        }
        params.update(kwargs)
        return S3Storage(bucket or request.getfixturevalue("s3_bucket"), **params)

    return make


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> StorageDriver:
    """Each driver in turn, empty."""
    if request.param == "local":
        return LocalStorage(str(tmp_path / "storage"))
    make: Callable[..., S3Storage] = request.getfixturevalue("make_s3")
    return make()
