"""Manifests: every supported format, byte-exact storage, validation, tags and deletion."""

from __future__ import annotations

import json
from typing import Any

import pytest

from functional.client import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    HELM_CHART,
    HELM_CONFIG,
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    Image,
    RegistryClient,
    descriptor,
    error_codes,
    random_bytes,
    sha256,
    to_json,
)
from functional.conftest import unique_repo

SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"
PLATFORMS = [{"architecture": "amd64", "os": "linux"}, {"architecture": "arm64", "os": "linux"}]


def manifest_path(repo: str, reference: str) -> str:
    """``/v2/<repo>/manifests/<reference>``."""
    return f"/v2/{repo}/manifests/{reference}"


def assert_served(client: RegistryClient, repo: str, reference: str, body: bytes,
                  media_type: str) -> None:
    """GET returns exactly ``body``; HEAD the same headers without it."""
    response = client.request("GET", manifest_path(repo, reference), repo=repo,
                              headers={"Accept": media_type})
    assert response.status_code == 200, response.text
    assert response.content == body
    assert response.headers["Content-Type"] == media_type
    assert response.headers["Docker-Content-Digest"] == sha256(body)
    assert response.headers["Content-Length"] == str(len(body))
    head = client.request("HEAD", manifest_path(repo, reference), repo=repo,
                          headers={"Accept": media_type})
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["Content-Type"] == media_type
    assert head.headers["Docker-Content-Digest"] == sha256(body)
    assert head.headers["Content-Length"] == str(len(body))


def index_of(images: list[Image], media_type: str = OCI_INDEX, **fields: Any) -> bytes:
    """An index (or Docker manifest list) of ``images`` for two platforms."""
    return to_json({
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [image.descriptor(platform=platform)
                      for image, platform in zip(images, PLATFORMS, strict=False)],
        **fields,
    })


def blobs_manifest(client: RegistryClient, repo: str, **fields: Any) -> dict[str, Any]:
    """An OCI manifest document whose config and layer are pushed to ``repo``."""
    config, layer = to_json({"os": "linux", "n": random_bytes(4).hex()}), random_bytes(64)
    client.push_blob(repo, config)
    client.push_blob(repo, layer)
    return {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, config), "layers": [descriptor(OCI_LAYER, layer)],
            **fields}


# --- formats --------------------------------------------------------------------------------


@pytest.mark.parametrize("media_type", [OCI_MANIFEST, DOCKER_MANIFEST], ids=["oci", "docker"])
def test_image_manifest_round_trip(alice: RegistryClient, repo: str, media_type: str) -> None:
    image = alice.push_image(repo, "v1", layers=2, media_type=media_type)
    response = alice.put_manifest(repo, "v1-again", image.manifest, media_type)
    assert response.status_code == 201
    assert response.headers["Location"] == f"/v2/{repo}/manifests/{image.digest}"
    assert response.headers["Docker-Content-Digest"] == image.digest
    for reference in ("v1", "v1-again", image.digest):
        assert_served(alice, repo, reference, image.manifest, media_type)


@pytest.mark.parametrize(("index_type", "child_type"), [
    (OCI_INDEX, OCI_MANIFEST), (DOCKER_LIST, DOCKER_MANIFEST),
], ids=["oci-index", "docker-list"])
def test_index_round_trip(alice: RegistryClient, repo: str, index_type: str,
                          child_type: str) -> None:
    images = [alice.push_image(repo, media_type=child_type) for _ in PLATFORMS]
    body = index_of(images, index_type)
    digest = alice.push_manifest(repo, "multi", body, index_type)
    assert_served(alice, repo, "multi", body, index_type)
    assert_served(alice, repo, digest, body, index_type)
    for image in images:
        assert_served(alice, repo, image.digest, image.manifest, child_type)


def test_helm_chart_artifact(alice: RegistryClient, repo: str) -> None:
    config, chart = b'{"name":"demo","version":"0.1.0"}', random_bytes(300)
    alice.push_blob(repo, config)
    alice.push_blob(repo, chart)
    body = to_json({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": HELM_CONFIG,
        "config": descriptor(HELM_CONFIG, config),
        "layers": [descriptor(HELM_CHART, chart)],
        "annotations": {"org.opencontainers.image.title": "demo"},
    })
    alice.push_manifest(repo, "0.1.0", body)
    assert_served(alice, repo, "0.1.0", body, OCI_MANIFEST)


def test_artifact_with_empty_config(alice: RegistryClient, repo: str) -> None:
    empty, payload = b"{}", random_bytes(50)
    alice.push_blob(repo, empty)
    alice.push_blob(repo, payload)
    body = to_json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.thing.v1",
        "config": descriptor(OCI_EMPTY, empty),
        "layers": [descriptor("application/vnd.example.thing.layer.v1", payload)],
    })
    alice.push_manifest(repo, "thing", body)
    assert_served(alice, repo, "thing", body, OCI_MANIFEST)


