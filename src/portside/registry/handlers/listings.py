"""Tag list, catalog and referrers."""

from __future__ import annotations

import json

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from portside.auth.permissions import Action
from portside.oci import mediatypes as mt
from portside.registry.access import Challenge, authenticate, authorize, challenge
from portside.registry.context import RegistryContext
from portside.registry.errors import API_VERSION_HEADER
from portside.registry.handlers.blobs import existing_repository_id
from portside.registry.http import next_link, page_params


def _json(document: object, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(document).encode(), status_code=200,
                    headers={**API_VERSION_HEADER, **(headers or {})},
                    media_type="application/json")


async def list_tags(request: Request, ctx: RegistryContext, name: str) -> Response:
    """``GET /v2/<name>/tags/list`` with ``n``/``last`` pagination."""
    n, last = page_params(request)
    _identity, lookup = await authorize(request, ctx, name, Action.PULL)
    repo_id = existing_repository_id(lookup, name)
    fetch = None if n is None else n + 1
    tags = await anyio.to_thread.run_sync(ctx.manifests.tags, repo_id, last, fetch)
    headers = {}
    if n is not None and len(tags) > n:
        tags = tags[:n]
        if tags:  # n=0 asks for an empty page, which has no "next" to point at
            headers["Link"] = next_link(f"/v2/{name}/tags/list", n, tags[-1])
    return _json({"name": name, "tags": tags}, headers)


async def catalog(request: Request, ctx: RegistryContext) -> Response:
    """``GET /v2/_catalog``: repositories the caller can see."""
    n, last = page_params(request)
    identity = await authenticate(request, ctx)
    if identity.subject.anonymous and not ctx.policy.anonymous_access:
        raise Challenge("authentication required",
                        challenge(request, ctx, "registry:catalog:*"))
    fetch = None if n is None else n + 1
    names = await anyio.to_thread.run_sync(ctx.catalog.list, identity.subject, last, fetch)
    headers = {}
    if n is not None and len(names) > n:
        names = names[:n]
        if names:  # n=0: an empty page without a "next" link
            headers["Link"] = next_link("/v2/_catalog", n, names[-1])
    return _json({"repositories": names}, headers)


async def referrers(request: Request, ctx: RegistryContext, name: str,
                    digest: str) -> Response:
    """``GET /v2/<name>/referrers/<digest>[?artifactType=]``: an OCI index."""
    _identity, lookup = await authorize(request, ctx, name, Action.PULL)
    repo_id = existing_repository_id(lookup, name)
    artifact_type = request.query_params.get("artifactType") or None
    body = await anyio.to_thread.run_sync(ctx.manifests.referrers, repo_id, digest,
                                          artifact_type)
    headers = dict(API_VERSION_HEADER)
    if artifact_type:
        headers["OCI-Filters-Applied"] = "artifactType"
    return Response(body, status_code=200, headers=headers, media_type=mt.OCI_INDEX)
