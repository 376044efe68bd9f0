"""Robot accounts: the ``/api/v1`` endpoints of users and organizations, and robots
logging in to the registry with their tokens."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from functional.client import error_codes
from functional.conftest import PASSWORDS, Deployment, unique_repo
from functional.test_api_auth import make_token
from portside.db.engine import Database, create_db_engine
from portside.db.models import Namespace, Repository, RepositoryPermission, Team, TeamMember, User
from portside.services.repositories import create_organization

ALL_SCOPES = "repo:read repo:write repo:admin repo:create user:read user:admin org:admin"
QUAY_ERROR_KEYS = {"status", "error_message", "title", "error_type", "detail", "type"}


@contextmanager
def server_db(deployment: Deployment) -> Iterator[Session]:
    """A session on the server's database (one transaction, committed on exit)."""
    db = Database(create_db_engine(deployment.registry.config["DB_URI"]))
    try:
        with db.session() as session:
            yield session
    finally:
        db.dispose()


def api(deployment: Deployment, username: str | None,
        scopes: str = ALL_SCOPES) -> httpx.Client:
    """An API client with a bearer token of ``username`` (anonymous if ``None``)."""
    headers = {}
    if username is not None:
        headers["Authorization"] = f"Bearer {make_token(deployment, username, scopes)}"
    return httpx.Client(base_url=f"{deployment.url}/api/v1", headers=headers)


def new_org(deployment: Deployment, admin: str = "alice") -> str:
    """An organization administered by ``admin`` (through its ``owners`` team)."""
    name = f"org{uuid.uuid4().hex[:10]}"
    with server_db(deployment) as session:
        admin_id = session.scalar(select(User.id).where(User.username == admin))
        create_organization(session, name, admin_id)
    return name


def grant(deployment: Deployment, username: str, repository: str, role: str) -> None:
    """Give ``username`` (a robot) ``role`` on an existing repository, in the database."""
    namespace, name = repository.split("/", 1)
    with server_db(deployment) as session:
        user_id = session.scalar(select(User.id).where(User.username == username))
        repo_id = session.scalar(
            select(Repository.id).join(Namespace, Namespace.id == Repository.namespace_id)
            .where(Namespace.name == namespace, Repository.name == name))
        assert user_id is not None and repo_id is not None
        session.add(RepositoryPermission(repository_id=repo_id, user_id=user_id, role=role))


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response is a Quay error with ``status``."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) >= QUAY_ERROR_KEYS and body["status"] == status
    return body


def granted_actions(token: str) -> dict[str, list[str]]:
    """The ``access`` claim of a registry token, by repository."""
    claims = jwt.decode(token, options={"verify_signature": False})
    return {entry["name"]: entry["actions"] for entry in claims["access"]}


# --- a user's robots ----------------------------------------------------------------------


