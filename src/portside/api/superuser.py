"""``/api/v1/superuser/``: registry-wide user and organization listings (Quay's shapes)."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Request

from portside.api.auth import Caller, get_caller, services_of
from portside.api.errors import ApiError
from portside.api.user import avatar
from portside.auth.permissions import acts_as_superuser
from portside.services.superuser import SuperuserService

router = APIRouter()


def _service(request: Request, caller: Caller) -> SuperuserService:
    """The service, once the caller is known to act as a superuser."""
    if caller.subject.anonymous:
        raise ApiError(401, "invalid_token", "Requires authentication.")
    if not acts_as_superuser(caller.subject):
        raise ApiError(403, "insufficient_scope", "Requires superuser rights (super:user).")
    services = services_of(request)
    return SuperuserService(services.db, list(services.config.SUPER_USERS))


@router.get("/superuser/users/")
async def list_users(request: Request,
                     caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Every user of the registry (robots excluded)."""
    users = await anyio.to_thread.run_sync(_service(request, caller).users)
    return {"users": [
        {"kind": "user", "name": u.username, "username": u.username, "email": u.email,
         "verified": True, "avatar": avatar(u.username, "user"), "super_user": u.superuser,
         "enabled": u.enabled}
        for u in users
    ]}


@router.get("/superuser/organizations/")
async def list_organizations(request: Request,
                             caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Every organization of the registry."""
    names = await anyio.to_thread.run_sync(_service(request, caller).organizations)
    return {"organizations": [
        {"name": name, "email": None, "avatar": avatar(name, "org")} for name in names
    ]}
