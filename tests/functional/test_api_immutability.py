"""Immutable tags: the per-tag flag (``PUT .../tag/{tag}`` with ``immutable``) and the
``immutabilitypolicy`` endpoints of namespaces and repositories; what they refuse on
``/v2`` and through the API, and who may manage them."""

from __future__ import annotations

import time
from typing import Any

import httpx
from sqlalchemy import select, update

from functional.client import OCI_MANIFEST, RegistryClient, error_codes
from functional.conftest import Deployment, unique_repo
from functional.test_api_organizations import (
    api,
    create_org,
    delete_created_organizations,
    in_db,
)
from functional.test_api_tags import grant, logs, v2_digest
from portside.db.models import Namespace, Repository, Tag

__all__ = ["delete_created_organizations"]  # the autouse cleanup applies here too


def set_flag(client: httpx.Client, repo: str, tag: str, value: Any) -> httpx.Response:
    return client.put(f"/repository/{repo}/tag/{tag}", json={"immutable": value})


def add_policy(client: httpx.Client, base: str, pattern: str, matches: bool | None = None) -> str:
    """Create an immutability policy under ``base`` (must succeed); returns its uuid."""
    body: dict[str, Any] = {"tagPattern": pattern}
    if matches is not None:
        body["tagPatternMatches"] = matches
    response = client.post(f"{base}/immutabilitypolicy/", json=body)
    assert response.status_code == 201, response.text
    uuid: str = response.json()["uuid"]
    return uuid


def assert_refused_push(client: RegistryClient, repo: str, tag: str, body: bytes) -> None:
    response = client.put_manifest(repo, tag, body)
    assert response.status_code == 409, response.text
    assert error_codes(response) == ["TAG_IMMUTABLE"]
    assert tag in response.json()["errors"][0]["message"]


def assert_tag_immutable(response: httpx.Response) -> None:
    assert response.status_code == 409, response.text
    assert response.json()["error_type"] == "tag_immutable"


def test_flagged_tag_cannot_be_moved_or_deleted(registry: Deployment) -> None:
    alice = registry.client("alice")
    repo = unique_repo("alice", "immutable")
    first = alice.push_image(repo, "v1")
    second = alice.push_image(repo, "other")
    with api(registry, "alice") as client:
        response = set_flag(client, repo, "v1", True)
        assert response.status_code == 201 and response.json() == "Updated"
        # Setting it again changes nothing (and logs nothing).
        assert set_flag(client, repo, "v1", True).status_code == 201

        # /v2: a push that would move the tag, deleting it, deleting its manifest.
        assert_refused_push(alice, repo, "v1", second.manifest)
        # Pushing the same manifest again is not a change.
        assert alice.put_manifest(repo, "v1", first.manifest).status_code == 201
        for reference in ("v1", first.digest):
            response = alice.request("DELETE", f"/v2/{repo}/manifests/{reference}", repo=repo)
            assert response.status_code == 409, response.text
            assert error_codes(response) == ["TAG_IMMUTABLE"]
        assert v2_digest(alice, repo, "v1") == first.digest

        # The API: moving and deleting.
        assert_tag_immutable(
            client.put(f"/repository/{repo}/tag/v1", json={"manifest_digest": second.digest})
        )
        assert_tag_immutable(client.delete(f"/repository/{repo}/tag/v1"))
        # Other tags are not affected; a new tag on the same manifest is fine.
        assert (
            client.put(
                f"/repository/{repo}/tag/copy", json={"manifest_digest": first.digest}
            ).status_code
            == 201
        )
        assert client.delete(f"/repository/{repo}/tag/other").status_code == 204

        [entry] = logs(client, repo, "change_tag_immutability")
        assert entry["tag"] == "v1" and entry["immutable"] is True
        # The tag list says which tags are immutable (only the flagged active one).
        listed = client.get(f"/repository/{repo}/tag/").json()["tags"]
        assert {(t["name"], t["immutable"]) for t in listed if "end_ts" not in t} == {
            ("v1", True), ("copy", False)}

        # Cleared by an administrator, the tag moves again.
        assert set_flag(client, repo, "v1", False).status_code == 201
        assert alice.put_manifest(repo, "v1", second.manifest).status_code == 201
        assert v2_digest(alice, repo, "v1") == second.digest


