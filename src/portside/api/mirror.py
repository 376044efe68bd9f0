"""Repository mirroring in Quay's paths and JSON shapes (``FEATURE_REPO_MIRROR``):

- ``GET/POST/PUT /api/v1/repository/{ns}/{repo}/mirror``: the mirror configuration;
- ``POST /api/v1/repository/{ns}/{repo}/mirror/sync-now``: sync at the next worker pass;
- ``POST /api/v1/repository/{ns}/{repo}/mirror/sync-cancel``: stop a running sync.

Repository administrators only (tokens need ``repo:admin``). With the feature off every
path answers 404, as Quay hides them. The upstream password is write-only.

This router must be included before :mod:`portside.api.repositories`, whose
``/repository/{repository:path}`` would otherwise swallow these paths.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Request
from starlette.responses import Response

from portside.api.auth import Caller, get_caller, services_of
from portside.api.errors import ApiError
from portside.api.immutability import policy_call
from portside.api.organizations import signed_in
from portside.api.repositories import split_repository
from portside.registry.access import client_address
from portside.services.audit import AuditContext
from portside.services.mirror_config import MirrorConfigService, MirrorExists

router = APIRouter()

_PATH = "/repository/{repository:path}/mirror"


def mirror_feature(request: Request) -> None:
    """FastAPI dependency: 404 unless ``FEATURE_REPO_MIRROR`` is on."""
    if not services_of(request).config.FEATURE_REPO_MIRROR:
        raise ApiError(404, "not_found", "Not Found")


def mirror_service(request: Request) -> MirrorConfigService:
    """The mirror configuration service (stateless: built per request)."""
    services = services_of(request)
    return MirrorConfigService(services.db, services.registry.policy, services.secret_box,
                               services.outbound)


def _body(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_request", "The request body must be a JSON object.")
    return value


@router.get(_PATH, dependencies=[Depends(mirror_feature)])
async def get_mirror(repository: str, request: Request,
                     caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Quay's ``getRepoMirrorConfig``."""
    namespace, name = split_repository(repository)
    return await policy_call(mirror_service(request).get, signed_in(caller), namespace, name)


@router.post(_PATH, status_code=201, dependencies=[Depends(mirror_feature)])
async def create_mirror(repository: str, request: Request, body: Any = Body(default=None),
                        caller: Caller = Depends(get_caller)) -> Response:
    """Quay's ``createRepoMirrorConfig``: 201 with an empty body; 409 when one exists."""
    namespace, name = split_repository(repository)
    subject = signed_in(caller)
    audit = AuditContext(subject, client_address(request))
    service = mirror_service(request)

    def create() -> None:
        try:
            service.create(subject, namespace, name, _body(body), audit)
        except MirrorExists as exc:  # an Invalid, but Quay answers 409 for it
            raise ApiError(409, "conflict", exc.message) from None

    await policy_call(create)
    return Response(status_code=201)


@router.put(_PATH, status_code=201, dependencies=[Depends(mirror_feature)])
async def change_mirror(repository: str, request: Request, body: Any = Body(default=None),
                        caller: Caller = Depends(get_caller)) -> Response:
    """Quay's ``changeRepoMirrorConfig``: 201 with an empty body."""
    namespace, name = split_repository(repository)
    subject = signed_in(caller)
    await policy_call(mirror_service(request).update, subject, namespace, name,
                      _body(body), AuditContext(subject, client_address(request)))
    return Response(status_code=201)


@router.post(_PATH + "/sync-now", status_code=204, dependencies=[Depends(mirror_feature)])
async def sync_now(repository: str, request: Request,
                   caller: Caller = Depends(get_caller)) -> Response:
    """Quay's ``syncNow``: the next worker pass syncs the mirror."""
    namespace, name = split_repository(repository)
    subject = signed_in(caller)
    await policy_call(mirror_service(request).sync_now, subject, namespace, name,
                      AuditContext(subject, client_address(request)))
    return Response(status_code=204)


@router.post(_PATH + "/sync-cancel", status_code=204, dependencies=[Depends(mirror_feature)])
async def sync_cancel(repository: str, request: Request,
                      caller: Caller = Depends(get_caller)) -> Response:
    """Quay's ``syncCancel``: a running sync stops at its next checkpoint."""
    namespace, name = split_repository(repository)
    subject = signed_in(caller)
    await policy_call(mirror_service(request).sync_cancel, subject, namespace, name,
                      AuditContext(subject, client_address(request)))
    return Response(status_code=204)
