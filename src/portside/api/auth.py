"""Who is calling ``/api/v1``: a bearer access token (scripts) or a session cookie (the UI).

Session callers must echo the session's CSRF token in ``X-CSRF-Token`` on every unsafe
request; bearer tokens are not sent by browsers on their own, so they need none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio.to_thread
from fastapi import Request

from portside.api.errors import ApiError
from portside.auth.permissions import ANONYMOUS, Subject
from portside.services.sessions import SessionInfo, csrf_matches

if TYPE_CHECKING:
    from portside.app import Services

SESSION_COOKIE = "portside_session"
CSRF_HEADER = "x-csrf-token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Caller:
    """The authenticated subject and how it authenticated."""

    subject: Subject
    session: SessionInfo | None = None


def services_of(request: Request) -> Services:
    """The application's services."""
    services: Services = request.app.state.services
    return services


async def current_session(request: Request) -> SessionInfo | None:
    """The live session named by the request's cookie, if any."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    return await anyio.to_thread.run_sync(services_of(request).sessions.get, cookie)


def check_csrf(request: Request, session: SessionInfo) -> None:
    """Refuse an unsafe request whose CSRF token does not match the session's."""
    if request.method in UNSAFE_METHODS and not csrf_matches(
        session, request.headers.get(CSRF_HEADER)
    ):
        raise ApiError(403, "invalid_request", "CSRF token was invalid or missing.")


async def get_caller(request: Request) -> Caller:
    """FastAPI dependency: resolve the caller (anonymous if no credentials)."""
    services = services_of(request)
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        subject = await anyio.to_thread.run_sync(
            services.registry.users.authenticate_token, header[7:].strip()
        )
        if subject is None:
            raise ApiError(401, "invalid_token", "The access token is invalid or expired.")
        return Caller(subject)
    session = await current_session(request)
    if session is not None and session.user_id is not None:
        subject = await anyio.to_thread.run_sync(services.registry.users.get_subject,
                                                 session.user_id)
        if subject is not None:
            check_csrf(request, session)
            return Caller(subject, session)
    return Caller(ANONYMOUS, session)


def require_scope(caller: Caller, scope: str) -> Subject:
    """The caller's subject, if signed in and (for tokens) granted ``scope``."""
    if caller.subject.anonymous:
        raise ApiError(401, "invalid_token", "Requires authentication.")
    scopes = caller.subject.scopes
    if scopes is not None and scope not in scopes:
        raise ApiError(403, "insufficient_scope", f"The access token lacks the {scope} scope.")
    return caller.subject
