"""``/api/v1/repository/{repository}/permissions/{user,team}/``: who holds which role on
a repository, in Quay's paths and JSON shapes. Administrators only (scope ``repo:admin``).

This router must be included before :mod:`portside.api.repositories`, whose
``/repository/{repository:path}`` would otherwise swallow these paths.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from portside.api.auth import Caller, get_caller, require_scope
from portside.api.repositories import admin_service, run, split_repository
from portside.api.user import avatar
from portside.services.repository_admin import TeamPermission, UserPermission

router = APIRouter()

_USERS = "/repository/{repository:path}/permissions/user"
_TEAMS = "/repository/{repository:path}/permissions/team"


class SetRole(BaseModel):
    """Quay's ``UserPermission`` / ``TeamPermission`` body."""

    role: str


def user_json(permission: UserPermission) -> dict[str, Any]:
    """Quay's view of a user or robot permission."""
    return {
        "role": permission.role,
        "name": permission.username,
        "is_robot": permission.is_robot,
        "avatar": avatar(permission.username, "robot" if permission.is_robot else "user"),
        "is_org_member": permission.is_org_member,
    }


def team_json(permission: TeamPermission) -> dict[str, Any]:
    """Quay's view of a team permission."""
    return {"role": permission.role, "name": permission.team,
            "avatar": avatar(permission.team, "team")}


@router.get(_USERS + "/")
async def list_user_permissions(request: Request, repository: str,
                                caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Every direct user and robot permission."""
    subject = require_scope(caller, "repo:admin")
    namespace, name = split_repository(repository)
    permissions = await run(admin_service(request).list_user_permissions, subject,
                            namespace, name)
    return {"permissions": {p.username: user_json(p) for p in permissions}}


@router.get(_USERS + "/{username}")
async def get_user_permission(request: Request, repository: str, username: str,
                              caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """One user's or robot's direct permission (404 if it has none)."""
    subject = require_scope(caller, "repo:admin")
    namespace, name = split_repository(repository)
    return user_json(await run(admin_service(request).get_user_permission, subject,
                               namespace, name, username))


@router.put(_USERS + "/{username}")
async def set_user_permission(request: Request, repository: str, username: str,
                              body: SetRole,
                              caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Grant a role to a user or robot (``<namespace>+<name>``)."""
    subject = require_scope(caller, "repo:admin")
    namespace, name = split_repository(repository)
    return user_json(await run(admin_service(request).set_user_permission, subject,
                               namespace, name, username, body.role))


@router.delete(_USERS + "/{username}", status_code=204)
async def delete_user_permission(request: Request, repository: str, username: str,
                                 caller: Caller = Depends(get_caller)) -> Response:
    """Remove a user's or robot's direct permission."""
    subject = require_scope(caller, "repo:admin")
    namespace, name = split_repository(repository)
    await run(admin_service(request).delete_user_permission, subject, namespace, name,
              username)
    return Response(status_code=204)


@router.get(_TEAMS + "/")
async def list_team_permissions(request: Request, repository: str,
                                caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Every team permission."""
    subject = require_scope(caller, "repo:admin")
    namespace, name = split_repository(repository)
    permissions = await run(admin_service(request).list_team_permissions, subject,
                            namespace, name)
    return {"permissions": {p.team: team_json(p) for p in permissions}}


@router.get(_TEAMS + "/{teamname}")
async def get_team_permission(request: Request, repository: str, teamname: str,
                              caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """One team's permission (404 if it has none)."""
    subject = require_scope(caller, "repo:admin")
    namespace, name = split_repository(repository)
    return team_json(await run(admin_service(request).get_team_permission, subject,
                               namespace, name, teamname))


@router.put(_TEAMS + "/{teamname}")
async def set_team_permission(request: Request, repository: str, teamname: str,
                              body: SetRole,
                              caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Grant a role to a team of the repository's organization."""
    subject = require_scope(caller, "repo:admin")
    namespace, name = split_repository(repository)
    return team_json(await run(admin_service(request).set_team_permission, subject,
                               namespace, name, teamname, body.role))


@router.delete(_TEAMS + "/{teamname}", status_code=204)
async def delete_team_permission(request: Request, repository: str, teamname: str,
                                 caller: Caller = Depends(get_caller)) -> Response:
    """Remove a team's permission."""
    subject = require_scope(caller, "repo:admin")
    namespace, name = split_repository(repository)
    await run(admin_service(request).delete_team_permission, subject, namespace, name,
              teamname)
    return Response(status_code=204)
