"""``/api/v1/organization/{org}/team/...``: an organization's teams and their members, in
Quay's paths and JSON shapes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from portside.api.auth import Caller, get_caller
from portside.api.organizations import call, organizations_of, signed_in, team_avatar
from portside.api.user import avatar
from portside.services.organizations import MemberInfo

router = APIRouter()


class TeamDescription(BaseModel):
    """Quay's ``TeamDescription`` body. The role is checked by the service (after the
    caller's rights), so that a wrong role is a 400 in Quay's words."""

    model_config = ConfigDict(extra="ignore")

    role: str = Field(description="Organization-wide role: member, creator or admin.")
    description: str | None = Field(default=None, description="Markdown description.")


def member_view(member: MemberInfo) -> dict[str, Any]:
    """Quay's ``member_view``: robots are ``kind: user`` with ``is_robot: true``."""
    return {
        "name": member.name,
        "kind": "user",
        "is_robot": member.is_robot,
        "avatar": avatar(member.name, "robot" if member.is_robot else "user"),
        "invited": False,
    }


@router.put("/organization/{org}/team/{team}")
async def put_team(org: str, team: str, body: TeamDescription, request: Request,
                   caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Create a team or change its role and description (organization admins only)."""
    info, created = await call(organizations_of(request).put_team, signed_in(caller), org,
                               team, body.role, body.description)
    return {
        "name": info.name,
        "description": info.description,
        "can_view": info.can_view,
        "role": info.role,
        "avatar": team_avatar(info.name),
        "new_team": created,
    }


@router.delete("/organization/{org}/team/{team}", status_code=204)
async def delete_team(org: str, team: str, request: Request,
                      caller: Caller = Depends(get_caller)) -> Response:
    """Delete a team (not the organization's last admin team)."""
    await call(organizations_of(request).delete_team, signed_in(caller), org, team)
    return Response(status_code=204)


@router.get("/organization/{org}/team/{team}/members")
async def list_team_members(org: str, team: str, request: Request,
                            caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """The team's members (organization admins, and members of the team)."""
    members = await call(organizations_of(request).team_members, signed_in(caller), org,
                         team)
    return {
        "name": members.name,
        "members": [member_view(member) for member in members.members],
        "can_edit": members.can_edit,
    }


@router.put("/organization/{org}/team/{team}/members/{membername}")
async def add_team_member(org: str, team: str, membername: str, request: Request,
                          caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Add a user, or a robot of this organization, to the team (no invitations)."""
    member = await call(organizations_of(request).add_member, signed_in(caller), org, team,
                        membername)
    return member_view(member)


@router.delete("/organization/{org}/team/{team}/members/{membername}", status_code=204)
async def remove_team_member(org: str, team: str, membername: str, request: Request,
                             caller: Caller = Depends(get_caller)) -> Response:
    """Remove a member; the organization must keep at least one administrator."""
    await call(organizations_of(request).remove_member, signed_in(caller), org, team,
               membername)
    return Response(status_code=204)
