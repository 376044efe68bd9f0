"""``/api/v1`` authentication: sessions with CSRF protection, bearer access tokens with
Quay's scopes, and the same scopes capping what ``$oauthtoken`` may do on ``/v2``."""

from __future__ import annotations

import secrets
from contextlib import closing

import httpx
from sqlalchemy import select

from functional.client import error_codes
from functional.conftest import PASSWORDS, Deployment, unique_repo
from portside.db.engine import Database, create_db_engine
from portside.db.models import AccessToken, User
from portside.services.users import token_digest


def make_token(deployment: Deployment, username: str, scopes: str) -> str:
    """Store an access token with ``scopes`` for ``username`` directly in the database
    (the API that issues scoped tokens is not there yet)."""
    token = secrets.token_urlsafe(30)
    # Database.session() takes SQLite's write lock up front: a deferred transaction that
    # reads first fails at once when the server's background writers hold the lock.
    db = Database(create_db_engine(deployment.registry.config["DB_URI"]))
    try:
        with db.session() as session:
            user_id = session.scalar(select(User.id).where(User.username == username))
            session.execute(AccessToken.__table__.insert().values(
                user_id=user_id, token_hash=token_digest(token), scopes=scopes))
    finally:
        db.dispose()
    return token


def signed_in(deployment: Deployment, username: str = "alice") -> tuple[httpx.Client, str]:
    """A client signed in through the UI flow, and its CSRF token."""
    client = httpx.Client(base_url=deployment.url)
    csrf = client.get("/csrf_token").json()["csrf_token"]
    response = client.post("/api/v1/signin", headers={"X-CSRF-Token": csrf},
                           json={"username": username, "password": PASSWORDS[username]})
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}
    # Signing in starts a new session with a new CSRF token: the old one is void.
    fresh = client.get("/csrf_token").json()["csrf_token"]
    assert fresh != csrf
    assert client.post("/api/v1/signout", headers={"X-CSRF-Token": csrf}).status_code == 403
    return client, fresh


def test_user_requires_authentication(registry: Deployment) -> None:
    response = httpx.get(f"{registry.url}/api/v1/user/")
    assert response.status_code == 401
    assert response.json()["error_type"] == "invalid_token"


def test_session_sign_in_shows_the_user_and_sign_out_ends_it(registry: Deployment) -> None:
    client, _ = signed_in(registry)
    with closing(client):
        cookie = client.cookies.get("portside_session")
        user = client.get("/api/v1/user/").json()
        assert user["username"] == "alice" and user["anonymous"] is False
        # The session cookie changes at sign-in (no fixation) and is HTTP-only.
        assert cookie
        csrf = client.get("/csrf_token").json()["csrf_token"]
        assert client.post("/api/v1/signout", headers={"X-CSRF-Token": csrf}).json() == {
            "success": True}
        client.cookies.set("portside_session", cookie)  # replaying it does not help
        assert client.get("/api/v1/user/").status_code == 401


def test_signin_needs_the_csrf_token(registry: Deployment) -> None:
    with httpx.Client(base_url=registry.url) as client:
        body = {"username": "alice", "password": PASSWORDS["alice"]}
        assert client.post("/api/v1/signin", json=body).status_code == 403
        client.get("/csrf_token")
        missing = client.post("/api/v1/signin", json=body)
        assert missing.status_code == 403
        assert "CSRF" in missing.json()["error_message"]
        wrong = client.post("/api/v1/signin", json=body, headers={"X-CSRF-Token": "nope"})
        assert wrong.status_code == 403


def test_bad_password_is_refused_in_quay_shape(registry: Deployment) -> None:
    with httpx.Client(base_url=registry.url) as client:
        csrf = client.get("/csrf_token").json()["csrf_token"]
        response = client.post("/api/v1/signin", headers={"X-CSRF-Token": csrf},
                               json={"username": "alice", "password": "wrong-password"})
        assert response.status_code == 403
        assert response.json()["success"] is False


def test_session_writes_need_csrf_but_reads_do_not(registry: Deployment) -> None:
    client, csrf = signed_in(registry)
    with closing(client):
        assert client.get("/api/v1/user/").status_code == 200
        refused = client.post("/api/v1/signout")
        assert refused.status_code == 403
        assert client.get("/api/v1/user/").status_code == 200  # still signed in
        assert client.post("/api/v1/signout", headers={"X-CSRF-Token": csrf}).status_code == 200


def test_bearer_tokens_and_their_scopes(registry: Deployment) -> None:
    reader = make_token(registry, "alice", "user:read")
    response = httpx.get(f"{registry.url}/api/v1/user/",
                         headers={"Authorization": f"Bearer {reader}"})
    assert response.status_code == 200 and response.json()["username"] == "alice"
    no_user_scope = make_token(registry, "alice", "repo:read")
    response = httpx.get(f"{registry.url}/api/v1/user/",
                         headers={"Authorization": f"Bearer {no_user_scope}"})
    assert response.status_code == 403
    assert response.json()["error_type"] == "insufficient_scope"
    response = httpx.get(f"{registry.url}/api/v1/user/",
                         headers={"Authorization": "Bearer not-a-token"})
    assert response.status_code == 401


def _v2_token(deployment: Deployment, password: str, scope: str) -> list[str]:
    response = httpx.get(f"{deployment.url}/v2/auth", params={"scope": scope},
                         auth=("$oauthtoken", password))
    assert response.status_code == 200, response.text
    import jwt

    claims = jwt.decode(response.json()["token"], options={"verify_signature": False})
    return [a for entry in claims["access"] for a in entry["actions"]]


def test_oauth_token_scopes_cap_registry_access(registry: Deployment) -> None:
    alice = registry.client("alice", PASSWORDS["alice"])
    repo = unique_repo("alice")
    alice.push_image(repo, "v1")
    read_only = make_token(registry, "alice", "repo:read")
    assert _v2_token(registry, read_only, f"repository:{repo}:pull,push,delete") == ["pull"]
    writer = make_token(registry, "alice", "repo:read repo:write")
    assert _v2_token(registry, writer, f"repository:{repo}:pull,push") == ["pull", "push"]
    # Creating a repository by pushing to it needs repo:create.
    new_repo = unique_repo("alice")
    assert _v2_token(registry, writer, f"repository:{new_repo}:push") == []
    creator = make_token(registry, "alice", "repo:write repo:create")
    assert _v2_token(registry, creator, f"repository:{new_repo}:push") == ["push"]
    # Basic auth with a read-only token on /v2 is refused a push outright.
    response = httpx.post(f"{registry.url}/v2/{repo}/blobs/uploads/",
                          auth=("$oauthtoken", read_only))
    assert response.status_code == 403
    assert error_codes(response) == ["DENIED"]
