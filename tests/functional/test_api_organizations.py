"""``/api/v1/organization/...``: creating, showing, changing and deleting organizations,
and who may do it. The helpers here are shared with ``test_api_teams``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select

from functional.conftest import Deployment
from functional.test_api_auth import make_token, signed_in
from portside.db.engine import Database, create_db_engine
from portside.db.models import Namespace, Repository, RepositoryPermission, Team, User
from portside.services.users import UserService

#: Every scope a signed-in person has: tokens with these act like a session.
ALL_SCOPES = "repo:read repo:write repo:admin repo:create user:read user:admin org:admin"


def unique_org(hint: str = "org") -> str:
    """An organization name no other test uses."""
    return f"{hint}-{uuid.uuid4().hex[:10]}"


def api(deployment: Deployment, username: str | None = None,
        scopes: str = ALL_SCOPES) -> httpx.Client:
    """An ``/api/v1`` client with a bearer token of ``username`` (anonymous: ``None``)."""
    headers = {}
    if username is not None:
        headers["Authorization"] = f"Bearer {make_token(deployment, username, scopes)}"
    return httpx.Client(base_url=f"{deployment.url}/api/v1", headers=headers)


#: Organizations created by the current test, deleted when it ends: the servers are
#: shared, and team memberships left behind would show up in other tests' catalogs.
CREATED: set[str] = set()
_CLEANERS: dict[str, str] = {}


@pytest.fixture(autouse=True)
def delete_created_organizations(registry: Deployment) -> Iterator[None]:
    """Delete (as a superuser) every organization the test created."""
    yield
    if not CREATED:
        return
    cleaner = _CLEANERS.get(registry.url) or create_superuser(registry)
    _CLEANERS[registry.url] = cleaner
    with api(registry, cleaner, "super:user org:admin") as superuser:
        for name in sorted(CREATED):
            assert superuser.delete(f"/organization/{name}").status_code in (204, 404)
    CREATED.clear()


def create_org(client: httpx.Client, name: str | None = None) -> str:
    """Create an organization (which must succeed) and return its name."""
    name = name or unique_org()
    CREATED.add(name)
    response = client.post("/organization/", json={"name": name, "email": f"{name}@x.io"})
    assert response.status_code == 201, response.text
    assert response.json() == "Created"
    return name


def error_type(response: httpx.Response) -> str:
    """The ``error_type`` of a Quay error body."""
    return str(response.json()["error_type"])


def granted(deployment: Deployment, username: str, password: str, repo: str,
            actions: str = "pull,push") -> list[str]:
    """The actions a fresh ``/v2/auth`` token grants ``username`` on ``repo``."""
    response = httpx.get(f"{deployment.url}/v2/auth",
                         params={"scope": f"repository:{repo}:{actions}"},
                         auth=(username, password))
    assert response.status_code == 200, response.text
    claims = jwt.decode(response.json()["token"], options={"verify_signature": False})
    return sorted(a for entry in claims["access"] for a in entry["actions"])


def in_db(deployment: Deployment) -> Database:
    """The deployment's database, for setting up what the API cannot (yet) create."""
    return Database(create_db_engine(deployment.registry.config["DB_URI"]))


def create_superuser(deployment: Deployment) -> str:
    """A new superuser; returns its name."""
    name = f"root-{uuid.uuid4().hex[:8]}"
    db = in_db(deployment)
    try:
        UserService(db, []).create_user(name, "superuser-secret-pw", superuser=True)
    finally:
        db.dispose()
    return name


def create_robot(deployment: Deployment, owner: str, short: str) -> str:
    """A robot account row ``owner+short`` (as the robots API stores them)."""
    db = in_db(deployment)
    try:
        with db.session() as session:
            owner_id = session.scalar(select(Namespace.id).where(Namespace.name == owner))
            session.add(User(username=f"{owner}+{short}", robot_owner_id=owner_id))
    finally:
        db.dispose()
    return f"{owner}+{short}"