def test_bytes_are_kept_exactly(alice: RegistryClient, repo: str) -> None:
    document = blobs_manifest(alice, repo)
    config, layer = document["config"], document["layers"][0]
    config_json, layer_json = json.dumps(config, indent=7), json.dumps(layer)
    body = (
        '\n{  "schemaVersion" :2,\r\n\t"mediaType":   "' + OCI_MANIFEST + '",\n'
        '"config":' + config_json + ' ,"layers":[ ' + layer_json + ' ],\n  "annotations": '
        '{"note": "caf\\u00e9 \u00fc \U0001f433", "z": "1", "a": "2"}   }\n\n'
    ).encode()
    digest = alice.push_manifest(repo, "odd", body)
    assert digest == sha256(body)
    assert_served(alice, repo, "odd", body, OCI_MANIFEST)


def test_manifest_without_media_type_field(alice: RegistryClient, repo: str) -> None:
    document = blobs_manifest(alice, repo)
    del document["mediaType"]
    body = to_json(document)
    alice.push_manifest(repo, "nomt", body, OCI_MANIFEST)
    assert_served(alice, repo, "nomt", body, OCI_MANIFEST)


def test_put_by_digest(alice: RegistryClient, repo: str) -> None:
    body = to_json(blobs_manifest(alice, repo))
    response = alice.put_manifest(repo, sha256(body), body)
    assert response.status_code == 201
    assert_served(alice, repo, sha256(body), body, OCI_MANIFEST)
    tags = alice.request("GET", f"/v2/{repo}/tags/list", repo=repo).json()["tags"]
    assert tags == []


def test_tag_moves(alice: RegistryClient, repo: str) -> None:
    first = alice.push_image(repo, "latest")
    second = alice.push_image(repo, "latest")
    assert_served(alice, repo, "latest", second.manifest, OCI_MANIFEST)
    assert_served(alice, repo, first.digest, first.manifest, OCI_MANIFEST)


def test_foreign_layers_need_not_be_pushed(alice: RegistryClient, repo: str) -> None:
    config = to_json({"os": "windows"})
    alice.push_blob(repo, config)
    body = to_json({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": descriptor("application/vnd.docker.container.image.v1+json", config),
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                    "digest": sha256(b"windows base"), "size": 12,
                    "urls": ["https://mcr.microsoft.com/layer"]}],
    })
    alice.push_manifest(repo, "win", body, DOCKER_MANIFEST)


# --- refusals ----------------------------------------------------------------------------------


def assert_refused(client: RegistryClient, repo: str, body: bytes, status: int, code: str,
                   media_type: str | None = OCI_MANIFEST, reference: str = "bad") -> None:
    """The PUT is refused with ``status``/``code`` and nothing is stored."""
    response = client.put_manifest(repo, reference, body, media_type)
    assert response.status_code == status, response.text
    assert error_codes(response) == [code], response.text
    get = client.request("GET", manifest_path(repo, sha256(body)), repo=repo)
    assert get.status_code == 404


def test_missing_blob(alice: RegistryClient, repo: str) -> None:
    document = blobs_manifest(alice, repo)
    document["layers"].append(descriptor(OCI_LAYER, b"never pushed"))
    assert_refused(alice, repo, to_json(document), 400, "MANIFEST_BLOB_UNKNOWN")
    document = blobs_manifest(alice, repo)
    document["config"] = descriptor(OCI_CONFIG, b"config never pushed")
    assert_refused(alice, repo, to_json(document), 400, "MANIFEST_BLOB_UNKNOWN")


def test_blob_of_another_repository_does_not_count(alice: RegistryClient, repo: str) -> None:
    other = unique_repo("alice")
    document = blobs_manifest(alice, other)
    alice.push_blob(repo, b"exists")
    assert_refused(alice, repo, to_json(document), 400, "MANIFEST_BLOB_UNKNOWN")


def test_index_with_missing_child(alice: RegistryClient, repo: str) -> None:
    image = alice.push_image(repo)
    missing = {"mediaType": OCI_MANIFEST, "digest": sha256(b"no such manifest"), "size": 16}
    body = to_json({"schemaVersion": 2, "mediaType": OCI_INDEX,
                    "manifests": [image.descriptor(), missing]})
    assert_refused(alice, repo, body, 400, "MANIFEST_BLOB_UNKNOWN", OCI_INDEX)


def test_descriptor_size_mismatch(alice: RegistryClient, repo: str) -> None:
    document = blobs_manifest(alice, repo)
    document["layers"][0]["size"] += 1
    assert_refused(alice, repo, to_json(document), 400, "MANIFEST_INVALID")
    image = alice.push_image(repo)
    body = to_json({"schemaVersion": 2, "mediaType": OCI_INDEX,
                    "manifests": [{**image.descriptor(), "size": image.size - 1}]})
    assert_refused(alice, repo, body, 400, "MANIFEST_INVALID", OCI_INDEX)