def test_writers_set_the_flag_but_only_admins_clear_it(registry: Deployment) -> None:
    alice = registry.client("alice")
    repo = unique_repo("alice", "immutable")
    alice.push_image(repo, "v1")
    with api(registry, "alice") as owner, api(registry, "bob") as bob:
        grant(owner, repo, "bob", "write")
        assert set_flag(bob, repo, "v1", True).status_code == 201
        response = set_flag(bob, repo, "v1", False)
        assert response.status_code == 403, response.text
        assert_tag_immutable(bob.delete(f"/repository/{repo}/tag/v1"))
        # Bad requests.
        assert set_flag(owner, repo, "missing", True).status_code == 404
        assert set_flag(owner, repo, "v1", "yes").status_code == 400
        assert set_flag(owner, repo, "v1", None).status_code == 400
    with api(registry, "carol") as carol:
        assert set_flag(carol, repo, "v1", True).status_code == 403
    with api(registry, None) as anonymous:
        assert set_flag(anonymous, repo, "v1", True).status_code == 401


def test_repository_policy(registry: Deployment) -> None:
    alice = registry.client("alice")
    repo = unique_repo("alice", "immutable")
    old = alice.push_image(repo, "v1")
    other = alice.push_image(repo, "latest")
    with api(registry, "alice") as client:
        base = f"/repository/{repo}"
        uuid = add_policy(client, base, "v[0-9]")
        # Tags pushed before the policy are covered too.
        assert_refused_push(alice, repo, "v1", other.manifest)
        assert_tag_immutable(client.delete(f"{base}/tag/v1"))
        # A new matching tag is pushed; from then on it is immutable.
        new = alice.push_image(repo, "v2.0")
        assert_refused_push(alice, repo, "v2.0", old.manifest)
        assert_tag_immutable(client.put(f"{base}/tag/v2.0", json={"manifest_digest": old.digest}))
        listed = client.get(f"{base}/tag/", params={"onlyActiveTags": "true"}).json()["tags"]
        assert {t["name"]: t["immutable"] for t in listed} == {
            "v1": True, "latest": False, "v2.0": True}
        # Patterns are anchored at the start of the name, not at its end.
        assert alice.put_manifest(repo, "xv1", new.manifest).status_code == 201
        assert alice.put_manifest(repo, "xv1", old.manifest).status_code == 201
        assert alice.put_manifest(repo, "latest", new.manifest).status_code == 201

        response = client.get(f"{base}/immutabilitypolicy/")
        assert response.status_code == 200, response.text
        assert response.json() == {
            "policies": [{"uuid": uuid, "tagPattern": "v[0-9]", "tagPatternMatches": True}]
        }
        assert client.get(f"{base}/immutabilitypolicy/{uuid}").json()["uuid"] == uuid

        # Inverted: everything but dev-* is immutable.
        response = client.put(
            f"{base}/immutabilitypolicy/{uuid}",
            json={"tagPattern": "dev-", "tagPatternMatches": False},
        )
        assert response.status_code == 204, response.text
        assert_refused_push(alice, repo, "latest", old.manifest)
        assert alice.put_manifest(repo, "v1", new.manifest).status_code == 409
        alice.push_image(repo, "dev-1")
        assert alice.put_manifest(repo, "dev-1", old.manifest).status_code == 201

        response = client.delete(f"{base}/immutabilitypolicy/{uuid}")
        assert response.status_code == 200 and response.json() == {"uuid": uuid}
        assert client.get(f"{base}/immutabilitypolicy/{uuid}").status_code == 404
        # Without the policy the tags move again.
        assert alice.put_manifest(repo, "v1", new.manifest).status_code == 201
        assert client.delete(f"{base}/tag/latest").status_code == 204

        kinds = {
            kind: logs(client, repo, kind)
            for kind in (
                "create_immutability_policy",
                "update_immutability_policy",
                "delete_immutability_policy",
            )
        }
        assert kinds["create_immutability_policy"][0]["tag_pattern"] == "v[0-9]"
        assert kinds["update_immutability_policy"][0]["tag_pattern_matches"] is False
        assert kinds["delete_immutability_policy"][0]["policy_uuid"] == uuid


