"""``GET|PUT /api/v1/user/``: the signed-in user, in Quay's shape."""

from __future__ import annotations

import hashlib
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from portside.api.auth import Caller, get_caller, require_scope, services_of
from portside.api.errors import ApiError
from portside.auth.permissions import Subject
from portside.registry.access import client_address
from portside.services.repository_admin import InvalidInput, NotFound
from portside.services.time_machine import TimeMachineService, WindowPolicy

router = APIRouter()

#: Quay's default time machine window (two weeks), until namespaces can set theirs.
DEFAULT_TAG_EXPIRATION_S = 14 * 24 * 3600


def avatar(name: str, kind: str) -> dict[str, str]:
    """Quay's avatar object: a colour derived from the name."""
    digest = hashlib.md5(name.encode(), usedforsecurity=False).hexdigest()
    return {"name": name, "hash": digest, "color": f"#{digest[:6]}", "kind": kind}


class UpdateUser(BaseModel):
    """Quay's ``UpdateUser`` body: only the time-machine window (``tag_expiration_s``)
    can be changed here; the invoice settings (Quay's billing) are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    tag_expiration_s: int | None = Field(default=None, ge=0)
    invoice_email: bool | None = None
    invoice_email_address: str | None = None
    password: str | None = None
    email: str | None = None
    username: str | None = None


def time_machine_of(request: Request) -> TimeMachineService:
    """Tag expiry, restore and namespace windows (stateless: built per request)."""
    services = services_of(request)
    return TimeMachineService(services.db, services.registry.policy,
                              WindowPolicy.from_config(services.config))


@router.get("/user/")
async def get_user(request: Request, caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """The caller's own account (requires the ``user:read`` scope for tokens)."""
    subject = require_scope(caller, "user:read")
    return await _user_view(request, subject)


@router.put("/user/")
async def change_user(request: Request, body: UpdateUser,
                      caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Change the caller's account (tokens need ``user:admin``): the time-machine window
    of the user's namespace, one of ``TAG_EXPIRATION_OPTIONS`` (400 otherwise, and
    without ``FEATURE_CHANGE_TAG_EXPIRATION``)."""
    subject = require_scope(caller, "user:admin")
    for field in ("password", "email", "username"):
        if getattr(body, field) is not None:
            raise ApiError(400, "invalid_request",
                           f"Changing {field} through PUT /api/v1/user/ is not available")
    if body.tag_expiration_s is not None:
        try:
            await anyio.to_thread.run_sync(time_machine_of(request).set_user_window,
                                           subject, body.tag_expiration_s,
                                           client_address(request))
        except InvalidInput as exc:
            raise ApiError(400, "invalid_request", exc.message) from None
        except NotFound as exc:
            raise ApiError(404, "not_found", exc.message) from None
    return await _user_view(request, subject)


async def _user_view(request: Request, subject: Subject) -> dict[str, Any]:
    assert subject.user_id is not None and subject.username is not None
    user = await anyio.to_thread.run_sync(services_of(request).registry.users.profile,
                                          subject.user_id)
    if user is None:
        raise ApiError(404, "not_found", "User not found.")
    window = await anyio.to_thread.run_sync(time_machine_of(request).user_window,
                                            subject.user_id)
    return {
        "anonymous": False,
        "username": user.username,
        "email": user.email,
        "verified": True,
        "avatar": avatar(user.username, "user"),
        "can_create_repo": True,
        "is_me": True,
        "logins": [],
        "organizations": [],
        "preferred_namespace": False,
        "super_user": subject.superuser,
        "tag_expiration_s": window,
        "invoice_email": False,
        "invoice_email_address": None,
        "company": None,
        "family_name": None,
        "given_name": None,
        "location": None,
    }
