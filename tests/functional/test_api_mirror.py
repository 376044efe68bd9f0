"""Repository mirroring API (Quay's ``/repository/{repo}/mirror``, ``sync-now``,
``sync-cancel``) and repository state (``/repository/{repo}/changestate``), with the
push rules of ``READ_ONLY`` and ``MIRROR`` repositories.

Syncing itself is in :mod:`functional.test_mirror_sync`; here the upstream reference
points at a loopback port nothing listens on, and the mirrors stay in state ``NORMAL``
(not synced) unless a test says otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from functional.client import (
    OCI_CONFIG,
    OCI_MANIFEST,
    RegistryClient,
    descriptor,
    random_bytes,
    sha256,
    to_json,
)
from functional.conftest import Deployment, RegistryPool, _deployment
from functional.test_api_repositories import ALL_SCOPES, api, create, short
from functional.test_api_robots import assert_error

SECRET = "upstream-Pa55-do-not-leak"
#: Repository scopes plus ``user:admin`` (robots of the user's namespace).
SCOPES = ALL_SCOPES + " user:admin"


@pytest.fixture
def mirror_registry(registries: RegistryPool) -> Iterator[Deployment]:
    """``FEATURE_REPO_MIRROR`` on, a worker pass every second, rollback of failed syncs;
    users alice and bob."""
    yield from _deployment(registries, "mirror")


@pytest.fixture
def best_effort_registry(registries: RegistryPool) -> Iterator[Deployment]:
    """Like ``mirror_registry`` without ``REPO_MIRROR_ROLLBACK``; user alice."""
    yield from _deployment(registries, "mirror-best-effort")


def iso(moment: datetime) -> str:
    """Quay's date format."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_repo(client: httpx.Client, owner: str = "alice") -> str:
    """A new private repository of ``owner``; returns ``owner/name``."""
    name = short("mirror")
    assert create(client, name).status_code == 201
    return f"{owner}/{name}"


def make_robot(client: httpx.Client, owner: str = "alice") -> tuple[str, str]:
    """A new robot of ``owner``'s namespace: ``(name, token)``."""
    shortname = short("bot").replace("-", "_")
    created = client.put(f"/user/robots/{shortname}", json={})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == f"{owner}+{shortname}"
    return body["name"], body["token"]


def mirror_body(reference: str, robot: str, **overrides: Any) -> dict[str, Any]:
    """A complete ``POST .../mirror`` body, due now, syncing every tag."""
    body: dict[str, Any] = {
        "is_enabled": True,
        "external_reference": reference,
        "sync_interval": 3600,
        "sync_start_date": iso(datetime.now(UTC)),
        "root_rule": {"rule_kind": "tag_glob_csv", "rule_value": ["*"]},
        "robot_username": robot,
        "external_registry_config": {"verify_tls": False},
    }
    body.update(overrides)
    return body


def set_state(client: httpx.Client, repo: str, state: str) -> None:
    """``PUT .../changestate``, which must succeed."""
    response = client.put(f"/repository/{repo}/changestate", json={"state": state})
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}


def wait_status(client: httpx.Client, repo: str, statuses: tuple[str, ...],
                timeout: float = 60, after: str | None = None) -> dict[str, Any]:
    """Poll ``GET .../mirror`` until ``sync_status`` is one of ``statuses`` (and
    ``last_sync`` differs from ``after``, to wait for a *new* outcome)."""
    deadline = time.monotonic() + timeout
    view: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = client.get(f"/repository/{repo}/mirror")
        assert response.status_code == 200, response.text
        view = response.json()
        if view["sync_status"] in statuses and (after is None or view["last_sync"] != after):
            return view
        time.sleep(0.2)
    raise AssertionError(f"mirror status stayed {view.get('sync_status')}: {view}")


def log_kinds(client: httpx.Client, repo: str) -> list[str]:
    """Kinds of the repository's audit log entries (newest first)."""
    response = client.get(f"/repository/{repo}/logs")
    assert response.status_code == 200, response.text
    return [entry["kind"] for entry in response.json()["logs"]]


