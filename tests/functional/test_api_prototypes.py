"""``/api/v1/organization/{org}/prototypes``: an organization's default permissions, who
may manage them, and that repositories created by a push or through the API get them."""

from __future__ import annotations

from typing import Any

import httpx

from functional.conftest import Deployment, unique_repo
from functional.test_api_organizations import (
    api,
    create_org,
    create_robot,
    delete_created_organizations,
    error_type,
)
from functional.test_api_teams import put_team

__all__ = ["delete_created_organizations"]  # the autouse cleanup applies here too


def add_prototype(
    client: httpx.Client, org: str, role: str, kind: str, name: str, activating: str | None = None
) -> dict[str, Any]:
    """Create a default permission (which must succeed); returns Quay's view of it."""
    body: dict[str, Any] = {"role": role, "delegate": {"kind": kind, "name": name}}
    if activating is not None:
        body["activating_user"] = {"name": activating}
    response = client.post(f"/organization/{org}/prototypes", json=body)
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()
    return view


def prototypes(client: httpx.Client, org: str) -> list[dict[str, Any]]:
    """The organization's default permissions, as listed."""
    response = client.get(f"/organization/{org}/prototypes")
    assert response.status_code == 200, response.text
    listed: list[dict[str, Any]] = response.json()["prototypes"]
    return listed


def permissions(client: httpx.Client, repo: str) -> tuple[dict[str, str], dict[str, str]]:
    """The user/robot and team roles on ``repo``, by name."""
    users = client.get(f"/repository/{repo}/permissions/user/")
    teams = client.get(f"/repository/{repo}/permissions/team/")
    assert users.status_code == 200, users.text
    assert teams.status_code == 200, teams.text
    return (
        {name: p["role"] for name, p in users.json()["permissions"].items()},
        {name: p["role"] for name, p in teams.json()["permissions"].items()},
    )


def add_member(client: httpx.Client, org: str, team: str, member: str) -> None:
    response = client.put(f"/organization/{org}/team/{team}/members/{member}")
    assert response.status_code == 200, response.text


def test_prototypes_are_created_listed_changed_and_deleted(registry: Deployment) -> None:
    with api(registry, "alice") as alice:
        org = create_org(alice)
        put_team(alice, org, "readers")
        add_member(alice, org, "readers", "carol")
        robot = create_robot(registry, org, "ci")

        for_bob = add_prototype(alice, org, "write", "user", "bob")
        assert set(for_bob) == {"id", "role", "delegate", "activating_user"}
        assert for_bob["role"] == "write" and for_bob["activating_user"] is None
        assert for_bob["delegate"] == {
            "name": "bob",
            "kind": "user",
            "is_robot": False,
            "is_org_member": False,
            "avatar": for_bob["delegate"]["avatar"],
        }
        assert for_bob["delegate"]["avatar"]["kind"] == "user"

        for_team = add_prototype(alice, org, "read", "team", "readers", activating="carol")
        assert for_team["delegate"] == {
            "name": "readers",
            "kind": "team",
            "avatar": for_team["delegate"]["avatar"],
        }
        assert for_team["delegate"]["avatar"]["kind"] == "team"
        activating = for_team["activating_user"]
        assert (
            activating["name"],
            activating["kind"],
            activating["is_robot"],
            activating["is_org_member"],
        ) == ("carol", "user", False, True)

        for_robot = add_prototype(alice, org, "admin", "user", robot)
        assert (
            for_robot["delegate"]["is_robot"],
            for_robot["delegate"]["is_org_member"],
            for_robot["delegate"]["avatar"]["kind"],
        ) == (True, True, "robot")

        ids = [for_bob["id"], for_team["id"], for_robot["id"]]
        assert len(set(ids)) == 3
        assert prototypes(alice, org) == [for_bob, for_team, for_robot]

        changed = alice.put(
            f"/organization/{org}/prototypes/{for_bob['id']}", json={"role": "read"}
        )
        assert changed.status_code == 200, changed.text
        assert changed.json() == {**for_bob, "role": "read"}

        deleted = alice.delete(f"/organization/{org}/prototypes/{for_team['id']}")
        assert deleted.status_code == 204 and deleted.content == b""
        assert [p["id"] for p in prototypes(alice, org)] == [for_bob["id"], for_robot["id"]]
        for response in (
            alice.delete(f"/organization/{org}/prototypes/{for_team['id']}"),
            alice.put(f"/organization/{org}/prototypes/{for_team['id']}", json={"role": "read"}),
            alice.put(f"/organization/{org}/prototypes/not-an-id", json={"role": "read"}),
        ):
            assert response.status_code == 404, response.text
            assert error_type(response) == "not_found"

        # Deleting a team takes its default permissions with it.
        add_prototype(alice, org, "read", "team", "readers")
        assert alice.delete(f"/organization/{org}/team/readers").status_code == 204
        assert [p["id"] for p in prototypes(alice, org)] == [for_bob["id"], for_robot["id"]]

        logs = alice.get(f"/organization/{org}/logs").json()["logs"]
        entries = [entry for entry in logs if "prototype" in entry["kind"]]
        kinds = sorted(entry["kind"] for entry in entries)
        assert kinds == ["create_prototype_permission"] * 4 + [
            "delete_prototype_permission",
            "modify_prototype_permission",
        ]
        modified = next(e for e in entries if e["kind"] == "modify_prototype_permission")
        assert modified["performer"]["name"] == "alice"
        assert {
            key: modified["metadata"][key]
            for key in (
                "prototypeid",
                "role",
                "original_role",
                "delegate_user",
                "activating_username",
            )
        } == {
            "prototypeid": for_bob["id"],
            "role": "read",
            "original_role": "write",
            "delegate_user": "bob",
            "activating_username": None,
        }


