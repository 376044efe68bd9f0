"""OAuth applications of organizations and the tokens users issue through them: the
``/api/v1`` endpoints, ``/oauth`` over a real signed-in session, and the issued tokens
on ``/api/v1`` and ``/v2``."""

from __future__ import annotations

from contextlib import closing
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from functional.conftest import PASSWORDS, Deployment, unique_repo
from functional.test_api_auth import _v2_token, signed_in
from functional.test_api_robots import api, assert_error, new_org

REDIRECT = "https://app.example.com/callback"


def create_app(deployment: Deployment, org: str, **fields: Any) -> dict[str, Any]:
    """A new application of ``org`` (alice administers it), as the API returns it."""
    with api(deployment, "alice", "org:admin") as client:
        response = client.post(f"/organization/{org}/applications",
                               json={"name": "ci", "redirect_uri": REDIRECT, **fields})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def authorize(client: httpx.Client, csrf: str | None, client_id: str, scope: str,
              response_type: str = "token", redirect_uri: str = REDIRECT,
              state: str = "xyz", **extra: str) -> httpx.Response:
    """``POST /oauth/authorizeapp`` as the UI's form does (CSRF in the form field)."""
    form = {"client_id": client_id, "redirect_uri": redirect_uri, "scope": scope,
            "response_type": response_type, "state": state, **extra}
    if csrf is not None:
        form["_csrf_token"] = csrf
    return client.post("/oauth/authorizeapp", data=form)


def fragment(response: httpx.Response) -> dict[str, str]:
    """The parameters in the fragment of a redirect's ``Location``."""
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "#")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).fragment).items()}


def issue_token(deployment: Deployment, client_id: str, scope: str) -> str:
    """An access token alice issues through the application (implicit flow)."""
    client, csrf = signed_in(deployment)
    with closing(client):
        return fragment(authorize(client, csrf, client_id, scope))["access_token"]


def bearer(deployment: Deployment, token: str) -> httpx.Client:
    """An ``/api/v1`` client using ``token``."""
    return httpx.Client(base_url=f"{deployment.url}/api/v1",
                        headers={"Authorization": f"Bearer {token}"})


def test_application_crud_in_quays_shapes(registry: Deployment) -> None:
    org = new_org(registry)
    with api(registry, "alice", "org:admin") as client:
        created = client.post(f"/organization/{org}/applications", json={
            "name": "builder", "redirect_uri": REDIRECT, "description": "CI",
            "application_uri": "https://app.example.com"})
        assert created.status_code == 200, created.text
        app = created.json()
        assert set(app) == {"name", "description", "application_uri", "client_id",
                            "client_secret", "redirect_uri", "avatar_email"}
        assert app["name"] == "builder" and app["avatar_email"] is None
        assert len(app["client_id"]) == 20 and len(app["client_secret"]) == 40
        client_id = app["client_id"]
        path = f"/organization/{org}/applications/{client_id}"
        assert client.get(f"/organization/{org}/applications").json() == {
            "applications": [app]}
        assert client.get(path).json() == app
        updated = client.put(path, json={"name": "renamed", "redirect_uri": REDIRECT,
                                         "application_uri": "", "avatar_email": "a@b.c"})
        assert updated.status_code == 200, updated.text
        assert updated.json()["name"] == "renamed"
        assert updated.json()["client_secret"] == app["client_secret"]
        reset = client.post(f"{path}/resetclientsecret")
        assert reset.status_code == 200
        assert reset.json()["client_secret"] != app["client_secret"]
        assert reset.json()["client_id"] == client_id
        assert client.delete(path).status_code == 204
        assert_error(client.get(path), 404)
        assert client.get(f"/organization/{org}/applications").json() == {"applications": []}
        kinds = [entry["kind"] for entry in client.get(f"/organization/{org}/logs").json()[
            "logs"]]
    assert kinds[:4] == ["delete_application", "reset_application_client_secret",
                         "update_application", "create_application"]


