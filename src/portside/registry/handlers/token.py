"""``/v2/auth``: the Docker token service.

The token grants the intersection of what was asked and what the caller may do right
now (downscoping); asking for more than allowed is never an error, it just yields less.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from portside.auth.permissions import Action, Subject, allowed_actions
from portside.auth.scopes import Scope, parse_scopes
from portside.oci.names import InvalidName, validate_repository_name
from portside.registry.access import Challenge, authenticate, challenge, check_basic
from portside.registry.context import RegistryContext
from portside.registry.errors import API_VERSION_HEADER
from portside.services.errors import Unauthorized, Unsupported

_REPOSITORY_ACTIONS = {a.value for a in Action}


def _grant_repository(ctx: RegistryContext, subject: Subject, scope: Scope) -> Scope | None:
    try:
        namespace, repo = validate_repository_name(scope.name)
    except InvalidName:
        return None
    lookup = ctx.repositories.lookup(namespace, repo, subject.user_id)
    allowed = {a.value for a in allowed_actions(subject, lookup.facts, ctx.policy)}
    granted = tuple(a for a in scope.actions if a in _REPOSITORY_ACTIONS and a in allowed)
    return Scope("repository", scope.name, granted) if granted else None


def grant_scopes(ctx: RegistryContext, subject: Subject, requested: list[Scope]) -> list[Scope]:
    """Downscope every requested scope to what ``subject`` may do."""
    granted: list[Scope] = []
    for scope in requested:
        if scope.type == "repository":
            result = _grant_repository(ctx, subject, scope)
            if result is not None:
                granted.append(result)
        elif scope.type == "registry" and scope.name == "catalog" and not subject.anonymous:
            granted.append(Scope("registry", "catalog", ("*",)))
    return granted


async def issue_token(request: Request, ctx: RegistryContext) -> Response:
    """``GET``: authenticate (Basic, or anonymous) and return a signed, downscoped token."""
    identity = await authenticate(request, ctx, token_request=True)
    if identity.grant is not None:
        # A token is a grant, not a credential: exchanging it here would turn a
        # downscoped token (say, pull-only for CI) into whatever its user may do.
        raise Challenge("a registry token cannot be exchanged for another; "
                        "authenticate with credentials", challenge(request, ctx))
    return await _token_response(ctx, identity.subject,
                                 parse_scopes(request.query_params.getlist("scope")))


async def issue_token_oauth(request: Request, ctx: RegistryContext) -> Response:
    """``POST``: the OAuth2 password grant some clients (containerd) use instead of GET.

    Only ``grant_type=password`` is supported; Portside issues no refresh tokens.
    """
    form = await request.form()
    grant_type = form.get("grant_type")
    if grant_type != "password":
        raise Unsupported(f"unsupported grant_type {str(grant_type)[:40]!r}; use password")
    username, password = form.get("username"), form.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise Unauthorized("username and password are required")
    credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
    subject = await check_basic(request, ctx, f"Basic {credentials}", token_request=True)
    scopes = form.get("scope")
    return await _token_response(ctx, subject,
                                 parse_scopes([scopes] if isinstance(scopes, str) else []))


async def _token_response(ctx: RegistryContext, subject: Subject,
                          requested: list[Scope]) -> Response:
    granted = await anyio.to_thread.run_sync(grant_scopes, ctx, subject, requested)
    token, expires_in, issued_at = ctx.tokens.issue(subject.username, subject.user_id, granted)
    body = {
        "token": token,
        "access_token": token,
        "expires_in": expires_in,
        "issued_at": datetime.fromtimestamp(issued_at, UTC).isoformat().replace("+00:00", "Z"),
    }
    return Response(json.dumps(body).encode(), status_code=200,
                    headers={**API_VERSION_HEADER, "Cache-Control": "no-store"},
                    media_type="application/json")
