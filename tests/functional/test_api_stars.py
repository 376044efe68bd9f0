"""``/api/v1/user/starred`` and ``is_starred`` / ``starred=true`` in repository views:
starring what one can read, listing with paging, unstarring, and who may do what.

Public repositories are only made on the ``public`` server (the ``main`` server's
anonymous catalog must stay empty for other tests).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from functional.conftest import Deployment
from functional.test_api_repositories import api as repo_api
from functional.test_api_repositories import create, short

#: A signed-in person's scopes: stars need ``user:admin`` on tokens, as in Quay.
SCOPES = "repo:read repo:write repo:admin repo:create user:read user:admin"


@pytest.fixture
def clients() -> Iterator[ExitStack]:
    """Closes the clients a test opens."""
    with ExitStack() as stack:
        yield stack


def client(stack: ExitStack, deployment: Deployment, username: str | None,
           scopes: str = SCOPES) -> httpx.Client:
    """An ``/api/v1`` client for ``username`` (anonymous: ``None``)."""
    return stack.enter_context(repo_api(deployment, username, scopes))


def star(api: httpx.Client, namespace: str, name: str) -> httpx.Response:
    """``POST /user/starred``."""
    return api.post("/user/starred", json={"namespace": namespace, "repository": name})


def starred(api: httpx.Client, **params: str | int) -> list[str]:
    """Full names in ``GET /user/starred`` (first page)."""
    response = api.get("/user/starred", params=params)
    assert response.status_code == 200, response.text
    return [f"{r['namespace']}/{r['name']}" for r in response.json()["repositories"]]


def test_star_list_and_unstar(registry: Deployment, clients: ExitStack) -> None:
    alice = client(clients, registry, "alice")
    names = sorted(short("starry") for _ in range(3))
    for name in names:
        assert create(alice, name, description=f"about {name}").status_code == 201
    first, second, unstarred = names
    try:
        for name in (second, first, first):  # starring twice is harmless
            response = star(alice, "alice", name)
            assert response.status_code == 201, response.text
            assert response.json() == {"namespace": "alice", "repository": name}
        body = alice.get("/user/starred").json()
        mine = [r for r in body["repositories"] if r["name"] in names]
        assert mine == [
            {"namespace": "alice", "name": first, "description": f"about {first}",
             "is_public": False},
            {"namespace": "alice", "name": second, "description": f"about {second}",
             "is_public": False},
        ]
        # The repository list and view say what is starred; starred=true filters.
        listed = alice.get("/repository", params={"namespace": "alice"}).json()
        flags = {r["name"]: r["is_starred"] for r in listed["repositories"]
                 if r["name"] in names}
        assert flags == {first: True, second: True, unstarred: False}
        only = alice.get("/repository", params={"starred": "true"}).json()["repositories"]
        assert {r["name"] for r in only} >= {first, second}
        assert unstarred not in {r["name"] for r in only}
        assert all(r["is_starred"] for r in only)
        assert alice.get(f"/repository/alice/{first}").json()["is_starred"] is True
        assert alice.get(f"/repository/alice/{unstarred}").json()["is_starred"] is False

        assert alice.delete(f"/user/starred/alice/{first}").status_code == 204
        assert alice.delete(f"/user/starred/alice/{first}").status_code == 204
        assert f"alice/{first}" not in starred(alice)
        assert alice.get(f"/repository/alice/{first}").json()["is_starred"] is False
    finally:
        for name in names:
            assert alice.delete(f"/repository/alice/{name}").status_code == 204
    # Deleting a repository removes its stars.
    assert not {f"alice/{name}" for name in names} & set(starred(alice))


def test_paging(registry: Deployment, clients: ExitStack) -> None:
    carol = client(clients, registry, "carol")
    names = sorted(short("paged") for _ in range(3))
    try:
        for name in names:
            assert create(carol, name).status_code == 201
            assert star(carol, "carol", name).status_code == 201
        seen: list[str] = []
        params: dict[str, str | int] = {"limit": 2}
        while True:
            response = carol.get("/user/starred", params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            assert len(page["repositories"]) <= 2
            seen += [f"{r['namespace']}/{r['name']}" for r in page["repositories"]]
            if "next_page" not in page:
                break
            params = {"limit": 2, "next_page": page["next_page"]}
        assert [name for name in seen if name.startswith("carol/paged-")] == [
            f"carol/{name}" for name in names]
        assert seen == sorted(seen)
        assert carol.get("/user/starred", params={"next_page": "%%%"}).status_code == 400
    finally:
        for name in names:
            carol.delete(f"/repository/carol/{name}")


def test_only_readable_repositories_can_be_starred(registry: Deployment,
                                                    clients: ExitStack) -> None:
    alice = client(clients, registry, "alice")
    bob = client(clients, registry, "bob")
    name = short("private")
    assert create(alice, name).status_code == 201
    try:
        refused = star(bob, "alice", name)
        assert refused.status_code == 403 and refused.json()["error_type"] == "insufficient_scope"
        # Missing repositories: 404 where the caller could read them, 403 elsewhere.
        assert star(bob, "bob", "no-such-repo").status_code == 404
        assert star(bob, "alice", "no-such-repo").status_code == 403
        assert bob.delete(f"/user/starred/alice/{name}").status_code == 404
        assert bob.delete("/user/starred/alice/no-such-repo").status_code == 404
        assert bob.post("/user/starred", json={"namespace": "alice"}).status_code == 400

        anonymous = client(clients, registry, None)
        assert anonymous.get("/user/starred").status_code == 401
        assert star(anonymous, "alice", name).status_code == 401
        assert anonymous.delete(f"/user/starred/alice/{name}").status_code == 401
        assert anonymous.get("/repository", params={"starred": "true"}).status_code == 400

        # Tokens need user:admin, as in Quay.
        reader = client(clients, registry, "alice", "repo:read user:read")
        for response in (reader.get("/user/starred"), star(reader, "alice", name),
                         reader.delete(f"/user/starred/alice/{name}")):
            assert response.status_code == 403, response.text
    finally:
        assert alice.delete(f"/repository/alice/{name}").status_code == 204


def test_stars_of_repositories_made_private_drop_out(public_registry: Deployment,
                                                      clients: ExitStack) -> None:
    alice = client(clients, public_registry, "alice")
    bob = client(clients, public_registry, "bob")
    name = short("public")
    assert create(alice, name, visibility="public").status_code == 201
    try:
        assert star(bob, "alice", name).status_code == 201
        assert f"alice/{name}" in starred(bob)
        # Public repositories starred by the caller are listed without public=true.
        only = bob.get("/repository", params={"starred": "true"}).json()["repositories"]
        assert [r["is_public"] for r in only if r["name"] == name] == [True]
        public = bob.get("/repository", params={"public": "true"}).json()["repositories"]
        assert [r["is_starred"] for r in public if r["name"] == name] == [True]

        assert alice.post(f"/repository/alice/{name}/changevisibility",
                          json={"visibility": "private"}).status_code == 200
        assert f"alice/{name}" not in starred(bob)
        assert star(bob, "alice", name).status_code == 403
        # The star can still be removed.
        assert bob.delete(f"/user/starred/alice/{name}").status_code == 204
        assert bob.delete(f"/user/starred/alice/{name}").status_code == 404
    finally:
        assert alice.delete(f"/repository/alice/{name}").status_code == 204
