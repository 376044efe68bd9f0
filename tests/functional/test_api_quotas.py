"""Storage quotas: Quay's quota API, usage computed from what is stored, pushes refused
over a ``Reject`` limit and ``quota_warning`` entries over a ``Warning`` limit.

The tests run against a server of their own (``FEATURE_QUOTA_MANAGEMENT: true`` and a
2 MB system default for namespaces without a quota).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from functional.client import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    RegistryClient,
    descriptor,
    error_codes,
    sha256,
    to_json,
)
from functional.conftest import PROFILES, Deployment, RegistryPool
from functional.test_api_auth import make_token
from functional.test_api_organizations import ALL_SCOPES, create_superuser, unique_org

#: Namespaces without a quota may use this many bytes on the quota server.
SYSTEM_DEFAULT = 2_000_000

PROFILES.setdefault("quota", (
    {"LOGIN_FAILURE_LIMIT": 0, "FEATURE_QUOTA_MANAGEMENT": True,
     "DEFAULT_SYSTEM_REJECT_QUOTA_BYTES": SYSTEM_DEFAULT},
    ("alice", "bob", "carol"),
))


@pytest.fixture
def quota_registry(registries: RegistryPool) -> Iterator[Deployment]:
    """The quota server; fails the test if the server logged an unhandled error."""
    deployment = registries.get("quota")
    offset = deployment.log_size()
    yield deployment
    deployment.close_clients()
    crashes = deployment.unhandled_errors(since=offset)
    assert not crashes, f"the server logged unhandled errors:\n{crashes}"


@pytest.fixture
def root_name(quota_registry: Deployment) -> str:
    """A new superuser."""
    return create_superuser(quota_registry)


@pytest.fixture
def root(quota_registry: Deployment, root_name: str) -> Iterator[httpx.Client]:
    """An ``/api/v1`` client of a new superuser (``super:user`` scope)."""
    token = make_token(quota_registry, root_name, "super:user org:admin user:admin")
    with httpx.Client(base_url=f"{quota_registry.url}/api/v1",
                      headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


def api(deployment: Deployment, username: str | None,
        scopes: str = ALL_SCOPES) -> httpx.Client:
    """An ``/api/v1`` client with a token of ``username`` (anonymous: ``None``)."""
    headers = {}
    if username is not None:
        headers["Authorization"] = f"Bearer {make_token(deployment, username, scopes)}"
    return httpx.Client(base_url=f"{deployment.url}/api/v1", headers=headers)


@pytest.fixture
def org(quota_registry: Deployment, root: httpx.Client) -> Iterator[str]:
    """A new organization administered by alice; deleted afterwards."""
    name = unique_org("quota")
    with api(quota_registry, "alice") as alice:
        created = alice.post("/organization/", json={"name": name, "email": f"{name}@x.io"})
        assert created.status_code == 201, created.text
    yield name
    assert root.delete(f"/organization/{name}").status_code in (204, 404)


def create_quota(client: httpx.Client, org: str, limit_bytes: int,
                 *limits: tuple[str, int]) -> int:
    """Give ``org`` a quota with ``limits``; returns the quota id."""
    response = client.post(f"/organization/{org}/quota", json={"limit_bytes": limit_bytes})
    assert response.status_code == 201, response.text
    quota_id = int(client.get(f"/organization/{org}/quota").json()[0]["id"])
    for kind, percent in limits:
        added = client.post(f"/organization/{org}/quota/{quota_id}/limit",
                            json={"type": kind, "threshold_percent": percent})
        assert added.status_code == 201, added.text
    return quota_id


def put_image(client: RegistryClient, repo: str, tag: str, *layers: bytes,
              config: bytes | None = None) -> tuple[httpx.Response, str, int]:
    """Upload ``layers`` and a config, then ``PUT`` the manifest; returns the response,
    the manifest digest and the bytes of the distinct blobs it references."""
    config = config if config is not None else to_json({"nonce": uuid.uuid4().hex})
    for blob in (config, *layers):
        client.push_blob(repo, blob)
    body = to_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": descriptor(OCI_CONFIG, config),
                    "layers": [descriptor(OCI_LAYER, layer) for layer in layers]})
    response = client.put_manifest(repo, tag, body)
    return response, sha256(body), len(config) + sum(len(layer) for layer in set(layers))


def org_view(client: httpx.Client, org: str) -> dict[str, Any]:
    response = client.get(f"/organization/{org}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def usage(client: httpx.Client, org: str) -> int:
    """The organization's ``quota_report.quota_bytes``."""
    return int(org_view(client, org)["quota_report"]["quota_bytes"])


