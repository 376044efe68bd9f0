"""``/api/v1/organization/{org}/team/...``: teams, their roles and members, and how
team membership decides what ``/v2`` tokens grant."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from functional.conftest import PASSWORDS, Deployment
from functional.test_api_organizations import (
    api,
    create_org,
    create_robot,
    delete_created_organizations,
    error_type,
    granted,
    unique_org,
)

__all__ = ["delete_created_organizations"]  # the autouse cleanup applies here too


def put_team(client: httpx.Client, org: str, team: str, role: str = "member",
             description: str | None = None) -> dict[str, Any]:
    """Create or update a team (which must succeed); returns Quay's team view."""
    body: dict[str, object] = {"role": role}
    if description is not None:
        body["description"] = description
    response = client.put(f"/organization/{org}/team/{team}", json=body)
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()
    return view


def test_teams_are_created_updated_and_deleted(registry: Deployment) -> None:
    with api(registry, "alice") as alice:
        org = create_org(alice)
        created = put_team(alice, org, "readers", "member", "Read only")
        assert created == {"name": "readers", "description": "Read only", "can_view": True,
                           "role": "member", "avatar": created["avatar"], "new_team": True}
        put_team(alice, org, "builders", "creator")
        put_team(alice, org, "admins", "admin")
        changed = put_team(alice, org, "readers", "creator", "Builds too")
        assert changed["new_team"] is False and changed["role"] == "creator"
        assert changed["description"] == "Builds too"
        teams = alice.get(f"/organization/{org}").json()["teams"]
        assert {name: t["role"] for name, t in teams.items()} == {
            "owners": "admin", "readers": "creator", "builders": "creator", "admins": "admin"}
        assert alice.delete(f"/organization/{org}/team/builders").status_code == 204
        assert alice.delete(f"/organization/{org}/team/builders").status_code == 404
        assert "builders" not in alice.get(f"/organization/{org}").json()["teams"]


def test_bad_team_input_is_400_and_unknown_things_404(registry: Deployment) -> None:
    with api(registry, "alice") as alice:
        org = create_org(alice)
        for role in ("owner", "ADMIN", ""):
            response = alice.put(f"/organization/{org}/team/devs", json={"role": role})
            assert response.status_code == 400, role
            assert error_type(response) == "invalid_request"
        assert alice.put(f"/organization/{org}/team/devs", json={}).status_code == 400
        for name in ("Devs", "a", "dev--", "_dev"):
            response = alice.put(f"/organization/{org}/team/{name}", json={"role": "member"})
            assert response.status_code == 400, name
        assert alice.put("/organization/no-such-org/team/devs",
                         json={"role": "member"}).status_code == 404
        put_team(alice, org, "devs")
        for method, path in (("GET", "nope/members"), ("DELETE", "nope"),
                             ("PUT", "nope/members/bob"), ("DELETE", "nope/members/bob"),
                             ("DELETE", "devs/members/no-such-user"),
                             ("DELETE", "devs/members/bob")):  # bob is not in devs
            response = alice.request(method, f"/organization/{org}/team/{path}")
            assert response.status_code == 404, (method, path, response.text)
        unknown = alice.put(f"/organization/{org}/team/devs/members/no-such-user")
        assert unknown.status_code == 400  # Quay: "Unknown user"


def test_only_admins_change_teams(registry: Deployment) -> None:
    with api(registry, "alice") as alice, api(registry, "bob") as bob, \
            api(registry) as anonymous:
        org = create_org(alice)
        put_team(alice, org, "devs", "creator")
        assert alice.put(f"/organization/{org}/team/devs/members/bob").status_code == 200
        # bob is a creator: he belongs to the organization but does not administer it.
        for method, path in (("PUT", "devs"), ("PUT", "other"), ("DELETE", "devs"),
                             ("PUT", "devs/members/carol"), ("DELETE", "devs/members/bob")):
            response = bob.request(method, f"/organization/{org}/team/{path}",
                                   json={"role": "admin"} if method == "PUT" else None)
            assert response.status_code == 403, (method, path)
        assert anonymous.put(f"/organization/{org}/team/devs",
                             json={"role": "admin"}).status_code == 401
        # Team members may list their own team, but cannot edit it.
        listed = bob.get(f"/organization/{org}/team/devs/members").json()
        assert listed["can_edit"] is False
        assert [m["name"] for m in listed["members"]] == ["bob"]
        assert bob.get(f"/organization/{org}/team/owners/members").status_code == 403


def test_tokens_need_org_admin_to_change_teams(registry: Deployment) -> None:
    with api(registry, "alice") as alice:
        org = create_org(alice)
    with api(registry, "alice", "user:admin user:read repo:admin repo:create") as no_org:
        response = no_org.put(f"/organization/{org}/team/devs", json={"role": "member"})
        assert response.status_code == 403
        assert error_type(response) == "insufficient_scope"
        assert no_org.get(f"/organization/{org}").status_code == 200  # user:read views
    with api(registry, "alice", "org:admin") as org_admin:
        put_team(org_admin, org, "devs")


