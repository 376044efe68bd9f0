"""Robot accounts of users and organizations, with Quay's paths and JSON shapes.

A user manages its own robots (tokens need ``user:admin``); an organization's robots need
the right to administer the organization (an ``admin`` team role, or a superuser) and,
for tokens, ``org:admin``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import formatdate
from typing import Any, TypeVar

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from portside.api.auth import Caller, get_caller, require_scope, services_of
from portside.api.errors import ApiError
from portside.auth.permissions import (
    NamespaceAction,
    NamespaceRole,
    acts_as_superuser,
    namespace_actions,
)
from portside.registry.access import client_address
from portside.services.audit import AuditContext
from portside.services.robots import (
    OwnerNamespace,
    Robot,
    RobotError,
    RobotNotFound,
    RobotService,
)

router = APIRouter()

T = TypeVar("T")

#: Longest accepted robot description (Quay's schema).
MAX_DESCRIPTION = 255
#: Largest accepted request body (Quay's ROBOT_MAX_SIZE).
MAX_BODY = 1024 * 1024


def format_date(value: datetime) -> str:
    """Quay's API dates: RFC 2822 in UTC (``Sat, 21 Nov 2026 10:00:00 -0000``)."""
    if value.tzinfo is None:  # SQLite returns naive UTC datetimes
        value = value.replace(tzinfo=UTC)
    return formatdate(value.timestamp())


def robot_json(robot: Robot, *, include_token: bool, include_metadata: bool) -> dict[str, Any]:
    """A robot in Quay's shape (``token`` and ``unstructured_metadata`` on request)."""
    data: dict[str, Any] = {
        "name": robot.name,
        "created": format_date(robot.created),
        "last_accessed": None,  # not tracked
        "description": robot.description or "",
    }
    if include_token:
        data["token"] = robot.token
    if include_metadata:
        data["unstructured_metadata"] = {}  # not stored (no column yet)
    return data


def truthy(value: str | None, default: bool) -> bool:
    """Quay's boolean query parameters (``true``/``1``/``yes``...)."""
    if value is None:
        return default
    return value.strip().lower() in ("true", "1", "yes", "y", "t", "on")


def robot_service(request: Request) -> RobotService:
    """The robot service over the application's database and secret box."""
    services = services_of(request)
    return RobotService(services.db, services.secret_box)


async def run(request: Request, call: Callable[[RobotService], T]) -> T:
    """Run ``call`` on the robot service in a worker thread, turning the service's
    errors into Quay's API errors."""
    service = robot_service(request)
    try:
        return await anyio.to_thread.run_sync(call, service)
    except RobotError as exc:
        raise ApiError(400, "invalid_request", str(exc)) from None
    except RobotNotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from None


async def user_owner(request: Request, caller: Caller) -> OwnerNamespace:
    """The caller's own namespace, which the caller administers (``user:admin``)."""
    subject = require_scope(caller, "user:admin")
    assert subject.user_id is not None
    owner = await anyio.to_thread.run_sync(robot_service(request).user_namespace,
                                           subject.user_id)
    if owner is None:
        raise ApiError(403, "unauthorized", "Unauthorized")
    return owner


async def org_owner(request: Request, caller: Caller, orgname: str) -> OwnerNamespace:
    """The organization ``orgname``, if the caller may administer it.

    A caller without that right gets 403 whether or not the organization exists, so
    that the API does not reveal organization names; superusers get 404 for unknown ones.
    """
    subject = require_scope(caller, "org:admin")
    assert subject.user_id is not None
    service = robot_service(request)
    namespace = await anyio.to_thread.run_sync(service.namespace, orgname)
    role: NamespaceRole | None = None
    if namespace is not None and namespace.is_organization:
        role = await anyio.to_thread.run_sync(service.organization_role, namespace.id,
                                              subject.user_id)
    if not (NamespaceAction.ADMINISTER in namespace_actions(subject, role, True)
            or acts_as_superuser(subject)):
        raise ApiError(403, "unauthorized", "Unauthorized")
    if namespace is None or not namespace.is_organization:
        raise ApiError(404, "not_found", f"Organization {orgname[:300]!r} not found")
    return namespace