def log_kinds(client: httpx.Client, org: str) -> list[str]:
    response = client.get(f"/organization/{org}/logs")
    assert response.status_code == 200, response.text
    return [entry["kind"] for entry in response.json()["logs"]]


# --- the API ----------------------------------------------------------------------------


def test_superusers_manage_quotas_and_limits(quota_registry: Deployment, root: httpx.Client,
                                             org: str) -> None:
    assert root.get(f"/organization/{org}/quota").json() == [
        {"id": None, "limit_bytes": SYSTEM_DEFAULT, "default_config": True, "limits": [],
         "default_config_exists": True}]
    quota_id = create_quota(root, org, 1_000_000)
    again = root.post(f"/organization/{org}/quota", json={"limit_bytes": 5})
    assert again.status_code == 400
    assert again.json()["error_message"] == f"Organization quota for '{org}' already exists"
    assert root.get(f"/organization/{org}/quota/{quota_id}").json() == {
        "id": quota_id, "limit_bytes": 1_000_000, "default_config": False, "limits": [],
        "default_config_exists": True}
    changed = root.put(f"/organization/{org}/quota/{quota_id}", json={"limit_bytes": 2 ** 40})
    assert changed.status_code == 200 and changed.json()["limit_bytes"] == 2 ** 40

    base = f"/organization/{org}/quota/{quota_id}/limit"
    for kind, percent in (("Warning", 80), ("reject", 100)):
        response = root.post(base, json={"type": kind, "threshold_percent": percent})
        assert response.status_code == 201 and response.json() == "Created"
    limits = root.get(base).json()
    assert [(item["type"], item["limit_percent"]) for item in limits] == [
        ("Warning", 80), ("Reject", 100)]
    warning_id = limits[0]["id"]
    assert root.get(f"{base}/{warning_id}").json() == {
        "id": warning_id, "type": "Warning", "limit_percent": 80}
    moved = root.put(f"{base}/{warning_id}", json={"threshold_percent": 90})
    assert moved.status_code == 200
    assert moved.json()["limits"][0] == {"id": warning_id, "type": "Warning",
                                         "limit_percent": 90}
    assert root.delete(f"{base}/{warning_id}").status_code == 204
    assert root.get(f"{base}/{warning_id}").status_code == 404
    assert root.delete(f"/organization/{org}/quota/{quota_id}").status_code == 204
    assert root.get(f"/organization/{org}/quota/{quota_id}").status_code == 404

    with api(quota_registry, "alice") as alice:
        kinds = log_kinds(alice, org)
    for kind in ("org_create_quota", "org_change_quota", "org_create_quota_limit",
                 "org_change_quota_limit", "org_delete_quota_limit", "org_delete_quota"):
        assert kind in kinds, kinds


def test_bad_input_is_refused(root: httpx.Client, org: str) -> None:
    for bad in (-1, 0):
        response = root.post(f"/organization/{org}/quota", json={"limit_bytes": bad})
        assert response.status_code == 400
        assert response.json()["error_message"] == f"Invalid quota size limit value: '{bad}'"
    for body in ({"limit_bytes": "lots"}, {}, {"limit_bytes": 2 ** 70}):
        assert root.post(f"/organization/{org}/quota", json=body).status_code == 400
    quota_id = create_quota(root, org, 1000, ("Reject", 100))
    base = f"/organization/{org}/quota/{quota_id}/limit"
    cases = [({"type": "Warning", "threshold_percent": 0}, "between 1 and 100"),
             ({"type": "Warning", "threshold_percent": 101}, "between 1 and 100"),
             ({"type": "Panic", "threshold_percent": 50}, "Warning, Reject"),
             ({"type": "Reject", "threshold_percent": 90}, "Only one quota limit"),
             ({"type": "Reject", "threshold_percent": 100}, "already exists"),
             ({"type": "Warning"}, "threshold_percent")]
    for body, message in cases:
        response = root.post(base, json=body)
        assert response.status_code == 400, body
        assert message in response.json()["error_message"], (body, response.text)
    limit_id = root.get(base).json()[0]["id"]
    assert root.put(f"{base}/{limit_id}", json={"threshold_percent": 250}).status_code == 400
    assert root.put(f"/organization/{org}/quota/{quota_id}",
                    json={"limit_bytes": -5}).status_code == 400
    for path in (f"/organization/{org}/quota/nope", f"/organization/{org}/quota/999999",
                 f"{base}/nope", f"{base}/999999", "/organization/no-such-org-here/quota"):
        assert root.get(path).status_code == 404, path