def test_only_organization_admins_manage_applications(registry: Deployment) -> None:
    org = new_org(registry)
    app = create_app(registry, org)
    path = f"/organization/{org}/applications"
    with api(registry, "bob") as bob, api(registry, "alice", "repo:read user:admin") as weak, \
            httpx.Client(base_url=f"{registry.url}/api/v1") as anonymous:
        assert_error(bob.get(path), 403)
        assert_error(bob.post(path, json={"name": "x"}), 403)
        assert_error(bob.delete(f"{path}/{app['client_id']}"), 403)
        assert_error(weak.get(path), 403)
        assert_error(anonymous.get(path), 401)
    with api(registry, "alice", "org:admin") as alice:
        assert_error(alice.get("/organization/no-such-org-xyz/applications"), 404)
        assert_error(alice.get(f"{path}/NOSUCHCLIENT"), 404)
        assert_error(alice.post(path, json={"name": ""}), 400)
        assert_error(alice.post(path, json={"description": "no name"}), 400)
        assert_error(alice.post(path, json={"name": "x", "redirect_uri": "ftp://x/y"}), 400)
        assert_error(alice.put(f"{path}/{app['client_id']}", json={"name": "x"}), 400)
        assert_error(alice.post(path, json={"name": "nul\x00"}), 400)
        assert_error(alice.post(path, json={"name": "x", "redirect_uri": "https://a/\n"}), 400)
        assert_error(alice.get(f"{path}/%00"), 404)
    with api(registry, "alice", "user:admin") as alice:
        assert_error(alice.delete("/user/authorizations/\u00b2"), 404)
        assert_error(alice.get("/user/authorizations/99999999999999999999999"), 404)


def test_session_issues_a_scoped_token_that_works_on_api_and_registry(
        registry: Deployment) -> None:
    alice = registry.client("alice", PASSWORDS["alice"])
    repo = unique_repo("alice", "oauth")
    alice.push_image(repo, "v1")
    app = create_app(registry, new_org(registry))
    client, csrf = signed_in(registry)
    with closing(client):
        response = authorize(client, csrf, app["client_id"], "repo:read")
        assert response.headers["cache-control"] == "no-store"
        params = fragment(response)
    assert params["token_type"] == "Bearer" and params["scope"] == "repo:read"
    assert params["state"] == "xyz" and int(params["expires_in"]) > 86400 * 365
    token = params["access_token"]
    with bearer(registry, token) as api_client:
        assert api_client.get(f"/repository/{repo}").status_code == 200
        refused = api_client.put(f"/repository/{repo}", json={"description": "x"})
        assert_error(refused, 403)
        assert refused.json()["error_type"] == "insufficient_scope"
        assert_error(api_client.get("/user/"), 403)  # no user:read
    assert _v2_token(registry, token, f"repository:{repo}:pull,push") == ["pull"]


def test_scopes_never_exceed_the_users_rights(registry: Deployment) -> None:
    alice = registry.client("alice", PASSWORDS["alice"])
    repo = unique_repo("alice", "oauth")
    alice.push_image(repo, "v1")
    app = create_app(registry, new_org(registry))
    client, csrf = signed_in(registry, "bob")
    with closing(client):
        params = fragment(authorize(client, csrf, app["client_id"],
                                    "repo:read,repo:write super:user"))
    # Comma- and space-separated scopes are both accepted.
    assert params["scope"] == "repo:read repo:write super:user"
    token = params["access_token"]
    assert _v2_token(registry, token, f"repository:{repo}:pull,push") == []
    with bearer(registry, token) as bob:
        assert_error(bob.get(f"/repository/{repo}"), 403)
        assert_error(bob.get("/superuser/users/"), 403)


def test_authorizeapp_refusals(registry: Deployment) -> None:
    app = create_app(registry, new_org(registry))
    client_id = app["client_id"]
    with httpx.Client(base_url=registry.url) as anonymous:
        csrf = anonymous.get("/csrf_token").json()["csrf_token"]
        refused = authorize(anonymous, csrf, client_id, "repo:read")
        assert refused.status_code == 401 and refused.json()["error"] == "login_required"
        assert anonymous.get("/oauth/authorize", params={
            "client_id": client_id, "redirect_uri": REDIRECT, "scope": "repo:read",
            "response_type": "token"}).status_code == 401
    client, csrf = signed_in(registry)
    with closing(client):
        assert authorize(client, None, client_id, "repo:read").status_code == 403
        assert authorize(client, "wrong", client_id, "repo:read").status_code == 403
        # The header works as well as Quay's form field.
        with_header = client.post("/oauth/authorizeapp", headers={"X-CSRF-Token": csrf},
                                  data={"client_id": client_id, "redirect_uri": REDIRECT,
                                        "scope": "repo:read", "response_type": "token"})
        assert with_header.status_code == 302
        for uri in ("https://evil.example.com/callback", "http://app.example.com/callback",
                    "https://app.example.com/callbackx", "https://app.example.com/",
                    "https://app.example.com/callback/../steal",
                    "https://app.example.com:444/callback",
                    "https://app.example.com/callback#frag", "",
                    "https://app.example.com/callback/\r\nSet-Cookie: a=b",
                    "https://app.example.com/callback/\u00e9"):
            bad = authorize(client, csrf, client_id, "repo:read", redirect_uri=uri)
            assert bad.status_code == 400, uri
            assert bad.json()["error"] == "invalid_request"
        below = authorize(client, csrf, client_id, "repo:read",
                          redirect_uri=REDIRECT + "/deeper?x=1")
        assert below.status_code == 302
        assert below.headers["location"].startswith(REDIRECT + "/deeper?x=1#access_token=")
        unknown_scope = authorize(client, csrf, client_id, "repo:read repo:everything")
        assert unknown_scope.status_code == 400
        assert unknown_scope.json()["error"] == "invalid_scope"
        assert authorize(client, csrf, client_id, "").status_code == 400
        unknown = authorize(client, csrf, "NOSUCHCLIENT", "repo:read")
        assert unknown.status_code == 404 and unknown.json()["error"] == "invalid_client"
        assert authorize(client, csrf, client_id, "repo:read",
                         response_type="password").status_code == 400
        assert authorize(client, csrf, client_id, "repo:read",
                         state="s" * 5000).status_code == 400
        assert authorize(client, csrf, "BAD\x00ID", "repo:read").status_code == 404
        not_form = client.post("/oauth/authorizeapp", headers={"X-CSRF-Token": csrf},
                               json={"client_id": client_id})
        assert not_form.status_code == 400


