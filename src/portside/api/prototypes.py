"""``/api/v1/organization/{org}/prototypes``: an organization's default permissions
(Quay's "permission prototypes"), in Quay's paths and JSON shapes.

Organization administrators only; access tokens need the ``org:admin`` scope.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from portside.api.auth import Caller, get_caller, require_scope, services_of
from portside.api.organizations import call, team_avatar
from portside.api.user import avatar
from portside.services.prototypes import PrototypeInfo, PrototypeService, PrototypeUser

router = APIRouter()

_LIST = "/organization/{org}/prototypes"
_ONE = "/organization/{org}/prototypes/{prototypeid}"


class Delegate(BaseModel):
    """Who the rule grants the role to."""

    model_config = ConfigDict(extra="ignore")

    kind: str = Field(description="user (users and robots) or team.")
    name: str = Field(description="User name, robot name (org+name) or team name.")


class ActivatingUser(BaseModel):
    """The user whose new repositories the rule applies to."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(description="User name (robots cannot be activating users).")


class NewPrototype(BaseModel):
    """Quay's ``NewPrototype`` body. Values are checked by the service, after the
    caller's rights, so that outsiders learn nothing from the error."""

    model_config = ConfigDict(extra="ignore")

    role: str = Field(description="read, write or admin.")
    delegate: Delegate
    activating_user: ActivatingUser | None = Field(
        default=None, description="Omitted (or an empty name): repositories created by anyone."
    )


class PrototypeUpdate(BaseModel):
    """Quay's ``PrototypeUpdate`` body."""

    model_config = ConfigDict(extra="ignore")

    role: str = Field(description="read, write or admin.")


def prototypes_of(request: Request) -> PrototypeService:
    """The prototype service (stateless: built per request on the shared database)."""
    return PrototypeService(services_of(request).db)


def user_view(user: PrototypeUser) -> dict[str, Any]:
    """A user or robot inside a prototype view."""
    return {
        "name": user.name,
        "is_robot": user.is_robot,
        "kind": "user",
        "is_org_member": user.is_org_member,
        "avatar": avatar(user.name, "robot" if user.is_robot else "user"),
    }


def prototype_view(info: PrototypeInfo) -> dict[str, Any]:
    """Quay's prototype view: ``activating_user`` is ``null`` for "anyone", as in Quay."""
    if info.delegate_user is not None:
        delegate = user_view(info.delegate_user)
    else:
        team = info.delegate_team or ""
        delegate = {"name": team, "kind": "team", "avatar": team_avatar(team)}
    return {
        "activating_user": (
            user_view(info.activating_user) if info.activating_user is not None else None
        ),
        "delegate": delegate,
        "role": info.role,
        "id": info.id,
    }


@router.get(_LIST)
async def list_prototypes(
    org: str, request: Request, caller: Caller = Depends(get_caller)
) -> dict[str, Any]:
    """Every default permission of the organization."""
    subject = require_scope(caller, "org:admin")
    infos = await call(prototypes_of(request).prototypes, subject, org)
    return {"prototypes": [prototype_view(info) for info in infos]}


@router.post(_LIST)
async def create_prototype(
    org: str, body: NewPrototype, request: Request, caller: Caller = Depends(get_caller)
) -> dict[str, Any]:
    """Add a default permission (200 with its view, as Quay answers)."""
    subject = require_scope(caller, "org:admin")
    activating = body.activating_user.name if body.activating_user is not None else None
    service = prototypes_of(request)
    info = await call(
        lambda: service.create(
            subject,
            org,
            role=body.role,
            delegate_kind=body.delegate.kind,
            delegate_name=body.delegate.name,
            activating_user=activating or None,
        )
    )
    return prototype_view(info)


@router.put(_ONE)
async def update_prototype(
    org: str,
    prototypeid: str,
    body: PrototypeUpdate,
    request: Request,
    caller: Caller = Depends(get_caller),
) -> dict[str, Any]:
    """Change the role of a default permission."""
    subject = require_scope(caller, "org:admin")
    info = await call(prototypes_of(request).update, subject, org, prototypeid, body.role)
    return prototype_view(info)


@router.delete(_ONE, status_code=204)
async def delete_prototype(
    org: str, prototypeid: str, request: Request, caller: Caller = Depends(get_caller)
) -> Response:
    """Remove a default permission; repositories keep the permissions it granted."""
    subject = require_scope(caller, "org:admin")
    await call(prototypes_of(request).delete, subject, org, prototypeid)
    return Response(status_code=204)
