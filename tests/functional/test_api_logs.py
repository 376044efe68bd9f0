"""``/api/v1/.../logs`` and ``aggregatelogs``: what the audit log records (pushes,
tag deletions, pulls, organizations, teams, robots) and who may read it."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from functional.client import OCI_MANIFEST, RegistryClient, to_json
from functional.conftest import Deployment, unique_repo
from functional.test_api_organizations import CREATED, api, unique_org

TODAY = datetime.now(UTC).strftime("%m/%d/%Y")


def repo_logs(client: httpx.Client, repo: str, **params: str) -> dict[str, Any]:
    """``GET /repository/<repo>/logs`` that must succeed."""
    response = client.get(f"/repository/{repo}/logs", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def kinds(body: dict[str, Any]) -> list[str]:
    """The kinds of the entries, newest first."""
    return [entry["kind"] for entry in body["logs"]]


def wait_for(client: httpx.Client, path: str, kind: str,
             timeout_s: float = 3.0) -> list[dict[str, Any]]:
    """Poll ``path`` until an entry of ``kind`` shows up (pulls are flushed each second)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = [e for e in client.get(path).json()["logs"] if e["kind"] == kind]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_push_records_create_repo_and_push_repo(registry: Deployment,
                                                 alice: RegistryClient) -> None:
    repo = unique_repo("alice", "logs")
    image = alice.push_image(repo, "v1")
    with api(registry, "alice") as client:
        body = repo_logs(client, repo)
        user = client.get("/user/logs").json()
    assert kinds(body) == ["push_repo", "create_repo"]
    push, create = body["logs"]
    name = repo.split("/", 1)[1]
    assert push["metadata"] == {"repo": name, "namespace": "alice", "tag": "v1",
                                "manifest_digest": image.digest}
    assert create["metadata"] == {"repo": name, "namespace": "alice"}
    assert push["performer"]["name"] == "alice" and push["performer"]["is_robot"] is False
    assert push["performer"]["kind"] == "user" and push["performer"]["avatar"]["name"] == "alice"
    assert push["namespace"]["name"] == "alice" and push["namespace"]["kind"] == "user"
    assert push["ip"] and push["datetime"].endswith("-0000")
    assert {"start_time", "end_time"} <= body.keys() and "next_page" not in body
    assert {(e["kind"], e["metadata"].get("repo")) for e in user["logs"]} >= {
        ("push_repo", name), ("create_repo", name)}


def test_tag_delete_records_delete_tag(registry: Deployment, alice: RegistryClient) -> None:
    repo = unique_repo("alice", "logs")
    alice.push_image(repo, "gone")
    response = alice.request("DELETE", f"/v2/{repo}/manifests/gone", repo=repo)
    assert response.status_code == 202
    with api(registry, "alice") as client:
        body = repo_logs(client, repo)
    assert kinds(body)[0] == "delete_tag"
    assert body["logs"][0]["metadata"]["tag"] == "gone"


def test_pull_appears_after_the_flush(registry: Deployment, alice: RegistryClient) -> None:
    repo = unique_repo("alice", "logs")
    image = alice.push_image(repo, "latest")
    headers = {"Accept": OCI_MANIFEST}
    assert alice.request("HEAD", f"/v2/{repo}/manifests/latest", repo=repo,
                         headers=headers).status_code == 200
    assert alice.request("GET", f"/v2/{repo}/manifests/latest", repo=repo,
                         headers=headers).status_code == 200
    with api(registry, "alice") as client:
        pulls = wait_for(client, f"/repository/{repo}/logs", "pull_repo")
        time.sleep(1.2)  # a HEAD would have been flushed by now too
        again = [e for e in repo_logs(client, repo)["logs"] if e["kind"] == "pull_repo"]
    assert len(pulls) == 1 and len(again) == 1  # HEAD requests are not pulls
    assert pulls[0]["metadata"]["tag"] == "latest"
    assert pulls[0]["metadata"]["manifest_digest"] == image.digest
    assert pulls[0]["performer"]["name"] == "alice"