def test_members_read_and_only_superusers_write(quota_registry: Deployment,
                                                root: httpx.Client, root_name: str,
                                                org: str) -> None:
    quota_id = create_quota(root, org, 10_000, ("Warning", 50))
    paths = [f"/organization/{org}/quota", f"/organization/{org}/quota/{quota_id}",
             f"/organization/{org}/quota/{quota_id}/limit"]
    with api(quota_registry, None) as anonymous, api(quota_registry, "bob") as bob, \
            api(quota_registry, "alice") as alice:
        for path in paths:
            assert anonymous.get(path).status_code == 401
            assert bob.get(path).status_code == 403
            assert alice.get(path).status_code == 200
        assert alice.put(f"/organization/{org}/team/readers",
                         json={"role": "member"}).status_code == 200
        assert alice.put(f"/organization/{org}/team/readers/members/bob").status_code == 200
        for path in paths:
            assert bob.get(path).status_code == 200, path
        # Organization admins and members read but do not write, as in Quay.
        for client in (alice, bob):
            assert client.post(f"/organization/{org}/quota",
                               json={"limit_bytes": 5}).status_code == 403
            assert client.put(paths[1], json={"limit_bytes": 5}).status_code == 403
            assert client.delete(paths[1]).status_code == 403
            assert client.post(paths[2], json={"type": "Reject",
                                               "threshold_percent": 100}).status_code == 403
        # A superuser's token without super:user acts as an ordinary user.
        with api(quota_registry, root_name, "org:admin user:admin") as plain:
            assert plain.delete(paths[1]).status_code == 403
        view = org_view(alice, org)
        assert view["quotas"][0]["limit_bytes"] == 10_000
        assert view["quota_report"] == {"quota_bytes": 0, "configured_quota": 10_000,
                                        "running_backfill": "complete",
                                        "backfill_status": "complete"}
        assert "quota_report" not in anonymous.get(f"/organization/{org}").json()


def test_superuser_paths_and_user_quota(quota_registry: Deployment, root: httpx.Client,
                                        org: str) -> None:
    created = root.post(f"/superuser/organization/{org}/quota", json={"limit": "10Mi"})
    assert created.status_code == 201, created.text
    quotas = root.get(f"/superuser/organization/{org}/quota").json()
    assert quotas[0]["limit_bytes"] == 10 * 1024 * 1024
    quota_id = quotas[0]["id"]
    changed = root.put(f"/superuser/organization/{org}/quota/{quota_id}",
                       json={"limit_bytes": 3000})
    assert changed.status_code == 200 and changed.json()["limit_bytes"] == 3000
    assert root.post(f"/superuser/organization/{org}/quota",
                     json={"limit": "lots"}).status_code == 400
    assert root.delete(f"/superuser/organization/{org}/quota/{quota_id}").status_code == 204
    assert root.get(f"/superuser/users/{org}/quota").status_code == 404  # not a user

    # carol's own quota, set by a superuser and read through /user/quota.
    if root.get("/superuser/users/carol/quota").json():
        old = root.get("/superuser/users/carol/quota").json()[0]["id"]
        assert root.delete(f"/superuser/users/carol/quota/{old}").status_code == 204
    assert root.post("/superuser/users/carol/quota",
                     json={"limit_bytes": 50_000_000}).status_code == 201
    with api(quota_registry, "carol") as carol, \
            api(quota_registry, "carol", "repo:read") as narrow, \
            api(quota_registry, "bob") as bob:
        mine = carol.get("/user/quota")
        assert mine.status_code == 200 and mine.json()[0]["limit_bytes"] == 50_000_000
        user_quota = mine.json()[0]["id"]
        assert carol.get(f"/user/quota/{user_quota}").json()["limit_bytes"] == 50_000_000
        assert carol.get(f"/user/quota/{user_quota}/limit").json() == []
        assert narrow.get("/user/quota").status_code == 403
        assert bob.get("/superuser/users/carol/quota").status_code == 403
        assert bob.post("/superuser/users/carol/quota",
                        json={"limit_bytes": 1}).status_code == 403
    assert root.delete(f"/superuser/users/carol/quota/{user_quota}").status_code == 204

    size = root.get("/superuser/registrysize/")
    assert size.status_code == 200
    assert set(size.json()) == {"size_bytes", "last_ran", "queued", "running"}
    assert root.post("/superuser/registrysize/").status_code == 201
    with api(quota_registry, "bob") as bob:
        assert bob.get("/superuser/registrysize/").status_code == 403


