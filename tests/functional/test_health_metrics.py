"""``/health/instance``, ``/health/endtoend`` and ``/metrics`` on real servers.

Besides the shared ``main`` server, each database gets a server of its own with two
storage locations: a preferred local one and an S3 one on a real (moto) S3 server, which
a test stops to see the end-to-end check fail while the instance check still passes.
The database figures of ``/metrics`` are not cached there, so they change at once.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from functional.conftest import Deployment, create_users
from functional.test_api_auth import make_token
from functional.test_api_repositories import api, create, short
from support.s3server import S3Endpoint, create_bucket, running_s3_server
from support.server import postgres_database, running_registry
from support.tcp_proxy import TcpProxy


class S3Server:
    """A moto server that a test may stop early."""

    def __init__(self) -> None:
        self._context = running_s3_server()
        self.endpoint: S3Endpoint = self._context.__enter__()
        self._running = True

    def stop(self) -> None:
        """Stop the server (once)."""
        if self._running:
            self._running = False
            self._context.__exit__(None, None, None)


@pytest.fixture(scope="module")
def s3_deployment(
    backend: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Deployment, S3Server]]:
    """A server with a local and an S3 storage location, uncached database metrics."""
    s3 = S3Server()
    with contextlib.ExitStack() as stack:
        stack.callback(s3.stop)
        bucket = create_bucket(s3.endpoint)
        root: Path = tmp_path_factory.mktemp(f"{backend}-health")
        storage: dict[str, Any] = {
            "local": ["LocalStorage", {"storage_path": str(root / "storage")}],
            "remote": [
                "S3Storage",
                {
                    "s3_bucket": bucket,
                    "s3_access_key": s3.endpoint.access_key,
                    "s3_secret_key": s3.endpoint.secret_key,
                    "host": s3.endpoint.host,
                    "port": s3.endpoint.port,
                    "is_secure": False,
                    "storage_path": "/registry",
                    "s3_region": s3.endpoint.region,
                },
            ],
        }
        db_uri = stack.enter_context(postgres_database()) if backend == "postgres" else None
        registry = stack.enter_context(
            running_registry(
                root,
                db_uri=db_uri,
                storage=storage,
                LOGIN_FAILURE_LIMIT=0,
                METRICS_DATABASE_CACHE_S=0,
                DISTRIBUTED_STORAGE_PREFERENCE=["local"],
            )
        )
        create_users(registry, ("alice",))
        deployment = Deployment(registry, backend, "health")
        yield deployment, s3
        deployment.close_clients()


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the sample ``name`` with ``labels`` in a scrape (0 if absent)."""
    for family in text_string_to_metric_families(text):
        for item in family.samples:
            if item.name == name and all(item.labels.get(k) == v for k, v in labels.items()):
                return float(item.value)
    return 0.0


