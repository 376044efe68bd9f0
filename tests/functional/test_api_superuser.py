"""``/api/v1/superuser/``: only superusers (with ``super:user`` on tokens) list everyone."""

from __future__ import annotations

import httpx

from functional.conftest import Deployment
from functional.test_api_auth import make_token
from functional.test_api_organizations import create_org, create_superuser


def get(deployment: Deployment, path: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{deployment.url}/api/v1{path}", headers=headers)


def test_superusers_list_users_and_organizations(registry: Deployment) -> None:
    root = create_superuser(registry)
    alice = make_token(registry, "alice", "user:admin org:admin")
    with httpx.Client(base_url=f"{registry.url}/api/v1",
                      headers={"Authorization": f"Bearer {alice}"}) as client:
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
    deleted = httpx.delete(f"{registry.url}/api/v1/organization/{org}",
                           headers={"Authorization": f"Bearer {alice}"})
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
