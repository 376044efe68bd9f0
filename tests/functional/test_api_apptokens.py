"""Application-specific tokens (``/api/v1/user/apptoken``, ``$app`` logins), encrypted
passwords (``/api/v1/user/clientkey``) and ``FEATURE_REQUIRE_ENCRYPTED_BASIC_AUTH``,
over HTTP against a real server."""

from __future__ import annotations

import email.utils
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import update

from functional.client import RegistryClient, error_codes
from functional.conftest import PASSWORDS, Deployment, unique_repo
from functional.test_api_auth import signed_in
from functional.test_api_robots import api, assert_error, server_db
from portside.db.models import AppSpecificToken

TOKEN_KEYS = {"uuid", "title", "last_accessed", "created", "expiration"}
REFUSAL = ("Client login with unencrypted passwords is disabled. Please generate an "
           "encrypted password in the user admin panel for use here.")


def parse_date(value: str) -> datetime:
    """A Quay API date (RFC 2822, ``-0000``: UTC) as an aware datetime."""
    parsed = email.utils.parsedate_to_datetime(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def new_token(client: httpx.Client, title: str = "laptop") -> dict[str, Any]:
    """Create a token through the API; returns Quay's ``token`` object."""
    response = client.post("/user/apptoken", json={"title": title})
    assert response.status_code == 200, response.text
    token: dict[str, Any] = response.json()["token"]
    assert set(token) == TOKEN_KEYS | {"token_code"}
    return token


def registry_token(deployment: Deployment, username: str, password: str,
                   repo: str) -> httpx.Response:
    """``GET /v2/auth`` with Basic credentials for push and pull on ``repo``."""
    return httpx.get(f"{deployment.url}/v2/auth", auth=(username, password),
                     params={"scope": f"repository:{repo}:pull,push"})


def test_create_list_get_and_revoke(registry: Deployment) -> None:
    with closing(api(registry, "alice")) as alice, closing(api(registry, "bob")) as bob:
        token = new_token(alice, "ci runner")
        assert token["title"] == "ci runner"
        assert token["expiration"] is None and token["last_accessed"] is None
        created = parse_date(token["created"])
        assert abs(datetime.now(UTC) - created) < timedelta(minutes=5)
        code = token["token_code"]
        assert isinstance(code, str) and len(code) >= 60 and code.isalnum()

        listed = alice.get("/user/apptoken")
        assert listed.status_code == 200
        body = listed.json()
        assert body["only_expiring"] is False
        mine = [t for t in body["tokens"] if t["uuid"] == token["uuid"]]
        assert mine == [{k: token[k] for k in TOKEN_KEYS}]
        assert all("token_code" not in t for t in body["tokens"])
        assert token["uuid"] not in {t["uuid"] for t in bob.get("/user/apptoken").json()["tokens"]}
        # Never-expiring tokens are not "expiring soon".
        soon = alice.get("/user/apptoken", params={"expiring": "true"}).json()
        assert soon["only_expiring"] is True and token["uuid"] not in {
            t["uuid"] for t in soon["tokens"]}

        one = alice.get(f"/user/apptoken/{token['uuid']}")
        assert one.status_code == 200
        # Deviation from Quay: only a hash is stored, so the secret is not shown again.
        assert one.json() == {"token": {k: token[k] for k in TOKEN_KEYS}}

        # Another user's token is not found, and cannot be revoked.
        assert_error(bob.get(f"/user/apptoken/{token['uuid']}"), 404)
        assert_error(bob.delete(f"/user/apptoken/{token['uuid']}"), 404)
        assert_error(alice.get("/user/apptoken/not-a-uuid"), 404)

        revoked = alice.delete(f"/user/apptoken/{token['uuid']}")
        assert revoked.status_code == 204 and revoked.content == b""
        assert_error(alice.get(f"/user/apptoken/{token['uuid']}"), 404)
        assert_error(alice.delete(f"/user/apptoken/{token['uuid']}"), 404)

        kinds = [(e["kind"], e["metadata"].get("app_specific_token"))
                 for e in alice.get("/user/logs").json()["logs"]]
        assert ("create_app_specific_token", token["uuid"]) in kinds
        assert ("revoke_app_specific_token", token["uuid"]) in kinds


def test_bad_requests_and_scopes(registry: Deployment) -> None:
    with closing(api(registry, "alice")) as alice:
        for body in ({}, {"title": 5}, {"title": ""}, {"title": "   "}, {"title": "x" * 256}):
            assert_error(alice.post("/user/apptoken", json=body), 400)
        assert_error(alice.post("/user/apptoken", content=b"not json",
                                headers={"Content-Type": "application/json"}), 400)
    with closing(api(registry, None)) as anonymous:
        assert_error(anonymous.get("/user/apptoken"), 401)
        assert_error(anonymous.post("/user/apptoken", json={"title": "x"}), 401)
        assert_error(anonymous.post("/user/clientkey", json={"password": "x"}), 401)
    with closing(api(registry, "alice", "user:read repo:read")) as reader:
        assert_error(reader.get("/user/apptoken"), 403)
        assert_error(reader.post("/user/apptoken", json={"title": "x"}), 403)
        assert_error(reader.post("/user/clientkey", json={"password": PASSWORDS["alice"]}),
                     403)


def test_session_callers_manage_tokens(registry: Deployment) -> None:
    client, csrf = signed_in(registry, "bob")
    with closing(client):
        response = client.post("/api/v1/user/apptoken", json={"title": "from the UI"},
                               headers={"X-CSRF-Token": csrf})
        assert response.status_code == 200, response.text
        uuid = response.json()["token"]["uuid"]
        assert client.post("/api/v1/user/apptoken", json={"title": "no csrf"}).status_code == 403
        assert client.delete(f"/api/v1/user/apptoken/{uuid}",
                             headers={"X-CSRF-Token": csrf}).status_code == 204


def test_app_token_logs_in_as_its_user(registry: Deployment) -> None:
    with closing(api(registry, "alice")) as alice:
        token = new_token(alice)
    code, repo = token["token_code"], unique_repo("alice", "apptoken")

    # /v2/auth with $app: a token for alice, with alice's rights.
    response = registry_token(registry, "$app", code, repo)
    assert response.status_code == 200, response.text
    app_client = RegistryClient(registry.url, "$app", code)
    with closing(app_client.http):
        image = app_client.push_image(repo, "v1")
        assert app_client.request("GET", f"/v2/{repo}/manifests/v1", repo=repo,
                                  headers={"Accept": image.media_type}).status_code == 200
        # Basic with $app on /v2 itself.
        assert httpx.get(f"{registry.url}/v2/", auth=("$app", code)).status_code == 200
        assert httpx.get(f"{registry.url}/v2/{repo}/tags/list",
                         auth=("$app", code)).json()["tags"] == ["v1"]
        # Not bob's repositories.
        other = unique_repo("bob")
        granted = registry_token(registry, "$app", code, other).json()["token"]
        assert httpx.put(f"{registry.url}/v2/{other}/manifests/x", content=b"{}",
                         headers={"Authorization": f"Bearer {granted}"}).status_code in (401, 403)

    # Used: last_accessed is shown now.
    with closing(api(registry, "alice")) as alice:
        shown = alice.get(f"/user/apptoken/{token['uuid']}").json()["token"]
        assert shown["last_accessed"] is not None
        # The token is neither a password for alice nor usable to sign in to the API.
        assert httpx.get(f"{registry.url}/v2/", auth=("alice", code)).status_code == 401
        session = httpx.Client(base_url=registry.url)
        with closing(session):
            csrf = session.get("/csrf_token").json()["csrf_token"]
            assert session.post("/api/v1/signin", headers={"X-CSRF-Token": csrf},
                                json={"username": "$app", "password": code}).status_code == 403

        # Revoked: refused at once, on both paths.
        assert alice.delete(f"/user/apptoken/{token['uuid']}").status_code == 204
    assert httpx.get(f"{registry.url}/v2/", auth=("$app", code)).status_code == 401
    refused = registry_token(registry, "$app", code, repo)
    assert refused.status_code == 401 and error_codes(refused) == ["UNAUTHORIZED"]


def test_expired_and_malformed_app_tokens_are_refused(registry: Deployment) -> None:
    with closing(api(registry, "alice")) as alice:
        token = new_token(alice, "short-lived")
        code = token["token_code"]
        assert httpx.get(f"{registry.url}/v2/", auth=("$app", code)).status_code == 200
        with server_db(registry) as session:
            session.execute(update(AppSpecificToken)
                            .where(AppSpecificToken.uuid == token["uuid"])
                            .values(expires_at=datetime.now(UTC) - timedelta(minutes=1)))
        assert httpx.get(f"{registry.url}/v2/", auth=("$app", code)).status_code == 401
        assert registry_token(registry, "$app", code, "alice/x").status_code == 401
        # Still listed (until garbage-collected), with its expiration, and "expiring".
        listed = alice.get("/user/apptoken", params={"expiring": "1"}).json()["tokens"]
        assert token["uuid"] in {t["uuid"] for t in listed}
        assert alice.get(f"/user/apptoken/{token['uuid']}").json()["token"]["expiration"]
    for bad in ("", "short", code[:-1], code + "a", code.lower() if code != code.lower()
                else code.upper(), "é" * 80):
        response = httpx.get(f"{registry.url}/v2/", auth=("$app", bad))
        assert response.status_code == 401, bad


def test_client_key_round_trip(registry: Deployment) -> None:
    with closing(api(registry, "bob")) as bob:
        wrong = bob.post("/user/clientkey", json={"password": "not-bobs-password"})
        assert_error(wrong, 400)
        assert_error(bob.post("/user/clientkey", json={}), 400)
        response = bob.post("/user/clientkey", json={"password": PASSWORDS["bob"]})
        assert response.status_code == 200, response.text
        key = response.json()["key"]
        assert set(response.json()) == {"key"}
        assert PASSWORDS["bob"] not in key
        logs = [e["kind"] for e in bob.get("/user/logs").json()["logs"]]
        assert "user_generate_client_key" in logs
    assert httpx.get(f"{registry.url}/v2/", auth=("bob", key)).status_code == 200
    repo = unique_repo("bob", "clientkey")
    assert registry_token(registry, "bob", key, repo).status_code == 200
    client = RegistryClient(registry.url, "bob", key)
    with closing(client.http):
        client.push_image(repo, "latest")
    # Bound to its user, and tamper-proof.
    assert httpx.get(f"{registry.url}/v2/", auth=("alice", key)).status_code == 401
    assert httpx.get(f"{registry.url}/v2/", auth=("bob", key[:-3] + "abc")).status_code == 401


def test_encrypted_passwords_required(strict_credentials_registry: Deployment) -> None:
    deployment = strict_credentials_registry
    password, repo = PASSWORDS["alice"], unique_repo("alice", "strict")

    # Plain passwords: refused with Quay's message on /v2 and /v2/auth (GET and POST).
    basic = httpx.get(f"{deployment.url}/v2/", auth=("alice", password))
    assert basic.status_code == 401
    assert basic.json()["errors"][0]["message"] == REFUSAL
    assert basic.headers["WWW-Authenticate"].startswith("Bearer realm=")
    token = registry_token(deployment, "alice", password, repo)
    assert token.status_code == 401 and token.json()["errors"][0]["message"] == REFUSAL
    form = {"grant_type": "password", "username": "alice", "password": password,
            "scope": f"repository:{repo}:pull", "service": "registry"}
    assert httpx.post(f"{deployment.url}/v2/auth", data=form).status_code == 401

    # Signing in to the API with the password still works; so does getting a key.
    client, csrf = signed_in(deployment, "alice")
    with closing(client):
        response = client.post("/api/v1/user/clientkey", json={"password": password},
                               headers={"X-CSRF-Token": csrf})
        assert response.status_code == 200, response.text
        key = response.json()["key"]
        created = client.post("/api/v1/user/apptoken", json={"title": "ci"},
                              headers={"X-CSRF-Token": csrf})
        assert created.status_code == 200, created.text
        app_token = created.json()["token"]
    # APP_SPECIFIC_TOKEN_EXPIRATION: 1h.
    expiration = parse_date(app_token["expiration"])
    assert timedelta(minutes=55) < expiration - datetime.now(UTC) <= timedelta(hours=1)

    # The encrypted password, $app tokens and $oauthtoken tokens work.
    assert httpx.get(f"{deployment.url}/v2/", auth=("alice", key)).status_code == 200
    assert registry_token(deployment, "alice", key, repo).status_code == 200
    form["password"] = key
    assert httpx.post(f"{deployment.url}/v2/auth", data=form).status_code == 200
    assert httpx.get(f"{deployment.url}/v2/",
                     auth=("$app", app_token["token_code"])).status_code == 200
    from functional.test_api_auth import make_token
    api_token = make_token(deployment, "alice", "repo:read")
    assert httpx.get(f"{deployment.url}/v2/",
                     auth=("$oauthtoken", api_token)).status_code == 200
    # A forged key is simply invalid credentials.
    forged = httpx.get(f"{deployment.url}/v2/", auth=("alice", "psck1.forged"))
    assert forged.status_code == 401 and forged.json()["errors"][0]["message"] != REFUSAL