def test_creator_administers_the_new_organization_through_owners(
        registry: Deployment) -> None:
    client, csrf = signed_in(registry, "alice")
    with closing(client):
        name = unique_org()
        CREATED.add(name)
        response = client.post("/api/v1/organization/", json={"name": name},
                               headers={"X-CSRF-Token": csrf})
        assert response.status_code == 201, response.text
        org: dict[str, Any] = client.get(f"/api/v1/organization/{name}").json()
    assert org["name"] == name
    assert org["is_admin"] is True and org["is_member"] is True
    assert org["ordered_teams"] == ["owners"]
    owners = org["teams"]["owners"]
    assert owners["role"] == "admin" and owners["member_count"] == 1
    assert owners["can_view"] is True and owners["is_synced"] is False
    assert owners["avatar"]["kind"] == "team"
    assert org["avatar"]["name"] == name and "tag_expiration_s" in org
    with api(registry, "alice") as alice:
        members = alice.get(f"/organization/{name}/members").json()["members"]
        team = alice.get(f"/organization/{name}/team/owners/members").json()
    assert [(m["name"], m["kind"], [t["name"] for t in m["teams"]]) for m in members] == [
        ("alice", "user", ["owners"])]
    assert team["name"] == "owners" and team["can_edit"] is True
    assert [(m["name"], m["is_robot"], m["invited"]) for m in team["members"]] == [
        ("alice", False, False)]


def test_session_writes_need_the_csrf_token(registry: Deployment) -> None:
    client, _csrf = signed_in(registry, "alice")
    with closing(client):
        response = client.post("/api/v1/organization/", json={"name": unique_org()})
    assert response.status_code == 403


def test_bad_or_taken_names_are_refused(registry: Deployment) -> None:
    with api(registry, "alice") as alice:
        taken = create_org(alice)
        for name in ("Upper", "a", "-dash", "dot.", "has space", "x" * 256, "alice", taken,
                     "robot+name"):
            response = alice.post("/organization/", json={"name": name})
            assert response.status_code == 400, (name, response.text)
            assert error_type(response) == "invalid_request"
        assert alice.post("/organization/", json={"email": "x@y.z"}).status_code == 400
        assert alice.post("/organization/", content=b"not json").status_code == 400


def test_creating_needs_a_user_with_user_admin(registry: Deployment) -> None:
    with api(registry) as anonymous:
        assert anonymous.post("/organization/", json={"name": unique_org()}).status_code == 401
    with api(registry, "alice", "org:admin repo:create") as limited:
        response = limited.post("/organization/", json={"name": unique_org()})
        assert response.status_code == 403
        assert error_type(response) == "insufficient_scope"
    with api(registry, "alice", "user:admin") as enough:
        create_org(enough)


def test_outsiders_get_403_and_unknown_organizations_404(registry: Deployment) -> None:
    with api(registry, "alice") as alice, api(registry, "bob") as bob, \
            api(registry) as anonymous:
        name = create_org(alice)
        path = f"/organization/{name}"
        assert anonymous.put(path, json={}).status_code == 401
        for method, url, body in (("PUT", path, {}), ("PUT", path, {"tag_expiration_s": 60}),
                                  ("DELETE", path, None), ("GET", f"{path}/members", None)):
            response = bob.request(method, url, json=body)
            assert response.status_code == 403, (method, url, response.text)
            assert error_type(response) == "insufficient_scope"
        for url in ("/organization/no-such-org", "/organization/alice",
                    "/organization/no-such-org/members"):
            response = alice.get(url)
            assert response.status_code == 404, url
            assert error_type(response) == "not_found"
        assert alice.delete("/organization/no-such-org").status_code == 404
        assert alice.get(path).status_code == 200  # nothing above changed it


def test_members_see_teams_but_not_admin_fields(registry: Deployment) -> None:
    with api(registry, "alice") as alice, api(registry, "bob") as bob:
        name = create_org(alice)
        assert alice.put(f"/organization/{name}/team/devs",
                         json={"role": "member"}).status_code == 200
        assert alice.put(f"/organization/{name}/team/devs/members/bob").status_code == 200
        org = bob.get(f"/organization/{name}").json()
    assert org["is_admin"] is False and org["is_member"] is True
    assert org["email"] == "" and "tag_expiration_s" not in org
    assert org["ordered_teams"] == ["owners", "devs"]
    assert org["teams"]["devs"]["can_view"] is True
    assert org["teams"]["owners"]["can_view"] is False


