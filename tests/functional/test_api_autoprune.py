"""Auto-prune policies: the ``autoprunepolicy`` endpoints of organizations, of the
caller's own namespace and of repositories (shapes, validation, who may use them), and
what a pruning pass does to a real server's tags.

Passes run in the test process against the server's database (the server's own job runs
every ``AUTO_PRUNE_INTERVAL_S``); assertions look at the resulting tags and audit entries,
so they hold whichever process pruned first.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from sqlalchemy import select, update

from functional.conftest import Deployment, unique_repo
from functional.test_api_organizations import (
    api,
    create_org,
    delete_created_organizations,
    in_db,
)
from functional.test_api_tags import logs, tag_list
from portside.db.models import Namespace, Repository, Tag
from portside.services.autoprune import AutoPruneService

__all__ = ["delete_created_organizations"]  # the autouse cleanup applies here too

DAY_MS = 86_400_000


def add_policy(client: httpx.Client, base: str, **body: Any) -> str:
    """Create an auto-prune policy under ``base`` (must succeed); returns its uuid."""
    response = client.post(f"{base}/autoprunepolicy/", json=body)
    assert response.status_code == 201, response.text
    assert set(response.json()) == {"uuid"}
    uuid: str = response.json()["uuid"]
    return uuid


def run_pass(deployment: Deployment, now: int | None = None) -> None:
    """One pruning pass over the server's database."""
    db = in_db(deployment)
    try:
        AutoPruneService(db).run_pass(now)
    finally:
        db.dispose()


def push_tags(deployment: Deployment, repo: str, names: list[str]) -> None:
    """Push one image tagged ``names`` (oldest first); their push times are set a second
    apart so that "newest" is unambiguous."""
    alice = deployment.client("alice")
    image = alice.push_image(repo, names[0])
    for name in names[1:]:
        alice.push_manifest(repo, name, image.manifest)
    namespace, short = repo.split("/", 1)
    base = int(time.time() * 1000) - 3_600_000
    db = in_db(deployment)
    try:
        with db.session() as session:
            repository_id = session.scalar(
                select(Repository.id)
                .join(Namespace, Namespace.id == Repository.namespace_id)
                .where(Namespace.name == namespace, Repository.name == short)
            )
            for index, name in enumerate(names):
                session.execute(
                    update(Tag)
                    .where(
                        Tag.repository_id == repository_id,
                        Tag.name == name,
                        Tag.lifetime_end_ms.is_(None),
                    )
                    .values(lifetime_start_ms=base + index * 1000)
                )
    finally:
        db.dispose()


def active(client: httpx.Client, repo: str) -> set[str]:
    return {t["name"] for t in tag_list(client, repo, onlyActiveTags="true", limit=100)["tags"]}


def test_policy_crud_in_quay_shapes(registry: Deployment) -> None:
    repo = unique_repo("alice", "prune")
    registry.client("alice").push_image(repo, "v1")
    with api(registry, "alice") as client:
        org = create_org(client)
        # A long age, so that the user policy prunes nothing while it exists.
        for base in (f"/organization/{org}", "/user", f"/repository/{repo}"):
            url = f"{base}/autoprunepolicy/"
            uuid = add_policy(client, base, method="number_of_tags", value=10)
            listed = client.get(url)
            assert listed.status_code == 200, listed.text
            assert listed.json() == {
                "policies": [
                    {
                        "uuid": uuid,
                        "method": "number_of_tags",
                        "value": 10,
                        "tagPattern": None,
                        "tagPatternMatches": True,
                    }
                ]
            }
            response = client.put(
                f"{url}{uuid}",
                json={
                    "method": "creation_date",
                    "value": "52w",
                    "tagPattern": "^dev-",
                    "tagPatternMatches": False,
                },
            )
            assert response.status_code == 204, response.text
            assert client.get(f"{url}{uuid}").json() == {
                "uuid": uuid,
                "method": "creation_date",
                "value": "52w",
                "tagPattern": "^dev-",
                "tagPatternMatches": False,
            }
            response = client.delete(f"{url}{uuid}")
            assert response.status_code == 200 and response.json() == {"uuid": uuid}
            assert client.get(f"{url}{uuid}").status_code == 404
            assert client.get(url).json() == {"policies": []}
        assert {e["kind"] for e in client.get(f"/organization/{org}/logs").json()["logs"]} >= {
            "create_namespace_autoprune_policy",
            "update_namespace_autoprune_policy",
            "delete_namespace_autoprune_policy",
        }
        created = logs(client, repo, "create_repository_autoprune_policy")
        assert created[0]["method"] == "number_of_tags" and created[0]["value"] == 10
        assert logs(client, repo, "delete_repository_autoprune_policy")