def scrape(url: str) -> str:
    """``GET /metrics``."""
    response = httpx.get(f"{url}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def test_health_on_the_shared_server(registry: Deployment) -> None:
    instance = httpx.get(f"{registry.url}/health/instance", timeout=30)
    assert instance.status_code == 200, instance.text
    assert instance.json() == {
        "data": {"services": {"database": True, "storage": True}},
        "status_code": 200,
    }
    endtoend = httpx.get(f"{registry.url}/health/endtoend", timeout=30)
    assert endtoend.status_code == 200, endtoend.text
    assert endtoend.json() == {
        "data": {"services": {"database": True, "auth": True, "storage": True}},
        "status_code": 200,
    }
    # The check objects are removed again.
    assert not list((registry.registry.root / "storage").glob("health/*"))
    assert httpx.post(f"{registry.url}/health/instance").status_code == 405


def test_metrics_count_pushes_and_requests(
    s3_deployment: tuple[Deployment, S3Server],
) -> None:
    deployment, _s3 = s3_deployment
    before = scrape(deployment.url)
    alice = deployment.client("alice")
    repo = f"alice/{short('metrics')}"
    image = alice.push_image(repo, "v1", layers=2)
    pulled = alice.request(
        "GET", f"/v2/{repo}/manifests/v1", repo=repo, headers={"Accept": image.media_type}
    )
    assert pulled.status_code == 200
    bad = httpx.get(f"{deployment.url}/v2/", auth=("alice", "wrong"), timeout=30)
    assert bad.status_code == 401
    after = scrape(deployment.url)

    def grew(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert grew("portside_manifests_pushed_total") == 1
    assert grew("portside_manifest_pulls_total") == 1
    assert grew("portside_blobs_uploaded_total") == 3  # config and two layers
    assert grew("portside_blob_uploaded_bytes_total") >= 2 * 256
    route = "/v2/{name}/manifests/{reference}"
    assert (
        grew("portside_http_requests_total", api="v2", route=route, method="PUT", status="201") == 1
    )
    assert (
        grew(
            "portside_http_request_duration_seconds_count",
            api="v2",
            route=route,
            method="GET",
            status="200",
        )
        == 1
    )
    assert grew("portside_registry_auth_total", kind="basic", result="failure") == 1
    assert grew("portside_registry_auth_total", kind="bearer", result="success") >= 4
    assert sample(after, "quay_user_rows") == 1
    assert "process_cpu_seconds_total" in after
    assert "portside_queue_items" in after


def test_repository_rows_follow_the_api(s3_deployment: tuple[Deployment, S3Server]) -> None:
    deployment, _s3 = s3_deployment
    before = scrape(deployment.url)
    token = make_token(deployment, "alice", "repo:read repo:write repo:admin repo:create")
    with api(deployment, "alice") as client:
        client.headers["Authorization"] = f"Bearer {token}"
        assert create(client, short("rows")).status_code == 201
    after = scrape(deployment.url)
    assert sample(after, "quay_repository_rows") == sample(before, "quay_repository_rows") + 1
    assert (
        sample(
            after,
            "portside_http_requests_total",
            api="api_v1",
            route="/api/v1/repository",
            method="POST",
            status="201",
        )
        >= 1
    )
    assert sample(after, "quay_org_rows") == 0
    assert sample(after, "quay_robot_rows") == 0


def test_endtoend_fails_quickly_without_s3(
    s3_deployment: tuple[Deployment, S3Server],
) -> None:
    deployment, s3 = s3_deployment
    healthy = httpx.get(f"{deployment.url}/health/endtoend", timeout=30)
    assert healthy.status_code == 200, healthy.text
    s3.stop()
    started = time.monotonic()
    broken = httpx.get(f"{deployment.url}/health/endtoend", timeout=30)
    assert time.monotonic() - started < 10
    assert broken.status_code == 503, broken.text
    assert broken.json() == {
        "data": {"services": {"database": True, "auth": True, "storage": False}},
        "status_code": 503,
    }
    # This process still serves from its preferred (local) location.
    instance = httpx.get(f"{deployment.url}/health/instance", timeout=30)
    assert instance.status_code == 200, instance.text
    # The failure is counted for alerting (the "storage errors" rule).
    assert sample(scrape(deployment.url), "portside_health_check_failures_total",
                  check="storage:remote") >= 1


def test_instance_health_follows_postgresql(backend: str, tmp_path: Path) -> None:
    """PostgreSQL cut off: both checks answer 503 naming the database, quickly; back:
    200 again without a restart."""
    if backend != "postgres":
        pytest.skip("a PostgreSQL outage; the SQLite file cannot go away like a server")
    with contextlib.ExitStack() as stack:
        db_uri = stack.enter_context(postgres_database())
        proxy = TcpProxy(5432)
        stack.callback(proxy.cut)
        proxied = db_uri.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        assert proxied != db_uri
        registry = stack.enter_context(running_registry(
            tmp_path, db_uri=proxied, LOGIN_FAILURE_LIMIT=0, METRICS_DATABASE_CACHE_S=0))
        assert httpx.get(f"{registry.url}/health/instance", timeout=30).status_code == 200
        proxy.cut()
        started = time.monotonic()
        broken = httpx.get(f"{registry.url}/health/instance", timeout=30)
        assert time.monotonic() - started < 10
        assert broken.status_code == 503, broken.text
        assert broken.json()["data"]["services"]["database"] is False
        assert httpx.get(f"{registry.url}/health/endtoend", timeout=30).status_code == 503
        proxy.restore()
        deadline = time.monotonic() + 30
        while True:
            healthy = httpx.get(f"{registry.url}/health/instance", timeout=30)
            if healthy.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert healthy.status_code == 200, healthy.text
        failures = sample(scrape(registry.url), "portside_health_check_failures_total",
                          check="database")
        assert failures >= 1