def test_quota_paths_are_hidden_when_the_feature_is_off(registries: RegistryPool) -> None:
    main = registries.get("main")
    with api(main, "alice") as alice:
        assert alice.get("/user/quota").status_code == 404
        assert alice.get("/organization/anything/quota").status_code == 404


# --- usage and enforcement --------------------------------------------------------------


def test_usage_counts_shared_layers_once(quota_registry: Deployment, root: httpx.Client,
                                         org: str) -> None:
    create_quota(root, org, 10_000_000)
    pusher = quota_registry.client("alice")
    shared = os.urandom(3000)
    first, _, first_bytes = put_image(pusher, f"{org}/one", "v1", shared, os.urandom(1000))
    assert first.status_code == 201, first.text
    second, _, _ = put_image(pusher, f"{org}/two", "v1", shared,
                             config=to_json({"second": True}))
    assert second.status_code == 201, second.text
    second_config = len(to_json({"second": True}))
    with api(quota_registry, "alice") as alice:
        assert usage(alice, org) == first_bytes + second_config
        one = alice.get(f"/repository/{org}/one").json()["quota_report"]
        assert one == {"quota_bytes": first_bytes, "configured_quota": 10_000_000}
        two = alice.get(f"/repository/{org}/two").json()["quota_report"]
        assert two["quota_bytes"] == len(shared) + second_config
    total = root.get("/superuser/registrysize/").json()["size_bytes"]
    assert total >= first_bytes + second_config


def test_a_push_over_the_reject_limit_is_denied_and_stores_nothing(
        quota_registry: Deployment, root: httpx.Client, org: str) -> None:
    create_quota(root, org, 10_000, ("Reject", 100))
    pusher = quota_registry.client("alice")
    repo = f"{org}/app"
    accepted, digest, used = put_image(pusher, repo, "v1", os.urandom(6000))
    assert accepted.status_code == 201, accepted.text
    refused, refused_digest, _ = put_image(pusher, repo, "v2", os.urandom(6000))
    assert refused.status_code == 403
    assert error_codes(refused) == ["DENIED"]
    message = refused.json()["errors"][0]["message"]
    assert f"Quota has been exceeded on namespace {org}" in message
    assert str(used) in message and "10000" in message
    assert pusher.request("GET", f"/v2/{repo}/manifests/{refused_digest}",
                          repo=repo).status_code == 404
    assert pusher.request("GET", f"/v2/{repo}/manifests/v2", repo=repo).status_code == 404
    # Content the namespace already holds is not refused: a new tag, an index.
    first = pusher.request("GET", f"/v2/{repo}/manifests/v1", repo=repo,
                           headers={"Accept": OCI_MANIFEST}).content
    assert pusher.put_manifest(repo, "again", first).status_code == 201
    index = to_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(first)}]})
    assert pusher.put_manifest(repo, "multi", index, OCI_INDEX).status_code == 201
    with api(quota_registry, "alice") as alice:
        assert usage(alice, org) == used
        assert "push_repo" in log_kinds(alice, org)
    # Raising the limit lets the same push through.
    quota_id = root.get(f"/organization/{org}/quota").json()[0]["id"]
    assert root.put(f"/organization/{org}/quota/{quota_id}",
                    json={"limit_bytes": 100_000}).status_code == 200
    retried, _, _ = put_image(pusher, repo, "v2", os.urandom(6000))
    assert retried.status_code == 201, retried.text


