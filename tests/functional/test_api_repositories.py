"""``/api/v1/repository``: create, list (filters, paging), view, change visibility and
delete, as the owner, other users and anonymous callers, with Quay's token scopes.

Public repositories are only made on the ``public`` server: the ``main`` server's
anonymous catalog must stay empty for the listing tests.
"""

from __future__ import annotations

import uuid
from contextlib import closing
from typing import Any

import httpx

from functional.client import OCI_MANIFEST
from functional.conftest import Deployment, unique_repo
from functional.test_api_auth import make_token, signed_in

#: Every repository scope, as a UI-issued token for a script would carry.
ALL_SCOPES = "repo:read repo:write repo:admin repo:create user:read"


def api(deployment: Deployment, username: str | None, scopes: str = ALL_SCOPES,
        ) -> httpx.Client:
    """An ``/api/v1`` client with a bearer access token for ``username`` (or anonymous)."""
    headers = {}
    if username is not None:
        headers["Authorization"] = f"Bearer {make_token(deployment, username, scopes)}"
    return httpx.Client(base_url=f"{deployment.url}/api/v1", headers=headers, timeout=30)


def create(client: httpx.Client, name: str, visibility: str = "private",
           **extra: Any) -> httpx.Response:
    """``POST /repository`` for the short ``name``."""
    return client.post("/repository", json={"repository": name, "visibility": visibility,
                                            "description": "", **extra})


def short(name: str) -> str:
    """A unique short repository name."""
    return f"{name}-{uuid.uuid4().hex[:10]}"


def test_create_view_and_delete_as_owner(registry: Deployment) -> None:
    name = short("api")
    with api(registry, "alice") as alice:
        created = create(alice, name)
        assert created.status_code == 201, created.text
        assert created.json() == {"namespace": "alice", "name": name, "kind": "image"}
        again = create(alice, name)
        assert again.status_code == 400
        assert again.json()["error_type"] == "invalid_request"

        view = alice.get(f"/repository/alice/{name}")
        assert view.status_code == 200, view.text
        body = view.json()
        assert {k: body[k] for k in ("namespace", "name", "kind", "is_public", "state",
                                     "can_write", "can_admin", "is_organization",
                                     "trust_enabled", "tags", "is_starred")} == {
            "namespace": "alice", "name": name, "kind": "image", "is_public": False,
            "state": "NORMAL", "can_write": True, "can_admin": True,
            "is_organization": False, "trust_enabled": False, "tags": {},
            "is_starred": False}
        assert body["tag_expiration_s"] > 0

        # A pushed tag shows up with its manifest.
        image = registry.client("alice").push_image(f"alice/{name}", "v1")
        tags = alice.get(f"/repository/alice/{name}").json()["tags"]
        assert tags["v1"]["manifest_digest"] == image.digest
        assert tags["v1"]["size"] == len(image.manifest)
        assert tags["v1"]["last_modified"].endswith("-0000")

        assert alice.delete(f"/repository/alice/{name}").status_code == 204
        missing = alice.get(f"/repository/alice/{name}")
        assert missing.status_code == 404
        assert missing.json()["error_type"] == "not_found"
        assert alice.delete(f"/repository/alice/{name}").status_code == 404
        # The registry agrees that the repository is gone.
        pulled = registry.client("alice").request(
            "GET", f"/v2/alice/{name}/manifests/v1", repo=f"alice/{name}", actions="pull",
            headers={"Accept": OCI_MANIFEST})
        assert pulled.status_code == 404


def test_nested_names_and_bad_input(registry: Deployment) -> None:
    name = short("team/app")
    with api(registry, "alice") as alice:
        assert create(alice, name).status_code == 201
        assert alice.get(f"/repository/alice/{name}").json()["name"] == name
        for bad in ("UPPER", "a//b", "-x", "", "x" * 300):
            response = create(alice, bad)
            assert response.status_code == 400, (bad, response.text)
        assert create(alice, short("v"), visibility="secret").status_code == 400
        assert create(alice, short("k"), repo_kind="application").status_code == 400
        assert alice.post("/repository", json={"visibility": "private"}).status_code == 400
        assert alice.post("/repository", content=b"{nope").status_code == 400
        assert alice.get("/repository", params={"namespace": "alice", "next_page": "%%%"}
                         ).status_code == 400
        assert alice.get("/repository/alice").status_code == 404
        assert alice.get("/repository/nobody-here/x").status_code == 403
        assert alice.delete(f"/repository/alice/{name}").status_code == 204


