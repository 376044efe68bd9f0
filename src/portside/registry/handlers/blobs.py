"""``/v2/<name>/blobs/<digest>``: HEAD, GET (with Range) and DELETE."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from portside.auth.permissions import Action
from portside.oci.digest import InvalidDigest, parse_digest
from portside.registry.access import authorize, authorize_then
from portside.registry.context import RegistryContext
from portside.registry.errors import API_VERSION_HEADER
from portside.registry.handlers import proxy
from portside.registry.http import empty
from portside.registry.ranges import UnsatisfiableRange, parse_read_range
from portside.services.blobs import BlobInfo
from portside.services.errors import BlobUnknown, DigestInvalid, NameUnknown, RangeNotSatisfiable
from portside.services.repositories import Lookup
from portside.storage.layout import blob_path


class WholeFileResponse(FileResponse):
    """A file response that ignores the request's ``Range`` header."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(name, value) for name, value in scope["headers"] if name != b"range"]
        await super().__call__({**scope, "headers": headers}, receive, send)


def check_digest(digest: str) -> None:
    """Validate a digest from the URL."""
    try:
        parse_digest(digest)
    except InvalidDigest as exc:
        raise DigestInvalid(str(exc), {"digest": digest[:200]}) from None


def existing_repository_id(lookup: Lookup, name: str) -> int:
    """The repository's id, or NAME_UNKNOWN."""
    if lookup.repository is None:
        raise NameUnknown("repository name not known to registry", {"name": name})
    return lookup.repository.id


async def find_blob(request: Request, ctx: RegistryContext, name: str, digest: str) -> BlobInfo:
    """Authorize a pull and return the blob linked to the repository."""
    check_digest(digest)
    _identity, lookup, blob = await authorize_then(
        request, ctx, name, Action.PULL,
        lambda repo, connection: ctx.blobs.get(repo.id, digest, connection),
    )
    existing_repository_id(lookup, name)
    assert blob is not None
    return blob


def _blob_headers(blob: BlobInfo) -> dict[str, str]:
    return {
        **API_VERSION_HEADER,
        "Docker-Content-Digest": blob.digest,
        "Accept-Ranges": "bytes",
        "Cache-Control": "max-age=31536000",
        "ETag": f'"{blob.digest}"',
    }


async def head_blob(request: Request, ctx: RegistryContext, name: str, digest: str) -> Response:
    """Report whether the blob exists in the repository, and its size."""
    if ctx.proxy_cache is not None:
        check_digest(digest)
        proxied = await proxy.blob_response(request, ctx, name, digest)
        if proxied is not None:
            return proxied
    blob = await find_blob(request, ctx, name, digest)
    headers = _blob_headers(blob)
    headers["Content-Length"] = str(blob.size)
    return Response(b"", status_code=200, headers=headers,
                    media_type="application/octet-stream")


async def get_blob(request: Request, ctx: RegistryContext, name: str, digest: str) -> Response:
    """Stream the blob: zero-copy from local disk, a redirect or a proxy for object storage."""
    if ctx.proxy_cache is not None:
        check_digest(digest)
        proxied = await proxy.blob_response(request, ctx, name, digest)
        if proxied is not None:
            return proxied
    blob = await find_blob(request, ctx, name, digest)
    location = ctx.placements.read_location(blob.locations)
    driver = ctx.placements.driver(location)
    path = blob_path(blob.digest)
    headers = _blob_headers(blob)
    byte_range = None
    range_header = request.headers.get("range")
    if range_header:
        try:
            byte_range = parse_read_range(range_header, blob.size)
        except UnsatisfiableRange:
            raise RangeNotSatisfiable(
                "requested range not satisfiable", {"size": blob.size}
            ) from None
    local = driver.local_path(path)
    if local is not None:
        # A single range is answered by FileResponse; anything else (several ranges,
        # other units) gets the whole blob, as RFC 9110 allows.
        response_class = FileResponse if byte_range or not range_header else WholeFileResponse
        return response_class(local, headers=headers, media_type="application/octet-stream")
    if not ctx.proxy_storage:
        url = await anyio.to_thread.run_sync(driver.download_url, path)
        if url:
            return RedirectResponse(url, status_code=307, headers=headers)
    if await anyio.to_thread.run_sync(driver.stat, path) is None:
        # The row says the blob exists but its bytes are gone (e.g. lost storage): say so
        # before a streaming response has started, rather than failing mid-body.
        raise BlobUnknown("blob data missing from storage", {"digest": blob.digest})
    start, length = 0, blob.size
    status = 200
    if byte_range is not None:
        start, end = byte_range
        length = end - start + 1
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{blob.size}"
    headers["Content-Length"] = str(length)
    chunks = driver.read(path, offset=start, length=length)
    return StreamingResponse(_iterate_in_thread(chunks), status_code=status, headers=headers,
                             media_type="application/octet-stream")


async def _iterate_in_thread(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Pull a blocking iterator from a worker thread, chunk by chunk."""
    sentinel = b""
    iterator = iter(chunks)
    while True:
        chunk = await anyio.to_thread.run_sync(next, iterator, sentinel)
        if chunk is sentinel:  # drivers never yield empty chunks
            return
        yield chunk


async def delete_blob(request: Request, ctx: RegistryContext, name: str,
                      digest: str) -> Response:
    """Unlink the blob from the repository (it stays stored while other repos use it)."""
    check_digest(digest)
    _identity, lookup = await authorize(request, ctx, name, Action.DELETE)
    repo_id = existing_repository_id(lookup, name)
    try:
        await anyio.to_thread.run_sync(ctx.blobs.unlink, repo_id, digest)
    except BlobUnknown:
        raise
    return empty(202, {"Docker-Content-Digest": digest})
