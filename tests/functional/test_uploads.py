"""Blob uploads: monolithic, chunked, streamed, resumed, interrupted, mounted, refused."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from functional.client import RegistryClient, error_codes, random_bytes, sha256
from functional.conftest import Deployment, unique_repo


def patch(client: RegistryClient, repo: str, location: str, data: bytes,
          start: int | None = None) -> httpx.Response:
    """``PATCH`` one chunk, with ``Content-Range`` when ``start`` is given."""
    headers = {"Content-Type": "application/octet-stream"}
    if start is not None:
        headers["Content-Range"] = f"{start}-{start + len(data) - 1}"
    return client.request("PATCH", location, repo=repo, content=data, headers=headers)


def finish(client: RegistryClient, repo: str, location: str, digest: str,
           data: bytes = b"") -> httpx.Response:
    """``PUT ?digest=`` with an optional last chunk."""
    return client.request("PUT", location, repo=repo, params={"digest": digest}, content=data,
                          headers={"Content-Type": "application/octet-stream"})


def upload_status(client: RegistryClient, repo: str, location: str) -> httpx.Response:
    """``GET`` the upload's status."""
    return client.request("GET", location, repo=repo)


def received(response: httpx.Response) -> int:
    """Bytes the server holds, from the inclusive ``Range: 0-<end>`` header."""
    start, end = response.headers["Range"].split("-")
    assert start == "0"
    return int(end) + 1


def assert_blob(client: RegistryClient, repo: str, data: bytes) -> None:
    """The blob is served in ``repo`` with exactly ``data``."""
    response = client.request("GET", f"/v2/{repo}/blobs/{sha256(data)}", repo=repo)
    assert response.status_code == 200, response.text
    assert response.content == data
    assert response.headers["Docker-Content-Digest"] == sha256(data)


def assert_no_blob(client: RegistryClient, repo: str, digest: str) -> None:
    """``HEAD`` of the blob answers 404 (and ``GET`` says BLOB_UNKNOWN)."""
    head = client.request("HEAD", f"/v2/{repo}/blobs/{digest}", repo=repo)
    assert head.status_code == 404
    get = client.request("GET", f"/v2/{repo}/blobs/{digest}", repo=repo)
    assert get.status_code == 404
    assert error_codes(get) == ["BLOB_UNKNOWN"]


# --- the happy paths ---------------------------------------------------------------------


