"""``/api/v1/user/starred``: the caller's starred repositories, in Quay's shapes.

As in Quay, tokens need ``user:admin`` here (starring also needs ``repo:read``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict

from portside.api.auth import Caller, get_caller, require_scope, services_of
from portside.api.errors import ApiError
from portside.api.repositories import run, split_repository
from portside.services.repository_admin import (
    REPOSITORIES_PER_PAGE,
    InvalidInput,
    decode_page_token,
    encode_page_token,
)
from portside.services.stars import StarService

router = APIRouter()


class NewStar(BaseModel):
    """Quay's ``NewStarredRepository`` body."""

    model_config = ConfigDict(extra="ignore")

    namespace: str
    repository: str


def star_service(request: Request) -> StarService:
    """The service (stateless: built per request on the shared database)."""
    services = services_of(request)
    return StarService(services.db, services.registry.policy)


@router.get("/user/starred")
async def list_stars(request: Request, caller: Caller = Depends(get_caller),
                     next_page: str | None = None,
                     limit: int = Query(REPOSITORIES_PER_PAGE, ge=1,
                                        le=REPOSITORIES_PER_PAGE),
                     ) -> dict[str, Any]:
    """The caller's starred repositories, by full name; ``next_page`` continues."""
    subject = require_scope(caller, "user:admin")
    try:
        after = decode_page_token(next_page) if next_page else None
    except InvalidInput as exc:
        raise ApiError(400, "invalid_request", exc.message) from None
    service = star_service(request)
    page, following = await run(service.list, subject, after, limit)
    body: dict[str, Any] = {"repositories": [
        {"namespace": r.namespace, "name": r.name, "description": r.description,
         "is_public": r.public}
        for r in page
    ]}
    if following is not None:
        body["next_page"] = encode_page_token(following)
    return body


@router.post("/user/starred", status_code=201)
async def star(body: NewStar, request: Request,
               caller: Caller = Depends(get_caller)) -> dict[str, str]:
    """Star a repository the caller can read."""
    subject = require_scope(caller, "user:admin")
    await run(star_service(request).star, subject, body.namespace, body.repository)
    return {"namespace": body.namespace, "repository": body.repository}


@router.delete("/user/starred/{repository:path}", status_code=204)
async def unstar(repository: str, request: Request,
                 caller: Caller = Depends(get_caller)) -> Response:
    """Remove the caller's star from ``namespace/name``."""
    subject = require_scope(caller, "user:admin")
    namespace, name = split_repository(repository)
    await run(star_service(request).unstar, subject, namespace, name)
    return Response(status_code=204)
