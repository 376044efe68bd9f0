"""``/api/v1/repository/{repository}/manifest/{digest}``: the manifest view of images and
indexes, labels read from pushed image configs, and label changes through the API."""

from __future__ import annotations

from typing import Any

import httpx

from functional.client import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    RegistryClient,
    descriptor,
    random_bytes,
    to_json,
)
from functional.conftest import Deployment, unique_repo
from functional.test_api_repositories import api
from functional.test_api_tags import grant, logs

HISTORY = [
    {"created": "2024-05-01T10:00:00.123456789Z", "created_by": "/bin/sh -c #(nop) ADD file",
     "author": "alice@example.com"},
    {"created": "2024-05-01T10:00:01Z", "created_by": "/bin/sh -c #(nop) LABEL x=y",
     "empty_layer": True},
    {"created": "2024-05-01T10:00:02Z", "created_by": "RUN make", "comment": "buildkit"},
]


def push_with_config(client: RegistryClient, repo: str, tag: str, config: bytes, *,
                     layers: int = 2, docker: bool = False,
                     config_type: str | None = None) -> tuple[str, bytes, list[bytes]]:
    """Push ``config`` (raw bytes) and random layers under ``tag``; returns the manifest
    digest, its bytes and the layers."""
    blobs = [random_bytes(128) for _ in range(layers)]
    client.push_blob(repo, config)
    for blob in blobs:
        client.push_blob(repo, blob)
    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    body = to_json({
        "schemaVersion": 2, "mediaType": media_type,
        "config": descriptor(config_type or (DOCKER_CONFIG if docker else OCI_CONFIG),
                             config),
        "layers": [descriptor(DOCKER_LAYER if docker else OCI_LAYER, b) for b in blobs],
    })
    return client.push_manifest(repo, tag, body, media_type), body, blobs


def image_config(labels: Any = None, history: Any = None) -> bytes:
    """An image config with ``config.Labels`` and ``history`` when given."""
    document: dict[str, Any] = {"architecture": "amd64", "os": "linux",
                                "rootfs": {"type": "layers", "diff_ids": []},
                                "nonce": random_bytes(8).hex(), "config": {}}
    if labels is not None:
        document["config"]["Labels"] = labels
    if history is not None:
        document["history"] = history
    return to_json(document)


