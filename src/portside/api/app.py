"""The ``/api/v1`` application (FastAPI, which also gives the OpenAPI document)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from portside import __version__
from portside.api import (
    logs,
    organizations,
    permissions,
    repositories,
    robots,
    signin,
    superuser,
    teams,
    user,
    user_initialize,
)
from portside.api.errors import ApiError, error_json

if TYPE_CHECKING:
    from portside.app import Services


def create_api(services: Services) -> FastAPI:
    """Build the API app; routers read services from ``app.state.services``."""
    api = FastAPI(title="Portside API", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url="/discovery")
    api.state.services = services
    api.include_router(user_initialize.router)
    api.include_router(signin.router)
    api.include_router(user.router)
    api.include_router(robots.router)
    api.include_router(organizations.router)
    api.include_router(teams.router)
    api.include_router(superuser.router)
    # Before repositories: its {repository:path} routes would swallow these paths.
    api.include_router(permissions.router)
    api.include_router(logs.router)
    api.include_router(repositories.router)

    @api.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_json(exc.status, exc.error_type, exc.message)

    @api.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error_json(400, "invalid_request", f"{where}: {first.get('msg', 'invalid')}")

    @api.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_json(exc.status_code, "not_found" if exc.status_code == 404 else "error",
                          str(exc.detail))

    return api