def test_the_system_default_applies_without_a_quota(quota_registry: Deployment,
                                                    root: httpx.Client, org: str) -> None:
    pusher = quota_registry.client("alice")
    big = SYSTEM_DEFAULT * 6 // 10
    first, _, _ = put_image(pusher, f"{org}/big", "v1", os.urandom(big))
    assert first.status_code == 201, first.text
    second, _, _ = put_image(pusher, f"{org}/big", "v2", os.urandom(big))
    assert second.status_code == 403 and error_codes(second) == ["DENIED"]
    # A quota of its own replaces the default.
    create_quota(root, org, SYSTEM_DEFAULT * 3, ("Reject", 100))
    third, _, _ = put_image(pusher, f"{org}/big", "v2", os.urandom(big))
    assert third.status_code == 201, third.text


def test_crossing_a_warning_limit_is_recorded_once(quota_registry: Deployment,
                                                   root: httpx.Client, org: str) -> None:
    create_quota(root, org, 10_000, ("Warning", 50), ("Reject", 100))
    pusher = quota_registry.client("alice")
    repo = f"{org}/warn"
    with api(quota_registry, "alice") as alice:
        response, _, _ = put_image(pusher, repo, "a", os.urandom(3000))
        assert response.status_code == 201
        assert "quota_warning" not in log_kinds(alice, org)
        response, _, _ = put_image(pusher, repo, "b", os.urandom(3000))
        assert response.status_code == 201, response.text
        logs = alice.get(f"/organization/{org}/logs").json()["logs"]
        warnings = [entry for entry in logs if entry["kind"] == "quota_warning"]
        assert len(warnings) == 1
        metadata = warnings[0]["metadata"]
        assert metadata["namespace"] == org and metadata["threshold_percent"] == 50
        assert metadata["limit_bytes"] == 5000 and metadata["usage_bytes"] > 5000
        response, _, _ = put_image(pusher, repo, "c", os.urandom(500))
        assert response.status_code == 201, response.text
        assert log_kinds(alice, org).count("quota_warning") == 1


def test_usage_counts_the_manifests_still_stored(quota_registry: Deployment,
                                                 root: httpx.Client, org: str) -> None:
    create_quota(root, org, 1_000_000)
    pusher = quota_registry.client("alice")
    repo = f"{org}/gone"
    response, digest, used = put_image(pusher, repo, "v1", os.urandom(2000))
    assert response.status_code == 201
    with api(quota_registry, "alice") as alice:
        assert usage(alice, org) == used
        # Deleting the tag leaves the manifest stored (until garbage collection).
        assert pusher.request("DELETE", f"/v2/{repo}/manifests/v1",
                              repo=repo).status_code == 202
        assert usage(alice, org) == used
        assert pusher.request("DELETE", f"/v2/{repo}/manifests/{digest}",
                              repo=repo).status_code == 202
        assert usage(alice, org) == 0


def test_concurrent_pushes_cannot_both_slip_under_the_limit(
        quota_registry: Deployment, root: httpx.Client, org: str) -> None:
    create_quota(root, org, 10_000, ("Reject", 100))
    pusher = quota_registry.client("alice")
    repos = [f"{org}/race-a", f"{org}/race-b"]
    bodies = []
    for repo in repos:
        config, layer = to_json({"repo": repo}), os.urandom(6000)
        pusher.push_blob(repo, config)
        pusher.push_blob(repo, layer)
        bodies.append(to_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": descriptor(OCI_CONFIG, config),
                               "layers": [descriptor(OCI_LAYER, layer)]}))
        pusher.auth_headers(repo)  # fetch the tokens before the race
    with ThreadPoolExecutor(2) as pool:
        statuses = sorted(pool.map(
            lambda pair: pusher.put_manifest(pair[0], "v1", pair[1]).status_code,
            zip(repos, bodies, strict=True)))
    assert statuses == [201, 403]