def labels_of(client: httpx.Client, repo: str, digest: str, **params: str,
              ) -> list[dict[str, Any]]:
    response = client.get(f"/repository/{repo}/manifest/{digest}/labels", params=params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["labels"]
    return found


def test_image_manifest_view(registry: Deployment) -> None:
    alice = registry.client("alice")
    repo = unique_repo("alice", "mf")
    digest, body, blobs = push_with_config(alice, repo, "v1", image_config(history=HISTORY))
    with api(registry, "alice") as client:
        response = client.get(f"/repository/{repo}/manifest/{digest}")
        assert response.status_code == 200, response.text
        view = response.json()
    assert view["digest"] == digest and view["is_manifest_list"] is False
    assert view["manifest_data"] == body.decode()
    assert view["config_media_type"] == OCI_CONFIG
    first, second = view["layers"]
    # History entries marked empty_layer do not match layers.
    assert first == {"index": 0, "compressed_size": 128, "is_remote": False, "urls": None,
                     "command": ["/bin/sh -c #(nop) ADD file"], "comment": None,
                     "author": "alice@example.com",
                     "blob_digest": descriptor(OCI_LAYER, blobs[0])["digest"],
                     "created_datetime": "Wed, 01 May 2024 10:00:00 -0000"}
    assert second["index"] == 1 and second["command"] == ["RUN make"]
    assert second["comment"] == "buildkit" and second["author"] is None
    assert second["created_datetime"] == "Wed, 01 May 2024 10:00:02 -0000"


def test_view_without_history_and_of_an_index(registry: Deployment) -> None:
    alice = registry.client("alice")
    repo = unique_repo("alice", "mf")
    image = alice.push_image(repo, "v1", media_type=DOCKER_MANIFEST)
    index = to_json({"schemaVersion": 2, "mediaType": OCI_INDEX,
                     "manifests": [image.descriptor()]})
    index_digest = alice.push_manifest(repo, "multi", index, OCI_INDEX)
    with api(registry, "alice") as client:
        view = client.get(f"/repository/{repo}/manifest/{image.digest}").json()
        assert view["config_media_type"] == DOCKER_CONFIG
        [layer] = view["layers"]
        assert layer["command"] is None and layer["created_datetime"] is None
        assert layer["compressed_size"] == 256
        listed = client.get(f"/repository/{repo}/manifest/{index_digest}").json()
        assert listed == {"digest": index_digest, "is_manifest_list": True,
                          "manifest_data": index.decode(), "config_media_type": None,
                          "layers": None}


def test_manifest_errors_and_access(registry: Deployment) -> None:
    alice = registry.client("alice")
    repo = unique_repo("alice", "mf")
    image = alice.push_image(repo, "v1")
    path = f"/repository/{repo}/manifest/{image.digest}"
    with (api(registry, "alice") as client, api(registry, "carol") as carol,
          api(registry, None) as anonymous, api(registry, "bob") as bob):
        missing = client.get(f"/repository/{repo}/manifest/sha256:{'0' * 64}")
        assert missing.status_code == 404 and missing.json()["error_type"] == "not_found"
        for bad in ("sha256:xyz", "md5:abc", "latest"):
            response = client.get(f"/repository/{repo}/manifest/{bad}")
            assert response.status_code == 400, bad
            assert client.get(f"/repository/{repo}/manifest/{bad}/labels").status_code == 400
        assert anonymous.get(path).status_code == 401
        assert anonymous.get(path + "/labels").status_code == 401
        assert carol.get(path).status_code == 403
        assert carol.get(path + "/labels").status_code == 403
        grant(client, repo, "bob", "read")
        assert bob.get(path).status_code == 200
        assert bob.get(path + "/labels").json() == {"labels": []}
        # A manifest of another repository is not found here.
        other = unique_repo("alice", "mf")
        alice.push_image(other, "v1")
        assert client.get(f"/repository/{other}/manifest/{image.digest}").status_code == 404


def test_labels_from_pushed_configs(registry: Deployment) -> None:
    alice = registry.client("alice")
    repo = unique_repo("alice", "mf")
    labels = {"org.opencontainers.image.source": "https://example.com/app",
              "quay.expires-after": "2w", "Vendor.Name": "ACME",
              "build.info": '{"commit": "abc", "dirty": false}', "empty": ""}
    oci_digest, _, _ = push_with_config(alice, repo, "oci", image_config(labels))
    docker_digest, _, _ = push_with_config(alice, repo, "docker",
                                           image_config({"maintainer": "bob"}), docker=True)
    with api(registry, "alice") as client:
        found = labels_of(client, repo, oci_digest)
        assert {(label["key"], label["value"]) for label in found} == set(labels.items())
        assert {label["source_type"] for label in found} == {"manifest"}
        media = {label["key"]: label["media_type"] for label in found}
        assert media["build.info"] == "application/json"
        assert media["quay.expires-after"] == "text/plain"
        assert all(len(label["id"]) == 36 for label in found)
        assert [label["key"] for label in labels_of(client, repo, oci_digest, filter="quay.")
                ] == ["quay.expires-after"]
        assert labels_of(client, repo, oci_digest, filter="%") == []
        docker_labels = labels_of(client, repo, docker_digest)
        assert [(label["key"], label["value"]) for label in docker_labels] == [
            ("maintainer", "bob")]
        # Pushing the same manifest again (another tag) adds nothing.
        again = registry.client("alice")
        body = again.request("GET", f"/v2/{repo}/manifests/oci", repo=repo, actions="pull",
                             headers={"Accept": OCI_MANIFEST}).content
        again.push_manifest(repo, "oci-again", body)
        assert len(labels_of(client, repo, oci_digest)) == len(labels)


def test_bad_configs_never_fail_a_push(registry: Deployment) -> None:
    alice = registry.client("alice")
    repo = unique_repo("alice", "mf")
    configs = [
        b"not json at all",
        b"[1, 2, 3]",
        image_config(labels=["not", "a", "map"]),
        image_config(labels={"ok": "yes", "number": 5, "nul": "a\u0000b", "": "empty key",
                             "k" * 300: "long key"}),
        to_json({"config": "not an object"}),
        b'{"config": {"Labels": {"bad": "\\ud800"}}}',
        b"[" * 5000,
    ]
    digests = [push_with_config(alice, repo, f"t{number}", config)[0]
               for number, config in enumerate(configs)]
    # Artifacts' configs are not image configs: never read.
    artifact, _, _ = push_with_config(alice, repo, "helm", image_config({"a": "b"}),
                                      config_type="application/vnd.cncf.helm.config.v1+json")
    with api(registry, "alice") as client:
        found = {digest: labels_of(client, repo, digest) for digest in digests}
        assert [(label["key"], label["value"]) for label in found[digests[3]]] == [
            ("ok", "yes")]
        assert all(found[d] == [] for d in digests if d != digests[3])
        assert labels_of(client, repo, artifact) == []
        # The manifest view copes with the same configs.
        for digest in digests:
            view = client.get(f"/repository/{repo}/manifest/{digest}")
            assert view.status_code == 200, view.text
            assert len(view.json()["layers"]) == 2


def test_label_crud_and_audit(registry: Deployment) -> None:
    alice = registry.client("alice")
    repo = unique_repo("alice", "mf")
    digest, _, _ = push_with_config(alice, repo, "v1", image_config({"from.image": "1"}))
    path = f"/repository/{repo}/manifest/{digest}/labels"
    with api(registry, "alice") as client:
        created = client.post(path, json={"key": "com.example.team", "value": "platform",
                                          "media_type": "text/plain"})
        assert created.status_code == 201, created.text
        label = created.json()["label"]
        assert label["key"] == "com.example.team" and label["value"] == "platform"
        assert label["source_type"] == "api" and label["media_type"] == "text/plain"
        assert created.headers["Location"] == f"/api/v1{path}/{label['id']}"
        assert client.get(f"{path}/{label['id']}").json() == label

        as_json = client.post(path, json={"key": "config", "value": '{"a": [1]}',
                                          "media_type": "application/json"})
        assert as_json.status_code == 201
        default = client.post(path, json={"key": "plain", "value": "x", "media_type": None})
        assert default.json()["label"]["media_type"] == "text/plain"
        keys = [entry["key"] for entry in labels_of(client, repo, digest)]
        assert keys == ["from.image", "com.example.team", "config", "plain"]
        assert [entry["key"] for entry in labels_of(client, repo, digest, filter="com.")
                ] == ["com.example.team"]

        assert client.delete(f"{path}/{label['id']}").status_code == 204
        assert client.get(f"{path}/{label['id']}").status_code == 404
        assert client.delete(f"{path}/{label['id']}").status_code == 404
        # Labels from the image cannot be deleted.
        from_image = labels_of(client, repo, digest, filter="from.")[0]
        refused = client.delete(f"{path}/{from_image['id']}")
        assert refused.status_code == 400
        assert "immutable" in refused.json()["error_message"]

        name = repo.split("/", 1)[1]
        added = logs(client, repo, "manifest_label_add")
        assert added[-1] == {"repo": name, "namespace": "alice", "id": label["id"],
                             "key": "com.example.team", "value": "platform",
                             "manifest_digest": digest, "media_type": "text/plain"}
        assert logs(client, repo, "manifest_label_delete") == [
            {"repo": name, "namespace": "alice", "id": label["id"],
             "key": "com.example.team", "value": "platform", "manifest_digest": digest}]


def test_bad_label_requests_and_permissions(registry: Deployment) -> None:
    alice = registry.client("alice")
    repo = unique_repo("alice", "mf")
    image = alice.push_image(repo, "v1")
    path = f"/repository/{repo}/manifest/{image.digest}/labels"
    good = {"key": "a.b", "value": "v", "media_type": "text/plain"}
    with (api(registry, "alice") as client, api(registry, "bob") as bob,
          api(registry, None) as anonymous, api(registry, "alice", "repo:read") as reader):
        for key in ("Upper", "-lead", "trail.", "dou..ble", "a_b", "a/b", "", "k" * 256,
                    "spa ce"):
            response = client.post(path, json={**good, "key": key})
            assert response.status_code == 400, key
            assert response.json()["error_type"] == "invalid_request"
        for body in ({**good, "media_type": "text/html"},
                     {**good, "media_type": "application/json", "value": "{broken"},
                     {"key": "a", "value": "v"},
                     {"key": "a", "media_type": "text/plain"},
                     {**good, "value": 5},
                     {**good, "value": "nul\u0000"}):
            assert client.post(path, json=body).status_code == 400, body
        assert client.post(f"/repository/{repo}/manifest/sha256:{'1' * 64}/labels",
                           json=good).status_code == 404
        assert client.get(f"{path}/no-such-label").status_code == 404
        assert client.get(f"{path}/{'a' * 35}%00").status_code == 404
        assert labels_of(client, repo, image.digest, filter="a\u0000") == []
        assert client.delete(f"{path}/no-such-label").status_code == 404

        assert anonymous.post(path, json=good).status_code == 401
        assert bob.post(path, json=good).status_code == 403
        assert reader.post(path, json=good).status_code == 403
        grant(client, repo, "bob", "read")
        assert bob.post(path, json=good).status_code == 403
        created = client.post(path, json=good).json()["label"]
        assert bob.get(f"{path}/{created['id']}").status_code == 200
        assert bob.delete(f"{path}/{created['id']}").status_code == 403
        grant(client, repo, "bob", "write")
        assert bob.delete(f"{path}/{created['id']}").status_code == 204
        assert bob.post(path, json=good).status_code == 201


def test_deleting_a_labelled_manifest(registry: Deployment) -> None:
    alice = registry.client("alice")
    repo = unique_repo("alice", "mf")
    digest, body, _ = push_with_config(alice, repo, "v1", image_config({"a": "1", "b": "2"}))
    path = f"/repository/{repo}/manifest/{digest}/labels"
    with api(registry, "alice") as client:
        assert client.post(path, json={"key": "c", "value": "3",
                                       "media_type": "text/plain"}).status_code == 201
        deleted = alice.request("DELETE", f"/v2/{repo}/manifests/{digest}", repo=repo)
        assert deleted.status_code == 202, deleted.text
        assert client.get(path).status_code == 404
        # Pushed again, the manifest gets the image's labels afresh, and only those.
        alice.push_manifest(repo, "v1", body)
        assert sorted(label["key"] for label in labels_of(client, repo, digest)) == ["a", "b"]