def test_authorize_describes_the_request(registry: Deployment) -> None:
    app = create_app(registry, new_org(registry), description="Builds things")
    client, _ = signed_in(registry)
    with closing(client):
        described = client.get("/oauth/authorize", params={
            "client_id": app["client_id"], "redirect_uri": REDIRECT,
            "scope": "repo:read org:admin", "response_type": "token", "state": "s"})
        assert described.status_code == 200, described.text
        body = described.json()
        assert body["application"]["name"] == "ci"
        assert body["application"]["description"] == "Builds things"
        assert [s["scope"] for s in body["scopes"]] == ["repo:read", "org:admin"]
        assert [s["dangerous"] for s in body["scopes"]] == [False, True]
        assert body["state"] == "s" and body["redirect_uri"] == REDIRECT
        bad = client.get("/oauth/authorize", params={
            "client_id": app["client_id"], "redirect_uri": "https://evil.example.com/",
            "scope": "repo:read", "response_type": "token"})
        assert bad.status_code == 400
        missing = client.get("/oauth/nothing-here")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"
        assert client.get("/oauth/authorizeapp").status_code == 405


def test_local_token_page_is_always_an_allowed_redirect(registry: Deployment) -> None:
    org = new_org(registry)
    with api(registry, "alice", "org:admin") as admin:
        app = admin.post(f"/organization/{org}/applications", json={"name": "cli"}).json()
    local = f"{registry.url}/oauth/localapp"
    client, csrf = signed_in(registry)
    with closing(client):
        response = authorize(client, csrf, app["client_id"], "repo:read",
                             redirect_uri=local)
        assert response.status_code == 302
        assert response.headers["location"].startswith(local + "#access_token=")
        page = client.get("/oauth/localapp")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "script-src 'sha256-" in page.headers["content-security-policy"]
        # Without a registered redirect URI, no other address is accepted.
        assert authorize(client, csrf, app["client_id"], "repo:read").status_code == 400


def test_authorizations_list_and_revoke(registry: Deployment) -> None:
    app = create_app(registry, new_org(registry))
    token = issue_token(registry, app["client_id"], "repo:read user:read")
    with api(registry, "alice", "user:admin") as alice:
        listed = alice.get("/user/authorizations")
        assert listed.status_code == 200
        mine = [a for a in listed.json()["authorizations"]
                if a["application"]["clientId"] == app["client_id"]]
        assert len(mine) == 1
        item = mine[0]
        assert token not in listed.text
        assert [s["scope"] for s in item["scopes"]] == ["repo:read", "user:read"]
        assert item["application"]["name"] == "ci"
        assert alice.get(f"/user/authorizations/{item['uuid']}").json() == item
        with api(registry, "bob", "user:admin") as bob:
            assert_error(bob.delete(f"/user/authorizations/{item['uuid']}"), 404)
            bobs = bob.get("/user/authorizations").json()["authorizations"]
            assert item["uuid"] not in [a["uuid"] for a in bobs]
        with bearer(registry, token) as used:
            assert used.get("/user/").status_code == 200
            assert_error(used.get("/user/authorizations"), 403)  # needs user:admin
        assert alice.delete(f"/user/authorizations/{item['uuid']}").status_code == 204
        assert_error(alice.delete(f"/user/authorizations/{item['uuid']}"), 404)
        assert_error(alice.get("/user/authorizations/not-a-number"), 404)
    with bearer(registry, token) as revoked:
        assert_error(revoked.get("/user/"), 401)
    response = httpx.get(f"{registry.url}/v2/auth", auth=("$oauthtoken", token))
    assert response.status_code == 401


