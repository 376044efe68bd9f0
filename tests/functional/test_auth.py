"""``GET /v2/``, the ``/v2/auth`` token service, login limits and the first-user bootstrap."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import httpx
import jwt
from sqlalchemy import select

from functional.client import OCI_MANIFEST, RegistryClient, challenge_params, error_codes
from functional.conftest import PASSWORDS, Deployment, unique_repo
from portside.db.engine import create_db_engine
from portside.db.models import SigningKey


def claims(token: str) -> dict[str, Any]:
    """The token's claims, unverified (the test only reads them)."""
    return dict(jwt.decode(token, options={"verify_signature": False}))


def access(token: str) -> dict[str, list[str]]:
    """``name -> actions`` of the token's ``access`` claim."""
    return {entry["name"]: entry["actions"] for entry in claims(token)["access"]}


def bearer(token: str) -> dict[str, str]:
    """An ``Authorization`` header carrying ``token``."""
    return {"Authorization": f"Bearer {token}"}


def signing_key(deployment: Deployment) -> tuple[str, str]:
    """``(kid, private key PEM)`` of the server's newest signing key, read from its database."""
    engine = create_db_engine(deployment.registry.config["DB_URI"])
    try:
        with engine.connect() as conn:
            row = conn.execute(
                select(SigningKey.kid, SigningKey.private_key_pem)
                .order_by(SigningKey.created_at.desc())
            ).first()
    finally:
        engine.dispose()
    assert row is not None
    return row[0], row[1]


# --- GET /v2/ ---------------------------------------------------------------------------


def test_base_anonymous_gets_bearer_challenge(registry: Deployment) -> None:
    response = httpx.get(f"{registry.url}/v2/")
    assert response.status_code == 401
    assert error_codes(response) == ["UNAUTHORIZED"]
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    header = response.headers["WWW-Authenticate"]
    assert header.startswith("Bearer ")
    params = challenge_params(header)
    assert params["realm"] == f"{registry.url}/v2/auth"
    assert params["service"] == registry.registry.host


def test_base_head_anonymous_has_no_body(registry: Deployment) -> None:
    response = httpx.head(f"{registry.url}/v2/")
    assert response.status_code == 401
    assert "WWW-Authenticate" in response.headers
    assert response.content == b""


def test_base_with_basic_credentials(registry: Deployment) -> None:
    response = httpx.get(f"{registry.url}/v2/", auth=("alice", PASSWORDS["alice"]))
    assert response.status_code == 200
    assert response.json() == {}
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_base_with_token(alice: RegistryClient) -> None:
    response = alice.http.get("/v2/", headers=bearer(alice.token()))
    assert response.status_code == 200


