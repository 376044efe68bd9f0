"""``/api/v1/repository/{repository}/permissions/{user,team}/``: granting, changing and
revoking roles of users, robots and teams, and the registry honouring them at once.

carol is left alone: the catalog test expects her to see exactly her own repositories.
"""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import select

from functional.client import OCI_MANIFEST, RegistryClient
from functional.conftest import Deployment
from functional.test_api_auth import make_token
from functional.test_api_repositories import api, create, short
from functional.test_auth import access
from portside.db.engine import Database, create_db_engine
from portside.db.models import Namespace, Team, TeamMember, User
from portside.services.repositories import create_organization


def granted(client: RegistryClient, repo: str) -> list[str]:
    """The actions a fresh ``/v2/auth`` token grants ``client`` on ``repo``."""
    client.forget_tokens()
    return sorted(access(client.token(f"repository:{repo}:pull,push")).get(repo, []))


def add_robot(deployment: Deployment, owner: str) -> str:
    """Store a robot of ``owner``'s namespace (the robots API belongs elsewhere)."""
    name = f"{owner}+bot{uuid.uuid4().hex[:8]}"
    db = Database(create_db_engine(deployment.registry.config["DB_URI"]))
    try:
        with db.session() as session:
            owner_id = session.scalar(select(Namespace.id).where(Namespace.name == owner))
            session.add(User(username=name, robot_owner_id=owner_id))
    finally:
        db.dispose()
    return name


def add_organization(deployment: Deployment, admin: str,
                     teams: dict[str, tuple[str, list[str]]]) -> str:
    """Store an organization administered by ``admin`` with ``teams`` (name -> role,
    members), directly in the database (the organizations API belongs elsewhere)."""
    name = f"org{uuid.uuid4().hex[:10]}"
    db = Database(create_db_engine(deployment.registry.config["DB_URI"]))
    try:
        with db.session() as session:
            users = {username: user_id for username, user_id
                     in session.execute(select(User.username, User.id))}
            org = create_organization(session, name, users[admin])
            for team_name, (role, members) in teams.items():
                team = Team(namespace_id=org.id, name=team_name, role=role)
                session.add(team)
                session.flush()
                session.add_all(TeamMember(team_id=team.id, user_id=users[m])
                                for m in members)
    finally:
        db.dispose()
    return name


def private_repo(deployment: Deployment, alice: httpx.Client) -> str:
    """A private repository of alice with a ``v1`` tag."""
    name = short("perm")
    assert create(alice, name).status_code == 201
    deployment.client("alice").push_image(f"alice/{name}", "v1")
    return f"alice/{name}"


def test_read_write_admin_and_revoke(registry: Deployment) -> None:
    bob_registry = registry.client("bob")
    with api(registry, "alice") as alice, api(registry, "bob") as bob:
        repo = private_repo(registry, alice)
        users = f"/repository/{repo}/permissions/user/"
        assert granted(bob_registry, repo) == []
        assert alice.get(users).json() == {"permissions": {}}

        # read: bob pulls but cannot push, nor manage permissions.
        put = alice.put(f"{users}bob", json={"role": "read"})
        assert put.status_code == 200, put.text
        assert put.json() == {"role": "read", "name": "bob", "is_robot": False,
                              "avatar": put.json()["avatar"], "is_org_member": False}
        assert put.json()["avatar"]["kind"] == "user"
        assert granted(bob_registry, repo) == ["pull"]
        pulled = bob_registry.request("GET", f"/v2/{repo}/manifests/v1", repo=repo,
                                      actions="pull", headers={"Accept": OCI_MANIFEST})
        assert pulled.status_code == 200
        view = bob.get(f"/repository/{repo}").json()
        assert view["can_write"] is False and view["can_admin"] is False
        assert bob.get(users).status_code == 403
        assert bob.put(f"{users}bob", json={"role": "admin"}).status_code == 403

        # write: bob pushes.
        assert alice.put(f"{users}bob", json={"role": "write"}).json()["role"] == "write"
        assert granted(bob_registry, repo) == ["pull", "push"]
        bob_registry.forget_tokens()
        bob_registry.push_image(repo, "from-bob")
        assert "from-bob" in alice.get(f"/repository/{repo}").json()["tags"]

        # admin: bob manages permissions himself.
        assert alice.put(f"{users}bob", json={"role": "admin"}).status_code == 200
        listed = bob.get(users)
        assert listed.status_code == 200
        assert {n: p["role"] for n, p in listed.json()["permissions"].items()} == {
            "bob": "admin"}
        assert bob.get(f"{users}bob").json()["role"] == "admin"
        assert bob.get(f"/repository/{repo}").json()["can_admin"] is True

        # Revoking takes effect on the next token.
        assert alice.delete(f"{users}bob").status_code == 204
        assert granted(bob_registry, repo) == []
        assert alice.get(f"{users}bob").status_code == 404
        assert alice.delete(f"{users}bob").status_code == 400
        assert bob.get(users).status_code == 403


