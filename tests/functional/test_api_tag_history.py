"""Tags over time: expiry set through the API and by the ``quay.expires-after`` label,
restoring a tag within its namespace's time-machine window, the window settings of
users and organizations, and permanent deletion."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from functional.client import RegistryClient
from functional.conftest import PROFILES, Deployment, RegistryPool, _deployment, unique_repo
from functional.test_api_manifests import image_config, push_with_config
from functional.test_api_organizations import api
from functional.test_api_tags import logs, tag_list, v2_digest

#: A registry where nobody may change expirations, with a one-day default window.
PROFILES.setdefault(
    "tag-expiry-fixed",
    (
        {
            "LOGIN_FAILURE_LIMIT": 0,
            "FEATURE_CHANGE_TAG_EXPIRATION": False,
            "DEFAULT_TAG_EXPIRATION": "1d",
            "TAG_EXPIRATION_OPTIONS": ["0s", "1d"],
        },
        ("alice",),
    ),
)

DAY = 86400
TWO_WEEKS = 14 * DAY


@pytest.fixture
def fixed_registry(registries: RegistryPool) -> Iterator[Deployment]:
    """``FEATURE_CHANGE_TAG_EXPIRATION: false``, ``DEFAULT_TAG_EXPIRATION: 1d``."""
    yield from _deployment(registries, "tag-expiry-fixed")


def v2_tags(client: RegistryClient, repo: str) -> list[str]:
    response = client.request("GET", f"/v2/{repo}/tags/list", repo=repo, actions="pull")
    assert response.status_code == 200, response.text
    return list(response.json()["tags"] or [])


def new_org(client: httpx.Client) -> str:
    name = f"th{uuid.uuid4().hex[:10]}"
    response = client.post("/organization/", json={"name": name, "email": f"{name}@x.io"})
    assert response.status_code == 201, response.text
    return name


def set_expiration(
    client: httpx.Client, repo: str, tag: str, expiration: Any, **extra: Any
) -> httpx.Response:
    return client.put(f"/repository/{repo}/tag/{tag}", json={"expiration": expiration, **extra})


def error_message(response: httpx.Response) -> str:
    return str(response.json()["error_message"])


def test_expiry_through_the_api_hides_the_tag_once_it_passes(registry: Deployment) -> None:
    alice = registry.client("alice")
    repo = unique_repo("alice", "expiry")
    image = alice.push_image(repo, "v1")
    alice.push_image(repo, "stays")
    with api(registry, "alice") as client:
        for bad in (f"{time.time() - 10}", '"soon"', "NaN", "Infinity", "1e300"):
            response = client.put(
                f"/repository/{repo}/tag/v1",
                content=f'{{"expiration": {bad}}}',
                headers={"Content-Type": "application/json"},
            )
            assert response.status_code == 400, (bad, response.text)
        assert set_expiration(client, repo, "missing", time.time() + 60).status_code == 404
        expires = int(time.time()) + 2
        response = set_expiration(client, repo, "v1", expires)
        assert response.status_code == 201, response.text
        [row] = tag_list(client, repo, specificTag="v1")["tags"]
        # An expiring tag shows its end in advance, as in Quay.
        assert row["end_ts"] == expires and row["expiration"].endswith("-0000")
        assert [t["name"] for t in tag_list(client, repo, onlyActiveTags="true")["tags"]] == [
            "stays",
            "v1",
        ]
        assert v2_digest(alice, repo, "v1") == image.digest
        [entry] = logs(client, repo, "change_tag_expiration")
        assert entry["tag"] == "v1" and entry["old_expiration_date"] is None
        time.sleep(max(0.0, expires - time.time()) + 0.5)
        # Gone everywhere at once, before garbage collection ends the row.
        assert v2_digest(alice, repo, "v1") is None
        head = alice.request("HEAD", f"/v2/{repo}/manifests/v1", repo=repo, actions="pull")
        assert head.status_code == 404
        assert v2_tags(alice, repo) == ["stays"]
        assert [t["name"] for t in tag_list(client, repo, onlyActiveTags="true")["tags"]] == [
            "stays"
        ]
        [ended] = tag_list(client, repo, specificTag="v1")["tags"]
        assert ended["end_ts"] == expires
        view = client.get(f"/repository/{repo}").json()
        assert set(view["tags"]) == {"stays"}
        # Setting an expiry on an expired tag: it is not there any more.
        assert set_expiration(client, repo, "v1", time.time() + 60).status_code == 404
        assert client.delete(f"/repository/{repo}/tag/v1").status_code == 404
    # Pushing the name again starts a new lifetime cleanly.
    again = alice.push_image(repo, "v1")
    assert v2_digest(alice, repo, "v1") == again.digest
    with api(registry, "alice") as client:
        rows = tag_list(client, repo, specificTag="v1")["tags"]
        assert [(t["manifest_digest"], "end_ts" in t) for t in rows] == [
            (again.digest, False),
            (image.digest, True),
        ]


def test_clear_expiry_and_move_with_expiry(registry: Deployment) -> None:
    alice = registry.client("alice")
    repo = unique_repo("alice", "expiry")
    first = alice.push_image(repo, "v1")
    second = alice.push_image(repo, "v2")
    with api(registry, "alice") as client:
        later = int(time.time()) + 3600
        assert set_expiration(client, repo, "v1", later).status_code == 201
        assert set_expiration(client, repo, "v1", None).status_code == 201
        [row] = tag_list(client, repo, specificTag="v1")["tags"]
        assert "end_ts" not in row and "expiration" not in row
        # Clearing an expiry that is not set logs nothing.
        assert set_expiration(client, repo, "v1", None).status_code == 201
        assert len(logs(client, repo, "change_tag_expiration")) == 2
        # Moving and setting the expiry at once: the expiry is on the new lifetime.
        response = set_expiration(client, repo, "v1", later, manifest_digest=second.digest)
        assert response.status_code == 201, response.text
        current, old = tag_list(client, repo, specificTag="v1")["tags"]
        assert current["manifest_digest"] == second.digest and current["end_ts"] == later
        assert old["manifest_digest"] == first.digest
        view = client.get(f"/repository/{repo}").json()
        assert view["tags"]["v1"]["expiration"].endswith("-0000")
        assert "expiration" not in view["tags"]["v2"]
        # A bad expiry refuses the whole request: the tag does not move.
        bad = set_expiration(client, repo, "v1", 5, manifest_digest=first.digest)
        assert bad.status_code == 400
        assert v2_digest(alice, repo, "v1") == second.digest
    with api(registry, "bob") as bob:
        assert set_expiration(bob, repo, "v1", later).status_code == 403


def test_expires_after_label_sets_the_expiry_at_push(registry: Deployment) -> None:
    alice = registry.client("alice")
    repo = unique_repo("alice", "label")
    before = int(time.time())
    digest, _, _ = push_with_config(
        alice, repo, "short", image_config({"quay.expires-after": "2s"})
    )
    weeks, _, _ = push_with_config(alice, repo, "long", image_config({"quay.expires-after": "2w"}))
    bad, _, _ = push_with_config(alice, repo, "bad", image_config({"quay.expires-after": "soon"}))
    with api(registry, "alice") as client:
        rows = {t["name"]: t for t in tag_list(client, repo)["tags"]}
        assert before + 2 <= rows["short"]["end_ts"] <= int(time.time()) + 2
        assert before + 2 * 7 * DAY <= rows["long"]["end_ts"] <= int(time.time()) + TWO_WEEKS
        assert "end_ts" not in rows["bad"]  # a bad value is ignored, never fails the push
        # The tag API applies the label too when it points a tag at the manifest.
        assert (
            client.put(f"/repository/{repo}/tag/copy", json={"manifest_digest": weeks}).status_code
            == 201
        )
        [copy] = tag_list(client, repo, specificTag="copy")["tags"]
        assert copy["end_ts"] >= before + TWO_WEEKS
        time.sleep(max(0.0, rows["short"]["end_ts"] + 1 - time.time()) + 0.2)
        assert v2_digest(alice, repo, "short") is None
        assert v2_digest(alice, repo, "bad") == bad
        assert sorted(v2_tags(alice, repo)) == ["bad", "copy", "long"]
    # The digest stays pullable: only the tag expired.
    response = alice.request("GET", f"/v2/{repo}/manifests/{digest}", repo=repo, actions="pull")
    assert response.status_code == 200


def test_restore_within_the_window(registry: Deployment) -> None:
    alice = registry.client("alice")
    repo = unique_repo("alice", "restore")
    first = alice.push_image(repo, "v1")
    second = alice.push_image(repo, "v1")
    other = alice.push_image(repo, "other")
    with api(registry, "alice") as client:
        path = f"/repository/{repo}/tag/v1/restore"
        response = client.post(path, json={"manifest_digest": first.digest})
        assert response.status_code == 200, response.text
        assert response.json() == {}
        assert v2_digest(alice, repo, "v1") == first.digest
        rows = tag_list(client, repo, specificTag="v1")["tags"]
        assert [(t["manifest_digest"], t["reversion"]) for t in rows] == [
            (first.digest, True),
            (second.digest, False),
            (first.digest, False),
        ]
        [entry] = logs(client, repo, "revert_tag")
        assert entry["tag"] == "v1" and entry["manifest_digest"] == first.digest
        # Restoring what the tag points at changes nothing.
        assert client.post(path, json={"manifest_digest": first.digest}).status_code == 200
        assert len(tag_list(client, repo, specificTag="v1")["tags"]) == 3
        # A manifest the tag never pointed at, an unknown one, a bad body.
        never = client.post(path, json={"manifest_digest": other.digest})
        assert never.status_code == 400 and "time-machine" in error_message(never)
        unknown = client.post(path, json={"manifest_digest": "sha256:" + "0" * 64})
        assert unknown.status_code == 404
        assert client.post(path, json={}).status_code == 400
        assert client.post(path, json={"manifest_digest": "nope"}).status_code == 400
        # A deleted tag comes back too.
        assert client.delete(f"/repository/{repo}/tag/other").status_code == 204
        assert (
            client.post(
                f"/repository/{repo}/tag/other/restore", json={"manifest_digest": other.digest}
            ).status_code
            == 200
        )
        assert v2_digest(alice, repo, "other") == other.digest
    with api(registry, "bob") as bob:
        assert bob.post(path, json={"manifest_digest": second.digest}).status_code == 403
    with api(registry, "alice", "repo:read") as reader:
        assert reader.post(path, json={"manifest_digest": second.digest}).status_code == 403


def test_restore_refused_outside_the_window(registry: Deployment) -> None:
    alice = registry.client("alice")
    with api(registry, "alice") as client:
        org = new_org(client)
        repo = f"{org}/app"
        first = alice.push_image(repo, "v1")
        alice.push_image(repo, "v1")
        # A window of zero keeps no history that could be restored.
        response = client.put(f"/organization/{org}", json={"tag_expiration_s": 0})
        assert response.status_code == 200, response.text
        assert response.json()["tag_expiration_s"] == 0
        assert client.get(f"/repository/{repo}").json()["tag_expiration_s"] == 0
        refused = client.post(
            f"/repository/{repo}/tag/v1/restore", json={"manifest_digest": first.digest}
        )
        assert refused.status_code == 400, refused.text
        response = client.put(f"/organization/{org}", json={"tag_expiration_s": TWO_WEEKS})
        assert response.status_code == 200
        assert client.get(f"/organization/{org}").json()["tag_expiration_s"] == TWO_WEEKS
        restored = client.post(
            f"/repository/{repo}/tag/v1/restore", json={"manifest_digest": first.digest}
        )
        assert restored.status_code == 200, restored.text
        assert v2_digest(alice, repo, "v1") == first.digest


def test_namespace_windows_and_their_options(registry: Deployment) -> None:
    with api(registry, "alice") as alice, api(registry, "bob") as bob:
        org = new_org(alice)
        assert alice.get(f"/organization/{org}").json()["tag_expiration_s"] == TWO_WEEKS
        for bad in (3600, -1, "x", True):
            response = alice.put(f"/organization/{org}", json={"tag_expiration_s": bad})
            assert response.status_code == 400, (bad, response.text)
        invalid = alice.put(f"/organization/{org}", json={"tag_expiration_s": 3600})
        assert "86400" in error_message(invalid) and "1209600" in error_message(invalid)
        # Outsiders are refused before the value is looked at.
        assert bob.put(f"/organization/{org}", json={"tag_expiration_s": 3600}).status_code == 403
        assert alice.put(f"/organization/{org}", json={"tag_expiration_s": DAY}).status_code == 200
        assert alice.get(f"/organization/{org}").json()["tag_expiration_s"] == DAY
        entries = alice.get(f"/organization/{org}/logs").json()["logs"]
        [entry] = [e for e in entries if e["kind"] == "change_tag_expiration"]
        assert entry["metadata"]["tag_expiration_s"] == DAY

        # The user's own namespace.
        assert bob.get("/user/").json()["tag_expiration_s"] == TWO_WEEKS
        assert bob.put("/user/", json={"tag_expiration_s": 7}).status_code == 400
        response = bob.put("/user/", json={"tag_expiration_s": 7 * DAY})
        assert response.status_code == 200, response.text
        assert response.json()["tag_expiration_s"] == 7 * DAY
        assert bob.get("/user/").json()["tag_expiration_s"] == 7 * DAY
        assert bob.put("/user/", json={"tag_expiration_s": TWO_WEEKS}).status_code == 200
        assert bob.put("/user/", json={"password": "x" * 20}).status_code == 400
    with api(registry) as anonymous:
        assert anonymous.put("/user/", json={"tag_expiration_s": DAY}).status_code == 401
    with api(registry, "bob", "user:read") as reader:
        assert reader.put("/user/", json={"tag_expiration_s": DAY}).status_code == 403


def test_feature_off_refuses_expiry_changes(fixed_registry: Deployment) -> None:
    alice = fixed_registry.client("alice")
    repo = unique_repo("alice", "fixed")
    alice.push_image(repo, "v1")
    with api(fixed_registry, "alice") as client:
        # The configured default window is what namespaces show.
        assert client.get("/user/").json()["tag_expiration_s"] == DAY
        for body in ({"tag_expiration_s": 0}, {"tag_expiration_s": DAY}):
            response = client.put("/user/", json=body)
            assert response.status_code == 400
            assert "FEATURE_CHANGE_TAG_EXPIRATION" in error_message(response)
        org = new_org(client)
        assert client.get(f"/organization/{org}").json()["tag_expiration_s"] == DAY
        assert client.put(f"/organization/{org}", json={"tag_expiration_s": DAY}).status_code == 400
        response = set_expiration(client, repo, "v1", time.time() + 3600)
        assert response.status_code == 400
        assert "FEATURE_CHANGE_TAG_EXPIRATION" in error_message(response)
        [row] = tag_list(client, repo)["tags"]
        assert "end_ts" not in row


def test_permanent_delete(registry: Deployment) -> None:
    alice = registry.client("alice")
    repo = unique_repo("alice", "purge")
    first = alice.push_image(repo, "v1")
    second = alice.push_image(repo, "v1")
    with api(registry, "alice") as client:
        expire = f"/repository/{repo}/tag/v1/expire"
        # History of v1 on the first manifest: removed, so it can no longer be restored.
        assert client.post(expire, json={}).status_code == 400  # digest needed
        response = client.post(expire, json={"manifest_digest": first.digest})
        assert response.status_code == 200, response.text
        rows = tag_list(client, repo, specificTag="v1")["tags"]
        assert [t["manifest_digest"] for t in rows] == [second.digest]
        restore = client.post(
            f"/repository/{repo}/tag/v1/restore", json={"manifest_digest": first.digest}
        )
        assert restore.status_code == 400
        again = client.post(expire, json={"manifest_digest": first.digest})
        assert again.status_code == 404
        assert (
            client.post(expire, json={"manifest_digest": "sha256:" + "1" * 64}).status_code == 404
        )
        # The active tag itself: gone from /v2 and from the history.
        response = client.post(expire, json={"is_alive": True})
        assert response.status_code == 200, response.text
        assert v2_digest(alice, repo, "v1") is None
        assert tag_list(client, repo, specificTag="v1")["tags"] == []
        assert client.post(expire, json={"is_alive": True}).status_code == 404
        kinds = [e["manifest_digest"] for e in logs(client, repo, "permanently_delete_tag")]
        assert kinds == [second.digest, first.digest]
        # Quay's other form: DELETE with skipRecoveryPeriod.
        other = alice.push_image(repo, "other")
        deleted = client.delete(
            f"/repository/{repo}/tag/other", params={"skipRecoveryPeriod": "true"}
        )
        assert deleted.status_code == 204, deleted.text
        assert tag_list(client, repo, specificTag="other")["tags"] == []
        restore = client.post(
            f"/repository/{repo}/tag/other/restore", json={"manifest_digest": other.digest}
        )
        assert restore.status_code == 400
    with api(registry, "bob") as bob:
        assert bob.post(expire, json={"is_alive": True}).status_code == 403


def test_immutable_tags_cannot_expire_or_be_permanently_deleted(registry: Deployment) -> None:
    alice = registry.client("alice")
    repo = unique_repo("alice", "immutable")
    image = alice.push_image(repo, "v1")
    with api(registry, "alice") as client:
        response = client.put(f"/repository/{repo}/tag/v1", json={"immutable": True})
        if response.status_code != 201:
            pytest.skip(f"immutable tags are not available: {response.text}")
        refused = set_expiration(client, repo, "v1", time.time() + 3600)
        assert refused.status_code == 409
        assert refused.json()["error_type"] == "tag_immutable"
        purge = client.post(f"/repository/{repo}/tag/v1/expire", json={"is_alive": True})
        assert purge.status_code == 409
        assert v2_digest(alice, repo, "v1") == image.digest
