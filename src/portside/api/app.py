"""The ``/api/v1`` application (FastAPI, which also gives the OpenAPI document)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from portside import __version__
from portside.api import (
    applications,
    autoprune,
    credentials,
    immutability,
    logs,
    manifests,
    mirror,
    notifications,
    organizations,
    permissions,
    prototypes,
    proxy_cache,
    quotas,
    repositories,
    repository_state,
    robots,
    signin,
    stars,
    superuser,
    tags,
    teams,
    user,
    user_initialize,
    user_notifications,
)
from portside.api.errors import ApiError, error_json
from portside.services.immutability import TagImmutable

if TYPE_CHECKING:
    from portside.app import Services


#: Writes that change no registry content and stay open in read-only mode.
_READ_ONLY_ALLOWED = frozenset({"/signin", "/signout", "/user/clientkey"})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _refuse_writes_when_read_only(request: Request) -> None:
    """With ``REGISTRY_STATE: readonly`` (or ``DISABLE_PUSHES``), 503 for every change."""
    if request.method in _SAFE_METHODS or not request.app.state.services.config.read_only:
        return
    route = request.scope.get("route")
    if getattr(route, "path", None) in _READ_ONLY_ALLOWED:
        return
    raise ApiError(503, "read_only",
                   "The registry is in read-only mode: no changes are accepted.")


def create_api(services: Services) -> FastAPI:
    """Build the API app; routers read services from ``app.state.services``."""
    api = FastAPI(title="Portside API", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url="/discovery",
                  dependencies=[Depends(_refuse_writes_when_read_only)])
    api.state.services = services
    api.include_router(user_initialize.router)
    api.include_router(signin.router)
    api.include_router(user.router)
    api.include_router(credentials.router)
    api.include_router(user_notifications.router)
    api.include_router(robots.router)
    api.include_router(organizations.router)
    api.include_router(teams.router)
    api.include_router(applications.router)
    api.include_router(prototypes.router)
    api.include_router(superuser.router)
    api.include_router(stars.router)
    # Before repositories: its {repository:path} routes would swallow these paths.
    api.include_router(permissions.router)
    api.include_router(quotas.router)
    api.include_router(proxy_cache.router)
    api.include_router(immutability.router)
    api.include_router(mirror.router)
    api.include_router(repository_state.router)
    api.include_router(autoprune.router)
    api.include_router(notifications.router)
    api.include_router(tags.router)
    api.include_router(manifests.router)
    api.include_router(logs.router)
    api.include_router(repositories.router)

    @api.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_json(exc.status, exc.error_type, exc.message)

    @api.exception_handler(TagImmutable)
    async def _immutable(_request: Request, exc: TagImmutable) -> JSONResponse:
        return immutability.tag_immutable_response(exc.message)

    @api.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error_json(400, "invalid_request", f"{where}: {first.get('msg', 'invalid')}")

    @api.exception_handler(DataError)
    async def _unstorable(_request: Request, exc: DataError) -> JSONResponse:
        # A value the database refuses to store or compare is bad input, not a server
        # fault: chiefly NUL characters in text, which PostgreSQL cannot hold.
        if "NUL" in str(exc.orig):
            return error_json(400, "invalid_request", "Text must not contain NUL characters.")
        return error_json(400, "invalid_request", "A value in the request is out of range.")

    @api.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_json(exc.status_code, "not_found" if exc.status_code == 404 else "error",
                          str(exc.detail))

    return api