# --- configuration -------------------------------------------------------------------------
def test_create_read_change_mirror(mirror_registry: Deployment) -> None:
    with closing(api(mirror_registry, "alice", SCOPES)) as alice:
        repo = make_repo(alice)
        robot, _token = make_robot(alice)
        assert_error(alice.get(f"/repository/{repo}/mirror"), 404)
        start = datetime.now(UTC) + timedelta(hours=1)
        body = mirror_body("127.0.0.1:9/upstream/image", robot,
                           external_registry_username="puller",
                           external_registry_password=SECRET,
                           sync_start_date=iso(start), sync_interval=600,
                           root_rule={"rule_kind": "tag_glob_csv",
                                      "rule_value": ["v1.*,latest", "stable-?"]},
                           external_registry_config={
                               "verify_tls": True, "unsigned_images": False,
                               "proxy": {"http_proxy": None, "https_proxy": None,
                                         "no_proxy": "internal"}},
                           sync_timeout_s=120, architecture_filter=["amd64", "arm64"])
        created = alice.post(f"/repository/{repo}/mirror", json=body)
        assert created.status_code == 201, created.text
        assert created.content == b""

        response = alice.get(f"/repository/{repo}/mirror")
        assert response.status_code == 200
        assert SECRET not in response.text
        view = response.json()
        assert "external_registry_password" not in view
        assert view == {
            "is_enabled": True,
            "mirror_type": "PULL",
            "external_reference": "127.0.0.1:9/upstream/image",
            "external_registry_username": "puller",
            "external_registry_config": {
                "verify_tls": True, "unsigned_images": False,
                "proxy": {"http_proxy": None, "https_proxy": None, "no_proxy": "internal"}},
            "sync_interval": 600,
            "sync_start_date": iso(start),
            "sync_expiration_date": None,
            "sync_retries_remaining": 3,
            "sync_status": "NEVER_RUN",
            "root_rule": {"rule_kind": "tag_glob_csv",
                          "rule_value": ["v1.*", "latest", "stable-?"]},
            "robot_username": robot,
            "sync_timeout_s": 120,
            "architecture_filter": ["amd64", "arm64"],
            "last_sync": None,
            "last_error": None,
        }

        again = alice.post(f"/repository/{repo}/mirror", json=body)
        assert again.status_code == 409, again.text
        assert "already exists" in again.json()["error_message"]

        # A PUT changes what it names; the password is kept when omitted.
        changed = alice.put(f"/repository/{repo}/mirror",
                            json={"sync_interval": 60, "is_enabled": False,
                                  "root_rule": {"rule_kind": "tag_glob_csv",
                                                "rule_value": ["*"]}})
        assert changed.status_code == 201, changed.text
        view = alice.get(f"/repository/{repo}/mirror").json()
        assert view["sync_interval"] == 60 and view["is_enabled"] is False
        assert view["root_rule"]["rule_value"] == ["*"]
        assert view["external_registry_username"] == "puller"
        assert view["sync_start_date"] == iso(start)

        kinds = log_kinds(alice, repo)
        assert "repo_mirror_enabled" in kinds
        assert "repo_mirror_disabled" in kinds
        assert kinds.count("repo_mirror_config_changed") >= 2
        logs = alice.get(f"/repository/{repo}/logs").text
        assert SECRET not in logs

        # The password never reaches the server's log either.
        assert SECRET not in mirror_registry.registry.log_path.read_text(errors="replace")


