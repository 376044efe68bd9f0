"""Sign-in, sign-out and the CSRF token, as Quay's UI and scripts use them."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.responses import Response

from portside.api.auth import (
    SESSION_COOKIE,
    Caller,
    check_csrf,
    current_session,
    get_caller,
    services_of,
)
from portside.api.errors import ApiError
from portside.services.audit import record_login
from portside.services.robots import is_robot_username
from portside.services.sessions import SESSION_LIFETIME, SessionInfo

router = APIRouter()


class SigninRequest(BaseModel):
    """Quay's sign-in body."""

    username: str = Field(description="User name.")
    password: str = Field(description="Password.")


def set_session_cookie(request: Request, response: Response, session: SessionInfo) -> None:
    """Send the session cookie: HTTP-only, same-site, secure behind HTTPS."""
    response.set_cookie(
        SESSION_COOKIE, session.cookie, max_age=int(SESSION_LIFETIME.total_seconds()),
        httponly=True, samesite="lax", path="/",
        secure=services_of(request).config.PREFERRED_URL_SCHEME == "https",
    )


async def csrf_token(request: Request) -> Response:
    """``GET /csrf_token``: the session's CSRF token (starting a session if needed)."""
    session = await current_session(request)
    created = session is None
    if session is None:
        session = await anyio.to_thread.run_sync(services_of(request).sessions.create)
    response = JSONResponse({"csrf_token": session.csrf_token})
    if created:
        set_session_cookie(request, response, session)
    return response


@router.post("/signin")
async def signin(body: SigninRequest, request: Request) -> Response:
    """Check the credentials and start a signed-in session (CSRF token required)."""
    services = services_of(request)
    session = await current_session(request)
    if session is None:
        raise ApiError(403, "invalid_request",
                       "CSRF token was invalid or missing: GET /csrf_token first.")
    check_csrf(request, session)
    limiter = services.registry.login_limiter
    address = request.client.host if request.client else "unknown"
    wait = limiter.blocked_for(address)
    if wait:
        raise ApiError(429, "too_many_requests",
                       f"Too many failed logins; try again in {wait} seconds.")
    # The password only: tokens and encrypted passwords are for registry logins.
    subject = await anyio.to_thread.run_sync(services.registry.users.authenticate_password,
                                             body.username, body.password)
    # Robots log in to the registry only, never to the UI or the API.
    if subject is None or subject.user_id is None or is_robot_username(subject.username):
        limiter.record_failure(address)
        if services.config.ACTION_LOG_AUDIT_LOGINS:
            await anyio.to_thread.run_sync(record_login, services.db, False,
                                           body.username[:255], None, address)
        body_json: dict[str, Any] = {"success": False, "invalidCredentials": True,
                                     "message": "Invalid Username or Password"}
        return JSONResponse(body_json, status_code=403)
    fresh = await anyio.to_thread.run_sync(services.sessions.sign_in, session, subject.user_id)
    if services.config.ACTION_LOG_AUDIT_LOGINS:
        await anyio.to_thread.run_sync(record_login, services.db, True, body.username,
                                       subject, address)
    response = JSONResponse({"success": True})
    set_session_cookie(request, response, fresh)
    return response


@router.post("/signout")
async def signout(request: Request, caller: Caller = Depends(get_caller)) -> Response:
    """End the session (CSRF-checked when signed in)."""
    if caller.session is not None:
        await anyio.to_thread.run_sync(services_of(request).sessions.end, caller.session.cookie)
    response = JSONResponse({"success": True})
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
