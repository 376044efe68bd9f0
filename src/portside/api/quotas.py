"""Storage quotas in Quay's paths and JSON shapes (``FEATURE_QUOTA_MANAGEMENT``).

- ``/organization/{org}/quota[/{id}[/limit[/{limit_id}]]]``: members read, superusers
  (tokens with ``super:user``) create, change and delete;
- ``/user/quota[/{id}[/limit[/{limit_id}]]]``: the caller's own namespace, read only;
- ``/superuser/users/{ns}/quota[/{id}]``, ``/superuser/organization/{ns}/quota[/{id}]``:
  the superuser panel's variants (also ``FEATURE_EDIT_QUOTA``);
- ``/superuser/registrysize/``: bytes referenced by the whole registry.

Decisions live in :mod:`portside.services.quotas`. With the feature off, every quota
path answers 404, as Quay hides them.
"""

from __future__ import annotations

import time
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from portside.api.auth import Caller, get_caller, services_of
from portside.api.errors import ApiError
from portside.api.organizations import call, signed_in
from portside.auth.permissions import Subject, acts_as_superuser
from portside.config.sizes import parse_size
from portside.services.quotas import (
    MAX_LIMIT_BYTES,
    LimitInfo,
    QuotaInfo,
    QuotaReport,
    QuotaService,
)

router = APIRouter()



ORGANIZATION = "organization"
USER = "user"


class NewQuota(BaseModel):
    """Quay's ``NewOrgQuota`` / ``NewNamespaceQuota`` body: ``limit_bytes``, or on the
    superuser paths a size string ``limit`` such as ``10Gi`` (``G`` = 1000³, ``Gi`` = 1024³)."""

    model_config = ConfigDict(extra="ignore")

    limit_bytes: int | None = Field(default=None, le=MAX_LIMIT_BYTES,
                                    description="Bytes the namespace may use.")
    limit: str | None = Field(default=None, max_length=64,
                              description="The limit as a size string (superuser paths).")


class NewLimit(BaseModel):
    """Quay's ``NewOrgQuotaLimit`` body."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(max_length=32, description='"Warning" or "Reject".')
    threshold_percent: int = Field(le=2**31, ge=-(2**31),
                                   description="Threshold in percent of the quota (1-100).")


class UpdateLimit(BaseModel):
    """Quay's ``UpdateOrgQuotaLimit`` body (both fields optional)."""

    model_config = ConfigDict(extra="ignore")

    type: str | None = Field(default=None, max_length=32)
    threshold_percent: int | None = Field(default=None, le=2**31, ge=-(2**31))


def superuser(caller: Caller) -> Subject:
    """The caller's subject, once it is known to act as a superuser (401/403 otherwise)."""
    subject = signed_in(caller)
    if not acts_as_superuser(subject):
        raise ApiError(403, "insufficient_scope", "Requires superuser rights (super:user).")
    return subject


def quotas_of(request: Request) -> QuotaService:
    """The quota service (stateless: built per request on the shared database)."""
    services = services_of(request)
    return QuotaService(services.db, services.config.DEFAULT_SYSTEM_REJECT_QUOTA_BYTES)


def quota_feature(request: Request) -> None:
    """FastAPI dependency: 404 unless ``FEATURE_QUOTA_MANAGEMENT`` is on."""
    if not services_of(request).config.FEATURE_QUOTA_MANAGEMENT:
        raise ApiError(404, "not_found", "Not Found")


def edit_feature(request: Request) -> None:
    """FastAPI dependency: the superuser quota paths also need ``FEATURE_EDIT_QUOTA``."""
    config = services_of(request).config
    if not (config.FEATURE_QUOTA_MANAGEMENT and config.FEATURE_EDIT_QUOTA):
        raise ApiError(404, "not_found", "Not Found")


def limit_view(limit: LimitInfo) -> dict[str, Any]:
    """Quay's ``limit_view``."""
    return {"id": limit.id, "type": limit.type, "limit_percent": limit.threshold_percent}


def quota_view(quota: QuotaInfo, default_exists: bool) -> dict[str, Any]:
    """Quay's ``quota_view``."""
    return {"id": quota.id, "limit_bytes": quota.limit_bytes,
            "default_config": quota.default_config,
            "limits": [limit_view(limit) for limit in quota.limits],
            "default_config_exists": default_exists}