@pytest.mark.parametrize(("overrides", "message"), [
    ({"external_reference": "no-registry-host"}, "external_reference"),
    ({"external_reference": "127.0.0.1:9/UPPER/case"}, "external_reference"),
    ({"external_reference": "https://127.0.0.1:9/a/b"}, "scheme"),
    ({"external_reference": "127.0.0.1:9/a/b:latest"}, "tag or digest"),
    ({"external_reference": 42}, "external_reference"),
    ({"root_rule": {"rule_kind": "tag_glob_csv", "rule_value": ["v[1"]}}, "'['"),
    ({"root_rule": {"rule_kind": "tag_glob_csv", "rule_value": ["a b"]}}, "Invalid tag pattern"),
    ({"root_rule": {"rule_kind": "tag_glob_csv", "rule_value": []}}, "at least one"),
    ({"root_rule": {"rule_kind": "tag_glob_csv", "rule_value": "v1"}}, "list"),
    ({"root_rule": {"rule_kind": "regex", "rule_value": ["v1"]}}, "rule_kind"),
    ({"sync_start_date": "tomorrow"}, "sync_start_date"),
    ({"sync_start_date": "2024-01-31T12:00:00"}, "time zone"),
    ({"sync_start_date": "2024-13-01T00:00:00Z"}, "sync_start_date"),
    ({"sync_interval": -5}, "sync_interval"),
    ({"sync_interval": "60"}, "sync_interval"),
    ({"sync_timeout_s": 0}, "sync_timeout_s"),
    ({"robot_username": "alice+nosuchrobot"}, "does not exist"),
    ({"robot_username": "bob+robot"}, "does not exist"),
    ({"robot_username": "alice"}, "does not exist"),
    ({"is_enabled": "yes"}, "is_enabled"),
    ({"external_registry_config": {"verify_tls": "no"}}, "verify_tls"),
    ({"external_registry_config": {"proxy": "http://proxy:3128"}}, "proxy"),
    ({"architecture_filter": ["amd64", "x86 64"]}, "architecture"),
    ({"external_registry_password": 12345}, "external_registry_password"),
    # The SSRF policy: link-local metadata addresses are not on the allowed list.
    ({"external_reference": "169.254.169.254/latest/meta"}, "169.254.169.254"),
])
def test_invalid_mirror_settings(mirror_registry: Deployment, overrides: dict[str, Any],
                                 message: str) -> None:
    with closing(api(mirror_registry, "alice", SCOPES)) as alice:
        repo = make_repo(alice)
        robot, _ = make_robot(alice)
        response = alice.post(f"/repository/{repo}/mirror",
                              json=mirror_body("127.0.0.1:9/up/stream", robot, **overrides))
        body = assert_error(response, 400)
        assert message in body["error_message"], body
        # Nothing was stored.
        assert_error(alice.get(f"/repository/{repo}/mirror"), 404)
        # The same checks apply to a PUT.
        assert alice.post(f"/repository/{repo}/mirror",
                          json=mirror_body("127.0.0.1:9/up/stream", robot)).status_code == 201
        if "robot_username" not in overrides or overrides["robot_username"] != robot:
            assert_error(alice.put(f"/repository/{repo}/mirror", json=overrides), 400)


def test_missing_fields_and_bad_bodies(mirror_registry: Deployment) -> None:
    with closing(api(mirror_registry, "alice", SCOPES)) as alice:
        repo = make_repo(alice)
        robot, _ = make_robot(alice)
        body = mirror_body("127.0.0.1:9/up/stream", robot)
        del body["root_rule"], body["robot_username"]
        message = assert_error(alice.post(f"/repository/{repo}/mirror", json=body),
                               400)["error_message"]
        assert "root_rule" in message and "robot_username" in message
        assert_error(alice.post(f"/repository/{repo}/mirror", json=["a"]), 400)
        assert_error(alice.post(f"/repository/{repo}/mirror", content=b"{not json",
                                headers={"Content-Type": "application/json"}), 400)
        assert_error(alice.put(f"/repository/{repo}/mirror", json={}), 404)  # none yet
        assert_error(alice.post(f"/repository/{repo}/mirror/sync-now"), 404)
        assert_error(alice.put(f"/repository/{repo}/changestate", json={"state": "FROZEN"}),
                     400)
        assert_error(alice.put(f"/repository/{repo}/changestate", json={}), 400)
        assert_error(alice.put(f"/repository/{repo}/changestate", json={"state": 3}), 400)


