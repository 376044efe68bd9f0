"""Repository names: nested names, invalid names (never a 500), unknown and foreign names."""

from __future__ import annotations

import json

import pytest

from functional.client import OCI_MANIFEST, RegistryClient, error_codes, sha256
from functional.client import raw_request as send_raw
from functional.conftest import Deployment, unique_repo

DIGEST = sha256(b"anything")
UPLOAD_ID = "3f1e2d4c-0000-4000-8000-000000000000"


def raw_request(deployment: Deployment, method: str, target: str,
                headers: dict[str, str] | None = None, body: bytes = b"",
                ) -> tuple[int, dict[str, str], bytes]:
    """:func:`functional.client.raw_request` against ``deployment``."""
    return send_raw(deployment.registry.port, method, target, headers, body)


def codes(payload: bytes) -> list[str]:
    """Error codes of a raw response body."""
    try:
        return [e["code"] for e in json.loads(payload)["errors"]]
    except (ValueError, KeyError, TypeError):
        return []


def test_nested_names_end_to_end(registry: Deployment, alice: RegistryClient) -> None:
    repo = unique_repo("alice", "team/sub/app")
    image = alice.push_image(repo, "v1", layers=2)
    response = alice.request("GET", f"/v2/{repo}/manifests/v1", repo=repo)
    assert response.status_code == 200
    assert response.content == image.manifest
    blob = alice.request("GET", f"/v2/{repo}/blobs/{sha256(image.layers[1])}", repo=repo)
    assert blob.content == image.layers[1]
    tags = alice.request("GET", f"/v2/{repo}/tags/list", repo=repo).json()
    assert tags == {"name": repo, "tags": ["v1"]}
    referrers = alice.request("GET", f"/v2/{repo}/referrers/{image.digest}", repo=repo)
    assert referrers.status_code == 200
    catalog = alice.http.get("/v2/_catalog", auth=alice.basic).json()["repositories"]
    assert repo in catalog
    # The parent path is a different (unknown) repository.
    parent = repo.rsplit("/", 1)[0]
    response = alice.request("GET", f"/v2/{parent}/manifests/v1", repo=parent)
    assert response.status_code == 404
    assert error_codes(response) == ["NAME_UNKNOWN"]


def test_nested_name_looking_like_an_endpoint(alice: RegistryClient) -> None:
    # A repository may be called ".../blobs" or ".../manifests": the path is split at
    # the last endpoint segment.
    for suffix in ("blobs", "manifests", "tags"):
        repo = unique_repo("alice", f"x/{suffix}")
        image = alice.push_image(repo, "v1")
        response = alice.request("GET", f"/v2/{repo}/manifests/v1", repo=repo)
        assert response.content == image.manifest, suffix


def test_longest_name(alice: RegistryClient) -> None:
    repo = "alice/" + "a" * 240 + unique_repo("x")[2:11]
    repo = repo + "b" * (255 - len(repo))
    assert len(repo) == 255
    image = alice.push_image(repo, "v1")
    response = alice.request("GET", f"/v2/{repo}/manifests/v1", repo=repo)
    assert response.content == image.manifest