def test_user_robot_lifecycle(registry: Deployment) -> None:
    short = f"bot_{uuid.uuid4().hex[:8]}"
    with closing(api(registry, "carol")) as client:
        created = client.put(f"/user/robots/{short}", json={"description": "CI pusher"})
        assert created.status_code == 201, created.text
        robot = created.json()
        assert set(robot) == {"name", "created", "last_accessed", "description", "token",
                              "unstructured_metadata"}
        assert robot["name"] == f"carol+{short}"
        assert robot["description"] == "CI pusher"
        assert robot["last_accessed"] is None and robot["unstructured_metadata"] == {}
        assert len(robot["token"]) == 64 and robot["token"].isalnum()
        assert robot["created"].endswith("-0000")  # Quay's RFC 2822 dates

        again = client.put(f"/user/robots/{short}")
        assert "Existing robot with name" in assert_error(again, 400)["error_message"]

        fetched = client.get(f"/user/robots/{short}").json()
        assert fetched == robot

        listed = client.get("/user/robots").json()["robots"]
        mine = next(r for r in listed if r["name"] == robot["name"])
        assert mine["token"] == robot["token"]
        assert mine["teams"] == [] and mine["repositories"] == []
        without = client.get("/user/robots", params={"token": "false"}).json()["robots"]
        assert all("token" not in r for r in without)

        regenerated = client.post(f"/user/robots/{short}/regenerate")
        assert regenerated.status_code == 200
        assert regenerated.json()["token"] != robot["token"]
        assert regenerated.json()["name"] == robot["name"]
        assert client.get(f"/user/robots/{short}").json()["token"] == (
            regenerated.json()["token"])

        assert client.get(f"/user/robots/{short}/permissions").json() == {"permissions": []}

        assert client.delete(f"/user/robots/{short}").status_code == 204
        assert_error(client.get(f"/user/robots/{short}"), 404)
        assert_error(client.delete(f"/user/robots/{short}"), 404)
        assert_error(client.post(f"/user/robots/{short}/regenerate"), 404)
        assert_error(client.get(f"/user/robots/{short}/permissions"), 404)
        # Robots of other users are invisible.
        assert all(r["name"].startswith("carol+")
                   for r in client.get("/user/robots").json()["robots"])


def test_put_without_body_and_with_empty_object(registry: Deployment) -> None:
    with closing(api(registry, "carol")) as client:
        for body in (None, {}):
            short = f"nobody_{uuid.uuid4().hex[:8]}"
            response = client.put(f"/user/robots/{short}", json=body)
            assert response.status_code == 201, response.text
            assert response.json()["description"] == ""


@pytest.mark.parametrize("short", ["a", "Abc", "1bot", "_bot", "bot-1", "bot.1", "b" * 256,
                                   "bot%2Bx"])
def test_invalid_robot_names_are_refused(registry: Deployment, short: str) -> None:
    with closing(api(registry, "carol")) as client:
        assert_error(client.put(f"/user/robots/{short}"), 400)


@pytest.mark.parametrize("body", [b"not json", b"[1]", b'{"description": 5}',
                                  b'{"description": "' + b"x" * 256 + b'"}',
                                  b'{"unstructured_metadata": "x"}'])
def test_invalid_bodies_are_refused(registry: Deployment, body: bytes) -> None:
    with closing(api(registry, "carol")) as client:
        short = f"body_{uuid.uuid4().hex[:8]}"
        response = client.put(f"/user/robots/{short}", content=body,
                              headers={"Content-Type": "application/json"})
        assert_error(response, 400)
        assert_error(client.get(f"/user/robots/{short}"), 404)  # nothing was created


def test_user_robots_need_authentication_and_user_admin(registry: Deployment) -> None:
    with closing(api(registry, None)) as anonymous:
        assert_error(anonymous.get("/user/robots"), 401)
        assert_error(anonymous.put("/user/robots/bot_x"), 401)
    with closing(api(registry, "carol", "repo:read user:read")) as limited:
        assert assert_error(limited.get("/user/robots"), 403)["error_type"] == (
            "insufficient_scope")
        assert_error(limited.put("/user/robots/bot_x"), 403)
        assert_error(limited.post("/user/robots/bot_x/regenerate"), 403)
        assert_error(limited.delete("/user/robots/bot_x"), 403)


# --- an organization's robots -------------------------------------------------------------


