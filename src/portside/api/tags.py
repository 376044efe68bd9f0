"""``/api/v1/repository/{repository}/tag/``: the tag history of a repository, and
creating, moving, expiring, restoring and deleting tags, in Quay's paths and JSON shapes.

This router must be included before :mod:`portside.api.repositories`, whose
``/repository/{repository:path}`` would otherwise swallow these paths.
"""

from __future__ import annotations

from email.utils import formatdate
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from portside.api.auth import Caller, get_caller, require_scope, services_of
from portside.api.errors import ApiError
from portside.api.immutability import change_tag_immutability
from portside.api.repositories import run, split_repository
from portside.api.user import time_machine_of
from portside.registry.access import client_address
from portside.services.tags import DEFAULT_TAGS_PER_PAGE, TagEntry, TagService

router = APIRouter()

_TAGS = "/repository/{repository:path}/tag/"


def tag_service(request: Request) -> TagService:
    """The tag service on the application's database, policy and storage (stateless)."""
    registry = services_of(request).registry
    return TagService(services_of(request).db, registry.policy, registry.manifests,
                      registry.placements)


def tag_json(tag: TagEntry) -> dict[str, Any]:
    """Quay's view of one tag lifetime (times in seconds; dates in RFC 2822, UTC)."""
    view: dict[str, Any] = {
        "name": tag.name,
        "reversion": tag.reversion,
        "immutable": tag.immutable,
        "start_ts": tag.lifetime_start_ms // 1000,
        "manifest_digest": tag.manifest_digest,
        "is_manifest_list": tag.is_manifest_list,
        "size": tag.size,
        "last_modified": formatdate(tag.lifetime_start_ms / 1000),
    }
    if tag.lifetime_end_ms is not None:
        view["end_ts"] = tag.lifetime_end_ms // 1000
        view["expiration"] = formatdate(tag.lifetime_end_ms / 1000)
    return view


class ChangeTag(BaseModel):
    """Quay's ``ChangeTag`` body."""

    model_config = ConfigDict(extra="ignore")

    manifest_digest: str | None = None
    expiration: float | None = None
    #: Set (writers) or clear (administrators) the tag's immutable flag.
    immutable: Any = None


@router.get(_TAGS)
async def list_tags(
    request: Request,
    repository: str,
    caller: Caller = Depends(get_caller),
    page: int = Query(1, description="Page number, from 1."),
    limit: int = Query(DEFAULT_TAGS_PER_PAGE, description="Tags per page (at most 100)."),
    only_active: bool = Query(False, alias="onlyActiveTags",
                              description="Leave out ended lifetimes."),
    specific_tag: str | None = Query(None, alias="specificTag",
                                     description="Only this tag's lifetimes."),
    filter_tag_name: str | None = Query(None, description="like:<text> or eq:<name>."),
) -> dict[str, Any]:
    """Every lifetime of every tag, newest first (moved and deleted tags included
    unless ``onlyActiveTags``), for anyone who may pull from the repository."""
    namespace, name = split_repository(repository)
    service = tag_service(request)
    tags, more = await run(lambda: service.list_tags(
        caller.subject, namespace, name, page=page, limit=limit, active_only=only_active,
        specific_tag=specific_tag, name_filter=filter_tag_name))
    return {"tags": [tag_json(tag) for tag in tags], "page": max(1, page),
            "has_additional": more}


