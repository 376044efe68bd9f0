"""``/oauth``: a signed-in user authorizes an organization's application and receives
an API access token with the scopes it chose (Quay's OAuth 2 endpoints).

- ``GET /oauth/authorize``: validates the request and describes the application and
  scopes as JSON, for the UI to ask the user (Quay renders an HTML page here);
- ``POST /oauth/authorizeapp`` (form, session cookie and CSRF token): grants it, and
  redirects to the application's ``redirect_uri`` with the token in the fragment
  (``response_type=token``, the implicit flow) or with ``?code=`` (``response_type=code``);
- ``POST /oauth/access_token`` (form): the application exchanges a code for the token;
- ``GET /oauth/localapp``: Portside's own redirect target, a page showing the token to
  the user (for applications used by scripts, which have no redirect URI of their own).

Errors follow RFC 6749: ``{"error": ..., "error_description": ...}``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote_plus, urlencode

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from portside.api.auth import current_session, services_of
from portside.api.errors import ApiError
from portside.auth.permissions import Subject
from portside.services.applications import (
    SCOPES,
    ApplicationService,
    AuthorizationRequest,
    InvalidClient,
    InvalidGrant,
    InvalidRedirect,
    InvalidScope,
)
from portside.services.organizations import Forbidden, Invalid, NotFound
from portside.services.sessions import SessionInfo, csrf_matches

if TYPE_CHECKING:
    from portside.app import Services

#: Largest accepted form body: a handful of short fields.
MAX_FORM_BODY = 64 * 1024
#: Quay's form field for the CSRF token (the ``X-CSRF-Token`` header works too).
CSRF_FIELD = "_csrf_token"
RESPONSE_TYPES = frozenset({"token", "code"})
#: Longest ``state`` echoed back to the application (it travels in a ``Location``).
MAX_STATE = 2048
#: Tokens and codes must not be cached anywhere on the way (RFC 6749, 5.1).
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

_LOCALAPP_SCRIPT = (
    "var p=new URLSearchParams(location.hash.slice(1));"
    "document.getElementById('token').textContent="
    "p.get('access_token')||p.get('error_description')||'No token in this address.';"
    "history.replaceState(null,'',location.pathname);"
)
_LOCALAPP_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>Access token</title></head>"
    "<body><h1>Your access token</h1><p>Copy it now: it is not shown again.</p>"
    f"<pre id='token'></pre><script>{_LOCALAPP_SCRIPT}</script></body></html>"
)
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_LOCALAPP_SCRIPT.encode()).digest()).decode()
#: Only that one inline script may run on the page.
_LOCALAPP_CSP = f"default-src 'none'; script-src 'sha256-{_SCRIPT_HASH}'"


class OAuthError(Exception):
    """An OAuth failure: HTTP status, RFC 6749 error code and a description."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


def _service(request: Request) -> ApplicationService:
    services = services_of(request)
    return ApplicationService(services.db, services.secret_box)


def local_redirect(request: Request) -> str:
    """The address of ``/oauth/localapp`` as clients reach this server."""
    services = services_of(request)
    host = services.registry.server_hostname or request.headers.get("host") or "localhost"
    return f"{services.config.PREFERRED_URL_SCHEME}://{host}/oauth/localapp"


async def _run(operation: Any, *args: Any) -> Any:
    """Run a service operation in a thread, mapping refusals to OAuth errors."""
    try:
        return await anyio.to_thread.run_sync(operation, *args)
    except InvalidClient as exc:
        raise OAuthError(404, "invalid_client", exc.message) from None
    except InvalidRedirect as exc:
        raise OAuthError(400, "invalid_request", exc.message) from None
    except InvalidScope as exc:
        raise OAuthError(400, "invalid_scope", exc.message) from None
    except InvalidGrant as exc:
        raise OAuthError(400, "invalid_grant", exc.message) from None
    except Forbidden as exc:
        raise OAuthError(403, "access_denied", exc.message) from None
    except (NotFound, Invalid) as exc:
        raise OAuthError(400, "invalid_request", exc.message) from None