BAD_NAMES = [
    "Alice/UPPER",
    "alice/UPPER",
    "alice/../x",
    "alice//x",
    "alice/./x",
    "alice/x/",
    "alice/-x",
    "alice/x-",
    "alice/x___y",
    "alice/x..y",
    "alice",
    "alice/" + "a" * 294,
    "alice/%2e%2e",
    "alice/%2E%2E/x",
    "alice/%2fx",
    "alice/x%00y",
    "alice/x%20y",
    "alice/caf%C3%A9",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_name_invalid(registry: Deployment, alice: RegistryClient,
                                    name: str) -> None:
    token = alice.token("repository:alice/x:pull,push,delete")
    auth = {"Authorization": f"Bearer {token}"}
    requests = [
        ("GET", f"/v2/{name}/manifests/latest"),
        ("HEAD", f"/v2/{name}/manifests/latest"),
        ("PUT", f"/v2/{name}/manifests/latest"),
        ("DELETE", f"/v2/{name}/manifests/{DIGEST}"),
        ("GET", f"/v2/{name}/blobs/{DIGEST}"),
        ("HEAD", f"/v2/{name}/blobs/{DIGEST}"),
        ("DELETE", f"/v2/{name}/blobs/{DIGEST}"),
        ("POST", f"/v2/{name}/blobs/uploads/"),
        ("POST", f"/v2/{name}/blobs/uploads/?digest={DIGEST}"),
        ("PATCH", f"/v2/{name}/blobs/uploads/{UPLOAD_ID}"),
        ("PUT", f"/v2/{name}/blobs/uploads/{UPLOAD_ID}?digest={DIGEST}"),
        ("GET", f"/v2/{name}/blobs/uploads/{UPLOAD_ID}"),
        ("GET", f"/v2/{name}/tags/list"),
        ("GET", f"/v2/{name}/referrers/{DIGEST}"),
    ]
    for method, target in requests:
        for headers in (auth, {}):
            body = b'{"schemaVersion": 2}' if method in ("PUT", "PATCH", "POST") else b""
            status, response_headers, payload = raw_request(registry, method, target,
                                                            headers, body)
            assert status == 400, (method, target, status, payload[:200])
            if method != "HEAD":
                assert codes(payload) == ["NAME_INVALID"], (method, target, payload[:200])
            assert response_headers.get("content-type", "").startswith("application/json")


def test_trailing_newline_is_not_accepted(registry: Deployment, alice: RegistryClient) -> None:
    # Python's "$" matches before a final "\n": every grammar must be matched in full.
    repo = unique_repo("alice")
    image = alice.push_image(repo, "v1")
    auth = alice.auth_headers(repo)
    headers = {**auth, "Content-Type": OCI_MANIFEST}
    status, _, payload = raw_request(registry, "PUT", f"/v2/{repo}/manifests/v2%0A", headers,
                                     image.manifest)
    assert status == 400
    assert codes(payload) == ["MANIFEST_INVALID"]
    status, _, payload = raw_request(registry, "GET",
                                     f"/v2/{repo}/manifests/{image.digest}%0A", auth)
    assert status == 400
    assert codes(payload) == ["DIGEST_INVALID"]
    status, _, payload = raw_request(
        registry, "POST", f"/v2/{repo}/blobs/uploads/?digest={sha256(b'abc')}%0A", auth, b"abc")
    assert status == 400
    assert codes(payload) == ["DIGEST_INVALID"]
    status, _, _ = raw_request(registry, "GET", f"/v2/{repo}%0A/tags/list", auth)
    assert status == 400
    tags = alice.request("GET", f"/v2/{repo}/tags/list", repo=repo).json()["tags"]
    assert tags == ["v1"]


def test_path_traversal_never_reaches_storage(registry: Deployment) -> None:
    for target in (f"/v2/alice/%2e%2e/blobs/{DIGEST}",
                   f"/v2/alice/%2e%2e/%2e%2e/%2e%2e/etc/blobs/{DIGEST}",
                   "/v2/alice/x/blobs/..%2f..%2f..%2fetc%2fpasswd",
                   "/v2/alice/x/blobs/sha256:..%2f..%2fpasswd",
                   "/v2/alice/x/manifests/..%2f..%2fconfig.yaml",
                   "/v2/../../etc/passwd",
                   "/v2/%2e%2e/%2e%2e/etc/passwd"):
        status, _, payload = raw_request(registry, "GET", target)
        assert 400 <= status < 500, (target, status)
        assert b"root:" not in payload


def test_unknown_repository_for_its_owner(alice: RegistryClient) -> None:
    repo = unique_repo("alice")
    for method, path in (("GET", f"/v2/{repo}/manifests/latest"),
                         ("GET", f"/v2/{repo}/tags/list"),
                         ("GET", f"/v2/{repo}/blobs/{DIGEST}"),
                         ("GET", f"/v2/{repo}/referrers/{DIGEST}"),
                         ("DELETE", f"/v2/{repo}/manifests/latest"),
                         ("DELETE", f"/v2/{repo}/blobs/{DIGEST}")):
        response = alice.request(method, path, repo=repo)
        assert response.status_code == 404, (method, path)
        assert error_codes(response) == ["NAME_UNKNOWN"], (method, path)


def test_unknown_namespace(alice: RegistryClient) -> None:
    repo = unique_repo("nobody-here")
    response = alice.request("POST", f"/v2/{repo}/blobs/uploads/", repo=repo)
    assert response.status_code == 403
    assert error_codes(response) == ["DENIED"]
    response = alice.request("GET", f"/v2/{repo}/manifests/latest", repo=repo)
    assert response.status_code == 403


def test_push_into_another_users_namespace(alice: RegistryClient, bob: RegistryClient,
                                           anonymous: RegistryClient) -> None:
    repo = unique_repo("alice")
    image = alice.push_image(repo, "v1")
    fresh = unique_repo("alice")
    for target in (repo, fresh):
        start = bob.request("POST", f"/v2/{target}/blobs/uploads/", repo=target)
        assert start.status_code == 403, target
        assert error_codes(start) == ["DENIED"]
        monolithic = bob.request("POST", f"/v2/{target}/blobs/uploads/", repo=target,
                                 params={"digest": sha256(b"evil")}, content=b"evil")
        assert monolithic.status_code == 403
        put = bob.put_manifest(target, "evil", image.manifest, OCI_MANIFEST)
        assert put.status_code == 403
        assert error_codes(put) == ["DENIED"]
        anonymous_put = anonymous.http.put(f"/v2/{target}/manifests/evil",
                                           content=image.manifest,
                                           headers={"Content-Type": OCI_MANIFEST})
        assert anonymous_put.status_code == 401
        assert "WWW-Authenticate" in anonymous_put.headers
    # Nothing was created in alice's namespace.
    response = alice.request("GET", f"/v2/{fresh}/tags/list", repo=fresh)
    assert response.status_code == 404
    assert error_codes(response) == ["NAME_UNKNOWN"]
    tags = alice.request("GET", f"/v2/{repo}/tags/list", repo=repo).json()["tags"]
    assert tags == ["v1"]


def test_unknown_endpoints(registry: Deployment) -> None:
    for method, target in (("GET", "/v2/alice/x/unknown/thing"), ("POST", "/v2/"),
                           ("DELETE", "/v2/_catalog"), ("PUT", "/v2/auth"),
                           ("POST", "/v2/alice/x/tags/list"), ("GET", "/v2/alice/x/blobs/"),
                           ("OPTIONS", "/v2/alice/x/manifests/latest")):
        status, _, payload = raw_request(registry, method, target)
        assert 400 <= status < 500, (method, target, status)
        assert codes(payload), (method, target, payload[:200])
