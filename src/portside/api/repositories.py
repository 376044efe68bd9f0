"""``/api/v1/repository``: list, create, view, change visibility and delete repositories,
in Quay's paths and JSON shapes.

Decisions live in :mod:`portside.services.repository_admin`; this module maps its
refusals to Quay's error JSON (401 anonymous, 403 no right, 404 missing, 400 bad input).
"""

from __future__ import annotations

from collections.abc import Callable
from email.utils import formatdate
from typing import Any, TypeVar

import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel

from portside.api.auth import Caller, get_caller, require_scope, services_of
from portside.api.errors import ApiError
from portside.api.quotas import repository_quota_fields
from portside.services.repository_admin import (
    REPOSITORIES_PER_PAGE,
    Forbidden,
    InvalidInput,
    NotFound,
    RepositoryAdminError,
    RepositoryAdminService,
    Unauthenticated,
    decode_page_token,
    encode_page_token,
)

router = APIRouter()
T = TypeVar("T")

_STATUS = {Unauthenticated: (401, "invalid_token"), Forbidden: (403, "insufficient_scope"),
           NotFound: (404, "not_found"), InvalidInput: (400, "invalid_request")}


def admin_service(request: Request) -> RepositoryAdminService:
    """The service, built from the application's database and policy (it is stateless)."""
    services = services_of(request)
    return RepositoryAdminService(services.db, services.registry.policy)


async def run(function: Callable[..., T], *args: Any) -> T:
    """Call a (blocking) service operation in a thread; map its refusals to API errors."""
    try:
        return await anyio.to_thread.run_sync(function, *args)
    except RepositoryAdminError as exc:
        status, error_type = _STATUS[type(exc)]
        raise ApiError(status, error_type, exc.message) from None


def split_repository(path: str) -> tuple[str, str]:
    """``namespace/name`` (the name may contain slashes) from the URL path."""
    namespace, _, name = path.strip("/").partition("/")
    if not namespace or not name:
        raise ApiError(404, "not_found", "Repository not found.")
    return namespace, name


class CreateRepository(BaseModel):
    """Quay's ``RepoCreate`` body."""

    repository: str
    visibility: str
    namespace: str | None = None
    description: str | None = None
    repo_kind: str | None = "image"


class UpdateRepository(BaseModel):
    """Quay's ``RepoUpdate`` body."""

    description: str


class ChangeVisibility(BaseModel):
    """Quay's ``ChangeVisibility`` body."""

    visibility: str


@router.get("/repository")
async def list_repositories(
    request: Request,
    caller: Caller = Depends(get_caller),
    namespace: str | None = None,
    public: bool = False,
    starred: bool = False,
    next_page: str | None = None,
    last_modified: bool = False,
    popularity: bool = False,
    limit: int = Query(REPOSITORIES_PER_PAGE, ge=1, le=REPOSITORIES_PER_PAGE),
) -> dict[str, Any]:
    """Repositories the caller has a role on, plus public ones with ``public=true``;
    one of ``namespace``, ``public`` or ``starred`` is required.

    ``limit`` (a Portside extension) shrinks the page; ``next_page`` continues a list.
    ``last_modified`` and ``popularity`` are accepted and ignored for now.
    """
    # As in Quay: listing everything visible at once is refused (it is the expensive
    # query), and stars belong to a signed-in user.
    if not namespace and not starred and not public:
        raise ApiError(400, "invalid_request",
                       "namespace, starred or public are required for this API call")
    if starred and caller.subject.anonymous:
        raise ApiError(400, "invalid_request", "starred requires a signed-in user")
    if caller.subject.scopes is not None and not caller.subject.anonymous:
        require_scope(caller, "repo:read")
    try:
        after = decode_page_token(next_page) if next_page else None
    except InvalidInput as exc:
        raise ApiError(400, "invalid_request", exc.message) from None
    service = admin_service(request)
    page, following = await run(
        lambda: service.list_repositories(caller.subject, namespace=namespace,
                                          include_public=public, starred=starred,
                                          after=after, limit=limit))
    body: dict[str, Any] = {"repositories": [
        {"namespace": r.namespace, "name": r.name, "description": r.description,
         "is_public": r.public, "kind": "image", "state": r.state, "is_starred": r.starred}
        for r in page
    ]}
    if following is not None:
        body["next_page"] = encode_page_token(following)
    return body


@router.post("/repository", status_code=201)
async def create_repository(request: Request, body: CreateRepository,
                            caller: Caller = Depends(get_caller)) -> dict[str, str]:
    """Create an empty repository in the caller's namespace or an organization."""
    subject = require_scope(caller, "repo:create")
    namespace = body.namespace or subject.username or ""
    service = admin_service(request)
    created = await run(service.create, subject, namespace, body.repository,
                        body.visibility, body.repo_kind or "image", body.description)
    return {"namespace": created.namespace, "name": created.name, "kind": "image"}


@router.post("/repository/{repository:path}/changevisibility")
async def change_visibility(request: Request, repository: str, body: ChangeVisibility,
                            caller: Caller = Depends(get_caller)) -> dict[str, bool]:
    """Make a repository public or private (administrators, scope ``repo:admin``)."""
    subject = require_scope(caller, "repo:admin")
    namespace, name = split_repository(repository)
    await run(admin_service(request).set_visibility, subject, namespace, name,
              body.visibility)
    return {"success": True}


@router.get("/repository/{repository:path}")
async def get_repository(request: Request, repository: str,
                         caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """A repository with its active tags, for anyone who may pull from it."""
    namespace, name = split_repository(repository)
    details = await run(admin_service(request).get, caller.subject, namespace, name)
    return {
        # quota_report (the repository's size) with FEATURE_QUOTA_MANAGEMENT.
        **await repository_quota_fields(request, details.namespace, details.name),
        "namespace": details.namespace,
        "name": details.name,
        "kind": "image",
        "description": details.description,
        "is_public": details.public,
        "is_organization": details.is_organization,
        "is_starred": details.starred,
        "status_token": "",
        "state": details.state,
        "can_write": details.can_write,
        "can_admin": details.can_admin,
        "trust_enabled": False,
        "tag_expiration_s": (details.tag_expiration_s if details.tag_expiration_s is not None
                             else services_of(request).config.default_tag_expiration_s),
        "tags": {
            tag.name: {
                "name": tag.name,
                "manifest_digest": tag.manifest_digest,
                "size": tag.size,
                # Quay's date format (RFC 2822, UTC).
                "last_modified": formatdate(tag.lifetime_start_ms / 1000),
                **({"expiration": formatdate(tag.expiration_ms / 1000)}
                   if tag.expiration_ms is not None else {}),
            }
            for tag in details.tags
        },
    }


@router.put("/repository/{repository:path}")
async def update_repository(request: Request, repository: str, body: UpdateRepository,
                            caller: Caller = Depends(get_caller)) -> dict[str, bool]:
    """Change the description (writers, as in Quay)."""
    subject = require_scope(caller, "repo:write")
    namespace, name = split_repository(repository)
    await run(admin_service(request).set_description, subject, namespace, name,
              body.description)
    return {"success": True}


@router.delete("/repository/{repository:path}", status_code=204)
async def delete_repository(request: Request, repository: str,
                            caller: Caller = Depends(get_caller)) -> Response:
    """Delete a repository with its tags, manifests and permissions (administrators)."""
    subject = require_scope(caller, "repo:admin")
    namespace, name = split_repository(repository)
    await run(admin_service(request).delete, subject, namespace, name)
    return Response(status_code=204)
