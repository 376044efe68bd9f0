"""``/api/v1/superuser/``: registry-wide management of users, organizations and the
audit log, in Quay's paths and JSON shapes (superusers only; tokens need ``super:user``).
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from portside.api.auth import Caller, get_caller, services_of
from portside.api.errors import ApiError
from portside.api.logs import entry_json, log_service, time_range
from portside.api.logs import run as run_logs
from portside.api.organizations import call
from portside.api.robots import format_date
from portside.api.user import avatar
from portside.auth.client_keys import encrypt_client_key
from portside.auth.permissions import Subject, acts_as_superuser
from portside.services.audit import LogScope
from portside.services.superuser import (
    OrganizationSummary,
    SuperuserService,
    UserChanges,
    UserSummary,
)

router = APIRouter()


#: Every entry of the registry: no namespace, repository or performer filter.
REGISTRY_WIDE = LogScope()


class CreateUser(BaseModel):
    """Quay's ``CreateInstallUser`` body."""

    model_config = ConfigDict(extra="ignore")

    username: str = Field(description="The new user's name.")
    email: str | None = Field(default=None, description="The new user's e-mail address.")


class UpdateUser(BaseModel):
    """Quay's ``UpdateUser`` body (superuser panel)."""

    model_config = ConfigDict(extra="ignore")

    password: str | None = None
    email: str | None = None
    enabled: bool | None = None
    superuser: bool | None = Field(
        default=None, description="Refused: superusers are named by SUPER_USERS.")


class UpdateOrganization(BaseModel):
    """Quay's superuser ``UpdateOrg`` body: the new name."""

    model_config = ConfigDict(extra="ignore")

    name: str | None = None


def superuser(caller: Caller) -> Subject:
    """The caller's subject, once it is known to act as a superuser."""
    if caller.subject.anonymous:
        raise ApiError(401, "invalid_token", "Requires authentication.")
    if not acts_as_superuser(caller.subject):
        raise ApiError(403, "insufficient_scope", "Requires superuser rights (super:user).")
    return caller.subject


def _service(request: Request, caller: Caller) -> SuperuserService:
    """The service, once the caller is known to act as a superuser."""
    superuser(caller)
    services = services_of(request)
    return SuperuserService(services.db, list(services.config.SUPER_USERS))




def user_view(user: UserSummary) -> dict[str, Any]:
    """Quay's superuser ``user_view``."""
    return {"kind": "user", "name": user.username, "username": user.username,
            "email": user.email, "verified": True, "avatar": avatar(user.username, "user"),
            "super_user": user.superuser, "enabled": user.enabled}


def organization_view(org: OrganizationSummary) -> dict[str, Any]:
    """Quay's superuser ``org_view``."""
    return {"name": org.name, "email": org.email, "avatar": avatar(org.name, "org")}


def _encrypted_password(request: Request, username: str, password: str) -> str:
    """The password's encrypted form for CLI logins (Quay's ``encrypted_password``)."""
    return encrypt_client_key(services_of(request).secret_box, username, password)


# --- users ------------------------------------------------------------------------------
@router.get("/superuser/users/")
async def list_users(request: Request,
                     caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Every user of the registry (robots excluded)."""
    users = await anyio.to_thread.run_sync(_service(request, caller).users)
    return {"users": [user_view(u) for u in users]}


@router.post("/superuser/users/")
async def create_user(body: CreateUser, request: Request,
                      caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Create a user with a generated password, returned this once."""
    service = _service(request, caller)
    user, password = await call(service.create_user, caller.subject, body.username,
                                body.email)
    return {"username": user.username, "email": user.email, "password": password,
            "encrypted_password": _encrypted_password(request, user.username, password)}


@router.get("/superuser/users/{username}")
async def get_user(username: str, request: Request,
                   caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """One user."""
    return user_view(await call(_service(request, caller).user, username))


@router.put("/superuser/users/{username}")
async def change_user(username: str, body: UpdateUser, request: Request,
                      caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Change a user's password, e-mail address or enabled state (not superusers').

    Superuser status comes from ``SUPER_USERS`` in the configuration, so ``superuser``
    is refused (Quay rewrites its config file here instead).
    """
    service = _service(request, caller)
    if body.superuser is not None:
        raise ApiError(400, "invalid_request",
                       "Superusers are named by SUPER_USERS in the configuration; "
                       "they cannot be changed through the API.")
    changes = UserChanges(password=body.password, email=body.email, enabled=body.enabled)
    user = await call(service.update_user, caller.subject, username, changes)
    if body.password is not None or body.enabled is False:
        # The old password (or a now disabled account) must stop working here at once;
        # other processes check the account on every remembered login.
        services_of(request).registry.users.forget_logins()
    view = user_view(user)
    if body.password is not None:
        view["encrypted_password"] = _encrypted_password(request, username, body.password)
    return view


@router.delete("/superuser/users/{username}", status_code=204)
async def delete_user(username: str, request: Request,
                      caller: Caller = Depends(get_caller)) -> Response:
    """Delete a user with its namespace, repositories and robots (not superusers)."""
    await call(_service(request, caller).delete_user, caller.subject, username)
    services_of(request).registry.users.forget_logins()
    return Response(status_code=204)


# --- organizations ----------------------------------------------------------------------
@router.get("/superuser/organizations/")
async def list_organizations(request: Request,
                             caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Every organization of the registry."""
    orgs = await anyio.to_thread.run_sync(_service(request, caller).organizations)
    return {"organizations": [organization_view(org) for org in orgs]}


@router.put("/superuser/organizations/{name}")
async def rename_organization(name: str, body: UpdateOrganization, request: Request,
                              caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Rename an organization; its repositories, teams and robots follow."""
    service = _service(request, caller)
    org = await call(service.rename_organization, caller.subject, name, body.name)
    return organization_view(org)


@router.delete("/superuser/organizations/{name}", status_code=204)
async def delete_organization(name: str, request: Request,
                              caller: Caller = Depends(get_caller)) -> Response:
    """Delete an organization with its teams, robots and repositories."""
    await call(_service(request, caller).delete_organization, caller.subject, name)
    return Response(status_code=204)


# --- logs -------------------------------------------------------------------------------
@router.get("/superuser/logs")
async def registry_logs(request: Request, starttime: str | None = None,
                        endtime: str | None = None, next_page: str | None = None,
                        caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Every audit log entry of the registry, newest first, 20 a page."""
    superuser(caller)
    start, end = time_range(starttime, endtime)
    views, token = await run_logs(functools.partial(
        log_service(request).entries, REGISTRY_WIDE, start, end, page_token=next_page))
    body: dict[str, Any] = {"start_time": format_date(start), "end_time": format_date(end),
                            "logs": [entry_json(view) for view in views]}
    if token is not None:
        body["next_page"] = token
    return body


@router.get("/superuser/aggregatelogs")
async def registry_aggregate_logs(request: Request, starttime: str | None = None,
                                  endtime: str | None = None,
                                  caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Entry counts per day and kind for the whole registry."""
    superuser(caller)
    start, end = time_range(starttime, endtime)
    counts = await run_logs(functools.partial(log_service(request).aggregate, REGISTRY_WIDE,
                                              start, end))
    return {"aggregated": [
        {"kind": kind, "count": count,
         "datetime": format_date(_midnight(day))}
        for kind, day, count in counts
    ]}


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)