def test_bad_input_is_400_and_unknown_things_404(registry: Deployment) -> None:
    with api(registry, "alice") as alice:
        org = create_org(alice)
        other = create_org(alice)
        put_team(alice, org, "devs")
        put_team(alice, other, "strangers")
        foreign_robot = create_robot(registry, other, "bot")
        own_robot = create_robot(registry, org, "bot")
        path = f"/organization/{org}/prototypes"
        bodies: list[Any] = [
            {"role": "owner", "delegate": {"kind": "user", "name": "bob"}},
            {"role": "", "delegate": {"kind": "user", "name": "bob"}},
            {"role": 3, "delegate": {"kind": "user", "name": "bob"}},
            {"role": "read", "delegate": {"kind": "robot", "name": own_robot}},
            {"role": "read", "delegate": {"kind": "user", "name": "no-such-user"}},
            {"role": "read", "delegate": {"kind": "user", "name": foreign_robot}},
            {"role": "read", "delegate": {"kind": "team", "name": "no-such-team"}},
            {"role": "read", "delegate": {"kind": "team", "name": "strangers"}},
            {
                "role": "read",
                "delegate": {"kind": "team", "name": "devs"},
                "activating_user": {"name": foreign_robot},
            },
            {
                "role": "read",
                "delegate": {"kind": "team", "name": "devs"},
                "activating_user": {"name": "no-such-user"},
            },
            {"role": "read", "delegate": {"kind": "team"}},
            {"role": "read"},
            {"delegate": {"kind": "team", "name": "devs"}},
            {"role": "read", "delegate": "devs"},
            [],
        ]
        for body in bodies:
            response = alice.post(path, json=body)
            assert response.status_code == 400, (body, response.text)
            assert error_type(response) == "invalid_request"
        assert alice.post(path, content=b"not json").status_code == 400
        assert prototypes(alice, org) == []

        created = add_prototype(alice, org, "read", "team", "devs")
        one = f"{path}/{created['id']}"
        for body in ({"role": "superuser"}, {}, {"role": None}):
            response = alice.put(one, json=body)
            assert response.status_code == 400, (body, response.text)
        assert prototypes(alice, org) == [created]

        # A prototype belongs to its organization: another one does not know its id.
        assert (
            alice.put(
                f"/organization/{other}/prototypes/{created['id']}", json={"role": "admin"}
            ).status_code
            == 404
        )
        assert (
            alice.delete(
                f"/organization/{other}/prototypes/{created['id']}",
            ).status_code
            == 404
        )
        for unknown in ("no-such-org", "alice"):  # a user's namespace is no organization
            assert alice.get(f"/organization/{unknown}/prototypes").status_code == 404
            response = alice.post(
                f"/organization/{unknown}/prototypes",
                json={"role": "read", "delegate": {"kind": "user", "name": "bob"}},
            )
            assert response.status_code == 404
            assert error_type(response) == "not_found"


