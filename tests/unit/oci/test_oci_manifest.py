"""Manifest parsing and validation (pure, no I/O)."""

from __future__ import annotations

import json

import pytest

from portside.oci import mediatypes as mt
from portside.oci.manifest import ManifestInvalid, ManifestUnsupported, parse_manifest

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


def image_manifest(**extra: object) -> dict[str, object]:
    document: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": DIGEST_A, "size": 10},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": DIGEST_B, "size": 20}],
    }
    document.update(extra)
    return document


def raw(document: object) -> bytes:
    return json.dumps(document).encode()


def test_image_manifest_lists_config_and_layers() -> None:
    parsed = parse_manifest(raw(image_manifest()), mt.OCI_MANIFEST)
    assert parsed.media_type == mt.OCI_MANIFEST
    assert [d.digest for d in parsed.blob_descriptors()] == [DIGEST_A, DIGEST_B]
    assert not parsed.is_index


def test_artifact_type_falls_back_to_config_media_type() -> None:
    helm = image_manifest(config={"mediaType": mt.HELM_CONFIG, "digest": DIGEST_A, "size": 1})
    assert parse_manifest(raw(helm), None).effective_artifact_type == mt.HELM_CONFIG
    explicit = image_manifest(artifactType="application/vnd.example.sbom")
    parsed = parse_manifest(raw(explicit), None)
    assert parsed.effective_artifact_type == "application/vnd.example.sbom"


def test_index_children_and_subject() -> None:
    index = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [{"mediaType": mt.OCI_MANIFEST, "digest": DIGEST_A, "size": 5,
                       "platform": {"os": "linux", "architecture": "amd64"}}],
        "subject": {"mediaType": mt.OCI_MANIFEST, "digest": DIGEST_B, "size": 7},
    }
    parsed = parse_manifest(raw(index), mt.OCI_INDEX)
    assert parsed.is_index
    assert [c.digest for c in parsed.children] == [DIGEST_A]
    assert parsed.subject is not None and parsed.subject.digest == DIGEST_B
    assert parsed.blob_descriptors() == ()


def test_media_type_inferred_when_absent() -> None:
    document = image_manifest()
    del document["mediaType"]
    assert parse_manifest(raw(document), None).media_type == mt.OCI_MANIFEST
    assert parse_manifest(raw({"schemaVersion": 2, "manifests": []}), None).is_index


def test_foreign_layers_need_not_be_stored() -> None:
    document = image_manifest(layers=[{
        "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "digest": DIGEST_B, "size": 3, "urls": ["https://example.invalid/layer"],
    }])
    document["mediaType"] = mt.DOCKER_MANIFEST
    parsed = parse_manifest(raw(document), mt.DOCKER_MANIFEST)
    assert [d.digest for d in parsed.blob_descriptors()] == [DIGEST_A]


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"{not json", mt.OCI_MANIFEST, "not valid JSON"),
        (b"[]", mt.OCI_MANIFEST, "must be a JSON object"),
        (b"\xff\xfe", mt.OCI_MANIFEST, "not valid JSON"),
        (raw({"schemaVersion": 3, "mediaType": mt.OCI_MANIFEST, "config": {}}), None,
         "schemaVersion must be 2"),
        (raw({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST}), None, "'config'"),
        (raw(image_manifest(config={"mediaType": "x", "digest": "sha256:zz", "size": 1})),
         None, "config: malformed"),
        (raw(image_manifest(config={"mediaType": "x", "digest": DIGEST_A, "size": -1})),
         None, "size must be a non-negative integer"),
        (raw(image_manifest(config={"mediaType": "x", "digest": DIGEST_A, "size": True})),
         None, "size must be a non-negative integer"),
        (raw(image_manifest(layers="nope")), None, "'layers' must be a list"),
        (raw(image_manifest()), mt.DOCKER_MANIFEST, "does not match"),
        (raw({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": {}}), None,
         "'manifests' list"),
        (raw(image_manifest(annotations={"a": 1})), None, "annotations"),
    ],
)
def test_invalid_manifests_are_refused(body: bytes, content_type: str | None,
                                       message: str) -> None:
    with pytest.raises(ManifestInvalid, match=message):
        parse_manifest(body, content_type)


@pytest.mark.parametrize(
    "document",
    [
        {"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []},
        {"schemaVersion": 2, "mediaType": "application/vnd.example.unknown"},
    ],
)
def test_schema1_and_unknown_types_are_unsupported(document: dict[str, object]) -> None:
    with pytest.raises(ManifestUnsupported):
        parse_manifest(raw(document), None)