@router.put(_TAGS + "{tag}", status_code=201)
async def change_tag(request: Request, repository: str, tag: str, body: ChangeTag,
                     caller: Caller = Depends(get_caller)) -> Response:
    """Create a tag, or move it, to a manifest already in the repository (writers;
    tokens need ``repo:write``). Moving ends the tag's current lifetime."""
    subject = require_scope(caller, "repo:write")
    namespace, name = split_repository(repository)
    if "immutable" in body.model_fields_set:
        await change_tag_immutability(request, caller, namespace, name, tag, body.immutable)
        if not ({"manifest_digest", "expiration"} & body.model_fields_set):
            return JSONResponse("Updated", status_code=201)
    expiring = "expiration" in body.model_fields_set
    if not body.manifest_digest and not expiring:
        raise ApiError(400, "invalid_request", "manifest_digest is required.")
    machine = time_machine_of(request)
    # Checked before anything changes: a bad expiry must not leave a moved tag behind.
    expiration_ms = await run(machine.check_expiration, body.expiration) if expiring else None
    if body.manifest_digest:
        await run(tag_service(request).set_tag, subject, namespace, name, tag,
                  body.manifest_digest, client_address(request))
    if expiring:
        # After a move, the expiry applies to the tag's new lifetime.
        await run(machine.change_expiration, subject, namespace, name, tag, expiration_ms,
                  client_address(request))
    return JSONResponse("Updated", status_code=201)


class RestoreTag(BaseModel):
    """Quay's ``RestoreTag`` body."""

    model_config = ConfigDict(extra="ignore")

    manifest_digest: str | None = None


class ExpireTag(BaseModel):
    """Quay's ``ExpireTag`` body (permanent deletion)."""

    model_config = ConfigDict(extra="ignore")

    manifest_digest: str | None = None
    include_submanifests: bool = False
    is_alive: bool = False


@router.post(_TAGS + "{tag}/restore")
async def restore_tag(request: Request, repository: str, tag: str, body: RestoreTag,
                      caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """Point the tag back at a manifest it pointed at within the namespace's
    time-machine window (writers; tokens need ``repo:write``). The new lifetime has
    ``reversion: true``; 404 for an unknown manifest, 400 outside the window."""
    subject = require_scope(caller, "repo:write")
    namespace, name = split_repository(repository)
    if not body.manifest_digest:
        raise ApiError(400, "invalid_request", "Missing manifest_digest")
    await run(time_machine_of(request).restore, subject, namespace, name, tag,
              body.manifest_digest, client_address(request))
    return {}


@router.post(_TAGS + "{tag}/expire")
async def remove_tag_from_time_machine(request: Request, repository: str, tag: str,
                                       body: ExpireTag,
                                       caller: Caller = Depends(get_caller)) -> Response:
    """Quay's "permanently delete" (writers; tokens need ``repo:write``): with
    ``is_alive`` the active tag, otherwise its history on ``manifest_digest``, is removed
    at once and can no longer be restored; garbage collection may then collect the
    manifest. ``include_submanifests`` is accepted: an index's children go with it."""
    subject = require_scope(caller, "repo:write")
    namespace, name = split_repository(repository)
    await run(time_machine_of(request).remove_from_time_machine, subject, namespace, name,
              tag, body.manifest_digest, body.is_alive, client_address(request))
    return JSONResponse("", status_code=200)


@router.delete(_TAGS + "{tag}", status_code=204)
async def delete_tag(request: Request, repository: str, tag: str,
                     caller: Caller = Depends(get_caller),
                     skip_recovery: bool = Query(
                         False, alias="skipRecoveryPeriod",
                         description="Delete for good: not restorable afterwards.")
                     ) -> Response:
    """End the tag's active lifetime, as ``DELETE /v2/.../manifests/<tag>`` does
    (writers; tokens need ``repo:write``); 404 if the tag is not active. With
    ``skipRecoveryPeriod`` the tag is permanently deleted (as ``.../expire`` with
    ``is_alive``)."""
    subject = require_scope(caller, "repo:write")
    namespace, name = split_repository(repository)
    if skip_recovery:
        await run(time_machine_of(request).remove_from_time_machine, subject, namespace,
                  name, tag, None, True, client_address(request))
        return Response(status_code=204)
    await run(tag_service(request).delete_tag, subject, namespace, name, tag,
              client_address(request))
    return Response(status_code=204)