def test_rejected_manifest_writes_no_entry(registry: Deployment, alice: RegistryClient) -> None:
    repo = unique_repo("alice", "logs")
    alice.push_image(repo, "ok")
    missing = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
               "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                          "digest": "sha256:" + "0" * 64, "size": 2},
               "layers": []}
    response = alice.put_manifest(repo, "broken", to_json(missing))
    assert response.status_code == 400
    with api(registry, "alice") as client:
        body = repo_logs(client, repo)
    assert kinds(body) == ["push_repo", "create_repo"]
    assert all(e["metadata"].get("tag") != "broken" for e in body["logs"])


def test_bob_cannot_read_alices_logs(registry: Deployment, alice: RegistryClient) -> None:
    repo = unique_repo("alice", "logs")
    alice.push_image(repo, "v1")
    with api(registry, "bob") as bob, api(registry) as anonymous:
        assert bob.get(f"/repository/{repo}/logs").status_code == 403
        assert bob.get(f"/repository/{repo}/aggregatelogs").status_code == 403
        assert anonymous.get(f"/repository/{repo}/logs").status_code == 401
        assert anonymous.get("/user/logs").status_code == 401
    with api(registry, "alice") as client:
        missing = client.get("/repository/alice/does-not-exist-xyz/logs")
        assert missing.status_code == 404 and missing.json()["error_type"] == "not_found"
    # A token without repo:admin may not read repository logs.
    with api(registry, "alice", "repo:read repo:write") as weak:
        response = weak.get(f"/repository/{repo}/logs")
        assert response.status_code == 403
        assert response.json()["error_type"] == "insufficient_scope"


def test_time_range_paging_and_aggregates(registry: Deployment,
                                          alice: RegistryClient) -> None:
    repo = unique_repo("alice", "logs")
    for tag in ("a", "b", "c"):
        alice.push_image(repo, tag)
    with api(registry, "alice") as client:
        first = client.get(f"/repository/{repo}/logs",
                           params={"starttime": TODAY, "endtime": TODAY}).json()
        past = datetime.now(UTC) - timedelta(days=30)
        old = past.strftime("%m/%d/%Y")
        empty = repo_logs(client, repo, starttime=old, endtime=old)
        bad = client.get(f"/repository/{repo}/logs",
                         params={"starttime": TODAY, "endtime": old})
        broken_token = client.get(f"/repository/{repo}/logs", params={"next_page": "zz!"})
        aggregated = client.get(f"/repository/{repo}/aggregatelogs").json()["aggregated"]
    assert kinds(first) == ["push_repo"] * 3 + ["create_repo"]
    assert [e["metadata"]["tag"] for e in first["logs"][:3]] == ["c", "b", "a"]
    assert empty["logs"] == []
    assert bad.status_code == 400 and "error_type" in bad.json()
    assert broken_token.status_code == 400
    counts = {a["kind"]: a["count"] for a in aggregated}
    assert counts == {"push_repo": 3, "create_repo": 1}
    assert all(a["datetime"].endswith("00:00:00 -0000") for a in aggregated)


def test_paging_with_next_page(registry: Deployment, alice: RegistryClient) -> None:
    repo = unique_repo("alice", "logs")
    image = alice.push_image(repo, "t0")
    # Retagging only writes a manifest PUT each: 24 more entries, more than a page.
    for i in range(1, 25):
        alice.push_manifest(repo, f"t{i}", image.manifest)
    seen: list[str] = []
    with api(registry, "alice") as client:
        body = repo_logs(client, repo)
        pages = 1
        while "next_page" in body:
            seen += [e["metadata"].get("tag", "") for e in body["logs"]]
            body = repo_logs(client, repo, next_page=body["next_page"])
            pages += 1
        seen += [e["metadata"].get("tag", "") for e in body["logs"]]
    assert pages == 2
    assert len(seen) == 26 and seen[-1] == ""  # create_repo comes last, without a tag
    assert seen[:25] == [f"t{i}" for i in range(24, -1, -1)]