def test_update_validates_and_only_admins_may(registry: Deployment) -> None:
    with api(registry, "alice") as alice:
        name = create_org(alice)
        response = alice.put(f"/organization/{name}",
                             json={"email": f"new-{name}@x.io", "invoice_email": True})
        assert response.status_code == 200, response.text
        assert response.json()["email"] == f"new-{name}@x.io"
        assert response.json()["name"] == name and response.json()["is_admin"] is True
        bad = alice.put(f"/organization/{name}", json={"tag_expiration_s": -1})
        assert bad.status_code == 400
        # Only the windows of TAG_EXPIRATION_OPTIONS may be chosen.
        unsupported = alice.put(f"/organization/{name}", json={"tag_expiration_s": 3600})
        assert unsupported.status_code == 400
        assert "tag expiration option" in unsupported.json()["error_message"]
    with api(registry, "alice", "user:read") as reader:
        assert reader.get(f"/organization/{name}").status_code == 200
        assert reader.put(f"/organization/{name}", json={}).status_code == 403


def test_delete_removes_the_organization_and_its_repositories(registry: Deployment) -> None:
    with api(registry, "alice") as alice, api(registry, "bob") as bob:
        name = create_org(alice)
        repo = f"{name}/app"
        registry.client("alice").push_image(repo, "v1")
        robot = create_robot(registry, name, "ci")
        assert alice.put(f"/organization/{name}/team/owners/members/{robot}").status_code == 200
        assert granted(registry, "alice", "alice-secret-pw", repo) == ["pull", "push"]
        assert bob.delete(f"/organization/{name}").status_code == 403
        response = alice.delete(f"/organization/{name}")
        assert response.status_code == 204 and response.content == b""
        assert alice.get(f"/organization/{name}").status_code == 404
        assert alice.delete(f"/organization/{name}").status_code == 404
        assert granted(registry, "alice", "alice-secret-pw", repo) == []
        # The name is free again, and the new organization starts empty.
        create_org(alice, name)
        org = alice.get(f"/organization/{name}").json()
        assert org["ordered_teams"] == ["owners"] and org["teams"]["owners"]["member_count"] == 1
        pulled = registry.client("alice").request("GET", f"/v2/{repo}/manifests/v1",
                                                  repo=repo, actions="pull")
        assert pulled.status_code == 404
        create_robot(registry, name, "ci")  # the old robot went with the old organization


def test_superusers_administer_any_organization(registry: Deployment) -> None:
    root = create_superuser(registry)
    with api(registry, "alice") as alice:
        name = create_org(alice)
    with api(registry, root, "super:user org:admin") as superuser:
        org = superuser.get(f"/organization/{name}").json()
        assert org["is_admin"] is True and org["is_member"] is False
        assert superuser.put(f"/organization/{name}/team/ops",
                             json={"role": "creator"}).status_code == 200
        assert superuser.get(f"/organization/{name}/members").status_code == 200
    # Without super:user the token is that of an ordinary outsider.
    with api(registry, root, "org:admin") as plain:
        assert plain.get(f"/organization/{name}").json()["is_admin"] is False
        assert plain.put(f"/organization/{name}", json={}).status_code == 403
    # Superuser powers still need org:admin for administration.
    with api(registry, root, "super:user user:read") as no_admin:
        assert no_admin.put(f"/organization/{name}/team/ops2",
                            json={"role": "member"}).status_code == 403


def test_concurrent_creations_of_one_name_make_one_organization(
        registry: Deployment) -> None:
    name = unique_org("race")
    CREATED.add(name)
    token = make_token(registry, "alice", ALL_SCOPES)

    def attempt(_: int) -> int:
        response = httpx.post(f"{registry.url}/api/v1/organization/", json={"name": name},
                              headers={"Authorization": f"Bearer {token}"})
        return response.status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = sorted(pool.map(attempt, range(6)))
    assert statuses == [201, 400, 400, 400, 400, 400]
    with api(registry, "alice") as alice:
        assert alice.get(f"/organization/{name}").json()["teams"]["owners"][
            "member_count"] == 1


