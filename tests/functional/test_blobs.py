"""Blob reads (GET with ranges, HEAD), per-repository visibility and deletion."""

from __future__ import annotations

import httpx
import pytest

from functional.client import RegistryClient, error_codes, random_bytes, sha256
from functional.conftest import Deployment, unique_repo


@pytest.fixture
def blob(alice: RegistryClient, repo: str) -> bytes:
    """100 random bytes pushed to ``repo``."""
    data = random_bytes(100)
    alice.push_blob(repo, data)
    return data


def get(client: RegistryClient, repo: str, data: bytes, **headers: str) -> httpx.Response:
    """``GET`` the blob of ``data`` in ``repo`` with extra headers."""
    return client.request("GET", f"/v2/{repo}/blobs/{sha256(data)}", repo=repo,
                          headers=headers)


def test_full_get(alice: RegistryClient, repo: str, blob: bytes) -> None:
    response = get(alice, repo, blob)
    assert response.status_code == 200
    assert response.content == blob
    assert response.headers["Docker-Content-Digest"] == sha256(blob)
    assert response.headers["Content-Length"] == "100"
    assert response.headers["Content-Type"] == "application/octet-stream"


def test_head(alice: RegistryClient, repo: str, blob: bytes) -> None:
    response = alice.request("HEAD", f"/v2/{repo}/blobs/{sha256(blob)}", repo=repo)
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["Content-Length"] == "100"
    assert response.headers["Docker-Content-Digest"] == sha256(blob)


@pytest.mark.parametrize(("range_header", "start", "end"), [
    ("bytes=0-9", 0, 9),
    ("bytes=90-", 90, 99),
    ("bytes=-10", 90, 99),
    ("bytes=95-200", 95, 99),
    ("bytes=-500", 0, 99),
    ("bytes=50-50", 50, 50),
])
def test_range(alice: RegistryClient, repo: str, blob: bytes, range_header: str, start: int,
               end: int) -> None:
    response = get(alice, repo, blob, Range=range_header)
    assert response.status_code == 206, range_header
    assert response.content == blob[start:end + 1]
    assert response.headers["Content-Range"] == f"bytes {start}-{end}/100"
    assert response.headers["Content-Length"] == str(end - start + 1)
    assert response.headers["Docker-Content-Digest"] == sha256(blob)


@pytest.mark.parametrize("range_header", ["bytes=0-1,5-6", "bytes=5-1,3-4", "items=0-1"])
def test_ranges_other_than_one_byte_range_get_the_whole_blob(
        alice: RegistryClient, repo: str, blob: bytes, range_header: str) -> None:
    response = get(alice, repo, blob, Range=range_header)
    assert response.status_code == 200, range_header
    assert response.content == blob


@pytest.mark.parametrize("range_header", ["bytes=100-", "bytes=200-300", "bytes=-0",
                                          "bytes=10-5", "bytes=abc"])
def test_unsatisfiable_range(alice: RegistryClient, repo: str, blob: bytes,
                             range_header: str) -> None:
    response = get(alice, repo, blob, Range=range_header)
    assert response.status_code == 416, range_header


def test_unknown_blob(alice: RegistryClient, repo: str, blob: bytes) -> None:
    unknown = sha256(b"never pushed")
    response = alice.request("GET", f"/v2/{repo}/blobs/{unknown}", repo=repo)
    assert response.status_code == 404
    assert error_codes(response) == ["BLOB_UNKNOWN"]
    head = alice.request("HEAD", f"/v2/{repo}/blobs/{unknown}", repo=repo)
    assert head.status_code == 404
    assert head.content == b""


def test_malformed_digest_in_url(alice: RegistryClient, repo: str, blob: bytes) -> None:
    for digest in ("sha256:abc", "sha256:" + "Z" * 64, "foo:bar", "md5:" + "0" * 32):
        response = alice.request("GET", f"/v2/{repo}/blobs/{digest}", repo=repo)
        assert response.status_code == 400, digest
        assert error_codes(response) == ["DIGEST_INVALID"], digest