def test_namespace_policy_covers_every_repository(registry: Deployment) -> None:
    alice = registry.client("alice")
    with api(registry, "alice") as client:
        org = create_org(client)
        first, second = f"{org}/one", f"{org}/two"
        alice.push_image(first, "release-1")
        alice.push_image(second, "release-1")
        spare = {repo: alice.push_image(repo) for repo in (first, second)}
        uuid = add_policy(client, f"/organization/{org}", "release-")
        for repo in (first, second):
            assert_refused_push(alice, repo, "release-1", spare[repo].manifest)
        alice.push_image(second, "release-2")
        assert (
            alice.put_manifest(second, "snapshot", spare[second].manifest, OCI_MANIFEST).status_code
            == 201
        )

        listed = client.get(f"/organization/{org}/immutabilitypolicy/").json()["policies"]
        assert listed == [{"uuid": uuid, "tagPattern": "release-", "tagPatternMatches": True}]
        # The namespace's policies are not the repository's.
        assert client.get(f"/repository/{first}/immutabilitypolicy/").json() == {"policies": []}
        entries = client.get(f"/organization/{org}/logs").json()["logs"]
        assert any(
            e["kind"] == "create_immutability_policy" and e["metadata"]["tag_pattern"] == "release-"
            for e in entries
        )

        assert client.delete(f"/organization/{org}/immutabilitypolicy/{uuid}").status_code == 200
        assert alice.put_manifest(first, "release-1", spare[first].manifest).status_code == 201


def test_bad_policies_and_outsiders_are_refused(registry: Deployment) -> None:
    alice = registry.client("alice")
    repo = unique_repo("alice", "immutable")
    alice.push_image(repo, "v1")
    with api(registry, "alice") as client:
        org = create_org(client)
        for base in (f"/organization/{org}", f"/repository/{repo}"):
            url = f"{base}/immutabilitypolicy/"
            for body in (
                {"tagPattern": "(["},
                {"tagPattern": ""},
                {"tagPattern": "  "},
                {"tagPattern": "a" * 256},
                {"tagPattern": 5},
                {},
                {"tagPattern": "v1", "tagPatternMatches": "no"},
            ):
                response = client.post(url, json=body)
                assert response.status_code == 400, (url, body, response.text)
                assert response.json()["error_type"] == "invalid_request"
            uuid = add_policy(client, base, "v1")
            # The same pattern twice in one place is refused.
            assert client.post(url, json={"tagPattern": "v1"}).status_code == 400
            assert client.put(f"{url}{uuid}", json={"tagPattern": "(["}).status_code == 400
            for method in ("GET", "DELETE"):
                assert client.request(method, f"{url}no-such-policy").status_code == 404
            with api(registry, "bob") as bob:
                assert bob.get(url).status_code == 403
                assert bob.post(url, json={"tagPattern": "x"}).status_code == 403
                assert bob.delete(f"{url}{uuid}").status_code == 403
            with api(registry, None) as anonymous:
                assert anonymous.get(url).status_code == 401
        # Read-only tokens cannot manage policies.
        with api(registry, "alice", scopes="repo:read repo:write") as limited:
            assert limited.get(f"/repository/{repo}/immutabilitypolicy/").status_code == 403
            assert limited.get(f"/organization/{org}/immutabilitypolicy/").status_code == 403
        assert client.get("/organization/no-such-org-x/immutabilitypolicy/").status_code == 404


def test_an_expiring_tag_cannot_be_made_immutable(registry: Deployment) -> None:
    alice = registry.client("alice")
    repo = unique_repo("alice", "immutable")
    alice.push_image(repo, "nightly")
    namespace, short = repo.split("/", 1)
    db = in_db(registry)
    try:
        with db.session() as session:
            repository_id = session.scalar(
                select(Repository.id)
                .join(Namespace, Namespace.id == Repository.namespace_id)
                .where(Namespace.name == namespace, Repository.name == short)
            )
            session.execute(
                update(Tag)
                .where(Tag.repository_id == repository_id, Tag.name == "nightly")
                .values(expiration_ms=int(time.time() * 1000) + 86_400_000)
            )
    finally:
        db.dispose()
    with api(registry, "alice") as client:
        response = set_flag(client, repo, "nightly", True)
        assert response.status_code == 400, response.text
        assert "expiration" in response.json()["error_message"]