def test_team_roles_decide_what_registry_tokens_grant(registry: Deployment) -> None:
    with api(registry, "alice") as alice:
        org = create_org(alice)
        put_team(alice, org, "builders", "creator")
        put_team(alice, org, "readers", "member")
        put_team(alice, org, "admins", "admin")
        assert alice.put(f"/organization/{org}/team/builders/members/bob").status_code == 200
        assert alice.put(f"/organization/{org}/team/readers/members/carol").status_code == 200
        # A creator creates repositories by pushing, and administers what he created.
        bob_repo = f"{org}/by-bob"
        registry.client("bob").push_image(bob_repo, "v1")
        assert granted(registry, "bob", PASSWORDS["bob"], bob_repo) == ["pull", "push"]
        # A plain member can neither create repositories nor touch private ones.
        carol = registry.client("carol")
        assert granted(registry, "carol", PASSWORDS["carol"], f"{org}/by-carol") == []
        refused = carol.request("POST", f"/v2/{org}/by-carol/blobs/uploads/",
                                repo=f"{org}/by-carol")
        assert refused.status_code in (401, 403)
        assert granted(registry, "carol", PASSWORDS["carol"], bob_repo) == []
        # An admin team member may pull and push every repository of the organization.
        assert alice.put(f"/organization/{org}/team/admins/members/carol").status_code == 200
        assert granted(registry, "carol", PASSWORDS["carol"], bob_repo) == ["pull", "push"]
        carol.push_image(bob_repo, "from-carol")
        # Removal takes effect on the very next token.
        removed = alice.delete(f"/organization/{org}/team/admins/members/carol")
        assert removed.status_code == 204 and removed.content == b""
        assert granted(registry, "carol", PASSWORDS["carol"], bob_repo) == []
        # Changing a team's role changes what its members get, too.
        put_team(alice, org, "readers", "admin")
        assert granted(registry, "carol", PASSWORDS["carol"], bob_repo) == ["pull", "push"]


def test_robots_of_the_organization_can_join_its_teams(registry: Deployment) -> None:
    with api(registry, "alice") as alice:
        org = create_org(alice)
        other = create_org(alice, unique_org("other"))
        put_team(alice, org, "deployers")
        robot = create_robot(registry, org, "deployer")
        foreign = create_robot(registry, other, "intruder")
        added = alice.put(f"/organization/{org}/team/deployers/members/{robot}")
        assert added.status_code == 200, added.text
        assert added.json() == {"name": robot, "kind": "user", "is_robot": True,
                                "avatar": added.json()["avatar"], "invited": False}
        again = alice.put(f"/organization/{org}/team/deployers/members/{robot}")
        assert again.status_code == 200  # adding twice is harmless
        refused = alice.put(f"/organization/{org}/team/deployers/members/{foreign}")
        assert refused.status_code == 400
        assert "not a member of the organization" in refused.json()["error_message"]
        members = alice.get(f"/organization/{org}/team/deployers/members").json()["members"]
        assert [(m["name"], m["is_robot"]) for m in members] == [(robot, True)]
        # Quay lists only people as organization members.
        people = alice.get(f"/organization/{org}/members").json()["members"]
        assert [m["name"] for m in people] == ["alice"]
        org_view = alice.get(f"/organization/{org}").json()
        assert org_view["teams"]["deployers"]["member_count"] == 1
        removed = alice.delete(f"/organization/{org}/team/deployers/members/{robot}")
        assert removed.status_code == 204


def test_an_organization_keeps_an_administrator(registry: Deployment) -> None:
    with api(registry, "alice") as alice, api(registry, "bob") as bob:
        org = create_org(alice)
        for method, path, body in (("DELETE", "owners", None),
                                   ("DELETE", "owners/members/alice", None),
                                   ("PUT", "owners", {"role": "creator"})):
            response = alice.request(method, f"/organization/{org}/team/{path}", json=body)
            assert response.status_code == 400, (method, path, response.text)
            assert error_type(response) == "invalid_request"
        # A robot in the admin team does not count as an administrator.
        robot = create_robot(registry, org, "ci")
        assert alice.put(f"/organization/{org}/team/owners/members/{robot}").status_code == 200
        assert alice.delete(
            f"/organization/{org}/team/owners/members/alice").status_code == 400
        # With a second admin team holding bob, alice may leave owners, and bob may
        # downgrade owners; the last admin team itself still cannot go.
        put_team(alice, org, "admins", "admin")
        assert alice.put(f"/organization/{org}/team/admins/members/bob").status_code == 200
        assert alice.delete(
            f"/organization/{org}/team/owners/members/alice").status_code == 204
        assert alice.get(f"/organization/{org}/members").status_code == 403  # not admin now
        assert bob.put(f"/organization/{org}/team/owners",
                       json={"role": "member"}).status_code == 200
        assert bob.delete(f"/organization/{org}/team/admins").status_code == 400
        assert bob.delete(f"/organization/{org}/team/owners").status_code == 204
        teams = bob.get(f"/organization/{org}").json()["ordered_teams"]
        assert teams == ["admins"]


def test_admins_removing_each_other_at_once_leave_one(registry: Deployment) -> None:
    with api(registry, "alice") as alice, api(registry, "bob") as bob:
        org = create_org(alice)
        put_team(alice, org, "admins", "admin")
        assert alice.put(f"/organization/{org}/team/admins/members/bob").status_code == 200

        def remove(pair: tuple[httpx.Client, str]) -> int:
            client, path = pair
            return client.delete(f"/organization/{org}/team/{path}").status_code

        # alice removes bob from admins while bob removes alice from owners.
        with ThreadPoolExecutor(2) as pool:
            statuses = list(pool.map(remove, [(alice, "admins/members/bob"),
                                              (bob, "owners/members/alice")]))
        # Serialised: whoever goes second is no longer an administrator.
        assert sorted(statuses) == [204, 403]
        survivor = alice if statuses[0] == 204 else bob
        admins = [m["name"] for t in ("owners", "admins") for m in
                  survivor.get(f"/organization/{org}/team/{t}/members").json()["members"]]
        assert len(admins) == 1
