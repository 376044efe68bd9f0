"""CLI credentials of the signed-in user, in Quay's paths and JSON shapes.

- ``/api/v1/user/apptoken``: application-specific tokens, used as the password of user
  ``$app`` for registry logins (``FEATURE_APP_SPECIFIC_TOKENS``; 404 when off).
- ``POST /api/v1/user/clientkey``: the user's password, encrypted so that only this
  registry can read it, to use instead of the password for registry logins.

Both need a signed-in user (bearer tokens need ``user:admin``); robots have neither.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from starlette.responses import Response

from portside.api.auth import Caller, get_caller, require_scope, services_of
from portside.api.errors import ApiError
from portside.api.organizations import call
from portside.api.robots import format_date, truthy
from portside.auth.permissions import Subject
from portside.registry.access import client_address
from portside.services.app_tokens import AppToken, AppTokenService
from portside.services.audit import AuditContext
from portside.services.robots import is_robot_username

router = APIRouter()


class NewToken(BaseModel):
    """Quay's ``NewToken`` body."""

    model_config = ConfigDict(extra="ignore")

    title: StrictStr = Field(description="The user-defined title for the token.")


class GenerateClientKey(BaseModel):
    """Quay's ``GenerateClientKey`` body."""

    model_config = ConfigDict(extra="ignore")

    password: StrictStr = Field(description="The user's password.")


def _date(value: datetime | None) -> str | None:
    return format_date(value) if value is not None else None


def token_json(token: AppToken, token_code: str | None = None) -> dict[str, Any]:
    """A token in Quay's shape; ``token_code`` only right after creation."""
    data: dict[str, Any] = {
        "uuid": token.uuid,
        "title": token.title,
        "last_accessed": _date(token.last_accessed),
        "created": _date(token.created),
        "expiration": _date(token.expiration),
    }
    if token_code is not None:
        data["token_code"] = token_code
    return data


def _user(caller: Caller) -> Subject:
    subject = require_scope(caller, "user:admin")
    if subject.user_id is None or is_robot_username(subject.username):
        raise ApiError(403, "unauthorized", "Unauthorized")
    return subject


def _service(request: Request) -> AppTokenService:
    """The token service, or 404 when ``FEATURE_APP_SPECIFIC_TOKENS`` is off (as Quay
    hides the endpoints)."""
    config = services_of(request).config
    if not config.FEATURE_APP_SPECIFIC_TOKENS:
        raise ApiError(404, "not_found", "Application-specific tokens are disabled.")
    return AppTokenService(services_of(request).db, config.app_token_lifetime)


def _audit(request: Request, subject: Subject) -> AuditContext:
    return AuditContext(subject, client_address(request))


@router.get("/user/apptoken")
async def list_tokens(request: Request, expiring: str | None = None,
                      caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """The caller's tokens, without their secrets; ``?expiring=true``: only those
    expiring soon (within a tenth of APP_SPECIFIC_TOKEN_EXPIRATION, or four weeks)."""
    service = _service(request)
    subject = _user(caller)
    only_expiring = truthy(expiring, False)
    tokens = await call(service.list, subject, only_expiring)
    return {"tokens": [token_json(t) for t in tokens], "only_expiring": only_expiring}


@router.post("/user/apptoken")
async def create_token(body: NewToken, request: Request,
                       caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Create a token; the response is the only place its ``token_code`` appears."""
    service = _service(request)
    subject = _user(caller)
    token, code = await call(service.create, subject, body.title, _audit(request, subject))
    return {"token": token_json(token, code)}


@router.get("/user/apptoken/{token_uuid}")
async def get_token(token_uuid: str, request: Request,
                    caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """One of the caller's tokens. Unlike Quay, without ``token_code``: only a hash of
    the token is stored."""
    service = _service(request)
    subject = _user(caller)
    token = await call(service.get, subject, token_uuid)
    return {"token": token_json(token)}


@router.delete("/user/apptoken/{token_uuid}", status_code=204)
async def revoke_token(token_uuid: str, request: Request,
                       caller: Caller = Depends(get_caller)) -> Response:
    """Revoke one of the caller's tokens: it stops working at once."""
    service = _service(request)
    subject = _user(caller)
    await call(service.revoke, subject, token_uuid, _audit(request, subject))
    return Response(status_code=204)


@router.post("/user/clientkey")
async def generate_client_key(body: GenerateClientKey, request: Request,
                              caller: Caller = Depends(get_caller)) -> dict[str, str]:
    """Check the caller's password and return it encrypted, for registry logins.

    Wrong passwords count as failed logins: a stolen session must not become a way to
    guess the password without limit.
    """
    subject = _user(caller)
    registry = services_of(request).registry
    address = client_address(request)
    wait = registry.login_limiter.blocked_for(address)
    if wait:
        raise ApiError(429, "too_many_requests",
                       f"Too many failed logins; try again in {wait} seconds.")
    key = await anyio.to_thread.run_sync(registry.users.create_client_key, subject,
                                         body.password, _audit(request, subject))
    if key is None:
        registry.login_limiter.record_failure(address)
        raise ApiError(400, "invalid_request", "Invalid Username or Password")
    return {"key": key}