async def create_body(request: Request) -> str | None:
    """The optional creation body: ``{"description": ..., "unstructured_metadata": ...}``;
    returns the description."""
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ApiError(413, "invalid_request", "Request body too large")
    if not raw.strip():
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(400, "invalid_request", "Request body is not valid JSON") from None
    if body is None:
        return None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "Request body must be a JSON object")
    description = body.get("description")
    if description is not None and (not isinstance(description, str)
                                    or len(description) > MAX_DESCRIPTION):
        raise ApiError(400, "invalid_request",
                       f"description must be a string of at most {MAX_DESCRIPTION} characters")
    metadata = body.get("unstructured_metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ApiError(400, "invalid_request", "unstructured_metadata must be an object")
    if metadata:
        # Refused rather than silently dropped: there is nowhere to store it yet.
        raise ApiError(400, "invalid_request",
                       "unstructured_metadata is not supported by Portside yet")
    return description


def list_json(robots: list[Robot], include_token: bool,
              include_permissions: bool) -> dict[str, Any]:
    """Quay's robot list: teams and repositories are filled with ``permissions``."""
    items = []
    for robot in robots:
        item = robot_json(robot, include_token=include_token, include_metadata=False)
        item["teams"] = ([{"name": team, "avatar": None} for team in robot.teams]
                         if include_permissions else [])
        item["repositories"] = list(robot.repositories) if include_permissions else []
        items.append(item)
    return {"robots": items}


async def _list(request: Request, owner: OwnerNamespace) -> dict[str, Any]:
    # Quay returns tokens unless ``token=false``.
    include_token = truthy(request.query_params.get("token"), True)
    include_permissions = truthy(request.query_params.get("permissions"), False)
    robots = await run(request, lambda s: s.list_robots(owner, include_token,
                                                        include_permissions))
    return list_json(robots, include_token, include_permissions)


async def _get(request: Request, owner: OwnerNamespace, shortname: str) -> dict[str, Any]:
    robot = await run(request, lambda s: s.get(owner, shortname))
    return robot_json(robot, include_token=True, include_metadata=True)


def audit_of(request: Request, caller: Caller) -> AuditContext:
    """Who is changing robots, for the audit log."""
    return AuditContext(caller.subject, client_address(request))


async def _create(request: Request, owner: OwnerNamespace, shortname: str,
                  audit: AuditContext | None = None) -> Response:
    description = await create_body(request)
    robot = await run(request, lambda s: s.create(owner, shortname, description, audit=audit))
    return JSONResponse(robot_json(robot, include_token=True, include_metadata=True),
                        status_code=201)


async def _delete(request: Request, owner: OwnerNamespace, shortname: str,
                  audit: AuditContext | None = None) -> Response:
    await run(request, lambda s: s.delete(owner, shortname, audit=audit))
    return Response(status_code=204)


async def _regenerate(request: Request, owner: OwnerNamespace, shortname: str,
                      audit: AuditContext | None = None) -> dict[str, Any]:
    robot = await run(request, lambda s: s.regenerate(owner, shortname, audit=audit))
    return robot_json(robot, include_token=True, include_metadata=False)


async def _permissions(request: Request, owner: OwnerNamespace,
                       shortname: str) -> dict[str, Any]:
    permissions = await run(request, lambda s: s.permissions(owner, shortname))
    return {"permissions": [
        {"repository": {"name": p.repository, "is_public": p.public}, "role": p.role}
        for p in permissions
    ]}


# --- a user's robots ------------------------------------------------------------------


@router.get("/user/robots")
async def get_user_robots(request: Request,
                          caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """List the caller's robots (``?token=false`` omits tokens, ``?permissions=true``
    adds teams and repositories)."""
    return await _list(request, await user_owner(request, caller))


@router.get("/user/robots/{shortname}")
async def get_user_robot(shortname: str, request: Request,
                         caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """One of the caller's robots, with its token."""
    return await _get(request, await user_owner(request, caller), shortname)


@router.put("/user/robots/{shortname}", status_code=201)
async def create_user_robot(shortname: str, request: Request,
                            caller: Caller = Depends(get_caller)) -> Response:
    """Create a robot of the caller (optional body: ``description``)."""
    return await _create(request, await user_owner(request, caller), shortname,
                         audit_of(request, caller))


@router.delete("/user/robots/{shortname}", status_code=204)
async def delete_user_robot(shortname: str, request: Request,
                            caller: Caller = Depends(get_caller)) -> Response:
    """Delete one of the caller's robots."""
    return await _delete(request, await user_owner(request, caller), shortname,
                         audit_of(request, caller))


@router.post("/user/robots/{shortname}/regenerate")
async def regenerate_user_robot(shortname: str, request: Request,
                                caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Give one of the caller's robots a new token (the old one stops working)."""
    return await _regenerate(request, await user_owner(request, caller), shortname,
                         audit_of(request, caller))


@router.get("/user/robots/{shortname}/permissions")
async def get_user_robot_permissions(shortname: str, request: Request,
                                     caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """The repositories one of the caller's robots holds a role on."""
    return await _permissions(request, await user_owner(request, caller), shortname)


# --- an organization's robots ---------------------------------------------------------


@router.get("/organization/{orgname}/robots")
async def get_org_robots(orgname: str, request: Request,
                         caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """List the organization's robots."""
    return await _list(request, await org_owner(request, caller, orgname))


@router.get("/organization/{orgname}/robots/{shortname}")
async def get_org_robot(orgname: str, shortname: str, request: Request,
                        caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """One robot of the organization, with its token."""
    return await _get(request, await org_owner(request, caller, orgname), shortname)


@router.put("/organization/{orgname}/robots/{shortname}", status_code=201)
async def create_org_robot(orgname: str, shortname: str, request: Request,
                           caller: Caller = Depends(get_caller)) -> Response:
    """Create a robot in the organization (optional body: ``description``)."""
    return await _create(request, await org_owner(request, caller, orgname), shortname,
                         audit_of(request, caller))


@router.delete("/organization/{orgname}/robots/{shortname}", status_code=204)
async def delete_org_robot(orgname: str, shortname: str, request: Request,
                           caller: Caller = Depends(get_caller)) -> Response:
    """Delete a robot of the organization."""
    return await _delete(request, await org_owner(request, caller, orgname), shortname,
                         audit_of(request, caller))


@router.post("/organization/{orgname}/robots/{shortname}/regenerate")
async def regenerate_org_robot(orgname: str, shortname: str, request: Request,
                               caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Give a robot of the organization a new token (the old one stops working)."""
    return await _regenerate(request, await org_owner(request, caller, orgname), shortname,
                         audit_of(request, caller))


@router.get("/organization/{orgname}/robots/{shortname}/permissions")
async def get_org_robot_permissions(orgname: str, shortname: str, request: Request,
                                    caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """The repositories a robot of the organization holds a role on."""
    return await _permissions(request, await org_owner(request, caller, orgname), shortname)
