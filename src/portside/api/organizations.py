"""``/api/v1/organization/...``: create, show, change and delete organizations, and list
their members, in Quay's paths and JSON shapes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from portside.api.auth import Caller, get_caller, require_scope, services_of
from portside.api.errors import ApiError
from portside.api.user import DEFAULT_TAG_EXPIRATION_S, avatar
from portside.auth.permissions import Subject
from portside.services.organizations import (
    Forbidden,
    Invalid,
    NotFound,
    OrganizationInfo,
    OrganizationService,
    TeamInfo,
)
from portside.services.tag_history import WindowPolicy

router = APIRouter()

T = TypeVar("T")


class NewOrganization(BaseModel):
    """Quay's ``NewOrg`` body (unknown keys are ignored, as Quay does)."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(description="Organization name.")
    email: str | None = Field(default=None,
                              description="Contact e-mail (unique among users and orgs).")
    recaptcha_response: str | None = Field(default=None, description="Ignored.")


class UpdateOrganization(BaseModel):
    """Quay's ``UpdateOrg`` body. The e-mail is stored; the invoice settings (Quay's
    billing) are accepted and ignored; ``tag_expiration_s`` sets the time-machine window."""

    model_config = ConfigDict(extra="ignore")

    email: str | None = None
    invoice_email: bool | None = None
    invoice_email_address: str | None = None
    tag_expiration_s: int | None = Field(default=None, ge=0)


def organizations_of(request: Request) -> OrganizationService:
    """The organization service (stateless: built per request on the shared database)."""
    return OrganizationService(services_of(request).db)


def signed_in(caller: Caller) -> Subject:
    """The caller's subject; 401 when anonymous. Scopes are checked by the service."""
    if caller.subject.anonymous:
        raise ApiError(401, "invalid_token", "Requires authentication.")
    return caller.subject


async def call(operation: Callable[..., T], *args: Any) -> T:
    """Run a blocking service operation in a thread, mapping its refusals to Quay's
    error responses."""
    try:
        return await anyio.to_thread.run_sync(operation, *args)
    except NotFound as exc:
        raise ApiError(404, "not_found", exc.message) from None
    except Forbidden as exc:
        raise ApiError(403, "insufficient_scope", exc.message) from None
    except Invalid as exc:
        raise ApiError(400, "invalid_request", exc.message) from None


def team_avatar(name: str) -> dict[str, str]:
    """Quay's avatar object for a team."""
    return avatar(name, "team")


def team_view(team: TeamInfo) -> dict[str, Any]:
    """A team inside the organization view."""
    return {
        "name": team.name,
        "description": team.description,
        "role": team.role,
        "avatar": team_avatar(team.name),
        "can_view": team.can_view,
        "repo_count": team.repo_count,
        "member_count": team.member_count,
        "is_synced": False,
    }


def organization_view(info: OrganizationInfo,
                      default_window_s: int = DEFAULT_TAG_EXPIRATION_S) -> dict[str, Any]:
    """Quay's ``org_view``: administrators see the e-mail (``None`` if none was given)
    and the settings; everyone else gets ``""`` for the e-mail, as Quay hides it, and
    outsiders no teams."""
    view: dict[str, Any] = {
        "name": info.name,
        "email": info.email if info.is_admin else "",
        "avatar": avatar(info.name, "user"),
        "is_admin": info.is_admin,
        "is_member": info.is_member,
    }
    if info.teams is not None:
        view["teams"] = {team.name: team_view(team) for team in info.teams}
        view["ordered_teams"] = [team.name for team in info.teams]
    if info.is_admin:
        # No stored window means the registry's default, which Quay shows as a number.
        expiration = (info.tag_expiration_s if info.tag_expiration_s is not None
                      else default_window_s)
        view.update(invoice_email=False, invoice_email_address=None,
                    tag_expiration_s=expiration, is_free_account=True)
    return view


@router.post("/organization/", status_code=201)
async def create_organization(body: NewOrganization, request: Request,
                              caller: Caller = Depends(get_caller)) -> Response:
    """Create an organization; the caller becomes its administrator (team ``owners``).

    Like Quay, this needs a real user: tokens need the ``user:admin`` scope.
    """
    subject = require_scope(caller, "user:admin")
    await call(organizations_of(request).create, subject, body.name, body.email)
    return JSONResponse("Created", status_code=201)


@router.get("/organization/{org}")
async def get_organization(org: str, request: Request,
                           caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """The organization: with its teams for members, admins and superusers, and as
    Quay's reduced view (name and avatar) for everyone else, anonymous callers too."""
    info = await call(organizations_of(request).get, caller.subject, org)
    view = organization_view(info, services_of(request).config.default_tag_expiration_s)
    if info.is_admin or info.is_member:
        from portside.api.quotas import organization_quota_fields  # avoids an import cycle

        view.update(await organization_quota_fields(request, org))
    return view


@router.put("/organization/{org}")
async def change_organization(org: str, body: UpdateOrganization, request: Request,
                              caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Quay's "change organization details" (admins only): the contact e-mail and the
    time-machine window (``tag_expiration_s``, one of ``TAG_EXPIRATION_OPTIONS``)."""
    config = services_of(request).config
    info = await call(organizations_of(request).update, signed_in(caller), org, body.email,
                      body.tag_expiration_s, WindowPolicy.from_config(config))
    return organization_view(info, config.default_tag_expiration_s)


@router.delete("/organization/{org}", status_code=204)
async def delete_organization(org: str, request: Request,
                              caller: Caller = Depends(get_caller)) -> Response:
    """Delete the organization with its teams, robots and repositories (admins only)."""
    await call(organizations_of(request).delete, signed_in(caller), org)
    return Response(status_code=204)


@router.get("/organization/{org}/members")
async def list_members(org: str, request: Request,
                       caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """The people in the organization's teams (admins only; robots omitted, as Quay)."""
    members = await call(organizations_of(request).members, signed_in(caller), org)
    return {"members": [
        {
            "name": member.name,
            "kind": "user",
            "avatar": avatar(member.name, "user"),
            "teams": [{"name": team, "avatar": team_avatar(team)} for team in member.teams],
            "repositories": member.repositories,
        }
        for member in members
    ]}
