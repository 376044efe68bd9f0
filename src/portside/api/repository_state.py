"""``PUT /api/v1/repository/{ns}/{repo}/changestate`` (Quay's ``changeRepoState``):
``{"state": "NORMAL" | "READ_ONLY" | "MIRROR"}``.

Repository administrators only (tokens need ``repo:admin``). ``READ_ONLY`` refuses every
push and tag change; ``MIRROR`` refuses them for everyone but the mirror's robot, and
is the state the mirror worker syncs (``MIRROR`` needs ``FEATURE_REPO_MIRROR``; as in
Quay it does not need a mirror configuration first).

Included before :mod:`portside.api.repositories` (its ``{repository:path}`` routes).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Request

from portside.api.auth import Caller, get_caller, services_of
from portside.api.errors import ApiError
from portside.api.immutability import policy_call
from portside.api.mirror import mirror_service
from portside.api.organizations import signed_in
from portside.api.repositories import split_repository
from portside.registry.access import client_address
from portside.services.audit import AuditContext

router = APIRouter()


@router.put("/repository/{repository:path}/changestate")
async def change_state(repository: str, request: Request, body: Any = Body(default=None),
                       caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Change the repository's state; answers ``{"success": true}``."""
    namespace, name = split_repository(repository)
    subject = signed_in(caller)
    if not isinstance(body, dict) or "state" not in body:
        raise ApiError(400, "invalid_request", 'The body must be {"state": "NORMAL" | '
                       '"READ_ONLY" | "MIRROR"}.')
    feature = services_of(request).config.FEATURE_REPO_MIRROR
    service = mirror_service(request)
    await policy_call(lambda: service.change_state(
        subject, namespace, name, body["state"], AuditContext(subject, client_address(request)),
        mirror_feature=feature))
    return {"success": True}