def test_org_robot_endpoints(registry: Deployment) -> None:
    org = new_org(registry)
    with closing(api(registry, "alice")) as client:
        created = client.put(f"/organization/{org}/robots/builder",
                             json={"description": "builds"})
        assert created.status_code == 201, created.text
        robot = created.json()
        assert robot["name"] == f"{org}+builder"
        assert_error(client.put(f"/organization/{org}/robots/builder"), 400)
        assert_error(client.put(f"/organization/{org}/robots/B"), 400)

        assert client.get(f"/organization/{org}/robots/builder").json() == robot
        listed = client.get(f"/organization/{org}/robots").json()
        assert [r["name"] for r in listed["robots"]] == [f"{org}+builder"]
        assert listed["robots"][0]["token"] == robot["token"]

        token = client.post(f"/organization/{org}/robots/builder/regenerate").json()["token"]
        assert token != robot["token"]
        assert client.get(f"/organization/{org}/robots/builder/permissions").json() == {
            "permissions": []}

        assert client.delete(f"/organization/{org}/robots/builder").status_code == 204
        assert_error(client.get(f"/organization/{org}/robots/builder"), 404)
        assert client.get(f"/organization/{org}/robots").json() == {"robots": []}
        # A robot is found only under its own owner.
        client.put("/user/robots/builder")
        assert_error(client.get(f"/organization/{org}/robots/builder"), 404)
        client.delete("/user/robots/builder")


def test_org_robots_need_administer(registry: Deployment) -> None:
    org = new_org(registry)
    with closing(api(registry, "alice")) as alice:
        assert alice.put(f"/organization/{org}/robots/secret").status_code == 201
    # bob is not in the organization; a member (non-admin team) may not manage robots either.
    with server_db(registry) as session:
        namespace_id = session.scalar(select(Namespace.id).where(Namespace.name == org))
        team = Team(namespace_id=namespace_id, name="readers", role="member")
        session.add(team)
        session.flush()
        carol_id = session.scalar(select(User.id).where(User.username == "carol"))
        session.add(TeamMember(team_id=team.id, user_id=carol_id))
    for who in ("bob", "carol"):
        with closing(api(registry, who)) as client:
            for response in (
                client.get(f"/organization/{org}/robots"),
                client.get(f"/organization/{org}/robots/secret"),
                client.put(f"/organization/{org}/robots/mine"),
                client.delete(f"/organization/{org}/robots/secret"),
                client.post(f"/organization/{org}/robots/secret/regenerate"),
                client.get(f"/organization/{org}/robots/secret/permissions"),
            ):
                assert_error(response, 403)
    with closing(api(registry, "bob")) as bob:
        # Unknown organizations and user namespaces look the same to outsiders.
        assert_error(bob.get("/organization/no-such-org-here/robots"), 403)
        assert_error(bob.get("/organization/alice/robots"), 403)
    with closing(api(registry, "alice", "repo:read user:admin")) as no_org_admin:
        assert assert_error(no_org_admin.get(f"/organization/{org}/robots"), 403)[
            "error_type"] == "insufficient_scope"
    with closing(api(registry, None)) as anonymous:
        assert_error(anonymous.get(f"/organization/{org}/robots"), 401)
    with closing(api(registry, "alice")) as alice:
        # The robot is still there, with the same token.
        assert alice.get(f"/organization/{org}/robots/secret").status_code == 200


