"""``/v2`` pulls from proxy-cache organizations (``FEATURE_PROXY_CACHE``).

The manifest and blob handlers ask these first; ``None`` means "not a proxy-cache
organization (or already cached): serve as usual". HEAD requests take the same caching
decisions as GET (a HEAD of a tag checks the upstream and caches what it finds); only a
HEAD of a blob not yet cached asks the upstream for the size without downloading it.
"""

from __future__ import annotations

import contextlib

import anyio
import anyio.to_thread
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from portside.auth.permissions import Action
from portside.oci.digest import is_digest
from portside.registry.access import authorize, client_address, split_name
from portside.registry.context import RegistryContext
from portside.registry.errors import API_VERSION_HEADER
from portside.services.errors import BlobUnknown
from portside.services.proxy_cache import ProxyCache, PullContext


class TeeResponse(StreamingResponse):
    """Streams a blob that is being cached; however the response ends (client gone
    included), the generator is closed at once so that the partial upload is
    discarded, and a vanished client is not an error."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except (OSError, ClientDisconnect):
            pass  # the client went away; nothing left to answer
        finally:
            closer = getattr(self.body_iterator, "aclose", None)
            if closer is not None:
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await closer()


async def _pull(request: Request, ctx: RegistryContext, name: str,
                ) -> tuple[ProxyCache, PullContext] | None:
    """Authorize a pull from a proxy-cache organization (``None``: not one)."""
    cache = ctx.proxy_cache
    if cache is None:
        return None
    namespace, repo = split_name(name)
    settings = await cache.settings_for(namespace)
    if settings is None:
        return None
    identity, lookup = await authorize(request, ctx, name, Action.PULL)
    repository_id = lookup.repository.id if lookup.repository is not None else None
    return cache, PullContext(settings, repo, repository_id, identity.subject,
                              client_address(request))


async def manifest_response(request: Request, ctx: RegistryContext, name: str,
                            reference: str) -> Response | None:
    """GET/HEAD of a manifest in a proxy-cache organization."""
    found = await _pull(request, ctx, name)
    if found is None:
        return None
    cache, pull = found
    manifest, repository_id = await cache.manifest(pull, reference)
    headers = {
        **API_VERSION_HEADER,
        "Docker-Content-Digest": manifest.digest,
        "ETag": f'"{manifest.digest}"',
        "Content-Length": str(len(manifest.content)),
    }
    if manifest.subject_digest:
        headers["OCI-Subject"] = manifest.subject_digest
    if request.method == "HEAD":
        return Response(b"", status_code=200, headers=headers, media_type=manifest.media_type)
    if ctx.pull_log is not None:
        pulled = {"repo": pull.name, "namespace": pull.settings.namespace,
                  "manifest_digest": manifest.digest}
        if not is_digest(reference):
            pulled["tag"] = reference
        ctx.pull_log.add(repository_id, None if pull.subject.anonymous else pull.subject,
                         pull.ip, pulled)
    return Response(manifest.content, status_code=200, headers=headers,
                    media_type=manifest.media_type)


async def blob_response(request: Request, ctx: RegistryContext, name: str,
                        digest: str) -> Response | None:
    """GET/HEAD of a blob in a proxy-cache organization that is not cached yet."""
    found = await _pull(request, ctx, name)
    if found is None:
        return None
    cache, pull = found
    if pull.repository_id is not None:
        try:
            await anyio.to_thread.run_sync(ctx.blobs.get, pull.repository_id, digest)
            return None  # cached: served like any other blob
        except BlobUnknown:
            pass
    headers = {**API_VERSION_HEADER, "Docker-Content-Digest": digest,
               "ETag": f'"{digest}"'}
    if request.method == "HEAD":
        size = await cache.blob_size(pull, digest)
        if size >= 0:
            headers["Content-Length"] = str(size)
        return Response(b"", status_code=200, headers=headers,
                        media_type="application/octet-stream")
    size, chunks = await cache.stream_blob(pull, digest)
    if size >= 0:
        headers["Content-Length"] = str(size)
    # A Range request gets the whole blob while it is being cached (RFC 9110 allows it).
    return TeeResponse(chunks, status_code=200, headers=headers,
                       media_type="application/octet-stream")
