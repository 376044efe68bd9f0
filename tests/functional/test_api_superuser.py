"""``/api/v1/superuser/``: only superusers (with ``super:user`` on tokens) list everyone."""

from __future__ import annotations

import uuid
from contextlib import closing
from typing import Any

import httpx
from sqlalchemy import select

from functional.conftest import Deployment
from functional.test_api_auth import make_token
from functional.test_api_organizations import (
    CREATED,
    api,
    create_org,
    create_robot,
    create_superuser,
    delete_created_organizations,  # noqa: F401 (an autouse fixture, used here too)
    granted,
    in_db,
)
from portside.db.models import Namespace


def get(deployment: Deployment, path: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{deployment.url}/api/v1{path}", headers=headers)


def test_superusers_list_users_and_organizations(registry: Deployment) -> None:
    root = create_superuser(registry)
    alice = make_token(registry, "alice", "user:admin org:admin")
    with httpx.Client(
        base_url=f"{registry.url}/api/v1", headers={"Authorization": f"Bearer {alice}"}
    ) as client:
        org = create_org(client)
    token = make_token(registry, root, "super:user")
    users = get(registry, "/superuser/users/", token)
    assert users.status_code == 200
    by_name = {u["username"]: u for u in users.json()["users"]}
    assert by_name["alice"]["super_user"] is False and by_name["alice"]["kind"] == "user"
    assert by_name[root]["super_user"] is True
    assert "+" not in "".join(by_name)  # robots are not users here
    organizations = get(registry, "/superuser/organizations/", token)
    assert organizations.status_code == 200
    assert org in [o["name"] for o in organizations.json()["organizations"]]
    names = [o["name"] for o in organizations.json()["organizations"]]
    assert names == sorted(names)
    # The servers are shared between tests: leave nothing behind.
    deleted = httpx.delete(
        f"{registry.url}/api/v1/organization/{org}", headers={"Authorization": f"Bearer {alice}"}
    )
    assert deleted.status_code == 204


def test_everyone_else_is_refused(registry: Deployment) -> None:
    root = create_superuser(registry)
    for path in ("/superuser/users/", "/superuser/organizations/"):
        assert get(registry, path).status_code == 401
        ordinary = get(registry, path, make_token(registry, "alice", "super:user"))
        assert ordinary.status_code == 403
        assert ordinary.json()["error_type"] == "insufficient_scope"
        # A superuser's token without the super:user scope acts as an ordinary user.
        assert get(registry, path, make_token(registry, root, "org:admin")).status_code == 403


def su_client(deployment: Deployment, root: str) -> httpx.Client:
    """An ``/api/v1`` client acting as superuser ``root`` (scope ``super:user``)."""
    token = make_token(deployment, root, "super:user")
    return httpx.Client(
        base_url=f"{deployment.url}/api/v1", headers={"Authorization": f"Bearer {token}"}
    )


def new_user(su: httpx.Client, email: str | None = None) -> tuple[str, str]:
    """Create a user through the superuser API; returns its name and password."""
    name = f"user-{uuid.uuid4().hex[:10]}"
    body: dict[str, Any] = {"username": name}
    if email is not None:
        body["email"] = email
    response = su.post("/superuser/users/", json=body)
    assert response.status_code == 200, response.text
    created = response.json()
    assert created["username"] == name and created["email"] == email
    password = created["password"]
    assert len(password) == 32 and password.isalnum() and password.upper() == password
    assert created["encrypted_password"] and created["encrypted_password"] != password
    return name, password


def v2_auth(deployment: Deployment, username: str, password: str) -> int:
    """Status of a ``/v2/auth`` login."""
    return httpx.get(f"{deployment.url}/v2/auth", auth=(username, password)).status_code


def v2_basic(deployment: Deployment, username: str, password: str) -> int:
    """Status of ``GET /v2/`` with Basic credentials."""
    return httpx.get(f"{deployment.url}/v2/", auth=(username, password)).status_code


def sign_in(
    deployment: Deployment, username: str, password: str
) -> tuple[httpx.Client, httpx.Response]:
    """``POST /api/v1/signin`` through the UI flow; the client keeps the session."""
    client = httpx.Client(base_url=deployment.url)
    csrf = client.get("/csrf_token").json()["csrf_token"]
    response = client.post(
        "/api/v1/signin",
        headers={"X-CSRF-Token": csrf},
        json={"username": username, "password": password},
    )
    return client, response


def test_create_show_change_and_delete_users(registry: Deployment) -> None:
    root = create_superuser(registry)
    with su_client(registry, root) as su:
        name, password = new_user(su, email=f"{uuid.uuid4().hex[:8]}@example.com")
        assert v2_auth(registry, name, password) == 200
        shown = su.get(f"/superuser/users/{name}").json()
        assert shown["username"] == name and shown["enabled"] is True
        assert shown["super_user"] is False and shown["kind"] == "user"
        # The name is taken now, by users and organizations alike.
        assert su.post("/superuser/users/", json={"username": name}).status_code == 400
        assert su.post("/superuser/users/", json={"username": "Bad Name"}).status_code == 400
        assert (
            su.post(
                "/superuser/users/", json={"username": "x", "email": "not-an-email"}
            ).status_code
            == 400
        )

        changed = su.put(
            f"/superuser/users/{name}",
            json={"password": "a-brand-new-password", "email": "new@ex.io"},
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["email"] == "new@ex.io" and changed.json()["encrypted_password"]
        assert v2_auth(registry, name, password) == 401
        assert v2_auth(registry, name, "a-brand-new-password") == 200
        for body in ({"email": "bad"}, {"password": "short"}, {"superuser": True}):
            response = su.put(f"/superuser/users/{name}", json=body)
            assert response.status_code == 400, (body, response.text)
        # E-mail addresses are unique among users and organizations.
        other, _ = new_user(su, email=f"{uuid.uuid4().hex[:8]}@example.com")
        assert su.put(f"/superuser/users/{other}", json={"email": "NEW@ex.io"}).status_code == 400

        for target in (name, other):
            assert su.delete(f"/superuser/users/{target}").status_code == 204
            assert su.get(f"/superuser/users/{target}").status_code == 404
        assert v2_auth(registry, name, "a-brand-new-password") == 401
        assert su.delete(f"/superuser/users/{name}").status_code == 404
        assert su.put(f"/superuser/users/{name}", json={}).status_code == 404
        # Robots are not users here.
        assert su.get("/superuser/users/alice+robot").status_code == 404


def test_deleting_a_user_removes_its_repositories(registry: Deployment) -> None:
    root = create_superuser(registry)
    with su_client(registry, root) as su:
        name, password = new_user(su)
        client = registry.client(name, password)
        client.push_image(f"{name}/app", "v1")
        assert su.delete(f"/superuser/users/{name}").status_code == 204
        # The name is free again, and the new user starts without repositories.
        again, password = new_user(su)
        assert su.delete(f"/superuser/users/{again}").status_code == 204
    db = in_db(registry)
    try:
        with db.session() as session:
            assert session.scalar(select(Namespace.id).where(Namespace.name == name)) is None
    finally:
        db.dispose()


def test_superusers_are_protected(registry: Deployment) -> None:
    root = create_superuser(registry)
    other = create_superuser(registry)
    with su_client(registry, root) as su:
        for target in (root, other):
            response = su.delete(f"/superuser/users/{target}")
            assert response.status_code == 400, response.text
            assert su.put(f"/superuser/users/{target}", json={"enabled": False}).status_code == 400
        assert su.get(f"/superuser/users/{root}").json()["super_user"] is True


def test_disabled_users_are_refused_everywhere(registry: Deployment) -> None:
    root = create_superuser(registry)
    with su_client(registry, root) as su:
        name, password = new_user(su)
        token = make_token(registry, name, "user:read")
        browser, signed = sign_in(registry, name, password)
        assert signed.status_code == 200
        with closing(browser):
            assert browser.get("/api/v1/user/").status_code == 200
            # Every kind of login works (and the password check is now remembered).
            assert v2_auth(registry, name, password) == 200
            assert v2_basic(registry, name, password) == 200
            assert get(registry, "/user/", token).status_code == 200

            response = su.put(f"/superuser/users/{name}", json={"enabled": False})
            assert response.status_code == 200 and response.json()["enabled"] is False
            assert v2_auth(registry, name, password) == 401
            assert v2_basic(registry, name, password) == 401
            refused, response = sign_in(registry, name, password)
            refused.close()
            assert response.status_code == 403
            assert get(registry, "/user/", token).status_code == 401
            assert browser.get("/api/v1/user/").status_code == 401

            assert su.put(f"/superuser/users/{name}", json={"enabled": True}).status_code == 200
            assert v2_auth(registry, name, password) == 200
            assert get(registry, "/user/", token).status_code == 200
            assert browser.get("/api/v1/user/").status_code == 200
        assert su.delete(f"/superuser/users/{name}").status_code == 204


def test_rename_and_delete_organizations(registry: Deployment) -> None:
    root = create_superuser(registry)
    with api(registry, "alice") as alice, su_client(registry, root) as su:
        name = create_org(alice)
        registry.client("alice").push_image(f"{name}/app", "v1")
        robot = create_robot(registry, name, "ci")
        assert alice.put(f"/organization/{name}/team/owners/members/{robot}").status_code == 200
        new_name = f"renamed-{uuid.uuid4().hex[:8]}"
        CREATED.add(new_name)
        for bad in ("Bad Name", "alice", name.upper()):
            assert (
                su.put(f"/superuser/organizations/{name}", json={"name": bad}).status_code == 400
            ), bad
        assert (
            su.put("/superuser/organizations/no-such-org", json={"name": new_name}).status_code
            == 404
        )
        assert (
            su.put("/superuser/organizations/alice", json={"name": new_name}).status_code == 404
        )  # a user, not an organization
        response = su.put(f"/superuser/organizations/{name}", json={"name": new_name})
        assert response.status_code == 200, response.text
        assert response.json()["name"] == new_name
        assert alice.get(f"/organization/{name}").status_code == 404
        org = alice.get(f"/organization/{new_name}").json()
        assert org["is_admin"] is True
        members = alice.get(f"/organization/{new_name}/team/owners/members").json()
        assert f"{new_name}+ci" in [m["name"] for m in members["members"]]
        assert alice.get(f"/repository/{new_name}/app").json()["tags"].keys() == {"v1"}
        assert granted(registry, "alice", "alice-secret-pw", f"{new_name}/app") == ["pull", "push"]

        assert su.delete(f"/superuser/organizations/{new_name}").status_code == 204
        assert alice.get(f"/organization/{new_name}").status_code == 404
        assert su.delete(f"/superuser/organizations/{new_name}").status_code == 404
        names = [o["name"] for o in su.get("/superuser/organizations/").json()["organizations"]]
        assert new_name not in names


def test_registry_wide_logs(registry: Deployment) -> None:
    root = create_superuser(registry)
    with su_client(registry, root) as su:
        name, _ = new_user(su)
        assert su.put(f"/superuser/users/{name}", json={"enabled": False}).status_code == 200
        assert su.delete(f"/superuser/users/{name}").status_code == 204
        logs = su.get("/superuser/logs")
        assert logs.status_code == 200, logs.text
        mine = [
            (e["kind"], e["metadata"].get("username"))
            for e in logs.json()["logs"]
            if e["metadata"].get("username") == name
        ]
        assert mine == [("user_delete", name), ("user_disable", name), ("user_create", name)]
        entry = next(
            e
            for e in logs.json()["logs"]
            if e["kind"] == "user_create" and e["metadata"].get("username") == name
        )
        assert entry["performer"]["name"] == root
        counts = su.get("/superuser/aggregatelogs").json()["aggregated"]
        kinds = {c["kind"] for c in counts}
        assert {"user_create", "user_delete", "user_disable"} <= kinds
        # Paging: twenty entries at most, then next_page.
        first = su.get("/superuser/logs").json()
        if "next_page" in first:
            following = su.get("/superuser/logs", params={"next_page": first["next_page"]})
            assert following.status_code == 200
    for path in ("/superuser/logs", "/superuser/aggregatelogs"):
        assert get(registry, path).status_code == 401
        assert get(registry, path, make_token(registry, "alice", "super:user")).status_code == 403
    for method, path in (
        ("POST", "/superuser/users/"),
        ("GET", "/superuser/users/alice"),
        ("PUT", "/superuser/users/bob"),
        ("DELETE", "/superuser/users/bob"),
        ("PUT", "/superuser/organizations/x"),
        ("DELETE", "/superuser/organizations/x"),
    ):
        response = httpx.request(
            method,
            f"{registry.url}/api/v1{path}",
            json={"username": "someone", "name": "x-y"},
            headers={"Authorization": "Bearer " + make_token(registry, "alice", "super:user")},
        )
        assert response.status_code == 403, (method, path)
