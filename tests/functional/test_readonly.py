"""Read-only mode (``REGISTRY_STATE: readonly``, ``DISABLE_PUSHES``): reads go on, writes
are refused on ``/v2`` (405 ``DENIED``) and ``/api/v1`` (503)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from functional.client import RegistryClient, sha256
from functional.conftest import PASSWORDS, Deployment, create_users
from functional.test_api_repositories import api
from support.server import postgres_database, running_registry


@pytest.fixture(scope="module", params=["REGISTRY_STATE", "DISABLE_PUSHES"])
def seeded(
    request: pytest.FixtureRequest, backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Deployment, str, str]]:
    """A server that got an image pushed, then restarted read-only on the same data.

    Yields the deployment, the repository and the pushed manifest's digest.
    """
    key = str(request.param)
    root: Path = tmp_path_factory.mktemp(f"readonly-{backend}-{key}")
    with contextlib.ExitStack() as stack:
        db_uri = stack.enter_context(postgres_database()) if backend == "postgres" else None
        registry = stack.enter_context(running_registry(root, db_uri=db_uri, LOGIN_FAILURE_LIMIT=0))
        create_users(registry, ("alice",))
        repo = "alice/frozen"
        client = RegistryClient(registry.url, "alice", PASSWORDS["alice"])
        try:
            image = client.push_image(repo, "v1")
        finally:
            client.close()
        registry.config.update(
            {"REGISTRY_STATE": "readonly"} if key == "REGISTRY_STATE" else {"DISABLE_PUSHES": True}
        )
        registry.restart()
        deployment = Deployment(registry, backend, f"readonly-{key}")
        yield deployment, repo, image.digest
        deployment.close_clients()


def _assert_read_only(response: httpx.Response) -> None:
    assert response.status_code == 405, response.text
    error = response.json()["errors"][0]
    assert error["code"] == "DENIED"
    assert "read-only" in error["message"]


def test_pulls_and_reads_work(seeded: tuple[Deployment, str, str]) -> None:
    deployment, repo, digest = seeded
    alice = deployment.client("alice")
    response = alice.request("GET", f"/v2/{repo}/manifests/v1", repo=repo, actions="pull")
    assert response.status_code == 200, response.text
    assert sha256(response.content) == digest
    tags = alice.request("GET", f"/v2/{repo}/tags/list", repo=repo, actions="pull")
    assert tags.json()["tags"] == ["v1"]
    catalog = alice.http.get(
        "/v2/_catalog", headers={"Authorization": f"Bearer {alice.token('registry:catalog:*')}"}
    )
    assert catalog.status_code == 200
    assert repo in catalog.json()["repositories"]
    with api(deployment, "alice") as client:
        listed = client.get("/repository", params={"namespace": "alice"})
        assert listed.status_code == 200, listed.text
        assert [r["name"] for r in listed.json()["repositories"]] == ["frozen"]


def test_v2_writes_are_refused(seeded: tuple[Deployment, str, str]) -> None:
    deployment, repo, digest = seeded
    alice = deployment.client("alice")
    _assert_read_only(alice.request("POST", f"/v2/{repo}/blobs/uploads/", repo=repo))
    _assert_read_only(
        alice.request(
            "POST",
            f"/v2/{repo}/blobs/uploads/",
            repo=repo,
            params={"digest": sha256(b"x")},
            content=b"x",
        )
    )
    _assert_read_only(
        alice.request(
            "POST", f"/v2/{repo}/blobs/uploads/", repo=repo, params={"mount": digest, "from": repo}
        )
    )
    _assert_read_only(
        alice.request("PATCH", f"/v2/{repo}/blobs/uploads/abc", repo=repo, content=b"x")
    )
    _assert_read_only(
        alice.request(
            "PUT", f"/v2/{repo}/blobs/uploads/abc", repo=repo, params={"digest": sha256(b"x")}
        )
    )
    _assert_read_only(alice.put_manifest(repo, "v2", b"{}"))
    _assert_read_only(alice.request("DELETE", f"/v2/{repo}/manifests/{digest}", repo=repo))
    _assert_read_only(alice.request("DELETE", f"/v2/{repo}/blobs/{sha256(b'x')}", repo=repo))
    # Nothing changed.
    tags = alice.request("GET", f"/v2/{repo}/tags/list", repo=repo, actions="pull")
    assert tags.json()["tags"] == ["v1"]


def test_api_writes_are_refused(seeded: tuple[Deployment, str, str]) -> None:
    deployment, repo, _digest = seeded
    with api(deployment, "alice") as client:
        for method, path, body in [
            (
                "POST",
                "/repository",
                {"repository": "new", "visibility": "private", "description": ""},
            ),
            ("PUT", f"/repository/{repo}", {"description": "changed"}),
            ("PUT", f"/repository/{repo}/tag/v2", {"manifest_digest": _digest}),
            ("DELETE", f"/repository/{repo}/tag/v1", None),
            ("DELETE", f"/repository/{repo}", None),
        ]:
            response = client.request(method, path, json=body)
            assert response.status_code == 503, (method, path, response.text)
            assert response.json()["error_type"] == "read_only"
            assert "read-only" in response.json()["error_message"]
        still = client.get(f"/repository/{repo}")
        assert still.status_code == 200
        assert still.json()["description"] in ("", None)


def test_signin_still_works(seeded: tuple[Deployment, str, str]) -> None:
    deployment, _repo, _digest = seeded
    with httpx.Client(base_url=f"{deployment.url}/api/v1", timeout=30) as client:
        response = client.post(
            "/signin", json={"username": "alice", "password": PASSWORDS["alice"]}
        )
        assert response.status_code != 503, response.text