def test_bad_policies_and_outsiders_are_refused(registry: Deployment) -> None:
    repo = unique_repo("alice", "prune")
    registry.client("alice").push_image(repo, "v1")
    with api(registry, "alice") as client:
        org = create_org(client)
        for base in (f"/organization/{org}", f"/repository/{repo}"):
            url = f"{base}/autoprunepolicy/"
            for body in (
                {"method": "bogus", "value": 1},
                {"method": "number_of_tags", "value": 0},
                {"method": "number_of_tags", "value": -3},
                {"method": "number_of_tags", "value": "10"},
                {"method": "number_of_tags", "value": 1.5},
                {"method": "number_of_tags", "value": True},
                {"method": "creation_date", "value": "2x"},
                {"method": "creation_date", "value": 5},
                {"method": "creation_date", "value": "2w", "tagPattern": "(["},
                {"method": "creation_date", "value": "2w", "tagPattern": ""},
                {"method": "creation_date", "value": "2w", "tagPatternMatches": "no"},
                {"value": 3},
                {},
            ):
                response = client.post(url, json=body)
                assert response.status_code == 400, (url, body, response.text)
                assert response.json()["error_type"] == "invalid_request"
            uuid = add_policy(client, base, method="creation_date", value="4w")
            # The same policy twice is refused.
            assert (
                client.post(url, json={"method": "creation_date", "value": "4w"}).status_code == 400
            )
            assert (
                client.put(
                    f"{url}{uuid}", json={"method": "number_of_tags", "value": 0}
                ).status_code
                == 400
            )
            assert (
                client.put(
                    f"{url}missing", json={"method": "number_of_tags", "value": 3}
                ).status_code
                == 404
            )
            with api(registry, "bob") as bob:
                assert bob.get(url).status_code == 403
                assert (
                    bob.post(url, json={"method": "number_of_tags", "value": 1}).status_code == 403
                )
                assert bob.delete(f"{url}{uuid}").status_code == 403
            with api(registry, None) as anonymous:
                assert anonymous.get(url).status_code == 401
        with api(registry, "alice", scopes="repo:read repo:write") as limited:
            assert limited.get(f"/repository/{repo}/autoprunepolicy/").status_code == 403
            assert limited.get("/user/autoprunepolicy/").status_code == 403
        with api(registry, None) as anonymous:
            assert anonymous.get("/user/autoprunepolicy/").status_code == 401


def test_prune_by_count_keeps_the_newest(registry: Deployment) -> None:
    repo = unique_repo("alice", "prune")
    push_tags(registry, repo, ["t1", "t2", "t3", "t4", "t5"])
    with api(registry, "alice") as client:
        assert client.put(f"/repository/{repo}/tag/t1", json={"immutable": True}).status_code == 201
        uuid = add_policy(client, f"/repository/{repo}", method="number_of_tags", value=2)
        run_pass(registry)
        # t1 is immutable: it survives (and still counts among the tags).
        assert active(client, repo) == {"t1", "t4", "t5"}
        run_pass(registry)  # a second pass changes nothing
        entries = logs(client, repo, "autoprune_tag_delete")
        assert sorted(e["tag"] for e in entries) == ["t2", "t3"]
        assert all(
            e["policy_uuid"] == uuid
            and e["method"] == "number_of_tags"
            and e["performer"] == "autoprune worker"
            for e in entries
        )
        # Pruned tags end like deleted ones: they stay in the history.
        history = tag_list(client, repo, specificTag="t2")["tags"]
        assert len(history) == 1 and "end_ts" in history[0]


def test_prune_by_count_within_a_pattern(registry: Deployment) -> None:
    repo = unique_repo("alice", "prune")
    push_tags(registry, repo, ["dev-1", "rel-1", "dev-2", "rel-2", "dev-3"])
    with api(registry, "alice") as client:
        add_policy(
            client, f"/repository/{repo}", method="number_of_tags", value=1, tagPattern="^dev-"
        )
        run_pass(registry)
        assert active(client, repo) == {"rel-1", "rel-2", "dev-3"}
    other = unique_repo("alice", "prune")
    push_tags(registry, other, ["dev-1", "rel-1", "dev-2", "rel-2"])
    with api(registry, "alice") as client:
        add_policy(
            client,
            f"/repository/{other}",
            method="number_of_tags",
            value=1,
            tagPattern="dev",
            tagPatternMatches=False,
        )
        run_pass(registry)
        assert active(client, other) == {"dev-1", "dev-2", "rel-2"}


def test_prune_by_age_in_a_namespace(registry: Deployment) -> None:
    with api(registry, "alice") as client:
        org = create_org(client)
        first, second = f"{org}/one", f"{org}/two"
        push_tags(registry, first, ["old", "ci-1", "keep"])
        push_tags(registry, second, ["ci-2", "release-1"])
        immutable = client.post(
            f"/repository/{first}/immutabilitypolicy/", json={"tagPattern": "keep"}
        )
        assert immutable.status_code == 201, immutable.text
        add_policy(
            client, f"/organization/{org}", method="creation_date", value="1d", tagPattern="ci-"
        )
        add_policy(
            client,
            f"/repository/{second}",
            method="creation_date",
            value="1d",
            tagPattern="release",
        )
        now = int(time.time() * 1000)
        run_pass(registry, now)  # nothing is a day old yet
        assert active(client, first) == {"old", "ci-1", "keep"}
        assert active(client, second) == {"ci-2", "release-1"}

        add_policy(client, f"/organization/{org}", method="creation_date", value="2d")
        run_pass(registry, now + 3 * DAY_MS)
        # Every tag is old enough now: only the immutable one is left.
        assert active(client, first) == {"keep"}
        assert active(client, second) == set()
        assert {e["tag"] for e in logs(client, second, "autoprune_tag_delete")} == {
            "ci-2",
            "release-1",
        }