def test_org_logs_with_performer_filter(registry: Deployment, alice: RegistryClient) -> None:
    org = unique_org("logs")
    CREATED.add(org)
    with api(registry, "alice") as client, api(registry, "bob") as bob:
        assert client.post("/organization/", json={"name": org}).status_code == 201
        assert client.put(f"/organization/{org}/team/devs",
                          json={"role": "creator"}).status_code == 200
        assert client.put(f"/organization/{org}/team/devs/members/bob").status_code == 200
        assert client.put(f"/organization/{org}/robots/ci").status_code == 201
        assert client.delete(f"/organization/{org}/team/devs/members/bob").status_code == 204
        assert client.delete(f"/organization/{org}/robots/ci").status_code == 204
        assert client.delete(f"/organization/{org}/team/devs").status_code == 204
        body = client.get(f"/organization/{org}/logs").json()
        by_bob = client.get(f"/organization/{org}/logs", params={"performer": "bob"}).json()
        by_alice = client.get(f"/organization/{org}/logs",
                              params={"performer": "alice"}).json()
        aggregated = client.get(f"/organization/{org}/aggregatelogs").json()["aggregated"]
        forbidden = bob.get(f"/organization/{org}/logs")
    assert kinds(body) == ["org_delete_team", "delete_robot", "org_remove_team_member",
                           "create_robot", "org_add_team_member", "org_create_team",
                           "org_create"]
    metadata = {e["kind"]: e["metadata"] for e in body["logs"]}
    assert metadata["org_create_team"]["team"] == "devs"
    assert metadata["org_create_team"]["role"] == "creator"
    assert metadata["org_add_team_member"]["member"] == "bob"
    assert metadata["create_robot"]["robot"] == f"{org}+ci"
    assert by_bob["logs"] == [] and len(by_alice["logs"]) == 7
    assert sum(a["count"] for a in aggregated) == 7
    assert forbidden.status_code == 403


def test_repository_api_changes_are_recorded(registry: Deployment) -> None:
    name = unique_repo("alice", "logs").split("/", 1)[1]
    repo = f"alice/{name}"
    with api(registry, "alice") as client:
        assert client.post("/repository", json={"repository": name, "namespace": "alice",
                                                "visibility": "private"}).status_code == 201
        assert client.post(f"/repository/{repo}/changevisibility",
                           json={"visibility": "public"}).status_code == 200
        assert client.put(f"/repository/{repo}/permissions/user/bob",
                          json={"role": "read"}).status_code == 200
        assert client.delete(f"/repository/{repo}/permissions/user/bob").status_code == 204
        body = repo_logs(client, repo)
        assert client.delete(f"/repository/{repo}").status_code == 204
        gone = client.get(f"/repository/{repo}/logs")
        user = client.get("/user/logs").json()
    assert kinds(body) == ["delete_repo_permission", "change_repo_permission",
                           "change_repo_visibility", "create_repo"]
    metadata = [e["metadata"] for e in body["logs"]]
    assert metadata[1] == {"repo": name, "namespace": "alice", "username": "bob",
                           "role": "read"}
    assert metadata[2]["visibility"] == "public"
    assert gone.status_code == 404
    # The entries outlive the repository: the namespace's logs still show them.
    assert [e["kind"] for e in user["logs"] if e["metadata"].get("repo") == name][:1] == [
        "delete_repo"]


def test_sign_ins_are_recorded(registry: Deployment) -> None:
    with httpx.Client(base_url=registry.url) as browser:
        csrf = browser.get("/csrf_token").json()["csrf_token"]
        failed = browser.post("/api/v1/signin", headers={"X-CSRF-Token": csrf},
                              json={"username": "carol", "password": "wrong-password"})
        assert failed.status_code == 403
        csrf = browser.get("/csrf_token").json()["csrf_token"]
        ok = browser.post("/api/v1/signin", headers={"X-CSRF-Token": csrf},
                          json={"username": "carol", "password": "carol-secret-pw"})
        assert ok.status_code == 200, ok.text
    with api(registry, "carol") as client:
        logs = client.get("/user/logs").json()["logs"]
        by_carol = client.get("/user/logs", params={"performer": "carol"}).json()["logs"]
    recent = [e["kind"] for e in logs if e["kind"].startswith("login_")]
    assert recent[:2] == ["login_success", "login_failure"]
    failure = next(e for e in logs if e["kind"] == "login_failure")
    assert "performer" not in failure and failure["metadata"]["username"] == "carol"
    assert all(e.get("performer", {}).get("name") == "carol" for e in by_carol)
    assert "login_failure" not in [e["kind"] for e in by_carol[:2]]


