"""``/api/v1/repository/{repository}/manifest/{digest}``: a manifest with its layers, and
its labels (list, add, show, delete), in Quay's paths and JSON shapes.

This router must be included before :mod:`portside.api.repositories`, whose
``/repository/{repository:path}`` would otherwise swallow these paths.
"""

from __future__ import annotations

import calendar
from email.utils import formatdate
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from portside.api.auth import Caller, get_caller, require_scope, services_of
from portside.api.repositories import run, split_repository
from portside.api.tags import tag_service
from portside.registry.access import client_address
from portside.services.labels import LabelInfo, LabelService
from portside.services.tags import LayerView

router = APIRouter()

_MANIFEST = "/repository/{repository:path}/manifest/{digest}"


def label_service(request: Request) -> LabelService:
    """The label service on the application's database and policy (stateless)."""
    services = services_of(request)
    return LabelService(services.db, services.registry.policy)


def label_json(label: LabelInfo) -> dict[str, Any]:
    """Quay's view of a label."""
    return {"id": label.id, "key": label.key, "value": label.value,
            "source_type": label.source_type, "media_type": label.media_type}


def layer_json(layer: LayerView) -> dict[str, Any]:
    """Quay's view of a layer (dates in RFC 2822, UTC)."""
    created = None
    if layer.created is not None:
        created = formatdate(calendar.timegm(layer.created.utctimetuple()))
    return {
        "index": layer.index,
        "compressed_size": layer.compressed_size,
        "is_remote": layer.is_remote,
        "urls": layer.urls,
        "command": layer.command,
        "comment": layer.comment,
        "author": layer.author,
        "blob_digest": layer.blob_digest,
        "created_datetime": created,
    }


class AddLabel(BaseModel):
    """Quay's ``AddLabel`` body."""

    model_config = ConfigDict(extra="ignore")

    key: str
    value: str
    media_type: str | None


@router.get(_MANIFEST)
async def get_manifest(request: Request, repository: str, digest: str,
                       caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """The manifest's stored text and, for image manifests, its layers (readers)."""
    namespace, name = split_repository(repository)
    view = await run(tag_service(request).manifest, caller.subject, namespace, name, digest)
    return {
        "digest": view.digest,
        "is_manifest_list": view.is_manifest_list,
        "manifest_data": view.manifest_data,
        "config_media_type": view.config_media_type,
        "layers": [layer_json(layer) for layer in view.layers] if view.layers else None,
    }


@router.get(_MANIFEST + "/labels")
async def list_labels(request: Request, repository: str, digest: str,
                      caller: Caller = Depends(get_caller),
                      prefix: str | None = Query(
                          None, alias="filter",
                          description="Only labels whose key starts with this."),
                      ) -> dict[str, Any]:
    """The manifest's labels (readers)."""
    namespace, name = split_repository(repository)
    labels = await run(label_service(request).list, caller.subject, namespace, name,
                       digest, prefix)
    return {"labels": [label_json(label) for label in labels]}


@router.post(_MANIFEST + "/labels", status_code=201)
async def add_label(request: Request, repository: str, digest: str, body: AddLabel,
                    caller: Caller = Depends(get_caller)) -> Response:
    """Add a label (writers; tokens need ``repo:write``)."""
    subject = require_scope(caller, "repo:write")
    namespace, name = split_repository(repository)
    label = await run(label_service(request).add, subject, namespace, name, digest,
                      body.key, body.value, body.media_type, client_address(request))
    location = f"/api/v1/repository/{namespace}/{name}/manifest/{digest}/labels/{label.id}"
    return JSONResponse({"label": label_json(label)}, status_code=201,
                        headers={"Location": location})


@router.get(_MANIFEST + "/labels/{labelid}")
async def get_label(request: Request, repository: str, digest: str, labelid: str,
                    caller: Caller = Depends(get_caller)) -> dict[str, Any]:
    """One label of the manifest (readers)."""
    namespace, name = split_repository(repository)
    return label_json(await run(label_service(request).get, caller.subject, namespace,
                                name, digest, labelid))


@router.delete(_MANIFEST + "/labels/{labelid}", status_code=204)
async def delete_label(request: Request, repository: str, digest: str, labelid: str,
                       caller: Caller = Depends(get_caller)) -> Response:
    """Delete a label added through the API (writers; tokens need ``repo:write``);
    labels from the image cannot be deleted (400)."""
    subject = require_scope(caller, "repo:write")
    namespace, name = split_repository(repository)
    await run(label_service(request).delete, subject, namespace, name, digest, labelid,
              client_address(request))
    return Response(status_code=204)
