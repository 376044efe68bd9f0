"""Who is calling, and may they do this? Authentication and authorization for /v2.

Callers present a bearer token from ``/v2/auth`` (whose ``access`` claim is the grant)
or Basic credentials (checked against the permission decision on every request), or
nothing (anonymous). Failures produce the Docker token challenge so that clients know
where to get a token and for which scope.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio.to_thread
from sqlalchemy import Connection
from starlette.requests import Request

from portside.auth.permissions import ANONYMOUS, Action, Subject, allowed_actions
from portside.auth.tokens import InvalidToken, TokenGrant
from portside.oci.names import InvalidName, validate_repository_name
from portside.registry.context import RegistryContext
from portside.services.errors import Denied, NameInvalid, TooManyRequests, Unauthorized
from portside.services.metrics import auth_result
from portside.services.repositories import Lookup, RepositoryRef
from portside.services.users import PlainPasswordRefused

T = TypeVar("T")


@dataclass(frozen=True)
class Identity:
    """The caller: a subject, plus the token grant if a bearer token was presented."""

    subject: Subject
    grant: TokenGrant | None = None


class Challenge(Unauthorized):
    """401 that carries the ``WWW-Authenticate`` header value."""

    def __init__(self, message: str, header: str) -> None:
        super().__init__(message)
        self.header = header


def client_address(request: Request) -> str:
    """The peer address (used for login-failure limits)."""
    return request.client.host if request.client else "unknown"


def realm_host(request: Request, ctx: RegistryContext) -> str:
    """The host clients should use for the token realm."""
    return ctx.server_hostname or request.headers.get("host") or "localhost"


def challenge(request: Request, ctx: RegistryContext, scope: str | None = None,
              error: str | None = None) -> str:
    """The ``WWW-Authenticate`` value pointing clients at ``/v2/auth``."""
    host = realm_host(request, ctx)
    parts = [f'Bearer realm="{ctx.url_scheme}://{host}/v2/auth"',
             f'service="{ctx.tokens.audience}"']
    if scope:
        parts.append(f'scope="{scope}"')
    if error:
        parts.append(f'error="{error}"')
    return ",".join(parts)


def decode_basic(header: str) -> tuple[str, str] | None:
    """Split a Basic ``Authorization`` value into username and password."""
    try:
        decoded = base64.b64decode(header.split(" ", 1)[1].strip(), validate=True).decode()
    except (IndexError, binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None


def _audit_login(request: Request, ctx: RegistryContext, credentials: tuple[str, str] | None,
                 subject: Subject | None, header: str, token_request: bool) -> None:
    """Buffer the login's audit entry; a /v2 Basic login's success only once per
    credential and period (see :mod:`portside.services.login_audit`)."""
    if ctx.login_audit is None:
        return
    address, agent = client_address(request), request.headers.get("user-agent")
    if subject is None:
        ctx.login_audit.failure(credentials[0] if credentials else None, ip=address,
                                user_agent=agent)
    else:
        ctx.login_audit.success(subject, credentials[0] if credentials else "", ip=address,
                                user_agent=agent,
                                dedupe_credential=None if token_request else header)


async def check_basic(request: Request, ctx: RegistryContext, header: str, *,
                      token_request: bool = False) -> Subject:
    """Authenticate Basic credentials, with brute-force protection, and record the
    login in the audit log (``token_request``: for ``/v2/auth``)."""
    address = client_address(request)
    wait = ctx.login_limiter.blocked_for(address)
    if wait:
        raise TooManyRequests(
            f"too many failed logins; try again in {wait} seconds", {"retry_after": wait}
        )
    credentials = decode_basic(header)
    subject = None
    if credentials is not None:
        try:
            subject = await anyio.to_thread.run_sync(ctx.users.authenticate, *credentials)
        except PlainPasswordRefused as exc:
            # Counted as a failure: the password was not checked, but guessing must
            # stay rate-limited all the same.
            ctx.login_limiter.record_failure(address)
            _audit_login(request, ctx, credentials, None, header, token_request)
            auth_result("basic", False)
            raise Challenge(exc.message, challenge(request, ctx)) from None
    if subject is None:
        ctx.login_limiter.record_failure(address)
        _audit_login(request, ctx, credentials, None, header, token_request)
        auth_result("basic", False)
        raise Challenge("invalid username or password", challenge(request, ctx))
    _audit_login(request, ctx, credentials, subject, header, token_request)
    auth_result("basic", True)
    return subject


async def authenticate(request: Request, ctx: RegistryContext, *,
                       token_request: bool = False) -> Identity:
    """Identify the caller; raises :class:`Challenge` for bad credentials
    (``token_request``: the caller is ``/v2/auth``, whose logins are all recorded)."""
    header = request.headers.get("authorization")
    if not header:
        return Identity(ANONYMOUS)
    kind = header.split(" ", 1)[0].lower()
    if kind == "bearer":
        token = header[7:].strip()
        try:
            grant = ctx.tokens.verify(token)
        except InvalidToken as exc:
            auth_result("bearer", False)
            raise Challenge(f"invalid token: {exc}",
                            challenge(request, ctx, error="invalid_token")) from None
        auth_result("bearer", True)
        subject = Subject(user_id=grant.user_id, username=grant.username)
        return Identity(subject, grant)
    if kind == "basic":
        return Identity(await check_basic(request, ctx, header, token_request=token_request))
    auth_result("other", False)
    raise Challenge("unsupported authorization scheme", challenge(request, ctx))


def split_name(name: str) -> tuple[str, str]:
    """Validate a repository name from the URL; raises :class:`NameInvalid`."""
    try:
        return validate_repository_name(name)
    except InvalidName as exc:
        raise NameInvalid(str(exc), {"name": name[:255]}) from None


def _permitted(ctx: RegistryContext, identity: Identity, name: str, action: Action,
               lookup: Lookup) -> tuple[bool, bool]:
    """``(ok, caller_could)``: is the action allowed now, and could the subject do it
    with a better token?"""
    current = allowed_actions(identity.subject, lookup.facts, ctx.policy)
    if identity.grant is None:
        return action in current, action in current
    granted = identity.grant.actions_for(name)
    # The token is the grant, but a repository switched to READ_ONLY or MIRROR since it
    # was issued refuses writes at once.
    ok = (action in granted or "*" in granted) and (action == Action.PULL or action in current)
    return ok, action in current


async def authorize(request: Request, ctx: RegistryContext, name: str,
                    action: Action) -> tuple[Identity, Lookup]:
    """Authenticate the caller and check ``action`` on repository ``name``."""
    identity, lookup, _ = await authorize_then(request, ctx, name, action, None)
    return identity, lookup


async def authorize_then(
    request: Request, ctx: RegistryContext, name: str, action: Action,
    fetch: Callable[[RepositoryRef, Connection], T] | None,
) -> tuple[Identity, Lookup, T | None]:
    """:func:`authorize`, then ``fetch`` from the repository in the same worker thread.

    Hot read paths (manifest and blob lookups) use this to pay for one thread hop and
    one connection instead of two.
    """
    namespace, repo = split_name(name)
    identity = await authenticate(request, ctx)

    def decide(lookup: Lookup, connection: Connection) -> tuple[Lookup, bool, bool, T | None]:
        ok, could = _permitted(ctx, identity, name, action, lookup)
        if ok and fetch is not None and lookup.repository is not None:
            return lookup, ok, could, fetch(lookup.repository, connection)
        return lookup, ok, could, None

    lookup, ok, could, result = await asyncio.get_running_loop().run_in_executor(
        ctx.read_executor, ctx.repositories.lookup_then, namespace, repo,
        identity.subject.user_id, decide
    )
    if ok:
        return identity, lookup, result
    scope = f"repository:{name}:{action.value if action != Action.ADMIN else '*'}"
    if action in (Action.PUSH, Action.DELETE):
        scope = f"repository:{name}:pull,{action.value}"
    if identity.subject.anonymous:
        raise Challenge("authentication required", challenge(request, ctx, scope))
    if identity.grant is not None and could:
        # The caller may do this but the token was issued for less: ask for a new one.
        raise Challenge("token does not grant this action",
                        challenge(request, ctx, scope, error="insufficient_scope"))
    raise Denied(f"requested access to repository {name!r} is not authorized",
                 {"name": name, "action": action.value})

