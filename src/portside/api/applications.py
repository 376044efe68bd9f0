"""Organization OAuth applications and the user's authorizations, in Quay's paths and
JSON shapes:

- ``/api/v1/organization/{org}/applications[/{client_id}[/resetclientsecret]]`` for the
  organization's administrators (tokens need ``org:admin``);
- ``/api/v1/user/authorizations[/{id}]``: the tokens the caller issued through
  applications, and their revocation (tokens need ``user:admin``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from portside.api.auth import Caller, get_caller, require_scope, services_of
from portside.api.organizations import call, signed_in
from portside.api.robots import format_date
from portside.api.user import avatar
from portside.registry.access import client_address
from portside.services.applications import (
    SCOPES,
    Application,
    ApplicationFields,
    ApplicationService,
    Authorization,
)

router = APIRouter()


class NewApplication(BaseModel):
    """Quay's ``NewApp`` body: only the name is required."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(description="The application's name.")
    redirect_uri: str = Field(default="", description="Where authorizations redirect to.")
    application_uri: str = Field(default="", description="The application's home page.")
    description: str = Field(default="", description="What the application does.")
    avatar_email: str | None = Field(default=None, description="E-mail for its avatar.")

    def fields(self) -> ApplicationFields:
        """The settings to store."""
        return ApplicationFields(self.name, self.description, self.application_uri,
                                 self.redirect_uri, self.avatar_email)


class UpdateApplication(NewApplication):
    """Quay's ``UpdateApp`` body: name and both URIs are required."""

    redirect_uri: str = Field(description="Where authorizations redirect to.")
    application_uri: str = Field(description="The application's home page.")


def applications_of(request: Request) -> ApplicationService:
    """The application service (stateless: built per request)."""
    services = services_of(request)
    return ApplicationService(services.db, services.secret_box)


def application_json(app: Application) -> dict[str, Any]:
    """Quay's ``app_view`` (only administrators see applications, so with the secret)."""
    return {
        "name": app.name,
        "description": app.description,
        "application_uri": app.application_uri,
        "client_id": app.client_id,
        "client_secret": app.client_secret,
        "redirect_uri": app.redirect_uri,
        "avatar_email": app.avatar_email,
    }


def scope_json(scope: str) -> dict[str, Any]:
    """A scope as shown to the user who grants it."""
    title, description, dangerous = SCOPES[scope]
    return {"scope": scope, "title": title, "description": description,
            "dangerous": dangerous}


def _date(value: datetime | None) -> str | None:
    return format_date(value) if value is not None else None


def authorization_json(item: Authorization) -> dict[str, Any]:
    """Quay's authorization view: the application, the granted scopes, and an id."""
    return {
        "uuid": str(item.id),
        "application": {
            "name": item.name,
            "clientId": item.client_id,
            "description": item.description,
            "url": item.application_uri,
            "avatar": avatar(item.name, "app"),
            "organization": {"name": item.organization,
                             "avatar": avatar(item.organization, "org")},
        },
        "scopes": [scope_json(scope) for scope in item.scopes if scope in SCOPES],
        "created": _date(item.created),
        "expires": _date(item.expires),
    }


@router.get("/organization/{org}/applications")
async def list_applications(org: str, request: Request,
                            caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """The organization's applications (administrators only)."""
    apps = await call(applications_of(request).list_applications, signed_in(caller), org)
    return {"applications": [application_json(app) for app in apps]}


@router.post("/organization/{org}/applications")
async def create_application(org: str, body: NewApplication, request: Request,
                             caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Register an application; the answer holds its client id and secret."""
    app = await call(applications_of(request).create, signed_in(caller), org, body.fields(),
                     client_address(request))
    return application_json(app)


@router.get("/organization/{org}/applications/{client_id}")
async def get_application(org: str, client_id: str, request: Request,
                          caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """One application of the organization."""
    app = await call(applications_of(request).get, signed_in(caller), org, client_id)
    return application_json(app)


@router.put("/organization/{org}/applications/{client_id}")
async def update_application(org: str, client_id: str, body: UpdateApplication,
                             request: Request,
                             caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Change the application's settings."""
    app = await call(applications_of(request).update, signed_in(caller), org, client_id,
                     body.fields(), client_address(request))
    return application_json(app)


@router.delete("/organization/{org}/applications/{client_id}", status_code=204)
async def delete_application(org: str, client_id: str, request: Request,
                             caller: Caller = Depends(get_caller)) -> Response:
    """Delete the application and revoke every token issued through it."""
    await call(applications_of(request).delete, signed_in(caller), org, client_id,
               client_address(request))
    return Response(status_code=204)


@router.post("/organization/{org}/applications/{client_id}/resetclientsecret")
async def reset_client_secret(org: str, client_id: str, request: Request,
                              caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Give the application a new client secret."""
    app = await call(applications_of(request).reset_secret, signed_in(caller), org,
                     client_id, client_address(request))
    return application_json(app)


@router.get("/user/authorizations")
async def list_authorizations(request: Request,
                              caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """The tokens the caller issued through applications (never the tokens themselves)."""
    items = await call(applications_of(request).authorizations,
                       require_scope(caller, "user:admin"))
    return {"authorizations": [authorization_json(item) for item in items]}


@router.get("/user/authorizations/{authorization_id}")
async def get_authorization(authorization_id: str, request: Request,
                            caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """One of the caller's authorizations."""
    item = await call(applications_of(request).authorization,
                      require_scope(caller, "user:admin"), authorization_id)
    return authorization_json(item)


@router.delete("/user/authorizations/{authorization_id}", status_code=204)
async def revoke_authorization(authorization_id: str, request: Request,
                               caller: Caller = Depends(get_caller)) -> Response:
    """Revoke one of the caller's authorizations: its token stops working at once."""
    await call(applications_of(request).revoke, require_scope(caller, "user:admin"),
               authorization_id)
    return Response(status_code=204)