def test_only_repository_admins(mirror_registry: Deployment) -> None:
    with closing(api(mirror_registry, "alice", SCOPES)) as alice, \
            closing(api(mirror_registry, "bob", SCOPES)) as bob, \
            closing(api(mirror_registry, None)) as anonymous:
        repo = make_repo(alice)
        robot, _ = make_robot(alice)
        body = mirror_body("127.0.0.1:9/up/stream", robot)
        assert alice.post(f"/repository/{repo}/mirror", json=body).status_code == 201
        for client, status in ((bob, 403), (anonymous, 401)):
            assert_error(client.get(f"/repository/{repo}/mirror"), status)
            assert_error(client.post(f"/repository/{repo}/mirror", json=body), status)
            assert_error(client.put(f"/repository/{repo}/mirror", json=body), status)
            assert_error(client.post(f"/repository/{repo}/mirror/sync-now"), status)
            assert_error(client.post(f"/repository/{repo}/mirror/sync-cancel"), status)
            assert_error(client.put(f"/repository/{repo}/changestate",
                                    json={"state": "NORMAL"}), status)
        # A missing repository is only revealed to someone who could administer it.
        assert_error(bob.get("/repository/alice/nosuchrepo/mirror"), 403)
        assert_error(alice.get("/repository/alice/nosuchrepo/mirror"), 404)
    # Tokens need repo:admin.
    with closing(api(mirror_registry, "alice", "repo:read repo:write")) as limited:
        assert_error(limited.get(f"/repository/{repo}/mirror"), 403)


def test_feature_off_hides_mirroring(registry: Deployment) -> None:
    with closing(api(registry, "alice", SCOPES)) as alice:
        repo = make_repo(alice)
        assert_error(alice.get(f"/repository/{repo}/mirror"), 404)
        assert_error(alice.post(f"/repository/{repo}/mirror", json={}), 404)
        assert_error(alice.post(f"/repository/{repo}/mirror/sync-now"), 404)
        # MIRROR is not a state without the feature; the others are.
        assert_error(alice.put(f"/repository/{repo}/changestate", json={"state": "MIRROR"}),
                     400)
        set_state(alice, repo, "READ_ONLY")
        set_state(alice, repo, "NORMAL")


def test_sync_now_and_cancel_status(mirror_registry: Deployment) -> None:
    with closing(api(mirror_registry, "alice", SCOPES)) as alice:
        repo = make_repo(alice)
        robot, _ = make_robot(alice)
        later = iso(datetime.now(UTC) + timedelta(days=1))
        assert alice.post(f"/repository/{repo}/mirror", json=mirror_body(
            "127.0.0.1:9/up/stream", robot, sync_start_date=later)).status_code == 201
        # Nothing runs: cancel has nothing to stop.
        assert "No sync" in assert_error(
            alice.post(f"/repository/{repo}/mirror/sync-cancel"), 400)["error_message"]
        # State NORMAL: sync-now is recorded but no worker syncs a non-MIRROR repository.
        now = alice.post(f"/repository/{repo}/mirror/sync-now")
        assert now.status_code == 204, now.text
        time.sleep(2.5)
        view = alice.get(f"/repository/{repo}/mirror").json()
        assert view["sync_status"] == "SYNC_NOW" and view["last_sync"] is None
        cancel = alice.post(f"/repository/{repo}/mirror/sync-cancel")
        assert cancel.status_code == 204, cancel.text
        view = alice.get(f"/repository/{repo}/mirror").json()
        assert view["sync_status"] == "CANCEL"
        assert view["sync_start_date"] == later
        kinds = log_kinds(alice, repo)
        assert kinds.count("repo_mirror_config_changed") >= 2