def test_base_bad_password(registry: Deployment) -> None:
    response = httpx.get(f"{registry.url}/v2/", auth=("alice", "wrong-password"))
    assert response.status_code == 401
    assert error_codes(response) == ["UNAUTHORIZED"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer realm=")


def test_base_unknown_user_and_malformed_basic(registry: Deployment) -> None:
    assert httpx.get(f"{registry.url}/v2/", auth=("nobody", "whatever1")).status_code == 401
    for header in ("Basic !!!notbase64", "Basic " + base64.b64encode(b"nocolon").decode(),
                   "Basic", "Negotiate abc"):
        response = httpx.get(f"{registry.url}/v2/", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert error_codes(response) == ["UNAUTHORIZED"]


def test_user_created_with_the_cli_can_log_in(registry: Deployment) -> None:
    registry.registry.create_user("dave", "dave-secret-pw")
    assert httpx.get(f"{registry.url}/v2/", auth=("dave", "dave-secret-pw")).status_code == 200
    dave = registry.client("dave", "dave-secret-pw")
    repo = unique_repo("dave")
    image = dave.push_image(repo, "v1")
    assert dave.request("GET", f"/v2/{repo}/manifests/v1", repo=repo).content == image.manifest


def test_login_failure_limit(login_limit_registry: Deployment) -> None:
    url = f"{login_limit_registry.url}/v2/"
    for _ in range(3):
        assert httpx.get(url, auth=("alice", "wrong-password")).status_code == 401
    response = httpx.get(url, auth=("alice", "wrong-password"))
    assert response.status_code == 429
    assert error_codes(response) == ["TOOMANYREQUESTS"]
    assert int(response.headers["Retry-After"]) > 0
    # Blocked means blocked: even the right password waits, and so does /v2/auth.
    assert httpx.get(url, auth=("alice", PASSWORDS["alice"])).status_code == 429
    token = httpx.get(f"{login_limit_registry.url}/v2/auth", auth=("alice", "x" * 9))
    assert token.status_code == 429
    assert "Retry-After" in token.headers


# --- /v2/auth ---------------------------------------------------------------------------


def test_token_response_shape(alice: RegistryClient, registry: Deployment) -> None:
    repo = unique_repo("alice")
    response = alice.token_response(f"repository:{repo}:pull,push")
    assert response.status_code == 200
    body = response.json()
    assert body["token"] == body["access_token"]
    assert body["expires_in"] > 0
    assert body["issued_at"].endswith("Z")
    assert response.headers["Cache-Control"] == "no-store"
    decoded = claims(body["token"])
    assert decoded["sub"] == "alice"
    assert decoded["aud"] == registry.registry.host
    assert access(body["token"]) == {repo: ["pull", "push"]}


def test_token_bad_credentials(registry: Deployment) -> None:
    response = httpx.get(f"{registry.url}/v2/auth", auth=("alice", "wrong-password"),
                         params={"scope": "repository:alice/x:pull"})
    assert response.status_code == 401
    assert error_codes(response) == ["UNAUTHORIZED"]


def test_oauth_password_grant(registry: Deployment) -> None:
    repo = unique_repo("alice")
    form = {"grant_type": "password", "username": "alice", "password": PASSWORDS["alice"],
            "scope": f"repository:{repo}:pull,push", "service": "registry",
            "client_id": "containerd"}
    response = httpx.post(f"{registry.url}/v2/auth", data=form)
    assert response.status_code == 200
    token = response.json()["access_token"]
    assert access(token) == {repo: ["pull", "push"]}
    assert httpx.get(f"{registry.url}/v2/", headers=bearer(token)).status_code == 200


def test_oauth_refused_grants(registry: Deployment) -> None:
    url = f"{registry.url}/v2/auth"
    wrong = httpx.post(url, data={"grant_type": "password", "username": "alice",
                                  "password": "wrong-password"})
    assert wrong.status_code == 401
    assert error_codes(wrong) == ["UNAUTHORIZED"]
    # No refresh tokens: 405 makes containerd fall back to GET with Basic credentials.
    refresh = httpx.post(url, data={"grant_type": "refresh_token", "refresh_token": "x"})
    assert refresh.status_code == 405
    assert error_codes(refresh) == ["UNSUPPORTED"]
    missing = httpx.post(url, data={"grant_type": "password"})
    assert missing.status_code == 401


def test_token_downscoped_on_private_repo_of_another_user(
    registry: Deployment, alice: RegistryClient, bob: RegistryClient
) -> None:
    repo = unique_repo("bob")
    bob.push_image(repo, "v1")
    token = alice.token(f"repository:{repo}:pull,push,delete")
    assert access(token) == {}
    response = alice.http.get(f"/v2/{repo}/manifests/v1", headers=bearer(token))
    assert response.status_code == 403
    assert error_codes(response) == ["DENIED"]


def test_token_downscoped_to_pull_on_public_repo(public_registry: Deployment) -> None:
    alice, bob = public_registry.client("alice"), public_registry.client("bob")
    repo = unique_repo("bob")
    image = bob.push_image(repo, "v1")
    token = alice.token(f"repository:{repo}:pull,push")
    assert access(token) == {repo: ["pull"]}
    pulled = alice.http.get(f"/v2/{repo}/manifests/v1",
                            headers={**bearer(token), "Accept": OCI_MANIFEST})
    assert pulled.status_code == 200
    assert pulled.content == image.manifest
    pushed = alice.http.put(f"/v2/{repo}/manifests/v2", headers={
        **bearer(token), "Content-Type": OCI_MANIFEST}, content=image.manifest)
    assert pushed.status_code == 403
    assert error_codes(pushed) == ["DENIED"]


def test_token_own_namespace_gets_everything_asked(alice: RegistryClient) -> None:
    repo = unique_repo("alice")
    token = alice.token(f"repository:{repo}:pull,push,delete,bogus")
    assert access(token) == {repo: ["pull", "push", "delete"]}


def test_token_ignores_malformed_and_invalid_scopes(alice: RegistryClient) -> None:
    response = alice.token_response("garbage", "repository:Alice/UPPER:pull",
                                    "repository:alice/../x:pull", "repository::pull")
    assert response.status_code == 200
    assert access(response.json()["token"]) == {}


def test_token_cannot_be_exchanged_for_a_bigger_one(alice: RegistryClient) -> None:
    repo = unique_repo("alice")
    alice.push_image(repo, "v1")
    pull_only = alice.token(f"repository:{repo}:pull")
    response = alice.http.get("/v2/auth", params={"scope": f"repository:{repo}:pull,push"},
                              headers=bearer(pull_only))
    assert response.status_code == 401
    assert error_codes(response) == ["UNAUTHORIZED"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer realm=")


def test_anonymous_token_for_public_repo(public_registry: Deployment) -> None:
    owner = public_registry.client("alice")
    repo = unique_repo("alice")
    image = owner.push_image(repo, "v1")
    anonymous = public_registry.client()
    token = anonymous.token(f"repository:{repo}:pull,push")
    assert access(token) == {repo: ["pull"]}
    assert claims(token)["sub"] == ""
    response = anonymous.http.get(f"/v2/{repo}/manifests/v1", headers=bearer(token))
    assert response.status_code == 200
    assert response.content == image.manifest
    # Anonymous callers can pull a public repository without any token as well.
    assert anonymous.http.get(f"/v2/{repo}/manifests/v1").status_code == 200


def test_anonymous_token_refused_when_anonymous_access_is_off(
    anonymous_off_registry: Deployment,
) -> None:
    owner = anonymous_off_registry.client("alice")
    repo = unique_repo("alice")
    owner.push_image(repo, "v1")
    anonymous = anonymous_off_registry.client()
    token = anonymous.token(f"repository:{repo}:pull")
    assert access(token) == {}
    response = anonymous.http.get(f"/v2/{repo}/manifests/v1", headers=bearer(token))
    assert response.status_code == 401
    assert "WWW-Authenticate" in response.headers
    bare = anonymous.http.get(f"/v2/{repo}/manifests/v1")
    assert bare.status_code == 401
    assert challenge_params(bare.headers["WWW-Authenticate"])["scope"] == (
        f"repository:{repo}:pull"
    )
    # A logged-in user still pulls the public repository.
    assert anonymous_off_registry.client("alice").request(
        "GET", f"/v2/{repo}/manifests/v1", repo=repo, actions="pull").status_code == 200


def test_anonymous_pull_of_private_repo_is_challenged(
    alice: RegistryClient, anonymous: RegistryClient
) -> None:
    repo = unique_repo("alice")
    alice.push_image(repo, "v1")
    response = anonymous.http.get(f"/v2/{repo}/manifests/v1")
    assert response.status_code == 401
    params = challenge_params(response.headers["WWW-Authenticate"])
    assert params["scope"] == f"repository:{repo}:pull"
    assert error_codes(response) == ["UNAUTHORIZED"]


def test_insufficient_scope(alice: RegistryClient) -> None:
    repo = unique_repo("alice")
    image = alice.push_image(repo, "v1")
    token = alice.token(f"repository:{repo}:pull")
    response = alice.http.put(f"/v2/{repo}/manifests/v2", content=image.manifest,
                              headers={**bearer(token), "Content-Type": OCI_MANIFEST})
    assert response.status_code == 401
    params = challenge_params(response.headers["WWW-Authenticate"])
    assert params["error"] == "insufficient_scope"
    assert params["scope"] == f"repository:{repo}:pull,push"
    # A token for another repository grants nothing here.
    other = alice.token(f"repository:{unique_repo('alice')}:pull,push")
    response = alice.http.get(f"/v2/{repo}/manifests/v1", headers=bearer(other))
    assert response.status_code == 401
    assert challenge_params(response.headers["WWW-Authenticate"])["error"] == (
        "insufficient_scope"
    )


def test_wrong_user_is_denied(alice: RegistryClient, bob: RegistryClient) -> None:
    repo = unique_repo("alice")
    image = alice.push_image(repo, "v1")
    response = bob.request("GET", f"/v2/{repo}/manifests/v1", repo=repo)
    assert response.status_code == 403
    assert error_codes(response) == ["DENIED"]
    response = bob.http.get(f"/v2/{repo}/manifests/v1", auth=bob.basic)
    assert response.status_code == 403
    assert error_codes(response) == ["DENIED"]
    push = bob.put_manifest(repo, "evil", image.manifest)
    assert push.status_code == 403
    assert error_codes(push) == ["DENIED"]


def test_basic_credentials_work_on_repository_endpoints(alice: RegistryClient) -> None:
    repo = unique_repo("alice")
    image = alice.push_image(repo, "v1")
    response = alice.http.get(f"/v2/{repo}/manifests/v1", auth=alice.basic)
    assert response.status_code == 200
    assert response.content == image.manifest


def _forge(deployment: Deployment, **overrides: Any) -> str:
    """A token signed with the server's own key, with claims changed by ``overrides``."""
    kid, pem = signing_key(deployment)
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": "portside", "aud": deployment.registry.host, "sub": "alice",
        "iat": now, "nbf": now - 5, "exp": now + 300, "jti": uuid.uuid4().hex,
        "access": [], "context": {"user_id": 1},
    }
    payload.update(overrides)
    return jwt.encode(payload, pem, algorithm="RS256", headers={"kid": kid})


def test_tampered_expired_and_garbage_tokens(registry: Deployment,
                                             alice: RegistryClient) -> None:
    repo = unique_repo("alice")
    alice.push_image(repo, "v1")
    good = alice.token(f"repository:{repo}:pull")
    path = f"/v2/{repo}/manifests/v1"
    assert alice.http.get(path, headers=bearer(good)).status_code == 200

    header, payload, signature = good.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    decoded["access"][0]["actions"] = ["pull", "push", "delete"]
    forged_payload = base64.urlsafe_b64encode(json.dumps(decoded).encode()).rstrip(b"=")
    flipped = signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")
    unsigned = jwt.encode({**decoded}, key=None, algorithm="none")  # type: ignore[arg-type]
    other_key = jwt.encode(decoded, _throwaway_pem(), algorithm="RS256",
                           headers={"kid": json.loads(
                               base64.urlsafe_b64decode(header + "==="))["kid"]})
    candidates = {
        "tampered payload": f"{header}.{forged_payload.decode()}.{signature}",
        "tampered signature": f"{header}.{payload}.{flipped}",
        "alg none": unsigned,
        "signed by another key": other_key,
        "garbage": "not-a-token",
        "three dots": "a.b.c",
        "expired": _forge(registry, exp=int(time.time()) - 120,
                          access=[{"type": "repository", "name": repo, "actions": ["pull"]}]),
        "wrong audience": _forge(registry, aud="elsewhere.example.com",
                                 access=[{"type": "repository", "name": repo,
                                          "actions": ["pull"]}]),
    }
    for what, token in candidates.items():
        response = alice.http.get(path, headers=bearer(token))
        assert response.status_code == 401, what
        assert error_codes(response) == ["UNAUTHORIZED"], what
        assert response.headers["WWW-Authenticate"].startswith("Bearer "), what
    assert alice.http.get(path, headers={"Authorization": "Bearer"}).status_code == 401


def _throwaway_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def test_forged_token_with_server_key_is_honoured(registry: Deployment,
                                                  alice: RegistryClient) -> None:
    """Sanity check of the forging helper used above: a valid forgery passes."""
    repo = unique_repo("alice")
    alice.push_image(repo, "v1")
    user_id = claims(alice.token())["context"]["user_id"]
    token = _forge(registry, context={"user_id": user_id},
                   access=[{"type": "repository", "name": repo, "actions": ["pull"]}])
    assert alice.http.get(f"/v2/{repo}/manifests/v1", headers=bearer(token)).status_code == 200


# --- POST /api/v1/user/initialize -----------------------------------------------------------


def test_user_initialize(initialize_registry: Deployment) -> None:
    url = f"{initialize_registry.url}/api/v1/user/initialize"
    body = {"username": "admin", "password": "initial-password", "email": "admin@example.com",
            "access_token": True}
    response = httpx.post(url, json=body)
    assert response.status_code == 200, response.text
    created = response.json()
    assert created["username"] == "admin"
    token = created["access_token"]
    assert token

    # The access token logs in as $oauthtoken, at /v2/auth and with Basic on /v2.
    client = RegistryClient(initialize_registry.url, "$oauthtoken", token)
    try:
        repo = "admin/bootstrap"
        registry_token = client.token(f"repository:{repo}:pull,push")
        assert access(registry_token) == {repo: ["pull", "push"]}
        assert claims(registry_token)["sub"] == "admin"
        image = client.push_image(repo, "v1")
        pulled = client.http.get(f"/v2/{repo}/manifests/v1", auth=client.basic)
        assert pulled.status_code == 200
        assert pulled.content == image.manifest
        assert client.http.get("/v2/", auth=("$oauthtoken", "not-the-token")).status_code == 401
    finally:
        client.close()
    # The password works too.
    assert httpx.get(f"{initialize_registry.url}/v2/",
                     auth=("admin", "initial-password")).status_code == 200

    again = httpx.post(url, json={**body, "username": "second"})
    assert again.status_code == 400
    assert again.json()["error_type"] == "invalid_request"


def test_user_initialize_disabled(registry: Deployment) -> None:
    url = f"{registry.url}/api/v1/user/initialize"
    response = httpx.post(url, json={"username": "admin", "password": "initial-password",
                                     "access_token": True})
    assert response.status_code == 404
    assert response.json()["error_type"] == "not_found"
    # Switched off means not there: no validation errors that would reveal the endpoint.
    for body in (b"{}", b"[1]", b'{"username": "x"}'):
        response = httpx.post(url, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 404, body


def test_user_initialize_bad_requests(initialize_registry: Deployment) -> None:
    url = f"{initialize_registry.url}/api/v1/user/initialize"
    for body in (b"{}", b"not json", b"[1]", b"[" * 20_000 + b"]" * 20_000,
                 b'{"username": "admin", "password": "short"}',
                 b'{"username": "Bad Name!", "password": "long-enough-pw"}'):
        response = httpx.post(url, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, body[:60]
        assert response.json()["status"] == 400
