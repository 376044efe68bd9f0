"""``/api/v1/repository/{repository}/tag/``: the tag history after pushes, moves and
deletions (through ``/v2`` and through the API), paging and filters, and who may
create, move and delete tags."""

from __future__ import annotations

from typing import Any

import httpx

from functional.client import OCI_INDEX, OCI_MANIFEST, Image, RegistryClient, to_json
from functional.conftest import Deployment, unique_repo
from functional.test_api_repositories import api


def tag_list(client: httpx.Client, repo: str, **params: Any) -> dict[str, Any]:
    """``GET /repository/<repo>/tag/`` that must succeed."""
    response = client.get(f"/repository/{repo}/tag/", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def rows(body: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """``(name, manifest digest, active)`` of each listed lifetime, in order."""
    return [(t["name"], t["manifest_digest"], "end_ts" not in t) for t in body["tags"]]


def logs(client: httpx.Client, repo: str, kind: str) -> list[dict[str, Any]]:
    """The metadata of the repository's audit entries of ``kind``, newest first."""
    response = client.get(f"/repository/{repo}/logs")
    assert response.status_code == 200, response.text
    return [e["metadata"] for e in response.json()["logs"] if e["kind"] == kind]


def v2_digest(client: RegistryClient, repo: str, tag: str) -> str | None:
    """The digest ``/v2`` resolves ``tag`` to (``None``: unknown)."""
    response = client.request("GET", f"/v2/{repo}/manifests/{tag}", repo=repo,
                              actions="pull", headers={"Accept": OCI_MANIFEST})
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return response.headers["Docker-Content-Digest"]


def grant(owner: httpx.Client, repo: str, username: str, role: str) -> None:
    response = owner.put(f"/repository/{repo}/permissions/user/{username}",
                         json={"role": role})
    assert response.status_code == 200, response.text


def test_history_after_v2_pushes_moves_and_deletes(registry: Deployment) -> None:
    alice = registry.client("alice")
    repo = unique_repo("alice", "tags")
    first = alice.push_image(repo, "v1", layers=2)
    second = alice.push_image(repo, "v1")  # moves v1
    third = alice.push_image(repo, "latest", layers=3)
    deleted = alice.request("DELETE", f"/v2/{repo}/manifests/latest", repo=repo)
    assert deleted.status_code == 202
    with api(registry, "alice") as client:
        body = tag_list(client, repo)
        assert body["page"] == 1 and body["has_additional"] is False
        # Newest first; ended lifetimes stay in the history.
        assert rows(body) == [("latest", third.digest, False), ("v1", second.digest, True),
                              ("v1", first.digest, False)]
        latest, current, old = body["tags"]
        assert set(current) == {"name", "reversion", "start_ts", "manifest_digest",
                                "is_manifest_list", "size", "last_modified", "immutable"}
        assert current["reversion"] is False and current["is_manifest_list"] is False
        assert current["immutable"] is False
        assert current["size"] == 256 and latest["size"] == 3 * 256 and old["size"] == 512
        assert current["last_modified"].endswith("-0000")
        # A move ends the old lifetime when the new one starts.
        assert old["end_ts"] == current["start_ts"]
        assert latest["end_ts"] >= latest["start_ts"]
        assert latest["expiration"].endswith("-0000")

        assert rows(tag_list(client, repo, onlyActiveTags="true")) == [
            ("v1", second.digest, True)]
        assert rows(tag_list(client, repo, specificTag="v1")) == [
            ("v1", second.digest, True), ("v1", first.digest, False)]
        assert [t["name"] for t in tag_list(client, repo, filter_tag_name="like:ATE")["tags"]
                ] == ["latest"]
        assert [t["name"] for t in tag_list(client, repo, filter_tag_name="eq:v1")["tags"]
                ] == ["v1", "v1"]
        # "like" matches literally: % and _ are not wildcards.
        assert tag_list(client, repo, filter_tag_name="like:%")["tags"] == []
        assert tag_list(client, repo, filter_tag_name="eq:v")["tags"] == []
        for bad in ("v1", "regex:v1", ":v1"):
            response = client.get(f"/repository/{repo}/tag/", params={"filter_tag_name": bad})
            assert response.status_code == 400, bad
            assert response.json()["error_type"] == "invalid_request"

        # The /v2 deletion was recorded as Quay's delete_tag.
        assert logs(client, repo, "delete_tag")[0]["tag"] == "latest"


def test_index_tags_are_manifest_lists(registry: Deployment) -> None:
    alice = registry.client("alice")
    repo = unique_repo("alice", "tags")
    image = alice.push_image(repo)
    index = to_json({"schemaVersion": 2, "mediaType": OCI_INDEX,
                     "manifests": [image.descriptor(platform={"architecture": "amd64",
                                                               "os": "linux"})]})
    digest = alice.push_manifest(repo, "multi", index, OCI_INDEX)
    with api(registry, "alice") as client:
        [tag] = tag_list(client, repo)["tags"]
    assert tag["manifest_digest"] == digest
    assert tag["is_manifest_list"] is True and tag["size"] is None


def test_paging(registry: Deployment) -> None:
    alice = registry.client("alice")
    repo = unique_repo("alice", "tags")
    image = alice.push_image(repo, "t0")
    for number in range(1, 5):
        alice.push_manifest(repo, f"t{number}", image.manifest)
    with api(registry, "alice") as client:
        pages = [tag_list(client, repo, limit=2, page=page) for page in (1, 2, 3)]
        assert [len(p["tags"]) for p in pages] == [2, 2, 1]
        assert [p["has_additional"] for p in pages] == [True, True, False]
        assert [p["page"] for p in pages] == [1, 2, 3]
        names = [t["name"] for p in pages for t in p["tags"]]
        assert names == ["t4", "t3", "t2", "t1", "t0"]
        assert tag_list(client, repo, limit=2, page=4)["tags"] == []
        assert tag_list(client, repo, page=10**12)["tags"] == []
        # Out-of-range values are clamped, as in Quay.
        assert len(tag_list(client, repo, limit=0)["tags"]) == 1
        assert len(tag_list(client, repo, limit=1000)["tags"]) == 5
        first = tag_list(client, repo, page=0, limit=2)
        assert first["page"] == 1 and [t["name"] for t in first["tags"]] == ["t4", "t3"]
        assert client.get(f"/repository/{repo}/tag/", params={"limit": "x"}).status_code == 400


def test_create_move_and_delete_through_the_api(registry: Deployment) -> None:
    alice = registry.client("alice")
    repo = unique_repo("alice", "tags")
    first = alice.push_image(repo, "a")
    second = alice.push_image(repo)  # by digest: untagged
    with api(registry, "alice") as client:
        created = client.put(f"/repository/{repo}/tag/new",
                             json={"manifest_digest": second.digest})
        assert created.status_code == 201, created.text
        assert created.json() == "Updated"
        assert v2_digest(alice, repo, "new") == second.digest

        moved = client.put(f"/repository/{repo}/tag/a", json={"manifest_digest": second.digest})
        assert moved.status_code == 201
        assert v2_digest(alice, repo, "a") == second.digest
        assert rows(tag_list(client, repo, specificTag="a")) == [
            ("a", second.digest, True), ("a", first.digest, False)]
        # Pointing a tag where it points already changes nothing.
        again = client.put(f"/repository/{repo}/tag/a", json={"manifest_digest": second.digest})
        assert again.status_code == 201
        assert len(tag_list(client, repo, specificTag="a")["tags"]) == 2

        name = repo.split("/", 1)[1]
        assert logs(client, repo, "create_tag") == [
            {"repo": name, "namespace": "alice", "tag": "new",
             "manifest_digest": second.digest}]
        assert logs(client, repo, "move_tag") == [
            {"repo": name, "namespace": "alice", "tag": "a", "manifest_digest": second.digest,
             "original_manifest_digest": first.digest}]

        assert client.delete(f"/repository/{repo}/tag/new").status_code == 204
        assert v2_digest(alice, repo, "new") is None
        assert rows(tag_list(client, repo, specificTag="new")) == [
            ("new", second.digest, False)]
        gone = client.delete(f"/repository/{repo}/tag/new")
        assert gone.status_code == 404 and gone.json()["error_type"] == "not_found"
        assert client.delete(f"/repository/{repo}/tag/never").status_code == 404
        assert logs(client, repo, "delete_tag")[0] == {"repo": name, "namespace": "alice",
                                                       "tag": "new"}
        # The manifest itself stays, as after a /v2 tag deletion.
        assert client.get(f"/repository/{repo}/manifest/{second.digest}").status_code == 200

        # A deleted tag can be created again.
        assert client.put(f"/repository/{repo}/tag/new",
                          json={"manifest_digest": first.digest}).status_code == 201
        assert v2_digest(alice, repo, "new") == first.digest


def test_bad_tag_requests(registry: Deployment) -> None:
    alice = registry.client("alice")
    repo = unique_repo("alice", "tags")
    image = alice.push_image(repo, "v1")
    missing = "sha256:" + "0" * 64
    with api(registry, "alice") as client:
        for tag in ("-bad", ".bad", "a" * 129, "sp ace", "sha256:abc"):
            response = client.put(f"/repository/{repo}/tag/{tag}",
                                  json={"manifest_digest": image.digest})
            assert response.status_code == 400, tag
            assert "Invalid tag" in response.json()["error_message"]
        assert client.put(f"/repository/{repo}/tag/{'a' * 128}",
                          json={"manifest_digest": image.digest}).status_code == 201
        unknown = client.put(f"/repository/{repo}/tag/v2", json={"manifest_digest": missing})
        assert unknown.status_code == 404
        assert client.put(f"/repository/{repo}/tag/v2",
                          json={"manifest_digest": "sha256:nothex"}).status_code == 400
        assert client.put(f"/repository/{repo}/tag/v2", json={}).status_code == 400
        assert client.put(f"/repository/{repo}/tag/v2", json=["x"]).status_code == 400
        expired = client.put(f"/repository/{repo}/tag/v1",
                             json={"manifest_digest": image.digest, "expiration": 1})
        assert expired.status_code == 400
        assert "expiration" in expired.json()["error_message"]
        # A digest where a tag belongs must not delete a manifest.
        assert client.delete(f"/repository/{repo}/tag/{image.digest}").status_code == 400
        assert v2_digest(alice, repo, "v1") == image.digest
        # Names no tag can have match nothing (NUL never reaches the database).
        for params in ({"specificTag": "v\u0000"}, {"specificTag": "-x"},
                       {"filter_tag_name": "eq:v\u0000"}, {"filter_tag_name": "like:\u0000"},
                       {"filter_tag_name": "like:v 1"}):
            assert tag_list(client, repo, **params)["tags"] == [], params
        assert len(tag_list(client, repo, filter_tag_name="like:")["tags"]) == 2
        # A repository that does not exist.
        absent = unique_repo("alice", "none")
        assert client.get(f"/repository/{absent}/tag/").status_code == 404
        assert client.put(f"/repository/{absent}/tag/v1",
                          json={"manifest_digest": image.digest}).status_code == 404
        assert client.delete(f"/repository/{absent}/tag/v1").status_code == 404
    # Tags of a manifest of another repository cannot be created.
    other = unique_repo("alice", "tags")
    alice.push_image(other, "x")
    with api(registry, "alice") as client:
        response = client.put(f"/repository/{other}/tag/copy",
                              json={"manifest_digest": image.digest})
        assert response.status_code == 404


def test_permissions(registry: Deployment) -> None:
    alice = registry.client("alice")
    repo = unique_repo("alice", "tags")
    image: Image = alice.push_image(repo, "v1")
    put = {"manifest_digest": image.digest}
    with (api(registry, "alice") as owner, api(registry, "bob") as bob,
          api(registry, "carol") as carol, api(registry, None) as anonymous,
          api(registry, "alice", "repo:read") as reader_token):
        # Private: strangers learn nothing, anonymous callers must authenticate.
        assert anonymous.get(f"/repository/{repo}/tag/").status_code == 401
        assert anonymous.put(f"/repository/{repo}/tag/x", json=put).status_code == 401
        assert anonymous.delete(f"/repository/{repo}/tag/v1").status_code == 401
        assert carol.get(f"/repository/{repo}/tag/").status_code == 403
        assert carol.put(f"/repository/{repo}/tag/x", json=put).status_code == 403

        grant(owner, repo, "bob", "read")
        assert rows(tag_list(bob, repo)) == [("v1", image.digest, True)]
        assert bob.put(f"/repository/{repo}/tag/x", json=put).status_code == 403
        assert bob.delete(f"/repository/{repo}/tag/v1").status_code == 403
        # A token with repo:read only reads, even for the owner.
        assert rows(tag_list(reader_token, repo)) == [("v1", image.digest, True)]
        assert reader_token.put(f"/repository/{repo}/tag/x", json=put).status_code == 403
        assert reader_token.delete(f"/repository/{repo}/tag/v1").status_code == 403
        assert v2_digest(alice, repo, "v1") == image.digest

        grant(owner, repo, "bob", "write")
        assert bob.put(f"/repository/{repo}/tag/x", json=put).status_code == 201
        assert bob.delete(f"/repository/{repo}/tag/x").status_code == 204
        assert v2_digest(alice, repo, "x") is None


def test_public_repository_and_nested_names(public_registry: Deployment) -> None:
    alice = public_registry.client("alice")
    repo = unique_repo("alice", "team") + "/app"
    image = alice.push_image(repo, "v1")
    with api(public_registry, None) as anonymous, api(public_registry, "bob") as bob:
        assert rows(tag_list(anonymous, repo)) == [("v1", image.digest, True)]
        assert rows(tag_list(bob, repo)) == [("v1", image.digest, True)]
        put = {"manifest_digest": image.digest}
        assert anonymous.put(f"/repository/{repo}/tag/x", json=put).status_code == 401
        assert bob.put(f"/repository/{repo}/tag/x", json=put).status_code == 403
    with api(public_registry, "alice") as client:
        assert client.put(f"/repository/{repo}/tag/x", json=put).status_code == 201
        assert [t["name"] for t in tag_list(client, repo)["tags"]] == ["x", "v1"]
        # The repository view still answers for the nested name.
        assert set(client.get(f"/repository/{repo}").json()["tags"]) == {"v1", "x"}