def test_failing_upstream_reports_error_and_retries(mirror_registry: Deployment) -> None:
    """A mirror of an upstream nobody answers: FAIL with a message, one retry used."""
    with closing(api(mirror_registry, "alice", SCOPES)) as alice:
        repo = make_repo(alice)
        robot, _ = make_robot(alice)
        assert alice.post(f"/repository/{repo}/mirror", json=mirror_body(
            "127.0.0.1:9/up/stream", robot, external_registry_username="u",
            external_registry_password=SECRET)).status_code == 201
        set_state(alice, repo, "MIRROR")
        view = wait_status(alice, repo, ("FAIL",))
        assert view["last_error"] and "127.0.0.1:9" in view["last_error"]
        assert SECRET not in str(view)
        assert view["sync_retries_remaining"] < 3
        assert "repo_mirror_sync_failed" in log_kinds(alice, repo)
        set_state(alice, repo, "NORMAL")


# --- repository state and pushes ------------------------------------------------------------
def _push(deployment: Deployment, username: str, password: str | None, repo: str,
          ) -> httpx.Response:
    """Try a push (blob, then manifest ``latest``) as ``username``; the first refused
    response, or the manifest's."""
    client = RegistryClient(deployment.url, username, password)
    try:
        token = client.token_response(f"repository:{repo}:pull,push")
        assert token.status_code == 200, token.text
        headers = {"Authorization": f"Bearer {token.json()['token']}"}
        config = b'{"nonce": "%s"}' % random_bytes(8).hex().encode()
        digest = sha256(config)
        upload = client.http.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest},
                                  content=config, headers={
                                      **headers, "Content-Type": "application/octet-stream"})
        if upload.status_code != 201:
            return upload
        manifest = to_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                            "config": descriptor(OCI_CONFIG, config), "layers": []})
        return client.http.put(f"/v2/{repo}/manifests/latest", content=manifest,
                               headers={**headers, "Content-Type": OCI_MANIFEST})
    finally:
        client.close()


def test_push_rules_by_state(mirror_registry: Deployment) -> None:
    with closing(api(mirror_registry, "alice", SCOPES)) as alice:
        repo = make_repo(alice)
        robot, robot_token = make_robot(alice)
        other_robot, other_token = make_robot(alice)
        owner = mirror_registry.client("alice")
        owner.push_image(repo, "v1")  # NORMAL: the owner pushes

        set_state(alice, repo, "READ_ONLY")
        assert _push(mirror_registry, "alice", owner.password, repo).status_code in (401,
                                                                                    403)
        assert _push(mirror_registry, robot, robot_token, repo).status_code in (401, 403)
        # Deleting a tag is refused too.
        assert_error(alice.delete(f"/repository/{repo}/tag/v1"), 403)

        set_state(alice, repo, "MIRROR")
        # No mirror configuration yet: nobody pushes.
        assert _push(mirror_registry, "alice", owner.password, repo).status_code in (401, 403)
        assert alice.post(f"/repository/{repo}/mirror", json=mirror_body(
            "127.0.0.1:9/up/stream", robot,
            sync_start_date=iso(datetime.now(UTC) + timedelta(days=1)))).status_code == 201
        # The mirror's robot pushes (it has no permission on the repository otherwise);
        # the owner and other robots do not.
        assert _push(mirror_registry, "alice", owner.password, repo).status_code in (401, 403)
        assert _push(mirror_registry, other_robot, other_token, repo).status_code in (401,
                                                                                      403)
        pushed = _push(mirror_registry, robot, robot_token, repo)
        assert pushed.status_code == 201, pushed.text
        # Reads go on for the owner.
        assert owner.request("GET", f"/v2/{repo}/manifests/v1", repo=repo,
                             actions="pull").status_code == 200

        set_state(alice, repo, "NORMAL")
        assert _push(mirror_registry, "alice", owner.password, repo).status_code == 201
        kinds = log_kinds(alice, repo)
        assert kinds.count("change_repo_state") == 3
