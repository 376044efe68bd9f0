"""``/v2/<name>/manifests/<reference>``: GET, HEAD, PUT, DELETE."""

from __future__ import annotations

import functools

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from portside.auth.permissions import Action
from portside.oci.digest import is_digest
from portside.registry.access import authorize, authorize_then, client_address, split_name
from portside.registry.context import RegistryContext
from portside.registry.errors import API_VERSION_HEADER
from portside.registry.handlers import proxy
from portside.registry.handlers.blobs import existing_repository_id
from portside.registry.http import empty, read_limited
from portside.services.audit import AuditContext
from portside.services.manifests import check_reference


async def get_manifest(request: Request, ctx: RegistryContext, name: str,
                       reference: str) -> Response:
    """Serve the stored bytes with their media type and digest (HEAD: headers only)."""
    check_reference(reference)
    if ctx.proxy_cache is not None:
        proxied = await proxy.manifest_response(request, ctx, name, reference)
        if proxied is not None:
            return proxied
    identity, lookup, manifest = await authorize_then(
        request, ctx, name, Action.PULL,
        lambda repo, connection: ctx.manifests.get(repo.id, reference, connection),
    )
    existing_repository_id(lookup, name)
    assert manifest is not None
    headers = {
        **API_VERSION_HEADER,
        "Docker-Content-Digest": manifest.digest,
        "ETag": f'"{manifest.digest}"',
        "Content-Length": str(len(manifest.content)),
    }
    if manifest.subject_digest:
        headers["OCI-Subject"] = manifest.subject_digest
    body = b"" if request.method == "HEAD" else manifest.content
    if request.method != "HEAD" and ctx.pull_log is not None and lookup.repository is not None:
        # Buffered: no database write in the pull's critical path (see PullLogBuffer).
        repo = lookup.repository
        pulled: dict[str, str] = {"repo": repo.name, "namespace": repo.namespace,
                                  "manifest_digest": manifest.digest}
        if not is_digest(reference):
            pulled["tag"] = reference
        ctx.pull_log.add(repo.id, None if identity.subject.anonymous else identity.subject,
                         client_address(request), pulled)
    return Response(body, status_code=200, headers=headers, media_type=manifest.media_type)


async def put_manifest(request: Request, ctx: RegistryContext, name: str,
                       reference: str) -> Response:
    """Store a manifest whose references are all in the repository."""
    check_reference(reference)
    identity, lookup = await authorize(request, ctx, name, Action.PUSH)
    raw = await read_limited(request, ctx.manifests.max_manifest_size)
    if lookup.repository is not None:
        repo_id = lookup.repository.id
    else:
        namespace, repo = split_name(name)
        ref = await anyio.to_thread.run_sync(functools.partial(
            ctx.repositories.ensure_for_push, identity.subject, namespace, repo,
            ip=client_address(request),
        ))
        repo_id = ref.id
    audit = AuditContext(identity.subject, client_address(request))
    pushed = await anyio.to_thread.run_sync(functools.partial(
        ctx.manifests.put, repo_id, reference, request.headers.get("content-type"), raw,
        audit=audit,
    ))
    headers = {
        "Location": f"/v2/{name}/manifests/{pushed.digest}",
        "Docker-Content-Digest": pushed.digest,
        "Content-Length": "0",
    }
    if pushed.subject_digest:
        headers["OCI-Subject"] = pushed.subject_digest
    return empty(201, headers)


async def delete_manifest(request: Request, ctx: RegistryContext, name: str,
                          reference: str) -> Response:
    """Delete a tag (only the tag) or a manifest by digest."""
    check_reference(reference)
    identity, lookup = await authorize(request, ctx, name, Action.DELETE)
    repo_id = existing_repository_id(lookup, name)
    audit = AuditContext(identity.subject, client_address(request))
    await anyio.to_thread.run_sync(functools.partial(
        ctx.manifests.delete, repo_id, reference, audit=audit))
    return empty(202, {"Content-Length": "0"})
