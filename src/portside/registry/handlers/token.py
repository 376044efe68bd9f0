"""``/v2/auth``: the Docker token service.

The token grants the intersection of what was asked and what the caller may do right
now (downscoping); asking for more than allowed is never an error, it just yields less.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from portside.auth.permissions import Action, Subject, allowed_actions
from portside.auth.scopes import Scope, parse_scopes
from portside.oci.names import InvalidName, validate_repository_name
from portside.registry.access import authenticate
from portside.registry.context import RegistryContext
from portside.registry.errors import API_VERSION_HEADER

_REPOSITORY_ACTIONS = {a.value for a in Action}


def _grant_repository(ctx: RegistryContext, subject: Subject, scope: Scope) -> Scope | None:
    try:
        namespace, repo = validate_repository_name(scope.name)
    except InvalidName:
        return None
    lookup = ctx.repositories.lookup(namespace, repo)
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
    """Authenticate (Basic, or anonymous) and return a signed, downscoped token."""
    identity = await authenticate(request, ctx)
    subject = identity.subject
    requested = parse_scopes(request.query_params.getlist("scope"))
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