async def _form(request: Request) -> dict[str, str]:
    """The URL-encoded form body (first value of each field), at most 64 KiB."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise OAuthError(400, "invalid_request",
                         "Send the fields as application/x-www-form-urlencoded")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BODY:
            raise OAuthError(413, "invalid_request", "Request body too large")
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError(400, "invalid_request", "Malformed form body") from None
    return {key: values[0] for key, values in fields.items()}


async def _signed_in_user(request: Request) -> tuple[Subject, SessionInfo]:
    """The signed-in user and its session; 401 otherwise.

    Only sessions authorize applications: a token cannot mint other tokens.
    """
    session = await current_session(request)
    if session is not None and session.user_id is not None:
        subject = await anyio.to_thread.run_sync(
            services_of(request).registry.users.get_subject, session.user_id)
        if subject is not None:
            return subject, session
    raise OAuthError(401, "login_required", "Sign in to authorize an application")


def _state(value: str | None) -> str | None:
    if value is not None and len(value) > MAX_STATE:
        raise OAuthError(400, "invalid_request", f"state is longer than {MAX_STATE} characters")
    return value or None


def _response_type(value: str | None) -> str:
    if value not in RESPONSE_TYPES:
        raise OAuthError(400, "unsupported_response_type",
                         "response_type must be 'token' or 'code'")
    return value


def _required(fields: dict[str, str], name: str) -> str:
    value = fields.get(name)
    if not value:
        raise OAuthError(400, "invalid_request", f"Missing {name}")
    return value


def _with_params(uri: str, params: dict[str, str], fragment: bool) -> str:
    encoded = urlencode(params, quote_via=quote)
    if fragment:
        return f"{uri}#{encoded}"
    return f"{uri}{'&' if '?' in uri else '?'}{encoded}"


def _authorization_json(request: AuthorizationRequest, response_type: str,
                        state: str | None) -> dict[str, Any]:
    return {
        "application": {
            "client_id": request.client_id,
            "name": request.name,
            "description": request.description,
            "application_uri": request.application_uri,
            "organization": request.organization,
        },
        "scopes": [{"scope": scope, "title": SCOPES[scope][0],
                    "description": SCOPES[scope][1], "dangerous": SCOPES[scope][2]}
                   for scope in request.scopes],
        "redirect_uri": request.redirect_uri,
        "response_type": response_type,
        "state": state,
    }


def create_oauth(services: Services) -> FastAPI:
    """The ``/oauth`` application (mounted next to ``/api/v1``)."""
    app = FastAPI(title="Portside OAuth", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.services = services

    @app.exception_handler(OAuthError)
    async def _oauth_error(_request: Request, exc: OAuthError) -> JSONResponse:
        return JSONResponse({"error": exc.error, "error_description": exc.description},
                            status_code=exc.status, headers=NO_STORE)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.error_type, "error_description": exc.message},
                            status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = "not_found" if exc.status_code == 404 else "invalid_request"
        return JSONResponse({"error": error, "error_description": str(exc.detail)},
                            status_code=exc.status_code)

    @app.get("/authorize")
    async def authorize(request: Request) -> dict[str, Any]:
        """What the user is asked to grant: the application and the scopes."""
        query = request.query_params
        await _signed_in_user(request)
        response_type = _response_type(query.get("response_type"))
        state = _state(query.get("state"))
        described = await _run(_service(request).authorization_request,
                               query.get("client_id") or "", query.get("redirect_uri") or "",
                               query.get("scope"), local_redirect(request))
        return _authorization_json(described, response_type, state)

    @app.post("/authorizeapp")
    async def authorize_app(request: Request) -> Response:
        """Grant the application the requested scopes and redirect back to it."""
        subject, session = await _signed_in_user(request)
        fields = await _form(request)
        presented = fields.get(CSRF_FIELD) or request.headers.get("x-csrf-token")
        if not csrf_matches(session, presented):
            raise OAuthError(403, "invalid_request", "CSRF token was invalid or missing.")
        response_type = _response_type(fields.get("response_type"))
        state = _state(fields.get("state"))
        service = _service(request)
        described: AuthorizationRequest = await _run(
            service.authorization_request, fields.get("client_id") or "",
            fields.get("redirect_uri") or "", fields.get("scope"), local_redirect(request))
        extra = {"state": state} if state else {}
        if response_type == "token":
            issued = await _run(service.issue_token, subject, described)
            location = _with_params(described.redirect_uri, {
                "access_token": issued.token, "token_type": "Bearer",
                "expires_in": str(issued.expires_in), "scope": " ".join(issued.scopes),
                **extra}, fragment=True)
        else:
            code = await _run(service.issue_code, subject, described)
            location = _with_params(described.redirect_uri, {"code": code, **extra},
                                    fragment=False)
        return RedirectResponse(location, status_code=302, headers=NO_STORE)

    @app.post("/access_token")
    async def access_token(request: Request) -> JSONResponse:
        """Exchange an authorization code for its access token (once)."""
        fields = await _form(request)
        if fields.get("grant_type") != "authorization_code":
            raise OAuthError(400, "unsupported_grant_type",
                             "grant_type must be 'authorization_code'")
        client_id, client_secret = _client_credentials(request, fields)
        try:
            issued = await _run(_service(request).redeem_code, client_id, client_secret,
                                _required(fields, "code"), _required(fields, "redirect_uri"))
        except OAuthError as exc:
            if exc.error == "invalid_client":
                raise OAuthError(401, "invalid_client", exc.description) from None
            raise
        return JSONResponse({"access_token": issued.token, "token_type": "Bearer",
                             "expires_in": issued.expires_in,
                             "scope": " ".join(issued.scopes)}, headers=NO_STORE)

    @app.get("/localapp")
    async def localapp() -> HTMLResponse:
        """Shows the token of an authorization redirected here (it is in the fragment,
        which never reaches the server)."""
        return HTMLResponse(_LOCALAPP_PAGE, headers={
            "Content-Security-Policy": _LOCALAPP_CSP, "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY", **NO_STORE})

    return app


def _client_credentials(request: Request, fields: dict[str, str]) -> tuple[str, str]:
    """The client id and secret: HTTP Basic (RFC 6749, 2.3.1) or the form fields."""
    header = request.headers.get("authorization", "")
    if header[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise OAuthError(401, "invalid_client", "Malformed Basic credentials") from None
        client_id, sep, client_secret = decoded.partition(":")
        if sep:
            return unquote_plus(client_id), unquote_plus(client_secret)
    return _required(fields, "client_id"), _required(fields, "client_secret")