def test_malformed_manifests(alice: RegistryClient, repo: str) -> None:
    good = blobs_manifest(alice, repo)
    cases: dict[str, bytes] = {
        "not json": b"{this is not json",
        "not utf-8": b'{"schemaVersion": 2, "x": "\xff\xfe"}',
        "array": b"[1, 2, 3]",
        "string": b'"manifest"',
        "null": b"null",
        "empty": b"",
        "missing config": to_json({k: v for k, v in good.items() if k != "config"}),
        "config not an object": to_json({**good, "config": "sha256:abc"}),
        "bad config digest": to_json({**good, "config": {**good["config"],
                                                         "digest": "sha256:1234"}}),
        "bad layer digest": to_json({**good, "layers": [{**good["layers"][0],
                                                         "digest": "nope"}]}),
        "negative size": to_json({**good, "layers": [{**good["layers"][0], "size": -1}]}),
        "string size": to_json({**good, "layers": [{**good["layers"][0], "size": "64"}]}),
        "layers not a list": to_json({**good, "layers": {"a": 1}}),
        "schemaVersion 3": to_json({**good, "schemaVersion": 3}),
        "no schemaVersion": to_json({k: v for k, v in good.items() if k != "schemaVersion"}),
        "annotations not strings": to_json({**good, "annotations": {"a": 1}}),
        "index without manifests": to_json({"schemaVersion": 2, "mediaType": OCI_INDEX}),
        "content-type mismatch": to_json({**good, "mediaType": DOCKER_MANIFEST}),
        "deeply nested array": b"[" * 20_000 + b"]" * 20_000,
        "deeply nested annotations": (b'{"schemaVersion": 2, "annotations": ' + b'{"a":' * 10_000
                                      + b'"x"' + b"}" * 10_001),
    }
    for what, body in cases.items():
        response = alice.put_manifest(repo, "bad", body, OCI_MANIFEST)
        assert response.status_code == 400, (what, response.text)
        assert error_codes(response) == ["MANIFEST_INVALID"], (what, response.text)
    assert alice.request("GET", manifest_path(repo, "bad"), repo=repo).status_code == 404


def test_docker_schema1_is_unsupported(alice: RegistryClient, repo: str) -> None:
    body = to_json({"schemaVersion": 1, "name": repo, "tag": "old", "architecture": "amd64",
                    "fsLayers": [], "history": [], "signatures": []})
    for media_type in (SCHEMA1, "application/vnd.docker.distribution.manifest.v1+json", None):
        response = alice.put_manifest(repo, "old", body, media_type)
        assert response.status_code == 415, media_type
        assert error_codes(response) == ["UNSUPPORTED"], media_type


def test_unknown_media_type_is_refused(alice: RegistryClient, repo: str) -> None:
    body = to_json({"schemaVersion": 2, "mediaType": "application/vnd.example+json"})
    response = alice.put_manifest(repo, "x", body, "application/vnd.example+json")
    assert 400 <= response.status_code < 500
    assert error_codes(response) in (["UNSUPPORTED"], ["MANIFEST_INVALID"])


def test_put_by_wrong_digest(alice: RegistryClient, repo: str) -> None:
    body = to_json(blobs_manifest(alice, repo))
    response = alice.put_manifest(repo, sha256(body + b" "), body)
    assert response.status_code == 400
    assert error_codes(response) == ["DIGEST_INVALID"]
    response = alice.put_manifest(repo, "sha256:abc", body)
    assert response.status_code == 400
    assert error_codes(response) == ["DIGEST_INVALID"]


def test_oversize_manifest(alice: RegistryClient, repo: str) -> None:
    document = blobs_manifest(alice, repo, annotations={"padding": "x" * (64 * 1024)})
    response = alice.put_manifest(repo, "huge", to_json(document))
    assert response.status_code == 413
    assert error_codes(response)
    assert alice.request("GET", manifest_path(repo, "huge"), repo=repo).status_code == 404


def test_invalid_tag_in_url(alice: RegistryClient, repo: str) -> None:
    image = alice.push_image(repo, "v1")
    for tag in ("-leading-dash", ".dot", "x" * 129, "bad%20space"):
        response = alice.put_manifest(repo, tag, image.manifest)
        assert response.status_code == 400, tag
        assert error_codes(response) in (["MANIFEST_INVALID"], ["TAG_INVALID"]), tag