def test_others_and_anonymous_are_refused(registry: Deployment) -> None:
    name = short("private")
    with api(registry, "alice") as alice, api(registry, "bob") as bob, \
            api(registry, None) as anonymous:
        assert create(alice, name).status_code == 201
        path = f"/repository/alice/{name}"
        # Without read access an existing and a missing repository look the same.
        assert bob.get(path).status_code == 403
        assert bob.get(f"/repository/alice/{short('none')}").status_code == 403
        assert anonymous.get(path).status_code == 401
        assert bob.delete(path).status_code == 403
        assert anonymous.delete(path).status_code == 401
        assert bob.post(f"{path}/changevisibility",
                        json={"visibility": "public"}).status_code == 403
        assert bob.put(path, json={"description": "mine"}).status_code == 403
        # Creating in another user's namespace, anonymously, or in an unknown namespace.
        assert create(bob, short("x"), namespace="alice").status_code == 403
        assert create(bob, short("x"), namespace=f"ghost{uuid.uuid4().hex[:8]}"
                      ).status_code == 403
        assert create(anonymous, short("x")).status_code == 401
        # Descriptions are stored and shown; writers may change them.
        assert alice.put(path, json={"description": "# About\nAn image."}).json() == {
            "success": True}
        assert alice.get(path).json()["description"] == "# About\nAn image."
        too_long = alice.put(path, json={"description": "x" * 100_001})
        assert too_long.status_code == 400
        assert alice.delete(path).status_code == 204


def test_token_scopes(registry: Deployment) -> None:
    name = short("scoped")
    with api(registry, "alice", "repo:read") as reader, \
            api(registry, "alice", "repo:read repo:write") as writer, \
            api(registry, "alice") as admin:
        denied = create(reader, name)
        assert denied.status_code == 403
        assert denied.json()["error_type"] == "insufficient_scope"
        assert create(admin, name).status_code == 201
        path = f"/repository/alice/{name}"
        view = reader.get(path).json()
        assert view["can_write"] is False and view["can_admin"] is False
        assert writer.get(path).json()["can_write"] is True
        assert reader.delete(path).status_code == 403
        assert writer.post(f"{path}/changevisibility",
                           json={"visibility": "private"}).status_code == 403
        assert writer.delete(path).status_code == 403
        assert admin.delete(path).status_code == 204


def test_session_callers_need_csrf(registry: Deployment) -> None:
    client, csrf = signed_in(registry, "alice")
    name = short("session")
    with closing(client):
        body = {"repository": name, "visibility": "private"}
        assert client.post("/api/v1/repository", json=body).status_code == 403
        created = client.post("/api/v1/repository", json=body,
                              headers={"X-CSRF-Token": csrf})
        assert created.status_code == 201, created.text
        assert client.get(f"/api/v1/repository/alice/{name}").status_code == 200
        assert client.delete(f"/api/v1/repository/alice/{name}",
                             headers={"X-CSRF-Token": csrf}).status_code == 204


def names_in(response: httpx.Response) -> list[str]:
    """``namespace/name`` of each listed repository."""
    assert response.status_code == 200, response.text
    return [f"{r['namespace']}/{r['name']}" for r in response.json()["repositories"]]


