"""Online garbage collection against a real server, on SQLite and PostgreSQL.

The server runs without its own periodic pass; the tests run passes with a collector
built from the server's config (same database, same storage), with a zero time-machine
window and zero or long grace periods, and check what the registry then serves.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from functional.client import OCI_INDEX, OCI_MANIFEST, RegistryClient, descriptor, to_json
from functional.conftest import Deployment, create_users
from functional.test_api_auth import make_token
from portside.app import Services, build_services
from portside.config import load_config
from portside.services.gc import GarbageCollector, GcReport
from support.server import postgres_database, running_registry

OVERRIDES = {
    "LOGIN_FAILURE_LIMIT": 0,
    "FEATURE_GARBAGE_COLLECTION": False,
    "DEFAULT_TAG_EXPIRATION": "0s",
}


@pytest.fixture(scope="module")
def gc_registry(
    backend: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    """A server of its own (collections are global), with alice and bob."""
    with contextlib.ExitStack() as stack:
        db_uri = stack.enter_context(postgres_database()) if backend == "postgres" else None
        root = tmp_path_factory.mktemp(f"gc-{backend}")
        registry = stack.enter_context(running_registry(root, db_uri=db_uri, **OVERRIDES))
        create_users(registry, ("alice", "bob"))
        yield Deployment(registry, backend, "gc")


@pytest.fixture(scope="module")
def services(gc_registry: Deployment) -> Iterator[Services]:
    config, _ = load_config(gc_registry.registry.config_path)
    built = build_services(config, migrate=False)
    yield built
    built.close()


@pytest.fixture
def alice(gc_registry: Deployment) -> Iterator[RegistryClient]:
    client = gc_registry.client("alice")
    yield client
    gc_registry.close_clients()


def collector(services: Services, grace_s: int = 0, window_s: int = 0) -> GarbageCollector:
    return GarbageCollector(
        services.db,
        services.registry.placements,
        services.registry.uploads,
        default_window_s=window_s,
        grace_s=grace_s,
        upload_expiration_s=86400,
    )


def collect(services: Services, grace_s: int = 0) -> GcReport:
    report = collector(services, grace_s).run()
    assert report.error is None and not report.skipped, report
    return report


def repo() -> str:
    return f"alice/gc-{uuid.uuid4().hex[:10]}"


def storage_files(deployment: Deployment) -> set[str]:
    root = Path(
        deployment.registry.config["DISTRIBUTED_STORAGE_CONFIG"]["default"][1]["storage_path"]
    )
    return {f"sha256:{p.name}" for p in (root / "sha256").glob("*/*") if p.is_file()}


def blob_status(client: RegistryClient, name: str, digest: str) -> int:
    return client.request("HEAD", f"/v2/{name}/blobs/{digest}", repo=name).status_code


def manifest_status(client: RegistryClient, name: str, reference: str) -> int:
    return client.request(
        "HEAD",
        f"/v2/{name}/manifests/{reference}",
        repo=name,
        headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"},
    ).status_code


def image_with(
    client: RegistryClient, name: str, tag: str | None, layers: list[bytes]
) -> tuple[str, bytes]:
    """Push an image made of ``layers`` (already pushed or not) and a fresh config."""
    config = to_json({"architecture": "amd64", "os": "linux", "nonce": uuid.uuid4().hex})
    client.push_blob(name, config)
    for layer in layers:
        client.push_blob(name, layer)
    body = to_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", config),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", b) for b in layers],
        }
    )
    digest = client.push_manifest(name, tag or f"sha256:{_hex(body)}", body)
    return digest, config


def _hex(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_moved_tag_frees_old_manifest_and_unique_blobs(
    gc_registry: Deployment, services: Services, alice: RegistryClient
) -> None:
    name = repo()
    shared, unique_old, unique_new = (os.urandom(300) for _ in range(3))
    old_digest, old_config = image_with(alice, name, "latest", [shared, unique_old])
    new_digest, _ = image_with(alice, name, "latest", [shared, unique_new])
    unique_digest = f"sha256:{_hex(unique_old)}"
    assert blob_status(alice, name, unique_digest) == 200

    report = collect(services)

    assert report.manifests_deleted >= 1 and report.blobs_deleted >= 2
    assert manifest_status(alice, name, old_digest) == 404
    assert manifest_status(alice, name, new_digest) == 200
    # No existence cache anywhere: HEAD answers 404 at once, and the bytes are gone.
    assert blob_status(alice, name, unique_digest) == 404
    assert blob_status(alice, name, f"sha256:{_hex(old_config)}") == 404
    assert blob_status(alice, name, f"sha256:{_hex(shared)}") == 200
    assert blob_status(alice, name, f"sha256:{_hex(unique_new)}") == 200
    files = storage_files(gc_registry)
    assert unique_digest not in files and f"sha256:{_hex(shared)}" in files
    # The new image pulls completely.
    response = alice.request("GET", f"/v2/{name}/blobs/sha256:{_hex(shared)}", repo=name)
    assert response.status_code == 200 and response.content == shared


def test_grace_period_keeps_untagged_pushes(services: Services, alice: RegistryClient) -> None:
    name = repo()
    layer = os.urandom(200)
    by_digest, _ = image_with(alice, name, None, [layer])
    collect(services, grace_s=3600)
    assert manifest_status(alice, name, by_digest) == 200
    # A blob uploaded without a manifest yet is kept as well.
    lonely = os.urandom(100)
    lonely_digest = alice.push_blob(name, lonely)
    collect(services, grace_s=3600)
    assert blob_status(alice, name, lonely_digest) == 200
    # Past the grace period both go.
    collect(services, grace_s=0)
    assert manifest_status(alice, name, by_digest) == 404
    assert blob_status(alice, name, lonely_digest) == 404
    assert blob_status(alice, name, f"sha256:{_hex(layer)}") == 404


def test_index_children_and_referrers_live_with_their_parent(
    services: Services, alice: RegistryClient
) -> None:
    name = repo()
    child_a, _ = image_with(alice, name, None, [os.urandom(100)])
    child_b, _ = image_with(alice, name, None, [os.urandom(100)])
    children = [
        alice.request(
            "GET", f"/v2/{name}/manifests/{d}", repo=name, headers={"Accept": OCI_MANIFEST}
        ).content
        for d in (child_a, child_b)
    ]
    index = to_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [descriptor(OCI_MANIFEST, c) for c in children],
        }
    )
    index_digest = alice.push_manifest(name, "multi", index, OCI_INDEX)
    # A referrer (e.g. a signature) of the index, pushed by digest.
    referrer = alice.push_image(
        name, subject=descriptor(OCI_INDEX, index), artifactType="application/example.signature"
    )

    collect(services)
    for digest in (child_a, child_b, index_digest, referrer.digest):
        assert manifest_status(alice, name, digest) == 200, digest

    response = alice.request("DELETE", f"/v2/{name}/manifests/multi", repo=name)
    assert response.status_code == 202
    collect(services)
    for digest in (child_a, child_b, index_digest, referrer.digest):
        assert manifest_status(alice, name, digest) == 404, digest


def test_history_is_kept_within_the_window(services: Services, alice: RegistryClient) -> None:
    name = repo()
    old, _ = image_with(alice, name, "v1", [os.urandom(100)])
    image_with(alice, name, "v1", [os.urandom(100)])
    collector(services, grace_s=0, window_s=3600).run()
    assert manifest_status(alice, name, old) == 200  # restorable from the history
    collect(services)
    assert manifest_status(alice, name, old) == 404


def test_deleted_repository_is_purged_and_its_name_reusable(
    gc_registry: Deployment, services: Services, alice: RegistryClient
) -> None:
    name = repo()
    layer = os.urandom(150)
    image_with(alice, name, "latest", [layer])
    token = make_token(gc_registry, "alice", "repo:admin repo:read repo:write repo:create")
    with httpx.Client(
        base_url=f"{gc_registry.url}/api/v1", headers={"Authorization": f"Bearer {token}"}
    ) as api:
        assert api.delete(f"/repository/{name}").status_code == 204
        assert api.get(f"/repository/{name}").status_code == 404
        listed = api.get("/repository", params={"namespace": "alice"}).json()
        assert name.split("/")[1] not in [r["name"] for r in listed["repositories"]]
        # The name is free at once, before any collection.
        digest, _ = image_with(alice, name, "again", [os.urandom(120)])
        assert manifest_status(alice, name, "again") == 200

    report = collect(services)
    assert report.repositories_purged >= 1
    assert f"sha256:{_hex(layer)}" not in storage_files(gc_registry)
    assert manifest_status(alice, name, digest) == 200


def test_deleted_organization_is_purged_and_its_name_reusable(
    gc_registry: Deployment, services: Services, alice: RegistryClient
) -> None:
    org = f"gcorg{uuid.uuid4().hex[:8]}"
    token = make_token(
        gc_registry, "alice", "repo:admin repo:read repo:write repo:create org:admin user:admin"
    )
    with httpx.Client(
        base_url=f"{gc_registry.url}/api/v1", headers={"Authorization": f"Bearer {token}"}
    ) as api:
        assert api.post("/organization/", json={"name": org}).status_code == 201
        layer = os.urandom(130)
        image_with(alice, f"{org}/app", "latest", [layer])
        assert api.delete(f"/organization/{org}").status_code == 204
        assert api.get(f"/organization/{org}").status_code == 404
        assert api.post("/organization/", json={"name": org}).status_code == 201
    report = collect(services)
    assert report.namespaces_purged >= 1
    assert f"sha256:{_hex(layer)}" not in storage_files(gc_registry)


def test_a_new_organization_does_not_inherit_a_purged_ones_log(
    gc_registry: Deployment, services: Services, alice: RegistryClient
) -> None:
    """SQLite reuses the id of the newest row once it is deleted: the purged
    organization's audit entries must not show up in the next organization's log."""
    token = make_token(
        gc_registry, "alice", "repo:admin repo:read repo:write repo:create org:admin user:admin"
    )
    old, new = f"gcold{uuid.uuid4().hex[:8]}", f"gcnew{uuid.uuid4().hex[:8]}"
    with httpx.Client(
        base_url=f"{gc_registry.url}/api/v1", headers={"Authorization": f"Bearer {token}"}
    ) as api:
        assert api.post("/organization/", json={"name": old}).status_code == 201
        image_with(alice, f"{old}/app", "latest", [os.urandom(120)])
        assert api.put(f"/organization/{old}/team/devs",
                       json={"role": "member"}).status_code == 200
        assert api.delete(f"/organization/{old}").status_code == 204
        assert collect(services).namespaces_purged >= 1
        assert api.post("/organization/", json={"name": new}).status_code == 201
        image_with(alice, f"{new}/app", "latest", [os.urandom(120)])
        org_kinds = [e["kind"] for e in api.get(f"/organization/{new}/logs").json()["logs"]]
        repo_kinds = [e["kind"] for e in
                      api.get(f"/repository/{new}/app/logs").json()["logs"]]
    assert org_kinds == ["push_repo", "create_repo", "org_create"]
    assert repo_kinds == ["push_repo", "create_repo"]


def test_dry_run_changes_nothing_and_predicts_the_pass(
    gc_registry: Deployment, services: Services, alice: RegistryClient
) -> None:
    collect(services)  # start from a clean slate
    name = repo()
    image_with(alice, name, "latest", [os.urandom(100), os.urandom(100)])
    old_digest, _ = image_with(alice, name, "old", [os.urandom(100)])
    assert alice.request("DELETE", f"/v2/{name}/manifests/old", repo=name).status_code == 202
    before = storage_files(gc_registry)

    dry = collector(services).run(dry_run=True)
    assert dry.dry_run and dry.manifests_deleted == 1 and dry.blobs_deleted == 2
    assert storage_files(gc_registry) == before
    assert manifest_status(alice, name, old_digest) == 200

    real = collect(services)
    assert (real.manifests_deleted, real.blobs_deleted, real.bytes_reclaimed) == (
        dry.manifests_deleted,
        dry.blobs_deleted,
        dry.bytes_reclaimed,
    )
    assert manifest_status(alice, name, old_digest) == 404
    runs = collector(services).recent_runs(2)
    assert [r.dry_run for r in runs] == [False, True]
    assert runs[0].blobs_deleted == real.blobs_deleted


def test_cli_runs_a_pass_and_prints_json(gc_registry: Deployment, alice: RegistryClient) -> None:
    name = repo()
    image_with(alice, name, "latest", [os.urandom(100)])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "portside",
            "gc",
            "run",
            "--config",
            str(gc_registry.registry.config_path),
            "--dry-run",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["dry_run"] is True
    for key in (
        "tags_expired",
        "manifests_deleted",
        "blobs_deleted",
        "bytes_reclaimed",
        "uploads_deleted",
        "repositories_purged",
        "namespaces_purged",
        "duration_s",
    ):
        assert isinstance(data[key], int | float), key