def test_unknown_manifest(alice: RegistryClient, repo: str) -> None:
    alice.push_image(repo, "v1")
    for reference in ("nope", sha256(b"nothing")):
        for method in ("GET", "HEAD"):
            response = alice.request(method, manifest_path(repo, reference), repo=repo)
            assert response.status_code == 404, (method, reference)
        response = alice.request("GET", manifest_path(repo, reference), repo=repo)
        assert error_codes(response) == ["MANIFEST_UNKNOWN"]
        response = alice.request("DELETE", manifest_path(repo, reference), repo=repo)
        assert response.status_code == 404
        assert error_codes(response) == ["MANIFEST_UNKNOWN"]


def test_manifest_in_unknown_repository(alice: RegistryClient) -> None:
    repo = unique_repo("alice")
    response = alice.request("GET", manifest_path(repo, "latest"), repo=repo)
    assert response.status_code == 404
    assert error_codes(response) == ["NAME_UNKNOWN"]


# --- deletion ---------------------------------------------------------------------------------


def test_delete_tag_keeps_manifest_and_other_tags(alice: RegistryClient, repo: str) -> None:
    image = alice.push_image(repo, "one")
    alice.push_manifest(repo, "two", image.manifest)
    response = alice.request("DELETE", manifest_path(repo, "one"), repo=repo)
    assert response.status_code == 202
    gone = alice.request("GET", manifest_path(repo, "one"), repo=repo)
    assert gone.status_code == 404
    assert error_codes(gone) == ["MANIFEST_UNKNOWN"]
    assert_served(alice, repo, image.digest, image.manifest, OCI_MANIFEST)
    assert_served(alice, repo, "two", image.manifest, OCI_MANIFEST)
    tags = alice.request("GET", f"/v2/{repo}/tags/list", repo=repo).json()["tags"]
    assert tags == ["two"]
    # The tag can be pushed again.
    alice.push_manifest(repo, "one", image.manifest)
    assert_served(alice, repo, "one", image.manifest, OCI_MANIFEST)


def test_delete_by_digest_removes_its_tags(alice: RegistryClient, repo: str) -> None:
    image = alice.push_image(repo, "a")
    alice.push_manifest(repo, "b", image.manifest)
    keep = alice.push_image(repo, "keep")
    response = alice.request("DELETE", manifest_path(repo, image.digest), repo=repo)
    assert response.status_code == 202
    for reference in ("a", "b", image.digest):
        gone = alice.request("GET", manifest_path(repo, reference), repo=repo)
        assert gone.status_code == 404, reference
        assert error_codes(gone) == ["MANIFEST_UNKNOWN"]
    tags = alice.request("GET", f"/v2/{repo}/tags/list", repo=repo).json()["tags"]
    assert tags == ["keep"]
    assert_served(alice, repo, "keep", keep.manifest, OCI_MANIFEST)
    # Its blobs are still in the repository: the manifest can be pushed again.
    alice.push_manifest(repo, "a", image.manifest)


def test_delete_child_of_index(alice: RegistryClient, repo: str) -> None:
    images = [alice.push_image(repo) for _ in PLATFORMS]
    index = index_of(images)
    index_digest = alice.push_manifest(repo, "multi", index, OCI_INDEX)
    refused = alice.request("DELETE", manifest_path(repo, images[0].digest), repo=repo)
    assert refused.status_code == 409
    assert_served(alice, repo, images[0].digest, images[0].manifest, OCI_MANIFEST)
    assert alice.request("DELETE", manifest_path(repo, index_digest),
                         repo=repo).status_code == 202
    assert alice.request("DELETE", manifest_path(repo, images[0].digest),
                         repo=repo).status_code == 202


def test_delete_needs_permission(alice: RegistryClient, bob: RegistryClient,
                                 repo: str) -> None:
    alice.push_image(repo, "v1")
    response = alice.request("DELETE", manifest_path(repo, "v1"), repo=repo, actions="pull,push")
    assert response.status_code == 401
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
    response = bob.request("DELETE", manifest_path(repo, "v1"), repo=repo)
    assert response.status_code == 403
    assert error_codes(response) == ["DENIED"]
    assert alice.request("GET", manifest_path(repo, "v1"), repo=repo).status_code == 200


# --- subject ---------------------------------------------------------------------------------


def test_subject_header_on_put(alice: RegistryClient, repo: str) -> None:
    target = alice.push_image(repo, "v1")
    document = blobs_manifest(alice, repo, artifactType="application/vnd.example.sig",
                              subject=target.descriptor())
    body = to_json(document)
    response = alice.put_manifest(repo, sha256(body), body)
    assert response.status_code == 201
    assert response.headers["OCI-Subject"] == target.digest
    # The subject need not exist (yet): referrers may be pushed first.
    document = blobs_manifest(alice, repo, subject={
        "mediaType": OCI_MANIFEST, "digest": sha256(b"future"), "size": 6})
    body = to_json(document)
    response = alice.put_manifest(repo, sha256(body), body)
    assert response.status_code == 201
    assert response.headers["OCI-Subject"] == sha256(b"future")