def test_list_filters_and_paging(public_registry: Deployment) -> None:
    deployment = public_registry
    prefix = short("page")
    with api(deployment, "bob") as bob, api(deployment, "alice") as alice, \
            api(deployment, None) as anonymous:
        mine = [f"bob/{prefix}-{i}" for i in range(5)]
        for full in mine:
            assert create(bob, full.split("/", 1)[1]).status_code == 201
        public_name = short("shown")
        assert create(alice, public_name, visibility="public").status_code == 201
        private_name = short("hidden")
        assert create(alice, private_name).status_code == 201

        listed = bob.get("/repository", params={"namespace": "bob"})
        entry = next(r for r in listed.json()["repositories"] if r["name"] == f"{prefix}-0")
        assert entry == {"namespace": "bob", "name": f"{prefix}-0", "description": "",
                         "is_public": False, "kind": "image", "state": "NORMAL",
                         "is_starred": False}

        # Walk bob's namespace two at a time: every page is in order, nothing repeats.
        seen: list[str] = []
        params: dict[str, str] = {"namespace": "bob", "limit": "2"}
        while True:
            response = bob.get("/repository", params=params)
            page = names_in(response)
            assert 1 <= len(page) <= 2
            seen += page
            token = response.json().get("next_page")
            if token is None:
                break
            params["next_page"] = token
        assert seen == sorted(seen) and len(seen) == len(set(seen))
        assert [n for n in seen if n.startswith(f"bob/{prefix}")] == mine

        # Others' public repositories appear only with public=true; private ones never.
        without = names_in(bob.get("/repository", params={"namespace": "alice"}))
        assert f"alice/{public_name}" not in without
        # As in Quay, one of namespace, public or starred is required.
        assert bob.get("/repository").status_code == 400
        assert anonymous.get("/repository", params={"starred": "true"}).status_code == 400
        with_public = names_in(bob.get("/repository", params={"public": "true"}))
        assert f"alice/{public_name}" in with_public
        assert f"alice/{private_name}" not in with_public
        assert set(mine) <= set(with_public)
        anon = names_in(anonymous.get("/repository", params={"public": "true",
                                                             "namespace": "alice"}))
        assert f"alice/{public_name}" in anon and f"alice/{private_name}" not in anon
        assert names_in(anonymous.get("/repository", params={"namespace": "bob"})) == []
        # No stars are stored yet.
        assert names_in(bob.get("/repository", params={"starred": "true"})) == []
        assert bob.get("/repository", params={"public": "true", "limit": "0"}
                       ).status_code == 400


def test_change_visibility_opens_anonymous_pulls(public_registry: Deployment) -> None:
    deployment = public_registry
    name = short("vis")
    repo = f"alice/{name}"
    with api(deployment, "alice") as alice, api(deployment, None) as anonymous:
        assert create(alice, name).status_code == 201
        image = deployment.client("alice").push_image(repo, "v1")
        puller = deployment.client()
        url = f"/v2/{repo}/manifests/v1"
        assert puller.http.get(url, headers={"Accept": OCI_MANIFEST}).status_code == 401
        assert anonymous.get(f"/repository/{repo}").status_code == 401

        bad = alice.post(f"/repository/{repo}/changevisibility", json={"visibility": "x"})
        assert bad.status_code == 400
        changed = alice.post(f"/repository/{repo}/changevisibility",
                             json={"visibility": "public"})
        assert changed.status_code == 200
        assert changed.json() == {"success": True}
        pulled = puller.http.get(url, headers={"Accept": OCI_MANIFEST})
        assert pulled.status_code == 200 and pulled.content == image.manifest
        view = anonymous.get(f"/repository/{repo}").json()
        assert view["is_public"] is True and view["can_write"] is False

        assert alice.post(f"/repository/{repo}/changevisibility",
                          json={"visibility": "private"}).status_code == 200
        assert puller.http.get(url, headers={"Accept": OCI_MANIFEST}).status_code == 401
        assert alice.delete(f"/repository/{repo}").status_code == 204


def test_unique_repo_names_are_accepted_by_the_api(registry: Deployment) -> None:
    # The names other tests push are valid API names too (same grammar).
    namespace, name = unique_repo("alice").split("/", 1)
    with api(registry, "alice") as alice:
        assert create(alice, name, namespace=namespace).status_code == 201
        assert alice.delete(f"/repository/{namespace}/{name}").status_code == 204
