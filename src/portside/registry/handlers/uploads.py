"""``/v2/<name>/blobs/uploads/``: start (monolithic, mount), PATCH, PUT, status, cancel."""

from __future__ import annotations

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from portside.auth.permissions import Action, allowed_actions
from portside.registry.access import Identity, authorize, split_name
from portside.registry.context import RegistryContext
from portside.registry.handlers.blobs import check_digest
from portside.registry.http import BodyStream, content_length, empty
from portside.registry.ranges import parse_content_range
from portside.services.blobs import BlobInfo
from portside.services.errors import BlobUnknown, BlobUploadUnknown, DigestInvalid, NameInvalid
from portside.services.repositories import Lookup, RepositoryRef
from portside.services.uploads import UploadStatus


async def _push_target(request: Request, ctx: RegistryContext,
                       name: str) -> tuple[Identity, RepositoryRef]:
    identity, lookup = await authorize(request, ctx, name, Action.PUSH)
    if lookup.repository is not None:
        return identity, lookup.repository
    namespace, repo = split_name(name)
    ref = await anyio.to_thread.run_sync(
        ctx.repositories.ensure_for_push, identity.subject, namespace, repo
    )
    return identity, ref


async def _upload_target(request: Request, ctx: RegistryContext, name: str,
                         upload_id: str) -> RepositoryRef:
    """The repository of an upload in progress; it must exist."""
    _identity, lookup = await authorize(request, ctx, name, Action.PUSH)
    if lookup.repository is None:
        raise BlobUploadUnknown("blob upload unknown to registry", {"upload": upload_id})
    return lookup.repository


def _upload_headers(name: str, status: UploadStatus) -> dict[str, str]:
    # The spec's Range is inclusive; "0-0" is what clients expect for an empty upload.
    end = max(status.size - 1, 0)
    return {
        "Location": f"/v2/{name}/blobs/uploads/{status.id}",
        "Range": f"0-{end}",
        "Docker-Upload-UUID": status.id,
        "Content-Length": "0",
    }


def _created(name: str, blob: BlobInfo) -> Response:
    return empty(201, {
        "Location": f"/v2/{name}/blobs/{blob.digest}",
        "Docker-Content-Digest": blob.digest,
        "Content-Length": "0",
    })


async def _try_mount(request: Request, ctx: RegistryContext, identity: Identity,
                     target: RepositoryRef, digest: str, source: str | None) -> BlobInfo | None:
    """Link an existing blob instead of uploading it, if the caller may read a holder."""
    if source is not None:
        try:
            namespace, repo = split_name(source)
        except NameInvalid:
            return None
        lookup = await anyio.to_thread.run_sync(ctx.repositories.lookup, namespace, repo,
                                                identity.subject.user_id)
        if lookup.repository is None:
            return None
        if identity.grant is not None:
            readable = bool({"pull", "*"} & identity.grant.actions_for(source))
        else:
            readable = Action.PULL in allowed_actions(identity.subject, lookup.facts, ctx.policy)
        candidates: list[Lookup] = [lookup] if readable else []
    else:
        # No source named: mount from any repository holding the blob that the caller
        # may read right now.
        holder_ids = await anyio.to_thread.run_sync(ctx.blobs.repositories_holding, digest)
        candidates = []
        for repo_id in holder_ids:
            holder = await anyio.to_thread.run_sync(ctx.repositories.lookup_by_id, repo_id,
                                                    identity.subject.user_id)
            if holder is not None and Action.PULL in allowed_actions(
                identity.subject, holder.facts, ctx.policy
            ):
                candidates.append(holder)
                break
    for candidate in candidates:
        assert candidate.repository is not None
        if candidate.repository.id == target.id:
            continue
        try:
            return await anyio.to_thread.run_sync(
                ctx.blobs.mount, candidate.repository.id, target.id, digest
            )
        except BlobUnknown:
            continue
    return None


async def start_upload(request: Request, ctx: RegistryContext, name: str) -> Response:
    """``POST``: mount, monolithic upload (``?digest=``), or start a resumable upload."""
    identity, target = await _push_target(request, ctx, name)
    params = request.query_params
    mount = params.get("mount")
    if mount:
        check_digest(mount)
        existing: BlobInfo | None
        try:
            existing = await anyio.to_thread.run_sync(ctx.blobs.get, target.id, mount)
        except BlobUnknown:
            existing = await _try_mount(request, ctx, identity, target, mount,
                                        params.get("from"))
        if existing is not None:
            return _created(name, existing)
    status = await anyio.to_thread.run_sync(ctx.uploads.start, target.id)
    digest = params.get("digest")
    if digest is not None:
        check_digest(digest)
        content_length(request)
        body = BodyStream(request)
        blob = await ctx.uploads.finish(target.id, status.id, digest, body.__aiter__())
        return _created(name, blob)
    return empty(202, _upload_headers(name, status))


async def patch_upload(request: Request, ctx: RegistryContext, name: str,
                       upload_id: str) -> Response:
    """``PATCH``: append a chunk (streamed, or with ``Content-Range``)."""
    target = await _upload_target(request, ctx, name, upload_id)
    start = parse_content_range(request.headers.get("content-range"), content_length(request))
    body = BodyStream(request)
    status = await ctx.uploads.append(target.id, upload_id, body.__aiter__(), start)
    return empty(202, _upload_headers(name, status))


async def put_upload(request: Request, ctx: RegistryContext, name: str,
                     upload_id: str) -> Response:
    """``PUT ?digest=``: the last (optional) chunk, then verify and commit."""
    target = await _upload_target(request, ctx, name, upload_id)
    digest = request.query_params.get("digest")
    if not digest:
        raise DigestInvalid("the digest query parameter is required to complete an upload")
    check_digest(digest)
    length = content_length(request)
    start = parse_content_range(request.headers.get("content-range"), length)
    body = BodyStream(request)
    blob = await ctx.uploads.finish(target.id, upload_id, digest, body.__aiter__(), start)
    return _created(name, blob)


async def get_upload(request: Request, ctx: RegistryContext, name: str,
                     upload_id: str) -> Response:
    """Upload status: 204 with the ``Range`` received so far."""
    target = await _upload_target(request, ctx, name, upload_id)
    status = await anyio.to_thread.run_sync(ctx.uploads.status, target.id, upload_id)
    return empty(204, _upload_headers(name, status))


async def cancel_upload(request: Request, ctx: RegistryContext, name: str,
                        upload_id: str) -> Response:
    """Cancel the upload and discard its bytes."""
    target = await _upload_target(request, ctx, name, upload_id)
    await anyio.to_thread.run_sync(ctx.uploads.cancel, target.id, upload_id)
    return empty(204, {"Content-Length": "0"})