def test_deleting_the_application_revokes_its_tokens(registry: Deployment) -> None:
    org = new_org(registry)
    app = create_app(registry, org)
    token = issue_token(registry, app["client_id"], "user:read")
    with bearer(registry, token) as client:
        assert client.get("/user/").status_code == 200
    with api(registry, "alice", "org:admin") as admin:
        assert admin.delete(
            f"/organization/{org}/applications/{app['client_id']}").status_code == 204
    with bearer(registry, token) as client:
        assert_error(client.get("/user/"), 401)
    assert httpx.get(f"{registry.url}/v2/auth",
                     auth=("$oauthtoken", token)).status_code == 401


def _code(registry: Deployment, client_id: str, scope: str) -> str:
    client, csrf = signed_in(registry)
    with closing(client):
        response = authorize(client, csrf, client_id, scope, response_type="code")
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    params = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert params["state"] == "xyz"
    return params["code"]


def test_authorization_code_flow_is_single_use(registry: Deployment) -> None:
    app = create_app(registry, new_org(registry))
    code = _code(registry, app["client_id"], "user:read")
    exchange = {"grant_type": "authorization_code", "client_id": app["client_id"],
                "client_secret": app["client_secret"], "code": code,
                "redirect_uri": REDIRECT}
    url = f"{registry.url}/oauth/access_token"
    assert httpx.post(url, data={**exchange, "client_secret": "wrong"}).status_code == 401
    assert httpx.post(url, data={**exchange, "redirect_uri": REDIRECT + "/x"}
                      ).json()["error"] == "invalid_grant"
    assert httpx.post(url, data={**exchange, "code": code[:-4] + "AAAA"}
                      ).status_code == 400
    assert httpx.post(url, data={**exchange, "grant_type": "password"}
                      ).json()["error"] == "unsupported_grant_type"
    granted = httpx.post(url, data=exchange)
    assert granted.status_code == 200, granted.text
    body = granted.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "user:read"
    assert granted.headers["cache-control"] == "no-store"
    with bearer(registry, body["access_token"]) as client:
        assert client.get("/user/").json()["username"] == "alice"
    # A second redemption is refused and revokes what the first one gave.
    again = httpx.post(url, data=exchange)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    with bearer(registry, body["access_token"]) as client:
        assert_error(client.get("/user/"), 401)


def test_a_revoked_token_cannot_be_minted_again_from_its_code(registry: Deployment) -> None:
    app = create_app(registry, new_org(registry))
    exchange = {"grant_type": "authorization_code", "client_id": app["client_id"],
                "client_secret": app["client_secret"],
                "code": _code(registry, app["client_id"], "user:read"),
                "redirect_uri": REDIRECT}
    url = f"{registry.url}/oauth/access_token"
    granted = httpx.post(url, data=exchange)
    assert granted.status_code == 200, granted.text
    token = granted.json()["access_token"]
    with api(registry, "alice", "user:admin") as alice:
        mine = [a for a in alice.get("/user/authorizations").json()["authorizations"]
                if a["application"]["clientId"] == app["client_id"]]
        assert alice.delete(f"/user/authorizations/{mine[0]['uuid']}").status_code == 204
        # Revoked tokens leave the list at once.
        assert not [a for a in alice.get("/user/authorizations").json()["authorizations"]
                    if a["application"]["clientId"] == app["client_id"]]
    # The code is still within its lifetime, but it cannot bring the token back.
    for _attempt in range(2):
        again = httpx.post(url, data=exchange)
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    with bearer(registry, token) as client:
        assert_error(client.get("/user/"), 401)


def test_code_is_bound_to_its_client(registry: Deployment) -> None:
    org = new_org(registry)
    first, second = create_app(registry, org), create_app(registry, org)
    code = _code(registry, first["client_id"], "repo:read")
    stolen = httpx.post(f"{registry.url}/oauth/access_token", data={
        "grant_type": "authorization_code", "client_id": second["client_id"],
        "client_secret": second["client_secret"], "code": code, "redirect_uri": REDIRECT})
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    basic = httpx.post(f"{registry.url}/oauth/access_token",
                       auth=(first["client_id"], first["client_secret"]),
                       data={"grant_type": "authorization_code", "code": code,
                             "redirect_uri": REDIRECT})
    assert basic.status_code == 200, basic.text


@pytest.mark.parametrize("scope", ["repo:read repo:write", "repo:write,repo:create"])
def test_write_scopes_allow_pushing(registry: Deployment, scope: str) -> None:
    alice = registry.client("alice", PASSWORDS["alice"])
    repo = unique_repo("alice", "oauth")
    alice.push_image(repo, "v1")
    app = create_app(registry, new_org(registry))
    token = issue_token(registry, app["client_id"], scope)
    assert _v2_token(registry, token, f"repository:{repo}:pull,push") == ["pull", "push"]