def test_only_organization_admins_manage_prototypes(registry: Deployment) -> None:
    with api(registry, "alice") as alice:
        org = create_org(alice)
        put_team(alice, org, "builders", "creator")
        add_member(alice, org, "builders", "bob")
        created = add_prototype(alice, org, "read", "team", "builders")
    path = f"/organization/{org}/prototypes"
    new = {"role": "admin", "delegate": {"kind": "user", "name": "bob"}}
    calls: list[tuple[str, str, Any]] = [
        ("GET", path, None),
        ("POST", path, new),
        ("PUT", f"{path}/{created['id']}", {"role": "admin"}),
        ("DELETE", f"{path}/{created['id']}", None),
    ]
    # bob creates repositories there, carol is an outsider, and alice's token lacks
    # org:admin: all three are refused alike.
    with (
        api(registry, "bob") as bob,
        api(registry, "carol") as carol,
        api(registry, "alice", "user:admin user:read repo:admin repo:create") as scoped,
    ):
        for client in (bob, carol, scoped):
            for method, url, body in calls:
                response = client.request(method, url, json=body)
                assert response.status_code == 403, (method, url, response.text)
                assert error_type(response) == "insufficient_scope"
    with api(registry) as anonymous:
        for method, url, body in calls:
            assert anonymous.request(method, url, json=body).status_code == 401
    with api(registry, "alice", "org:admin") as org_admin:
        assert prototypes(org_admin, org) == [created]
        add_prototype(org_admin, org, "write", "user", "carol")


def test_new_repositories_get_the_default_permissions(registry: Deployment) -> None:
    with api(registry, "alice") as alice:
        org = create_org(alice)
        put_team(alice, org, "builders", "creator")
        put_team(alice, org, "readers")
        add_member(alice, org, "builders", "bob")
        add_member(alice, org, "builders", "carol")
        created = alice.put(f"/organization/{org}/robots/ci")
        assert created.status_code == 201, created.text
        robot, token = f"{org}+ci", created.json()["token"]
        add_member(alice, org, "builders", robot)

        add_prototype(alice, org, "read", "team", "readers")
        # Two rules for one delegate: the stronger role wins for bob's repositories.
        add_prototype(alice, org, "write", "team", "readers", activating="bob")
        add_prototype(alice, org, "read", "user", "carol", activating="bob")
        add_prototype(alice, org, "write", "user", robot)
        # bob already administers what he creates: this only applies to others' repos.
        add_prototype(alice, org, "read", "user", "bob")

        by_bob = unique_repo(org, "by-bob")
        registry.client("bob").push_image(by_bob, "v1")
        assert permissions(alice, by_bob) == (
            {"bob": "admin", "carol": "read", robot: "write"},
            {"readers": "write"},
        )

        # carol is not the activating user of bob's rules.
        by_carol = unique_repo(org, "by-carol")
        registry.client("carol").push_image(by_carol, "v1")
        assert permissions(alice, by_carol) == (
            {"carol": "admin", "bob": "read", robot: "write"},
            {"readers": "read"},
        )

        # A robot of the organization can be the activating user (CI pushes); its own
        # rule merges with the admin role it gets as the creator.
        add_prototype(alice, org, "read", "user", "carol", activating=robot)
        by_robot = unique_repo(org, "by-robot")
        registry.client(robot, token).push_image(by_robot, "v1")
        assert permissions(alice, by_robot) == (
            {robot: "admin", "bob": "read", "carol": "read"},
            {"readers": "read"},
        )

        # The same through POST /api/v1/repository.
        with api(registry, "bob") as bob:
            response = bob.post(
                "/repository",
                json={
                    "namespace": org,
                    "repository": "api-by-bob",
                    "visibility": "private",
                    "description": "",
                },
            )
            assert response.status_code == 201, response.text
        assert permissions(alice, f"{org}/api-by-bob") == (
            {"bob": "admin", "carol": "read", robot: "write"},
            {"readers": "write"},
        )
        # An organization admin gets no row of his own, the rules apply all the same.
        response = alice.post(
            "/repository",
            json={"namespace": org, "repository": "api-by-alice", "visibility": "private"},
        )
        assert response.status_code == 201, response.text
        assert permissions(alice, f"{org}/api-by-alice") == (
            {"bob": "read", robot: "write"},
            {"readers": "read"},
        )

        # The granted roles are real: carol may pull bob's repository but not push.
        carol = registry.client("carol")
        pulled = carol.request("GET", f"/v2/{by_bob}/manifests/v1", repo=by_bob, actions="pull")
        assert pulled.status_code == 200, pulled.text
        refused = carol.request("POST", f"/v2/{by_bob}/blobs/uploads/", repo=by_bob)
        assert refused.status_code in (401, 403)

        # Changing or deleting a rule later leaves existing repositories alone.
        for rule in prototypes(alice, org):
            assert (
                alice.delete(
                    f"/organization/{org}/prototypes/{rule['id']}",
                ).status_code
                == 204
            )
        assert permissions(alice, by_bob) == (
            {"bob": "admin", "carol": "read", robot: "write"},
            {"readers": "write"},
        )
        plain = unique_repo(org, "plain")
        registry.client("bob").push_image(plain, "v1")
        assert permissions(alice, plain) == ({"bob": "admin"}, {})