def test_blob_in_unknown_repository(alice: RegistryClient) -> None:
    repo = unique_repo("alice")
    response = alice.request("GET", f"/v2/{repo}/blobs/{sha256(b'x')}", repo=repo)
    assert response.status_code == 404
    assert error_codes(response) == ["NAME_UNKNOWN"]


def test_blob_visibility_is_per_repository(alice: RegistryClient, bob: RegistryClient,
                                           repo: str, blob: bytes) -> None:
    digest = sha256(blob)
    # Another repository of the same user does not show it.
    sibling = unique_repo("alice")
    alice.push_blob(sibling, b"sibling exists")
    response = alice.request("GET", f"/v2/{sibling}/blobs/{digest}", repo=sibling)
    assert response.status_code == 404
    assert error_codes(response) == ["BLOB_UNKNOWN"]
    # Another user's repository does not show it either, with or without a token...
    own = unique_repo("bob")
    bob.push_blob(own, b"bob was here")
    for method in ("GET", "HEAD"):
        response = bob.request(method, f"/v2/{own}/blobs/{digest}", repo=own)
        assert response.status_code == 404, method
    assert error_codes(bob.request("GET", f"/v2/{own}/blobs/{digest}", repo=own)) == [
        "BLOB_UNKNOWN"]
    # ... and bob cannot read it through alice's repository.
    response = bob.request("GET", f"/v2/{repo}/blobs/{digest}", repo=repo)
    assert response.status_code in (401, 403)
    assert error_codes(response)[0] in ("UNAUTHORIZED", "DENIED")


def test_blob_delete(alice: RegistryClient, repo: str, blob: bytes) -> None:
    digest = sha256(blob)
    other = unique_repo("alice")
    alice.push_blob(other, blob)
    response = alice.request("DELETE", f"/v2/{repo}/blobs/{digest}", repo=repo)
    assert response.status_code == 202
    assert response.headers["Docker-Content-Digest"] == digest
    gone = alice.request("GET", f"/v2/{repo}/blobs/{digest}", repo=repo)
    assert gone.status_code == 404
    assert error_codes(gone) == ["BLOB_UNKNOWN"]
    again = alice.request("DELETE", f"/v2/{repo}/blobs/{digest}", repo=repo)
    assert again.status_code == 404
    assert error_codes(again) == ["BLOB_UNKNOWN"]
    # Unlinked from one repository only.
    assert alice.request("GET", f"/v2/{other}/blobs/{digest}", repo=other).content == blob


def test_blob_delete_needs_delete_permission(alice: RegistryClient, bob: RegistryClient,
                                             repo: str, blob: bytes) -> None:
    digest = sha256(blob)
    pull_only = alice.request("DELETE", f"/v2/{repo}/blobs/{digest}", repo=repo,
                              actions="pull")
    assert pull_only.status_code == 401
    assert 'error="insufficient_scope"' in pull_only.headers["WWW-Authenticate"]
    denied = bob.request("DELETE", f"/v2/{repo}/blobs/{digest}", repo=repo)
    assert denied.status_code == 403
    assert error_codes(denied) == ["DENIED"]
    assert get(alice, repo, blob).status_code == 200


def test_blob_referenced_by_manifest_cannot_be_deleted(alice: RegistryClient,
                                                       repo: str) -> None:
    image = alice.push_image(repo, "v1")
    response = alice.request("DELETE", f"/v2/{repo}/blobs/{sha256(image.layers[0])}",
                             repo=repo)
    assert response.status_code == 409
    assert error_codes(response) == ["UNSUPPORTED"]
    assert get(alice, repo, image.layers[0]).status_code == 200


def test_blob_read_after_restart(registry: Deployment, alice: RegistryClient, repo: str,
                                 blob: bytes) -> None:
    registry.restart()
    assert get(alice, repo, blob).content == blob