def test_monolithic_post_with_digest(alice: RegistryClient, repo: str) -> None:
    data = random_bytes(5000)
    response = alice.request("POST", f"/v2/{repo}/blobs/uploads/", repo=repo,
                             params={"digest": sha256(data)}, content=data,
                             headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 201
    assert response.headers["Location"] == f"/v2/{repo}/blobs/{sha256(data)}"
    assert response.headers["Docker-Content-Digest"] == sha256(data)
    assert_blob(alice, repo, data)


def test_post_then_put(alice: RegistryClient, repo: str) -> None:
    data = random_bytes(3000)
    start = alice.request("POST", f"/v2/{repo}/blobs/uploads/", repo=repo)
    assert start.status_code == 202
    location = start.headers["Location"]
    assert location.startswith(f"/v2/{repo}/blobs/uploads/")
    assert start.headers["Docker-Upload-UUID"] == location.rsplit("/", 1)[1]
    assert start.headers["Range"] == "0-0"
    response = finish(alice, repo, location, sha256(data), data)
    assert response.status_code == 201
    assert response.headers["Docker-Content-Digest"] == sha256(data)
    assert_blob(alice, repo, data)


def test_chunked_upload_with_content_range(alice: RegistryClient, repo: str) -> None:
    data = random_bytes(10_000)
    chunks = [data[:1], data[1:4000], data[4000:9999], data[9999:]]
    location = alice.start_upload(repo)
    offset = 0
    for chunk in chunks:
        response = patch(alice, repo, location, chunk, start=offset)
        assert response.status_code == 202, response.text
        offset += len(chunk)
        assert response.headers["Range"] == f"0-{offset - 1}"
        assert response.headers["Location"] == location
        assert response.headers["Docker-Upload-UUID"] == location.rsplit("/", 1)[1]
        status = upload_status(alice, repo, location)
        assert status.status_code == 204
        assert status.headers["Range"] == f"0-{offset - 1}"
        assert status.headers["Docker-Upload-UUID"] == location.rsplit("/", 1)[1]
    response = finish(alice, repo, location, sha256(data))
    assert response.status_code == 201
    assert_blob(alice, repo, data)
    # A finished upload is gone.
    gone = upload_status(alice, repo, location)
    assert gone.status_code == 404
    assert error_codes(gone) == ["BLOB_UPLOAD_UNKNOWN"]


def test_content_range_with_bytes_prefix_and_last_chunk_in_put(alice: RegistryClient,
                                                                repo: str) -> None:
    data = random_bytes(2048)
    location = alice.start_upload(repo)
    response = alice.request("PATCH", location, repo=repo, content=data[:1024],
                             headers={"Content-Range": "bytes 0-1023/*"})
    assert response.status_code == 202
    response = alice.request("PUT", location, repo=repo, params={"digest": sha256(data)},
                             content=data[1024:], headers={"Content-Range": "1024-2047"})
    assert response.status_code == 201, response.text
    assert_blob(alice, repo, data)


def test_streamed_patch_without_content_range(alice: RegistryClient, repo: str) -> None:
    data = random_bytes(300_000)

    def body() -> Iterator[bytes]:  # chunked transfer encoding, no Content-Length
        for i in range(0, len(data), 65536):
            yield data[i:i + 65536]

    location = alice.start_upload(repo)
    response = alice.request("PATCH", location, repo=repo, content=body())
    assert response.status_code == 202, response.text
    assert received(response) == len(data)
    # A second streamed chunk appends.
    more = random_bytes(100)
    response = alice.request("PATCH", location, repo=repo, content=more)
    assert response.status_code == 202
    assert received(response) == len(data) + 100
    response = finish(alice, repo, location, sha256(data + more))
    assert response.status_code == 201
    assert_blob(alice, repo, data + more)


def test_empty_blob(alice: RegistryClient, repo: str) -> None:
    digest = alice.push_blob(repo, b"")
    assert digest == sha256(b"")
    head = alice.request("HEAD", f"/v2/{repo}/blobs/{digest}", repo=repo)
    assert head.status_code == 200
    assert head.headers["Content-Length"] == "0"


# --- refusals ------------------------------------------------------------------------------


def test_out_of_order_and_repeated_chunks(alice: RegistryClient, repo: str) -> None:
    data = random_bytes(3000)
    location = alice.start_upload(repo)
    # A chunk that does not start at 0 on an empty upload.
    response = patch(alice, repo, location, data[1000:2000], start=1000)
    assert response.status_code == 416
    assert patch(alice, repo, location, data[:1000], start=0).status_code == 202
    # The same chunk again.
    repeated = patch(alice, repo, location, data[:1000], start=0)
    assert repeated.status_code == 416
    # Skipping ahead.
    skipped = patch(alice, repo, location, data[2000:], start=2000)
    assert skipped.status_code == 416
    # Content-Range that disagrees with Content-Length.
    mismatch = alice.request("PATCH", location, repo=repo, content=data[1000:2000],
                             headers={"Content-Range": "1000-1499"})
    assert mismatch.status_code == 416
    status = upload_status(alice, repo, location)
    assert status.headers["Range"] == "0-999"
    assert patch(alice, repo, location, data[1000:], start=1000).status_code == 202
    assert finish(alice, repo, location, sha256(data)).status_code == 201
    assert_blob(alice, repo, data)


def test_malformed_content_range(alice: RegistryClient, repo: str) -> None:
    location = alice.start_upload(repo)
    for value in ("abc", "bytes=-5", "10-5"):
        response = alice.request("PATCH", location, repo=repo, content=b"hello",
                                 headers={"Content-Range": value})
        assert response.status_code in (400, 416), value
        assert error_codes(response) == ["BLOB_UPLOAD_INVALID"], value


def test_wrong_digest_stores_nothing(alice: RegistryClient, repo: str) -> None:
    data = random_bytes(4000)
    claimed = sha256(b"something else")
    location = alice.start_upload(repo)
    assert patch(alice, repo, location, data, start=0).status_code == 202
    response = finish(alice, repo, location, claimed)
    assert response.status_code == 400
    assert error_codes(response) == ["DIGEST_INVALID"]
    assert_no_blob(alice, repo, sha256(data))
    assert_no_blob(alice, repo, claimed)
    # Monolithic, too.
    response = alice.request("POST", f"/v2/{repo}/blobs/uploads/", repo=repo,
                             params={"digest": claimed}, content=data)
    assert response.status_code == 400
    assert error_codes(response) == ["DIGEST_INVALID"]
    assert_no_blob(alice, repo, sha256(data))


def test_malformed_digest(alice: RegistryClient, repo: str) -> None:
    data = b"payload"
    for digest in ("sha256:xyz", "sha256:" + "A" * 64, "md5:d41d8cd98f00b204e9800998ecf8427e",
                   "nonsense", "sha256:"):
        response = alice.request("POST", f"/v2/{repo}/blobs/uploads/", repo=repo,
                                 params={"digest": digest}, content=data)
        assert response.status_code == 400, digest
        assert error_codes(response) == ["DIGEST_INVALID"], digest
        location = alice.start_upload(repo)
        response = finish(alice, repo, location, digest, data)
        assert response.status_code == 400, digest
        assert error_codes(response) == ["DIGEST_INVALID"], digest
    location = alice.start_upload(repo)
    response = alice.request("PUT", location, repo=repo, content=data)
    assert response.status_code == 400
    assert error_codes(response) == ["DIGEST_INVALID"]


def test_sha512_digest(alice: RegistryClient, repo: str) -> None:
    import hashlib

    data = random_bytes(1000)
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    response = alice.request("POST", f"/v2/{repo}/blobs/uploads/", repo=repo,
                             params={"digest": digest}, content=data)
    assert response.status_code == 201, response.text
    got = alice.request("GET", f"/v2/{repo}/blobs/{digest}", repo=repo)
    assert got.status_code == 200
    assert got.content == data


def test_cancel_upload(alice: RegistryClient, repo: str) -> None:
    location = alice.start_upload(repo)
    assert patch(alice, repo, location, b"abc", start=0).status_code == 202
    response = alice.request("DELETE", location, repo=repo)
    assert response.status_code == 204
    for method in ("GET", "PATCH", "DELETE"):
        gone = alice.request(method, location, repo=repo, content=b"x" if method == "PATCH"
                             else None)
        assert gone.status_code == 404, method
        assert error_codes(gone) == ["BLOB_UPLOAD_UNKNOWN"], method
    gone = finish(alice, repo, location, sha256(b"abc"))
    assert gone.status_code == 404
    assert error_codes(gone) == ["BLOB_UPLOAD_UNKNOWN"]


def test_unknown_upload_id(alice: RegistryClient, repo: str) -> None:
    alice.push_blob(repo, b"make the repository exist")
    for upload_id in (str(uuid.uuid4()), "not-a-uuid", "0" * 64):
        location = f"/v2/{repo}/blobs/uploads/{upload_id}"
        for method in ("GET", "PATCH", "PUT", "DELETE"):
            params = {"digest": sha256(b"")} if method == "PUT" else None
            response = alice.request(method, location, repo=repo, params=params)
            assert response.status_code == 404, (upload_id, method)
            assert error_codes(response) == ["BLOB_UPLOAD_UNKNOWN"], (upload_id, method)


def test_upload_of_another_repository_is_unknown(alice: RegistryClient, repo: str) -> None:
    other = unique_repo("alice")
    alice.push_blob(other, b"exists")
    location = alice.start_upload(repo)
    upload_id = location.rsplit("/", 1)[1]
    response = alice.request("GET", f"/v2/{other}/blobs/uploads/{upload_id}", repo=other)
    assert response.status_code == 404
    assert error_codes(response) == ["BLOB_UPLOAD_UNKNOWN"]


def test_upload_to_unknown_repository_is_unknown(alice: RegistryClient) -> None:
    repo = unique_repo("alice")
    response = alice.request("GET", f"/v2/{repo}/blobs/uploads/{uuid.uuid4()}", repo=repo)
    assert response.status_code == 404
    assert error_codes(response) == ["BLOB_UPLOAD_UNKNOWN"]


def test_maximum_layer_size(alice: RegistryClient, repo: str) -> None:
    limit = 1 << 20  # MAXIMUM_LAYER_SIZE of the main profile
    data = random_bytes(limit + 1)
    response = alice.request("POST", f"/v2/{repo}/blobs/uploads/", repo=repo,
                             params={"digest": sha256(data)}, content=data)
    assert response.status_code == 413
    assert error_codes(response) == ["SIZE_INVALID"]
    assert_no_blob(alice, repo, sha256(data))
    # Chunk by chunk: the chunk crossing the limit is refused, what came before stays.
    location = alice.start_upload(repo)
    assert patch(alice, repo, location, data[:limit], start=0).status_code == 202
    response = patch(alice, repo, location, data[limit:], start=limit)
    assert response.status_code == 413
    assert error_codes(response) == ["SIZE_INVALID"]
    assert received(upload_status(alice, repo, location)) == limit
    # Exactly at the limit is fine.
    assert finish(alice, repo, location, sha256(data[:limit])).status_code == 201


# --- cross-repository mounts -----------------------------------------------------------------


def test_mount_from_named_repository(alice: RegistryClient) -> None:
    source, target = unique_repo("alice"), unique_repo("alice")
    digest = alice.push_blob(source, b"shared layer " + random_bytes(32))
    token = alice.token(f"repository:{target}:pull,push", f"repository:{source}:pull")
    response = alice.http.post(f"/v2/{target}/blobs/uploads/",
                               params={"mount": digest, "from": source},
                               headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201, response.text
    assert response.headers["Location"] == f"/v2/{target}/blobs/{digest}"
    assert response.headers["Docker-Content-Digest"] == digest
    head = alice.request("HEAD", f"/v2/{target}/blobs/{digest}", repo=target)
    assert head.status_code == 200
    # Mounting again (already there) is still 201.
    again = alice.http.post(f"/v2/{target}/blobs/uploads/",
                            params={"mount": digest, "from": source},
                            headers={"Authorization": f"Bearer {token}"})
    assert again.status_code == 201


def test_mount_without_from(alice: RegistryClient) -> None:
    source, target = unique_repo("alice"), unique_repo("alice")
    digest = alice.push_blob(source, random_bytes(64))
    response = alice.request("POST", f"/v2/{target}/blobs/uploads/", repo=target,
                             params={"mount": digest})
    assert response.status_code == 201, response.text
    assert response.headers["Docker-Content-Digest"] == digest
    assert alice.request("HEAD", f"/v2/{target}/blobs/{digest}", repo=target).status_code == 200


def test_mount_from_unreadable_repository_falls_back_to_upload(
    alice: RegistryClient, bob: RegistryClient
) -> None:
    source, target = unique_repo("alice"), unique_repo("bob")
    data = random_bytes(64)
    digest = alice.push_blob(source, data)
    for params in ({"mount": digest, "from": source}, {"mount": digest}):
        token = bob.token(f"repository:{target}:pull,push", f"repository:{source}:pull")
        response = bob.http.post(f"/v2/{target}/blobs/uploads/", params=params,
                                 headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 202, params
        assert response.headers["Location"].startswith(f"/v2/{target}/blobs/uploads/")
        assert_no_blob(bob, target, digest)
    # Having the bytes, bob can of course upload them himself.
    location = bob.start_upload(target)
    assert finish(bob, target, location, digest, data).status_code == 201
    assert_blob(bob, target, data)


def test_mount_needs_pull_scope_on_source(alice: RegistryClient) -> None:
    source, target = unique_repo("alice"), unique_repo("alice")
    digest = alice.push_blob(source, random_bytes(64))
    # The token covers only the target: no mount from the named source.
    response = alice.request("POST", f"/v2/{target}/blobs/uploads/", repo=target,
                             params={"mount": digest, "from": source})
    assert response.status_code == 202


def test_mount_of_unknown_blob_and_bad_digest(alice: RegistryClient, repo: str) -> None:
    source = unique_repo("alice")
    alice.push_blob(source, b"x")
    unknown = sha256(random_bytes(8))
    token = alice.token(f"repository:{repo}:pull,push", f"repository:{source}:pull")
    response = alice.http.post(f"/v2/{repo}/blobs/uploads/",
                               params={"mount": unknown, "from": source},
                               headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 202
    bad = alice.http.post(f"/v2/{repo}/blobs/uploads/", params={"mount": "sha256:nope"},
                          headers={"Authorization": f"Bearer {token}"})
    assert bad.status_code == 400
    assert error_codes(bad) == ["DIGEST_INVALID"]
    weird = alice.http.post(f"/v2/{repo}/blobs/uploads/",
                            params={"mount": unknown, "from": "Not/Valid"},
                            headers={"Authorization": f"Bearer {token}"})
    assert weird.status_code == 202


# --- interruptions, restarts, crashes ---------------------------------------------------------


def _open_patch(registry: Deployment, client: RegistryClient, repo: str, location: str,
                data: bytes, sent: int, start: int | None = None) -> socket.socket:
    """Start a ``PATCH`` of ``data`` on a raw socket and send only its first ``sent`` bytes."""
    token = client.token(f"repository:{repo}:pull,push,delete")
    content_range = ""
    if start is not None:
        content_range = f"Content-Range: {start}-{start + len(data) - 1}\r\n"
    head = (
        f"PATCH {location} HTTP/1.1\r\n"
        f"Host: {registry.registry.host}\r\n"
        f"Authorization: Bearer {token}\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Content-Length: {len(data)}\r\n"
        f"{content_range}"
        "\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", registry.registry.port), timeout=10)
    sock.sendall(head + data[:sent])
    return sock


def _send_half_then_drop(registry: Deployment, client: RegistryClient, repo: str,
                         location: str, data: bytes, half: int, with_range: bool) -> None:
    with _open_patch(registry, client, repo, location, data, half,
                     0 if with_range else None):
        time.sleep(0.3)


def _stored_size(client: RegistryClient, repo: str, location: str) -> int:
    """The upload's size once the interrupted request has been wound up (0 if it never is).

    The server notices the disconnect a moment after the socket closes, so poll for a
    while for the bytes it received to show up.
    """
    deadline = time.monotonic() + 5
    while True:
        response = upload_status(client, repo, location)
        assert response.status_code == 204, response.text
        size = received(response) if response.headers["Range"] != "0-0" else 0
        if size or time.monotonic() > deadline:
            return size
        time.sleep(0.1)


@pytest.mark.parametrize("with_range", [False, True], ids=["streamed", "content-range"])
def test_interrupted_patch_can_be_resumed(registry: Deployment, alice: RegistryClient,
                                          repo: str, with_range: bool) -> None:
    data = random_bytes(200_000)
    half = len(data) // 2
    location = alice.start_upload(repo)
    _send_half_then_drop(registry, alice, repo, location, data, half, with_range)
    stored = _stored_size(alice, repo, location)
    assert 0 <= stored <= half
    # Resume like a client would: from what the server reports, re-asking on a 416.
    for _attempt in range(3):
        response = patch(alice, repo, location, data[stored:], start=stored)
        if response.status_code != 416:
            break
        stored = received(upload_status(alice, repo, location))
    assert response.status_code == 202, response.text
    assert received(response) == len(data)
    response = finish(alice, repo, location, sha256(data))
    assert response.status_code == 201, response.text
    assert_blob(alice, repo, data)


@pytest.mark.parametrize("kill", [False, True], ids=["restart", "crash"])
def test_upload_survives_restart(registry: Deployment, alice: RegistryClient, repo: str,
                                 kill: bool) -> None:
    data = random_bytes(500_000)
    location = alice.start_upload(repo)
    assert patch(alice, repo, location, data[:200_000], start=0).status_code == 202
    partial = alice.start_upload(repo)
    assert patch(alice, repo, partial, data[:100_000], start=0).status_code == 202
    registry.restart(kill=kill)
    status = upload_status(alice, repo, location)
    assert status.status_code == 204
    assert status.headers["Range"] == "0-199999"
    assert patch(alice, repo, location, data[200_000:400_000], start=200_000).status_code == 202
    registry.restart(kill=kill)
    # The digest is verified over bytes received by two earlier server processes.
    response = finish(alice, repo, location, sha256(data), data[400_000:])
    assert response.status_code == 201, response.text
    assert_blob(alice, repo, data)
    # ... and a wrong one is caught the same way (100 kB are missing here).
    wrong = finish(alice, repo, partial, sha256(data))
    assert wrong.status_code == 400
    assert error_codes(wrong) == ["DIGEST_INVALID"]
    assert_no_blob(alice, repo, sha256(data[:100_000]))


def test_crash_during_patch(public_registry: Deployment) -> None:
    # The public profile keeps the default MAXIMUM_LAYER_SIZE: the half-received chunk
    # below is larger than the server's 4 MiB write batch, so part of it reaches storage.
    alice = public_registry.client("alice")
    repo = unique_repo("alice")
    data = random_bytes(12 << 20)
    location = alice.start_upload(repo)
    assert patch(alice, repo, location, data[:100_000], start=0).status_code == 202
    # The server dies while a chunk is half received: what it wrote of that chunk must
    # not count, and must not corrupt the upload.
    sock = _open_patch(public_registry, alice, repo, location, data[100_000:], 7 << 20,
                       start=100_000)
    try:
        time.sleep(1)
        public_registry.restart(kill=True)
    finally:
        sock.close()
    status = upload_status(alice, repo, location)
    assert status.status_code == 204
    assert status.headers["Range"] == "0-99999"
    response = patch(alice, repo, location, data[100_000:], start=100_000)
    assert response.status_code == 202, response.text
    response = finish(alice, repo, location, sha256(data))
    assert response.status_code == 201, response.text
    assert_blob(alice, repo, data)