def report_view(report: QuotaReport, namespace: bool) -> dict[str, Any]:
    """Quay's ``quota_report``. Usage is computed on request, so the backfill Quay
    reports on namespaces is always ``complete``."""
    view: dict[str, Any] = {"quota_bytes": report.quota_bytes,
                            "configured_quota": report.configured_quota}
    if namespace:
        view.update(running_backfill="complete", backfill_status="complete")
    return view


def _default_exists(request: Request) -> bool:
    return bool(services_of(request).config.DEFAULT_SYSTEM_REJECT_QUOTA_BYTES)


def _limit_bytes(body: NewQuota, allow_string: bool) -> int | None:
    """The byte limit of a body (``None``: not given)."""
    if body.limit is not None and allow_string:
        try:
            return parse_size(body.limit)
        except ValueError:
            raise ApiError(400, "invalid_request", "Invalid limit format") from None
    return body.limit_bytes


# --- views for other routers --------------------------------------------------------------


async def organization_quota_fields(request: Request, org: str) -> dict[str, Any]:
    """``quotas`` and ``quota_report`` for the organization view of members and admins
    (with ``FEATURE_QUOTA_MANAGEMENT`` and ``FEATURE_EDIT_QUOTA``, as Quay)."""
    config = services_of(request).config
    if not (config.FEATURE_QUOTA_MANAGEMENT and config.FEATURE_EDIT_QUOTA):
        return {}
    found = await anyio.to_thread.run_sync(quotas_of(request).namespace_view, org)
    if found is None:
        return {}
    report, quotas = found
    return {"quotas": [quota_view(q, _default_exists(request)) for q in quotas],
            "quota_report": report_view(report, namespace=True)}


async def repository_quota_fields(request: Request, namespace: str,
                                  name: str) -> dict[str, Any]:
    """``quota_report`` (the repository's size) for the repository view, once the
    caller is known to see the repository."""
    if not services_of(request).config.FEATURE_QUOTA_MANAGEMENT:
        return {}
    report = await anyio.to_thread.run_sync(quotas_of(request).repository_report,
                                            namespace, name)
    return {} if report is None else {"quota_report": report_view(report, namespace=False)}


# --- organizations ----------------------------------------------------------------------


@router.get("/organization/{org}/quota", dependencies=[Depends(quota_feature)])
async def list_organization_quota(org: str, request: Request,
                                  caller: Caller = Depends(get_caller)) -> list[dict[str, Any]]:
    """The organization's quota (members and superusers); the system default stands in
    when it has none and ``DEFAULT_SYSTEM_REJECT_QUOTA_BYTES`` is set."""
    quotas = await call(quotas_of(request).quotas, signed_in(caller), org, ORGANIZATION)
    return [quota_view(q, _default_exists(request)) for q in quotas]


@router.post("/organization/{org}/quota", status_code=201,
             dependencies=[Depends(quota_feature)])
async def create_organization_quota(org: str, body: NewQuota, request: Request,
                                    caller: Caller = Depends(get_caller)) -> Response:
    """Create the organization's quota (superusers only; one per organization)."""
    subject = signed_in(caller)
    limit_bytes = _limit_bytes(body, allow_string=False)
    if limit_bytes is None:
        raise ApiError(400, "invalid_request", "limit_bytes: Field required")
    await call(quotas_of(request).create_quota, subject, org, ORGANIZATION, limit_bytes)
    return JSONResponse("Created", status_code=201)


