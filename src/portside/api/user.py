"""``GET /api/v1/user/``: the signed-in user, in Quay's shape."""

from __future__ import annotations

import hashlib
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Request

from portside.api.auth import Caller, get_caller, require_scope, services_of
from portside.api.errors import ApiError

router = APIRouter()

#: Quay's default time machine window (two weeks), until namespaces can set theirs.
DEFAULT_TAG_EXPIRATION_S = 14 * 24 * 3600


def avatar(name: str, kind: str) -> dict[str, str]:
    """Quay's avatar object: a colour derived from the name."""
    digest = hashlib.md5(name.encode(), usedforsecurity=False).hexdigest()
    return {"name": name, "hash": digest, "color": f"#{digest[:6]}", "kind": kind}


@router.get("/user/")
async def get_user(request: Request, caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """The caller's own account (requires the ``user:read`` scope for tokens)."""
    subject = require_scope(caller, "user:read")
    assert subject.user_id is not None and subject.username is not None
    user = await anyio.to_thread.run_sync(services_of(request).registry.users.profile,
                                          subject.user_id)
    if user is None:
        raise ApiError(404, "not_found", "User not found.")
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
        "tag_expiration_s": DEFAULT_TAG_EXPIRATION_S,
        "invoice_email": False,
        "invoice_email_address": None,
        "company": None,
        "family_name": None,
        "given_name": None,
        "location": None,
    }
