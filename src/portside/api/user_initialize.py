"""``POST /api/v1/user/initialize``: Quay's first-user bootstrap."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from portside.api.errors import ApiError
from portside.services.users import AlreadyInitialized, UserError

router = APIRouter()


class InitializeRequest(BaseModel):
    """The bootstrap request body, as Quay defines it."""

    username: str = Field(description="Name of the first user (becomes a superuser).")
    password: str = Field(description="Password, at least 8 characters.")
    email: str | None = Field(default=None, description="E-mail address.")
    access_token: bool = Field(default=False,
                               description="Also return an API access token with all scopes.")


class InitializeResponse(BaseModel):
    """The created user, and the access token when one was asked for."""

    username: str
    email: str | None
    encrypted_password: str | None = None
    access_token: str | None = None


def _feature_enabled(request: Request) -> None:
    """404 while ``FEATURE_USER_INITIALIZE`` is off, before the body is even validated."""
    if not request.app.state.services.config.FEATURE_USER_INITIALIZE:
        raise ApiError(404, "not_found", "FEATURE_USER_INITIALIZE is not enabled")


@router.post("/user/initialize", response_model=InitializeResponse,
             dependencies=[Depends(_feature_enabled)])
async def initialize(body: InitializeRequest, request: Request) -> InitializeResponse:
    """Create the first user; refused once any user exists or when the feature is off."""
    services = request.app.state.services
    try:
        _subject, token = await anyio.to_thread.run_sync(
            services.registry.users.initialize, body.username, body.password, body.email,
            body.access_token,
        )
    except AlreadyInitialized as exc:
        raise ApiError(400, "invalid_request", str(exc)) from None
    except UserError as exc:
        raise ApiError(400, "invalid_request", str(exc)) from None
    return InitializeResponse(username=body.username, email=body.email, access_token=token)