@router.get("/organization/{org}/quota/{quota_id}", dependencies=[Depends(quota_feature)])
async def get_organization_quota(org: str, quota_id: str, request: Request,
                                 caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """One quota of the organization."""
    quota = await call(quotas_of(request).quota, signed_in(caller), org, ORGANIZATION,
                       quota_id)
    return quota_view(quota, _default_exists(request))


@router.put("/organization/{org}/quota/{quota_id}", dependencies=[Depends(quota_feature)])
async def change_organization_quota(org: str, quota_id: str, body: NewQuota,
                                    request: Request,
                                    caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Change the byte limit (superusers only)."""
    quota = await call(quotas_of(request).update_quota, signed_in(caller), org,
                       ORGANIZATION, quota_id, _limit_bytes(body, allow_string=False))
    return quota_view(quota, _default_exists(request))


@router.delete("/organization/{org}/quota/{quota_id}", status_code=204,
               dependencies=[Depends(quota_feature)])
async def delete_organization_quota(org: str, quota_id: str, request: Request,
                                    caller: Caller = Depends(get_caller)) -> Response:
    """Delete the quota with its limits (superusers only)."""
    await call(quotas_of(request).delete_quota, signed_in(caller), org, ORGANIZATION,
               quota_id)
    return Response(status_code=204)


@router.get("/organization/{org}/quota/{quota_id}/limit",
            dependencies=[Depends(quota_feature)])
async def list_organization_quota_limits(org: str, quota_id: str, request: Request,
                                         caller: Caller = Depends(get_caller),
                                         ) -> list[dict[str, Any]]:
    """The quota's limits."""
    limits = await call(quotas_of(request).limits, signed_in(caller), org, ORGANIZATION,
                        quota_id)
    return [limit_view(limit) for limit in limits]


@router.post("/organization/{org}/quota/{quota_id}/limit", status_code=201,
             dependencies=[Depends(quota_feature)])
async def create_organization_quota_limit(org: str, quota_id: str, body: NewLimit,
                                          request: Request,
                                          caller: Caller = Depends(get_caller)) -> Response:
    """Add a ``Warning`` or ``Reject`` limit (superusers only)."""
    await call(quotas_of(request).create_limit, signed_in(caller), org, ORGANIZATION,
               quota_id, body.type, body.threshold_percent)
    return JSONResponse("Created", status_code=201)


@router.get("/organization/{org}/quota/{quota_id}/limit/{limit_id}",
            dependencies=[Depends(quota_feature)])
async def get_organization_quota_limit(org: str, quota_id: str, limit_id: str,
                                       request: Request,
                                       caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """One limit."""
    limit = await call(quotas_of(request).limit, signed_in(caller), org, ORGANIZATION,
                       quota_id, limit_id)
    return limit_view(limit)


@router.put("/organization/{org}/quota/{quota_id}/limit/{limit_id}",
            dependencies=[Depends(quota_feature)])
async def change_organization_quota_limit(org: str, quota_id: str, limit_id: str,
                                          body: UpdateLimit, request: Request,
                                          caller: Caller = Depends(get_caller),
                                          ) -> dict[str, Any]:
    """Change a limit's type or threshold (superusers only); returns the quota."""
    quota = await call(quotas_of(request).update_limit, signed_in(caller), org,
                       ORGANIZATION, quota_id, limit_id, body.type, body.threshold_percent)
    return quota_view(quota, _default_exists(request))


@router.delete("/organization/{org}/quota/{quota_id}/limit/{limit_id}", status_code=204,
               dependencies=[Depends(quota_feature)])
async def delete_organization_quota_limit(org: str, quota_id: str, limit_id: str,
                                          request: Request,
                                          caller: Caller = Depends(get_caller)) -> Response:
    """Delete a limit (superusers only)."""
    await call(quotas_of(request).delete_limit, signed_in(caller), org, ORGANIZATION,
               quota_id, limit_id)
    return Response(status_code=204)


# --- the caller's own namespace -----------------------------------------------------------


async def _own(request: Request, caller: Caller) -> tuple[QuotaService, str]:
    service = quotas_of(request)
    return service, await call(service.own_namespace, signed_in(caller))


@router.get("/user/quota", dependencies=[Depends(quota_feature)])
async def list_user_quota(request: Request,
                          caller: Caller = Depends(get_caller)) -> list[dict[str, Any]]:
    """The caller's own quota (tokens need ``user:admin``)."""
    service, namespace = await _own(request, caller)
    quotas = await call(service.quotas, caller.subject, namespace, USER)
    return [quota_view(q, _default_exists(request)) for q in quotas]


@router.get("/user/quota/{quota_id}", dependencies=[Depends(quota_feature)])
async def get_user_quota(quota_id: str, request: Request,
                         caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """One quota of the caller's namespace."""
    service, namespace = await _own(request, caller)
    quota = await call(service.quota, caller.subject, namespace, USER, quota_id)
    return quota_view(quota, _default_exists(request))


@router.get("/user/quota/{quota_id}/limit", dependencies=[Depends(quota_feature)])
async def list_user_quota_limits(quota_id: str, request: Request,
                                 caller: Caller = Depends(get_caller),
                                 ) -> list[dict[str, Any]]:
    """The limits of the caller's quota."""
    service, namespace = await _own(request, caller)
    limits = await call(service.limits, caller.subject, namespace, USER, quota_id)
    return [limit_view(limit) for limit in limits]


@router.get("/user/quota/{quota_id}/limit/{limit_id}", dependencies=[Depends(quota_feature)])
async def get_user_quota_limit(quota_id: str, limit_id: str, request: Request,
                               caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """One limit of the caller's quota."""
    service, namespace = await _own(request, caller)
    limit = await call(service.limit, caller.subject, namespace, USER, quota_id, limit_id)
    return limit_view(limit)


# --- superuser panel ----------------------------------------------------------------------


def _register_superuser_routes(prefix: str, kind: str) -> None:
    """``/superuser/{prefix}/{namespace}/quota[/{quota_id}]`` for one namespace kind."""
    base = f"/superuser/{prefix}/{{namespace}}/quota"

    @router.get(base, dependencies=[Depends(edit_feature)],
                name=f"list_{prefix}_quota_superuser")
    async def list_quota(namespace: str, request: Request,
                         caller: Caller = Depends(get_caller)) -> list[dict[str, Any]]:
        """The namespace's quota (superusers only)."""
        subject = superuser(caller)
        quotas = await call(quotas_of(request).quotas, subject, namespace, kind)
        return [quota_view(q, _default_exists(request)) for q in quotas
                if not q.default_config]

    @router.post(base, status_code=201, dependencies=[Depends(edit_feature)],
                 name=f"create_{prefix}_quota_superuser")
    async def create_quota(namespace: str, body: NewQuota, request: Request,
                           caller: Caller = Depends(get_caller)) -> Response:
        """Create the namespace's quota from ``limit_bytes`` or ``limit``."""
        subject = superuser(caller)
        limit_bytes = _limit_bytes(body, allow_string=True)
        if limit_bytes is None:
            raise ApiError(400, "invalid_request", "limit_bytes or limit is required")
        await call(quotas_of(request).create_quota, subject, namespace, kind, limit_bytes)
        return JSONResponse("Created", status_code=201)

    @router.put(f"{base}/{{quota_id}}", dependencies=[Depends(edit_feature)],
                name=f"change_{prefix}_quota_superuser")
    async def change_quota(namespace: str, quota_id: str, body: NewQuota, request: Request,
                           caller: Caller = Depends(get_caller)) -> dict[str, Any]:
        """Change the namespace's byte limit."""
        subject = superuser(caller)
        quota = await call(quotas_of(request).update_quota, subject, namespace, kind,
                           quota_id, _limit_bytes(body, allow_string=True))
        return quota_view(quota, _default_exists(request))

    @router.delete(f"{base}/{{quota_id}}", status_code=204,
                   dependencies=[Depends(edit_feature)],
                   name=f"delete_{prefix}_quota_superuser")
    async def delete_quota(namespace: str, quota_id: str, request: Request,
                           caller: Caller = Depends(get_caller)) -> Response:
        """Delete the namespace's quota."""
        subject = superuser(caller)
        await call(quotas_of(request).delete_quota, subject, namespace, kind, quota_id)
        return Response(status_code=204)


_register_superuser_routes("users", USER)
_register_superuser_routes("organization", ORGANIZATION)


@router.get("/superuser/registrysize/")
async def registry_size(request: Request,
                        caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Bytes of the distinct blobs referenced by any manifest, computed now (Quay
    computes it in the background; here it is always fresh, never queued)."""
    subject = superuser(caller)
    size = await call(quotas_of(request).registry_size, subject)
    return {"size_bytes": size, "last_ran": int(time.time() * 1000), "queued": False,
            "running": False}


@router.post("/superuser/registrysize/", status_code=201)
async def queue_registry_size(caller: Caller = Depends(get_caller)) -> Response:
    """Quay queues a recalculation; the size is always computed on request here, so
    this only answers 201 for clients that ask."""
    superuser(caller)
    return Response(status_code=201)
