"""Repository mirroring end to end: a Portside server (``mirror`` profiles: a worker
pass every second) syncs from a real Debian ``docker-registry`` on loopback (plain,
TLS with a self-signed CA, htpasswd) or from a second Portside server with token auth.

Covers tag filters, stale tag removal, interval scheduling, sync-now, cancel, rollback
and best effort on failure, an upstream that disappears mid-sync, a worker killed
mid-sync (the lease lapses and the restarted server takes over), multi-arch indexes,
and credentials kept out of API answers, the server log and process lists.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from functional.client import OCI_INDEX, OCI_MANIFEST, to_json
from functional.conftest import PASSWORDS, Deployment, RegistryPool, _deployment, unique_repo
from functional.test_api_mirror import (
    SCOPES,
    iso,
    log_kinds,
    make_repo,
    make_robot,
    mirror_body,
    set_state,
    wait_status,
)
from functional.test_api_repositories import api
from functional.test_notification_delivery import Hook
from support.distribution import (
    Distribution,
    DistributionClient,
    distribution_available,
    running_distribution,
)
from support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.skipif(not distribution_available(),
                                reason="Debian's docker-registry is not installed")

SECRET = "mirror-Upstream-S3cret-pw"


# --- helpers --------------------------------------------------------------------------------
@pytest.fixture
def mirror_registry(registries: RegistryPool) -> Iterator[Deployment]:
    """The ``mirror`` profile (rollback on failure); users alice and bob."""
    yield from _deployment(registries, "mirror")


@pytest.fixture
def best_effort_registry(registries: RegistryPool) -> Iterator[Deployment]:
    """The ``mirror-best-effort`` profile; user alice."""
    yield from _deployment(registries, "mirror-best-effort")


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Distribution]:
    """A plain-HTTP docker-registry without authentication."""
    with running_distribution(tmp_path / "upstream") as registry:
        yield registry


def local_tags(deployment: Deployment, repo: str) -> dict[str, str]:
    """``{tag: manifest digest}`` of a Portside repository, read through ``/v2`` as alice."""
    alice = next((c for c in deployment.clients if c.username == "alice"), None)
    if alice is None:
        alice = deployment.client("alice")
    listed = alice.request("GET", f"/v2/{repo}/tags/list", repo=repo, actions="pull")
    assert listed.status_code == 200, listed.text
    result = {}
    for tag in listed.json().get("tags") or []:
        response = alice.request("HEAD", f"/v2/{repo}/manifests/{tag}", repo=repo,
                                 actions="pull", headers={"Accept": f"{OCI_MANIFEST}, "
                                                          f"{OCI_INDEX}"})
        assert response.status_code == 200, response.text
        result[tag] = response.headers["Docker-Content-Digest"]
    return result


def start_mirror(client: httpx.Client, repo: str, reference: str, robot: str,
                 **overrides: Any) -> None:
    """Configure a mirror and put the repository in state MIRROR (it is due at once)."""
    created = client.post(f"/repository/{repo}/mirror",
                          json=mirror_body(reference, robot, **overrides))
    assert created.status_code == 201, created.text
    set_state(client, repo, "MIRROR")


def sync_now(client: httpx.Client, repo: str) -> None:
    """Ask for a sync, retrying while one still runs. The status is then ``SYNC_NOW``
    until a worker claims it, so the next final status seen is the new sync's outcome
    (``last_sync`` has only second resolution: too coarse to tell two syncs apart)."""
    deadline = time.monotonic() + 30
    while True:
        response = client.post(f"/repository/{repo}/mirror/sync-now")
        if response.status_code == 204:
            return
        assert response.status_code == 400 and time.monotonic() < deadline, response.text
        time.sleep(0.3)


def change(client: httpx.Client, repo: str, **fields: Any) -> None:
    response = client.put(f"/repository/{repo}/mirror", json=fields)
    assert response.status_code == 201, response.text


def wait_for_bytes(proxy: TcpProxy, count: int, timeout: float = 30) -> None:
    """Wait until the upstream sent ``count`` bytes through ``proxy`` (the sync runs)."""
    deadline = time.monotonic() + timeout
    while proxy.bytes_down < count:
        assert time.monotonic() < deadline, "the sync fetched nothing in time"
        time.sleep(0.05)


def blob_data_path(upstream: Distribution, digest: str) -> Path:
    """Where Distribution's filesystem driver keeps a blob's bytes."""
    hex_digest = digest.split(":", 1)[1]
    return (upstream.root / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256"
            / hex_digest[:2] / hex_digest / "data")


# --- tag rules --------------------------------------------------------------------------------
def test_tag_filters_and_stale_tags(mirror_registry: Deployment,
                                    upstream: Distribution) -> None:
    with closing(api(mirror_registry, "alice", SCOPES)) as alice, upstream.client() as up:
        images = {tag: up.push_image("team/app", tag) for tag in ("v1", "v2", "latest",
                                                                   "dev-1")}
        repo = make_repo(alice)
        robot, _ = make_robot(alice)
        start_mirror(alice, repo, f"{upstream.host}/team/app", robot,
                     root_rule={"rule_kind": "tag_glob_csv", "rule_value": ["v*,latest"]})
        view = wait_status(alice, repo, ("SUCCESS", "FAIL"))
        assert view["sync_status"] == "SUCCESS", view
        assert view["last_error"] is None and view["last_sync"] is not None
        assert local_tags(mirror_registry, repo) == {
            tag: images[tag].digest for tag in ("v1", "v2", "latest")}
        # The layers themselves arrived intact.
        owner = mirror_registry.client("alice")
        blob = owner.request("GET", f"/v2/{repo}/blobs/"
                             f"{json.loads(images['v1'].manifest)['layers'][0]['digest']}",
                             repo=repo, actions="pull")
        assert blob.status_code == 200 and blob.content == images["v1"].layers[0]
        kinds = log_kinds(alice, repo)
        assert "repo_mirror_sync_started" in kinds and "repo_mirror_sync_success" in kinds
        assert "push_repo" in kinds

        # Upstream: v1 moves, v2 goes away; the rules drop "latest".
        moved = up.push_image("team/app", "v1")
        up.delete_manifest("team/app", images["v2"].digest)
        change(alice, repo, root_rule={"rule_kind": "tag_glob_csv", "rule_value": ["v*"]})
        sync_now(alice, repo)
        view = wait_status(alice, repo, ("SUCCESS", "FAIL"))
        assert view["sync_status"] == "SUCCESS", view
        assert local_tags(mirror_registry, repo) == {"v1": moved.digest}

        # Nothing matches any more: every tag goes (Quay kept stale tags here).
        change(alice, repo, root_rule={"rule_kind": "tag_glob_csv",
                                       "rule_value": ["release-*"]})
        sync_now(alice, repo)
        view = wait_status(alice, repo, ("SUCCESS", "FAIL"))
        assert view["sync_status"] == "SUCCESS", view
        assert local_tags(mirror_registry, repo) == {}


def test_blobs_already_stored_are_not_fetched_again(mirror_registry: Deployment,
                                                   upstream: Distribution) -> None:
    with closing(api(mirror_registry, "alice", SCOPES)) as alice, upstream.client() as up:
        image = up.push_image("lib/shared", "1.0", layers=3, layer_size=200_000)
        robot, _ = make_robot(alice)
        first = make_repo(alice)
        start_mirror(alice, first, f"{upstream.host}/lib/shared", robot)
        assert wait_status(alice, first, ("SUCCESS", "FAIL"))["sync_status"] == "SUCCESS"
        # A second mirror of the same content: its blobs are linked, not downloaded.
        proxy = TcpProxy(upstream.port)
        try:
            second = make_repo(alice)
            start_mirror(alice, second, f"{proxy.host}/lib/shared", robot)
            view = wait_status(alice, second, ("SUCCESS", "FAIL"))
            assert view["sync_status"] == "SUCCESS", view
        finally:
            proxy.stop()
        assert local_tags(mirror_registry, second) == {"1.0": image.digest}
        assert proxy.bytes_down < 100_000  # three 200 kB layers were not transferred


# --- scheduling -------------------------------------------------------------------------------
def test_interval_scheduling(mirror_registry: Deployment, upstream: Distribution) -> None:
    with closing(api(mirror_registry, "alice", SCOPES)) as alice, upstream.client() as up:
        up.push_image("sched/app", "1")
        repo = make_repo(alice)
        robot, _ = make_robot(alice)
        start = datetime.now(UTC).replace(microsecond=0)
        start_mirror(alice, repo, f"{upstream.host}/sched/app", robot, sync_interval=3,
                     sync_start_date=iso(start))
        first = wait_status(alice, repo, ("SUCCESS",))
        assert local_tags(mirror_registry, repo).keys() == {"1"}
        # The next slot is the start plus whole intervals, in the future.
        next_start = datetime.strptime(first["sync_start_date"], "%Y-%m-%dT%H:%M:%SZ"
                                       ).replace(tzinfo=UTC)
        assert (next_start - start).total_seconds() % 3 == 0
        assert next_start > start
        # Without sync-now, the schedule alone brings a tag pushed upstream meanwhile.
        up.push_image("sched/app", "2")
        second = wait_status(alice, repo, ("SUCCESS",), after=first["last_sync"], timeout=30)
        assert second["sync_start_date"] > first["sync_start_date"]
        deadline = time.monotonic() + 15
        while local_tags(mirror_registry, repo).keys() != {"1", "2"}:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        # Disabled: no more syncs.
        change(alice, repo, is_enabled=False)
        time.sleep(0.5)
        settled = alice.get(f"/repository/{repo}/mirror").json()["last_sync"]
        time.sleep(4)
        assert alice.get(f"/repository/{repo}/mirror").json()["last_sync"] == settled


# --- TLS and credentials ----------------------------------------------------------------------
def test_tls_upstream_with_self_signed_ca(mirror_registry: Deployment, tmp_path: Path,
                                          ) -> None:
    with running_distribution(tmp_path / "tls", tls=True) as upstream, \
            upstream.client() as up, closing(api(mirror_registry, "alice", SCOPES)) as alice:
        image = up.push_image("secure/app", "v1")
        repo = make_repo(alice)
        robot, _ = make_robot(alice)
        start_mirror(alice, repo, f"{upstream.host}/secure/app", robot,
                     external_registry_config={"verify_tls": True})
        view = wait_status(alice, repo, ("FAIL",))
        assert "certificate" in view["last_error"].lower() or "ssl" in view["last_error"].lower()
        assert local_tags(mirror_registry, repo) == {}
        change(alice, repo, external_registry_config={"verify_tls": False})
        sync_now(alice, repo)
        view = wait_status(alice, repo, ("SUCCESS",))
        assert local_tags(mirror_registry, repo) == {"v1": image.digest}


def test_authenticated_upstream_keeps_secrets(mirror_registry: Deployment,
                                              tmp_path: Path) -> None:
    users = {"mirror": SECRET}
    with running_distribution(tmp_path / "auth", users=users) as upstream, \
            upstream.client() as up, closing(api(mirror_registry, "alice", SCOPES)) as alice:
        image = up.push_image("private/app", "v1", layers=2, layer_size=100_000)
        repo = make_repo(alice)
        robot, _ = make_robot(alice)
        # No credentials: refused upstream.
        start_mirror(alice, repo, f"{upstream.host}/private/app", robot)
        view = wait_status(alice, repo, ("FAIL",))
        assert "credentials" in view["last_error"] or "401" in view["last_error"]
        # Wrong credentials.
        change(alice, repo, external_registry_username="mirror",
               external_registry_password="wrong-" + SECRET)
        sync_now(alice, repo)
        view = wait_status(alice, repo, ("FAIL",))
        assert SECRET not in json.dumps(view)
        # Right ones; process lists are watched while the sync runs.
        change(alice, repo, external_registry_password=SECRET)
        sync_now(alice, repo)
        seen: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            seen.append(subprocess.run(["ps", "-eo", "args"], capture_output=True,
                                       text=True, check=True).stdout)
            view = alice.get(f"/repository/{repo}/mirror").json()
            if view["sync_status"] in ("SUCCESS", "FAIL"):
                break
        assert view["sync_status"] == "SUCCESS", view
        assert local_tags(mirror_registry, repo) == {"v1": image.digest}
        assert not any(SECRET in listing for listing in seen)
        # An update that omits the password keeps it.
        change(alice, repo, sync_interval=7200)
        sync_now(alice, repo)
        assert wait_status(alice, repo, ("SUCCESS", "FAIL"),
                           )["sync_status"] == "SUCCESS"
        response = alice.get(f"/repository/{repo}/mirror")
        assert SECRET not in response.text
        assert response.json()["external_registry_username"] == "mirror"
        assert SECRET not in alice.get(f"/repository/{repo}/logs").text
    assert SECRET not in mirror_registry.registry.log_path.read_text(errors="replace")


def test_portside_upstream_with_token_auth(mirror_registry: Deployment,
                                           registry: Deployment) -> None:
    """The ``main`` server (private repositories, Bearer-token auth) as the upstream."""
    source = unique_repo("alice", "source")
    pusher = registry.client("alice")
    images = {tag: pusher.push_image(source, tag) for tag in ("1.0", "1.1", "2.0")}
    with closing(api(mirror_registry, "alice", SCOPES)) as alice:
        repo = make_repo(alice)
        robot, _ = make_robot(alice)
        start_mirror(alice, repo, f"{registry.registry.host}/{source}", robot,
                     external_registry_username="alice",
                     external_registry_password=PASSWORDS["alice"],
                     root_rule={"rule_kind": "tag_glob_csv", "rule_value": ["1.*"]})
        view = wait_status(alice, repo, ("SUCCESS", "FAIL"))
        assert view["sync_status"] == "SUCCESS", view
        assert local_tags(mirror_registry, repo) == {
            "1.0": images["1.0"].digest, "1.1": images["1.1"].digest}
        # bob cannot read alice's private repository upstream.
        change(alice, repo, external_registry_username="bob",
               external_registry_password=PASSWORDS["bob"])
        sync_now(alice, repo)
        view = wait_status(alice, repo, ("FAIL",))
        assert PASSWORDS["bob"] not in json.dumps(view)
    assert PASSWORDS["bob"] not in mirror_registry.registry.log_path.read_text(errors="replace")


# --- notifications --------------------------------------------------------------------------
def test_sync_events_reach_webhooks(mirror_registry: Deployment, upstream: Distribution,
                                    ) -> None:
    hook = Hook()
    try:
        with closing(api(mirror_registry, "alice", SCOPES)) as alice, \
                upstream.client() as up:
            up.push_image("events/app", "v1")
            repo = make_repo(alice)
            robot, _ = make_robot(alice)
            for event in ("repo_mirror_sync_started", "repo_mirror_sync_success",
                          "repo_mirror_sync_failed"):
                created = alice.post(f"/repository/{repo}/notification/", json={
                    "event": event, "method": "webhook", "config": {"url": hook.url},
                    "eventConfig": {}, "title": event})
                assert created.status_code == 201, created.text
            start_mirror(alice, repo, f"{upstream.host}/events/app", robot)
            assert wait_status(alice, repo, ("SUCCESS", "FAIL"))["sync_status"] == "SUCCESS"
            bodies = hook.wait(2)
            assert {body["repository"] for body in bodies} == {repo}
            assert any("started" in json.dumps(body) for body in bodies)
            assert any(body.get("tags") == ["v1"] for body in bodies)
            # A failing sync raises the failure event.
            upstream.stop()
            sync_now(alice, repo)
            assert wait_status(alice, repo, ("FAIL",))["last_error"]
            bodies = hook.wait(4)
            assert any("127.0.0.1" in str(body.get("message")) for body in bodies[2:])
    finally:
        hook.close()


# --- multi-arch -------------------------------------------------------------------------------
def test_multi_arch_index(mirror_registry: Deployment, upstream: Distribution) -> None:
    with closing(api(mirror_registry, "alice", SCOPES)) as alice, upstream.client() as up:
        amd = up.push_image("multi/app")
        arm = up.push_image("multi/app")
        index = to_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {**amd.descriptor(), "platform": {"architecture": "amd64", "os": "linux"}},
            {**arm.descriptor(), "platform": {"architecture": "arm64", "os": "linux"}},
        ]})
        index_digest = up.push_manifest("multi/app", "latest", index, OCI_INDEX)
        robot, _ = make_robot(alice)

        whole = make_repo(alice)
        start_mirror(alice, whole, f"{upstream.host}/multi/app", robot)
        assert wait_status(alice, whole, ("SUCCESS", "FAIL"))["sync_status"] == "SUCCESS"
        assert local_tags(mirror_registry, whole) == {"latest": index_digest}
        owner = mirror_registry.client("alice")
        for child in (amd, arm):
            response = owner.request("GET", f"/v2/{whole}/manifests/{child.digest}",
                                     repo=whole, actions="pull")
            assert response.status_code == 200 and response.content == child.manifest

        filtered = make_repo(alice)
        start_mirror(alice, filtered, f"{upstream.host}/multi/app", robot,
                     architecture_filter=["arm64"])
        view = wait_status(alice, filtered, ("SUCCESS", "FAIL"))
        assert view["sync_status"] == "SUCCESS", view
        response = owner.request("GET", f"/v2/{filtered}/manifests/latest", repo=filtered,
                                 actions="pull", headers={"Accept": OCI_INDEX})
        assert response.status_code == 200
        kept = response.json()["manifests"]
        assert [m["digest"] for m in kept] == [arm.digest]
        missing = owner.request("GET", f"/v2/{filtered}/manifests/{amd.digest}",
                                repo=filtered, actions="pull")
        assert missing.status_code == 404


# --- failures ---------------------------------------------------------------------------------
def _break_a_tag(upstream: Distribution, up: DistributionClient) -> dict[str, str]:
    """Upstream changes for a sync that fails midway: ``a`` moves, ``c`` is new, and
    ``z`` (synced last) moves to an image whose layer is gone from the upstream's
    storage. Returns the new digests."""
    moved = up.push_image("fail/app", "a")
    new = up.push_image("fail/app", "c")
    broken = up.push_image("fail/app", "z", layer_size=4096)
    layer = json.loads(broken.manifest)["layers"][0]["digest"]
    blob_data_path(upstream, layer).unlink()
    return {"a": moved.digest, "c": new.digest, "z": broken.digest}


def test_failed_sync_is_rolled_back(mirror_registry: Deployment,
                                    upstream: Distribution) -> None:
    with closing(api(mirror_registry, "alice", SCOPES)) as alice, upstream.client() as up:
        old = {tag: up.push_image("fail/app", tag).digest for tag in ("a", "b", "z")}
        repo = make_repo(alice)
        robot, _ = make_robot(alice)
        start_mirror(alice, repo, f"{upstream.host}/fail/app", robot)
        assert wait_status(alice, repo, ("SUCCESS", "FAIL"))["sync_status"] == "SUCCESS"
        assert local_tags(mirror_registry, repo) == old
        _break_a_tag(upstream, up)
        sync_now(alice, repo)
        view = wait_status(alice, repo, ("FAIL",))
        assert "z" in view["last_error"]
        # Every tag as before the failed sync: "a" moved back, "c" deleted.
        assert local_tags(mirror_registry, repo) == old
        kinds = log_kinds(alice, repo)
        assert "revert_tag" in kinds and "repo_mirror_sync_failed" in kinds


def test_failed_sync_best_effort(best_effort_registry: Deployment,
                                 upstream: Distribution) -> None:
    with closing(api(best_effort_registry, "alice", SCOPES)) as alice, \
            upstream.client() as up:
        old = {tag: up.push_image("fail/app", tag).digest for tag in ("a", "b", "z")}
        repo = make_repo(alice)
        robot, _ = make_robot(alice)
        start_mirror(alice, repo, f"{upstream.host}/fail/app", robot)
        assert wait_status(alice, repo, ("SUCCESS", "FAIL"))["sync_status"] == "SUCCESS"
        new = _break_a_tag(upstream, up)
        sync_now(alice, repo)
        view = wait_status(alice, repo, ("FAIL",))
        assert "z" in view["last_error"]
        # What could be copied stays; the broken tag keeps its old image.
        assert local_tags(best_effort_registry, repo) == {
            "a": new["a"], "b": old["b"], "c": new["c"], "z": old["z"]}


def test_cancel_and_upstream_disappearing(mirror_registry: Deployment,
                                          upstream: Distribution) -> None:
    with closing(api(mirror_registry, "alice", SCOPES)) as alice, upstream.client() as up:
        for number in range(20):
            up.push_image("slow/app", f"t{number:02}", layer_size=100_000)
        robot, _ = make_robot(alice)
        # About 10 s of transfer: a cancel and a cut land mid-sync.
        proxy = TcpProxy(upstream.port, rate=200_000)
        try:
            repo = make_repo(alice)
            start_mirror(alice, repo, f"{proxy.host}/slow/app", robot)
            wait_for_bytes(proxy, 300_000)
            cancelled = alice.post(f"/repository/{repo}/mirror/sync-cancel")
            assert cancelled.status_code == 204, cancelled.text
            # CANCEL at once; last_sync once the sync stopped at a checkpoint.
            deadline = time.monotonic() + 30
            while (view := alice.get(f"/repository/{repo}/mirror").json())["last_sync"] is None:
                assert time.monotonic() < deadline, view
                time.sleep(0.2)
            assert view["sync_status"] == "CANCEL", view
            time.sleep(1)
            # Rolled back (the profile has REPO_MIRROR_ROLLBACK): no partial result.
            assert local_tags(mirror_registry, repo) == {}
            assert alice.get(f"/repository/{repo}/mirror").json()["sync_status"] == "CANCEL"

            # Again, and the upstream goes away midway.
            sync_now(alice, repo)
            sent = proxy.bytes_down
            wait_for_bytes(proxy, sent + 300_000)
            assert local_tags(mirror_registry, repo)  # some tags arrived already
            proxy.stop()
            view = wait_status(alice, repo, ("FAIL",), timeout=60)
            assert view["last_error"]
            assert local_tags(mirror_registry, repo) == {}
        finally:
            proxy.stop()


def test_sync_timeout(best_effort_registry: Deployment, upstream: Distribution) -> None:
    with closing(api(best_effort_registry, "alice", SCOPES)) as alice, \
            upstream.client() as up:
        for number in range(6):
            up.push_image("timeout/app", f"t{number}", layer_size=100_000)
        robot, _ = make_robot(alice)
        proxy = TcpProxy(upstream.port, rate=100_000)
        try:
            repo = make_repo(alice)
            start_mirror(alice, repo, f"{proxy.host}/timeout/app", robot, sync_timeout_s=2)
            view = wait_status(alice, repo, ("FAIL",), timeout=30)
            assert "timeout (2 s)" in view["last_error"], view
            # Best effort: what arrived in time stays, the rest is missing.
            assert len(local_tags(best_effort_registry, repo)) < 6
        finally:
            proxy.stop()


def test_worker_killed_mid_sync_is_taken_over(mirror_registry: Deployment,
                                              upstream: Distribution) -> None:
    """The server dies during a sync; after a restart the lapsed claim is taken over.
    Last in this file: it restarts the shared ``mirror`` server."""
    with upstream.client() as up:
        digests = {f"t{n:02}": up.push_image("crash/app", f"t{n:02}",
                                             layer_size=100_000).digest
                   for n in range(12)}
    proxy = TcpProxy(upstream.port, rate=200_000)
    try:
        with closing(api(mirror_registry, "alice", SCOPES)) as alice:
            repo = make_repo(alice)
            robot, _ = make_robot(alice)
            start_mirror(alice, repo, f"{proxy.host}/crash/app", robot)
            wait_for_bytes(proxy, 300_000)
        mirror_registry.restart(kill=True)
        with closing(api(mirror_registry, "alice", SCOPES)) as alice:
            assert alice.get(f"/repository/{repo}/mirror").json()["sync_status"] == "SYNCING"
            view = wait_status(alice, repo, ("SUCCESS", "FAIL"), timeout=90)
            assert view["sync_status"] == "SUCCESS", view
            assert local_tags(mirror_registry, repo) == digests
    finally:
        proxy.stop()