def test_robot_pushes_only_where_granted(registry: Deployment) -> None:
    org = new_org(registry)
    allowed, other = unique_repo(org, "allowed"), unique_repo(org, "other")
    owner = registry.client("alice")
    owner.push_image(allowed, "v1")
    owner.push_image(other, "v1")
    with closing(api(registry, "alice")) as client:
        token = client.put(f"/organization/{org}/robots/pusher").json()["token"]
    robot_name = f"{org}+pusher"
    grant(registry, robot_name, allowed, "write")

    robot = registry.client(robot_name, token)
    pushed = robot.push_image(allowed, "v2")
    assert pushed is not None
    assert granted_actions(robot.token(f"repository:{allowed}:pull,push")) == {
        allowed: ["pull", "push"]}

    # Nothing at all on another repository of the same organization.
    response = robot.token_response(f"repository:{other}:pull,push")
    assert response.status_code == 200
    assert granted_actions(response.json()["token"]) == {}
    denied = robot.http.post(f"/v2/{other}/blobs/uploads/",
                             headers={"Authorization": f"Bearer {response.json()['token']}"})
    assert denied.status_code in (401, 403)
    assert error_codes(denied) in (["DENIED"], ["UNAUTHORIZED"])
    # Basic auth with the robot's token works directly on /v2/ too.
    assert httpx.get(f"{registry.url}/v2/", auth=(robot_name, token)).status_code == 200

    with closing(api(registry, "alice")) as client:
        permissions = client.get(f"/organization/{org}/robots/pusher/permissions").json()
        assert permissions == {"permissions": [{
            "repository": {"name": allowed.split("/", 1)[1], "is_public": False},
            "role": "write"}]}
        listed = client.get(f"/organization/{org}/robots",
                            params={"permissions": "true"}).json()["robots"]
        assert listed[0]["repositories"] == [allowed.split("/", 1)[1]]

        # Regenerating the token invalidates the old one at once.
        new_token = client.post(f"/organization/{org}/robots/pusher/regenerate").json()[
            "token"]
    old = httpx.get(f"{registry.url}/v2/auth", params={"scope": f"repository:{allowed}:pull"},
                    auth=(robot_name, token))
    assert old.status_code == 401
    fresh = registry.client(robot_name, new_token)
    assert granted_actions(fresh.token(f"repository:{allowed}:pull")) == {allowed: ["pull"]}


def test_wrong_tokens_and_passwords_fail(registry: Deployment) -> None:
    org = new_org(registry)
    with closing(api(registry, "alice")) as client:
        token = client.put(f"/organization/{org}/robots/guard").json()["token"]
    name = f"{org}+guard"
    url = f"{registry.url}/v2/"
    assert httpx.get(url, auth=(name, token)).status_code == 200
    for wrong in (token.lower(), token[:-1], "", "x" * 64, PASSWORDS["alice"]):
        assert httpx.get(url, auth=(name, wrong)).status_code == 401
    assert httpx.get(url, auth=(f"{org}+nobody", token)).status_code == 401
    # Robots never sign in to the UI or API, even with the right token.
    with httpx.Client(base_url=registry.url) as browser:
        csrf = browser.get("/csrf_token").json()["csrf_token"]
        response = browser.post("/api/v1/signin", headers={"X-CSRF-Token": csrf},
                                json={"username": name, "password": token})
        assert response.status_code == 403
        assert response.json()["success"] is False


def test_deleting_a_robot_removes_memberships_and_permissions(registry: Deployment) -> None:
    org = new_org(registry)
    repo = unique_repo(org, "app")
    registry.client("alice").push_image(repo, "v1")
    with closing(api(registry, "alice")) as client:
        client.put(f"/organization/{org}/robots/member")
        name = f"{org}+member"
        grant(registry, name, repo, "read")
        with server_db(registry) as session:
            namespace_id = session.scalar(select(Namespace.id).where(Namespace.name == org))
            team = Team(namespace_id=namespace_id, name="bots", role="member")
            session.add(team)
            session.flush()
            robot_id = session.scalar(select(User.id).where(User.username == name))
            session.add(TeamMember(team_id=team.id, user_id=robot_id))
        listed = client.get(f"/organization/{org}/robots",
                            params={"permissions": "1"}).json()["robots"]
        assert [t["name"] for t in listed[0]["teams"]] == ["bots"]

        assert client.delete(f"/organization/{org}/robots/member").status_code == 204
        with server_db(registry) as session:
            assert session.scalar(select(func.count()).select_from(TeamMember)
                                  .where(TeamMember.user_id == robot_id)) == 0
            assert session.scalar(select(func.count()).select_from(RepositoryPermission)
                                  .where(RepositoryPermission.user_id == robot_id)) == 0
        # A new robot of the same name starts without the old one's rights.
        token = client.put(f"/organization/{org}/robots/member").json()["token"]
        assert client.get(f"/organization/{org}/robots/member/permissions").json() == {
            "permissions": []}
    robot = registry.client(name, token)
    assert granted_actions(robot.token(f"repository:{repo}:pull")) == {}