def test_user_robot_and_team_role_changes_are_recorded(registry: Deployment) -> None:
    short = f"logbot{uuid.uuid4().hex[:8]}"
    org = unique_org("logs")
    CREATED.add(org)
    with api(registry, "alice") as client:
        assert client.put(f"/user/robots/{short}").status_code == 201
        assert client.post(f"/user/robots/{short}/regenerate").status_code == 200
        assert client.delete(f"/user/robots/{short}").status_code == 204
        robots = [e for e in client.get("/user/logs").json()["logs"]
                  if e["metadata"].get("robot") == f"alice+{short}"]
        assert client.post("/organization/", json={"name": org}).status_code == 201
        assert client.put(f"/organization/{org}/team/devs",
                          json={"role": "member"}).status_code == 200
        assert client.put(f"/organization/{org}/team/devs",
                          json={"role": "admin"}).status_code == 200
        teams = client.get(f"/organization/{org}/logs").json()["logs"]
    assert [e["kind"] for e in robots] == ["delete_robot", "regenerate_robot_token",
                                           "create_robot"]
    assert all(e["performer"]["name"] == "alice" for e in robots)
    assert [(e["kind"], e["metadata"].get("role")) for e in teams] == [
        ("org_set_team_role", "admin"), ("org_create_team", "member"), ("org_create", None)]


def logins_of(client: httpx.Client, username: str, minimum: int,
              timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """``/user/logs`` login entries naming ``username`` (newest first), once at least
    ``minimum`` are there (registry logins are buffered and written each second)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = [e for e in client.get("/user/logs").json()["logs"]
                 if e["kind"].startswith("login_") and e["metadata"].get("username") == username]
        if len(found) >= minimum or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_v2_auth_token_requests_are_recorded(registry: Deployment) -> None:
    short = f"loginbot{uuid.uuid4().hex[:8]}"
    with api(registry, "alice") as client:
        token = client.put(f"/user/robots/{short}").json()["token"]
    robot = f"alice+{short}"
    with httpx.Client(base_url=registry.url, headers={"User-Agent": "test-agent/1"}) as http:
        params = {"service": "x", "scope": f"repository:alice/{short}:pull"}
        assert http.get("/v2/auth", params=params, auth=(robot, token)).status_code == 200
        assert http.get("/v2/auth", params=params, auth=(robot, token)).status_code == 200
        assert http.get("/v2/auth", params=params, auth=(robot, "wrong")).status_code == 401
        # Anonymous token requests present no credentials: nothing to record.
        assert http.get("/v2/auth", params=params).status_code == 200
    with api(registry, "alice") as client:
        found = logins_of(client, robot, 3)
    assert [e["kind"] for e in found] == ["login_failure", "login_success", "login_success"]
    failure, success = found[0], found[1]
    assert success["metadata"] == {"type": "v2auth", "kind": "robot", "username": robot,
                                   "useragent": "test-agent/1"}
    assert success["performer"]["name"] == robot and success["performer"]["is_robot"]
    assert "performer" not in failure and failure["metadata"]["kind"] == "robot"
    assert success["namespace"]["name"] == "alice"


def test_basic_auth_logins_are_recorded_once_per_period(registry: Deployment) -> None:
    short = f"basicbot{uuid.uuid4().hex[:8]}"
    with api(registry, "alice") as client:
        token = client.put(f"/user/robots/{short}").json()["token"]
    robot = f"alice+{short}"
    with httpx.Client(base_url=registry.url) as http:
        for _ in range(5):
            assert http.get("/v2/", auth=(robot, token)).status_code == 200
        for _ in range(2):
            assert http.get("/v2/", auth=(robot, "wrong-token")).status_code == 401
    with api(registry, "alice") as client:
        found = logins_of(client, robot, 3)
        time.sleep(1.5)  # nothing more arrives with a later flush
        again = logins_of(client, robot, 3)
        aggregated = client.get("/user/aggregatelogs").json()["aggregated"]
    assert [e["kind"] for e in found] == ["login_failure", "login_failure", "login_success"]
    assert len(again) == 3
    assert found[-1]["metadata"]["type"] == "v2auth"
    # Aggregates count the login entries per day and kind like everything else.
    counts = {a["kind"]: a["count"] for a in aggregated}
    assert counts["login_success"] >= 1 and counts["login_failure"] >= 2
    assert all(a["datetime"].endswith("00:00:00 -0000") for a in aggregated)