def test_bad_permission_requests(registry: Deployment) -> None:
    with api(registry, "alice") as alice, api(registry, None) as anonymous:
        repo = private_repo(registry, alice)
        users = f"/repository/{repo}/permissions/user/"
        assert alice.put(f"{users}bob", json={"role": "owner"}).status_code == 400
        assert alice.put(f"{users}bob", json={}).status_code == 400
        unknown = alice.put(f"{users}nobody{uuid.uuid4().hex[:6]}", json={"role": "read"})
        assert unknown.status_code == 400
        assert unknown.json()["error_type"] == "invalid_request"
        assert alice.get(f"{users}nobody-at-all").status_code == 404
        assert alice.get(f"/repository/alice/{short('none')}/permissions/user/"
                         ).status_code == 404
        assert anonymous.get(users).status_code == 401
        assert anonymous.put(f"{users}bob", json={"role": "read"}).status_code == 401
        # Teams exist only in organizations.
        teams = f"/repository/{repo}/permissions/team/"
        assert alice.get(teams).json() == {"permissions": {}}
        assert alice.put(f"{teams}owners", json={"role": "read"}).status_code == 400


def test_token_scopes_limit_permission_management(registry: Deployment) -> None:
    with api(registry, "alice") as alice, \
            api(registry, "alice", "repo:read repo:write") as writer:
        repo = private_repo(registry, alice)
        users = f"/repository/{repo}/permissions/user/"
        reader_token = make_token(registry, "alice", "repo:read")
        headers = {"Authorization": f"Bearer {reader_token}"}
        with httpx.Client(base_url=f"{registry.url}/api/v1", headers=headers) as reader:
            assert reader.get(f"/repository/{repo}").status_code == 200
            refused = reader.put(f"{users}bob", json={"role": "read"})
            assert refused.status_code == 403
            assert refused.json()["error_type"] == "insufficient_scope"
            assert reader.get(users).status_code == 403
        assert writer.put(f"{users}bob", json={"role": "read"}).status_code == 403
        assert alice.get(users).json() == {"permissions": {}}


def test_robot_permissions(registry: Deployment) -> None:
    robot = add_robot(registry, "alice")
    foreign = add_robot(registry, "bob")
    with api(registry, "alice") as alice:
        repo = private_repo(registry, alice)
        users = f"/repository/{repo}/permissions/user/"
        put = alice.put(f"{users}{robot}", json={"role": "write"})
        assert put.status_code == 200, put.text
        assert put.json()["is_robot"] is True and put.json()["is_org_member"] is True
        assert put.json()["avatar"]["kind"] == "robot"
        assert alice.get(users).json()["permissions"][robot]["role"] == "write"
        # A robot acts only in the namespace that owns it.
        assert alice.put(f"{users}{foreign}", json={"role": "read"}).status_code == 400
        assert alice.delete(f"{users}{robot}").status_code == 204


def test_team_permissions_in_an_organization(registry: Deployment) -> None:
    org = add_organization(registry, "alice", {"readers": ("member", ["bob"])})
    bob_registry = registry.client("bob")
    with api(registry, "alice") as alice, api(registry, "bob") as bob:
        name = short("orgrepo")
        assert create(alice, name, namespace=org).status_code == 201
        repo = f"{org}/{name}"
        assert alice.get(f"/repository/{repo}").json()["is_organization"] is True
        assert bob.get(f"/repository/{repo}").status_code == 403
        # Members of the organization cannot create repositories in it.
        assert create(bob, short("no"), namespace=org).status_code == 403

        teams = f"/repository/{repo}/permissions/team/"
        put = alice.put(f"{teams}readers", json={"role": "read"})
        assert put.status_code == 200, put.text
        assert put.json()["name"] == "readers" and put.json()["role"] == "read"
        assert put.json()["avatar"]["kind"] == "team"
        assert alice.get(teams).json()["permissions"]["readers"]["role"] == "read"
        assert alice.get(f"{teams}readers").json()["role"] == "read"
        assert granted(bob_registry, repo) == ["pull"]
        assert bob.get(f"/repository/{repo}").status_code == 200

        assert alice.put(f"{teams}nosuchteam", json={"role": "read"}).status_code == 400
        assert alice.get(f"{teams}owners").status_code == 404
        assert alice.put(f"{teams}readers", json={"role": "boss"}).status_code == 400
        assert alice.delete(f"{teams}readers").status_code == 204
        assert alice.delete(f"{teams}readers").status_code == 400
        assert granted(bob_registry, repo) == []


def test_creators_administer_what_they_create(registry: Deployment) -> None:
    org = add_organization(registry, "alice", {"builders": ("creator", ["bob"])})
    with api(registry, "bob") as bob:
        name = short("built")
        created = create(bob, name, namespace=org)
        assert created.status_code == 201, created.text
        repo = f"{org}/{name}"
        assert bob.get(f"/repository/{repo}").json()["can_admin"] is True
        permissions = bob.get(f"/repository/{repo}/permissions/user/").json()["permissions"]
        assert permissions["bob"]["role"] == "admin"
        assert permissions["bob"]["is_org_member"] is True
        listed = bob.get("/repository", params={"namespace": org}).json()["repositories"]
        assert [r["name"] for r in listed] == [name]
        assert bob.delete(f"/repository/{repo}").status_code == 204