def test_views_count_repository_grants(registry: Deployment) -> None:
    with api(registry, "alice") as alice:
        name = create_org(alice)
        assert alice.put(f"/organization/{name}/team/devs",
                         json={"role": "member"}).status_code == 200
        assert alice.put(f"/organization/{name}/team/devs/members/bob").status_code == 200
        registry.client("alice").push_image(f"{name}/app", "v1")
        db = in_db(registry)
        try:
            with db.session() as session:
                repo_id = session.scalar(select(Repository.id).join(
                    Namespace, Namespace.id == Repository.namespace_id).where(
                        Namespace.name == name, Repository.name == "app"))
                team_id = session.scalar(select(Team.id).join(
                    Namespace, Namespace.id == Team.namespace_id).where(
                        Namespace.name == name, Team.name == "devs"))
                bob_id = session.scalar(select(User.id).where(User.username == "bob"))
                session.add(RepositoryPermission(repository_id=repo_id, team_id=team_id,
                                                 role="read"))
                session.add(RepositoryPermission(repository_id=repo_id, user_id=bob_id,
                                                 role="write"))
        finally:
            db.dispose()
        teams = alice.get(f"/organization/{name}").json()["teams"]
        assert (teams["devs"]["repo_count"], teams["owners"]["repo_count"]) == (1, 0)
        members = alice.get(f"/organization/{name}/members").json()["members"]
        assert {m["name"]: m["repositories"] for m in members} == {
            "alice": [], "bob": ["app"]}


def test_outsiders_and_anonymous_callers_get_the_reduced_view(registry: Deployment) -> None:
    with api(registry, "alice") as alice, api(registry, "bob") as bob, \
            api(registry) as anonymous, api(registry, "alice", "repo:read") as unscoped:
        name = create_org(alice)
        for client in (bob, anonymous, unscoped):
            response = client.get(f"/organization/{name}")
            assert response.status_code == 200, response.text
            view = response.json()
            assert view == {"name": name, "email": "", "avatar": view["avatar"],
                            "is_admin": False, "is_member": False}
            assert view["avatar"]["name"] == name
            assert client.get("/organization/no-such-org").status_code == 404
        full = alice.get(f"/organization/{name}").json()
        assert full["email"] == f"{name}@x.io" and full["ordered_teams"] == ["owners"]
        assert full["tag_expiration_s"] == 14 * 24 * 3600


def test_organization_email_is_stored_validated_and_unique(registry: Deployment) -> None:
    with api(registry, "alice") as alice:
        name = create_org(alice)
        other = unique_org()
        CREATED.add(other)
        for email in ("not-an-email", "a@b", "two@@x.io", "sp ace@x.io", "x" * 251 + "@x.io"):
            response = alice.post("/organization/", json={"name": other, "email": email})
            assert response.status_code == 400, (email, response.text)
            assert alice.put(f"/organization/{name}", json={"email": email}).status_code == 400
        # Taken by another organization (in any case) or by a user.
        taken = alice.post("/organization/", json={"name": other,
                                                   "email": f"{name.upper()}@X.IO"})
        assert taken.status_code == 400 and "already used" in taken.json()["error_message"]
        db = in_db(registry)
        try:
            with db.session() as session:
                bob = session.scalar(select(User).where(User.username == "bob"))
                assert bob is not None
                bob.email = f"bob-{name}@x.io"
        finally:
            db.dispose()
        try:
            assert alice.put(f"/organization/{name}", json={"email": f"bob-{name}@x.io"}
                             ).status_code == 400
        finally:
            db = in_db(registry)
            try:
                with db.session() as session:
                    bob = session.scalar(select(User).where(User.username == "bob"))
                    assert bob is not None
                    bob.email = None
            finally:
                db.dispose()
        # Without an e-mail, and changing it later: administrators see it.
        assert alice.post("/organization/", json={"name": other}).status_code == 201
        assert alice.get(f"/organization/{other}").json()["email"] is None
        changed = alice.put(f"/organization/{other}", json={"email": f"{other}@x.io"})
        assert changed.status_code == 200 and changed.json()["email"] == f"{other}@x.io"
        # Keeping its own address is not a conflict.
        assert alice.put(f"/organization/{other}", json={"email": f"{other}@x.io"}
                         ).status_code == 200
        logs = alice.get(f"/organization/{other}/logs").json()["logs"]
        assert [e["metadata"]["email"] for e in logs if e["kind"] == "org_change_email"] == [
            f"{other}@x.io"]
