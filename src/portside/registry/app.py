"""Routing of ``/v2`` requests to their handlers, and error mapping.

Repository names contain slashes, so the path is matched from its end: the last
``/manifests/``, ``/blobs/``, ``/tags/list`` or ``/referrers/`` segment splits the name
from the rest, as Distribution does.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from portside.registry.access import Challenge, authenticate, challenge
from portside.registry.context import RegistryContext
from portside.registry.errors import API_VERSION_HEADER, error_response
from portside.registry.handlers import blobs, listings, manifests, token, uploads
from portside.services.errors import (
    NameInvalid,
    ReadOnlyMode,
    RegistryError,
    TooManyRequests,
    Unsupported,
)
from portside.services.metrics import RequestMetrics

log = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[Response]]

_ROUTES: list[tuple[re.Pattern[str], dict[str, Handler]]] = [
    (re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)$"), {
        "GET": manifests.get_manifest, "HEAD": manifests.get_manifest,
        "PUT": manifests.put_manifest, "DELETE": manifests.delete_manifest,
    }),
    (re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/?$"), {"POST": uploads.start_upload}),
    (re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/(?P<ref>[^/]+)$"), {
        "PATCH": uploads.patch_upload, "PUT": uploads.put_upload,
        "GET": uploads.get_upload, "DELETE": uploads.cancel_upload,
    }),
    (re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<ref>[^/]+)$"), {
        "GET": blobs.get_blob, "HEAD": blobs.head_blob, "DELETE": blobs.delete_blob,
    }),
    (re.compile(r"^/v2/(?P<name>.+)/tags/list$"), {"GET": listings.list_tags}),
    (re.compile(r"^/v2/(?P<name>.+)/referrers/(?P<ref>[^/]+)$"), {"GET": listings.referrers}),
]


#: Route templates for the request metrics, by handler.
_MANIFEST_ROUTE = "/v2/{name}/manifests/{reference}"
_UPLOAD_ROUTE = "/v2/{name}/blobs/uploads/{uuid}"
_BLOB_ROUTE = "/v2/{name}/blobs/{digest}"
_ROUTE_TEMPLATES: dict[Handler, str] = {
    manifests.get_manifest: _MANIFEST_ROUTE, manifests.put_manifest: _MANIFEST_ROUTE,
    manifests.delete_manifest: _MANIFEST_ROUTE,
    uploads.start_upload: "/v2/{name}/blobs/uploads/",
    uploads.patch_upload: _UPLOAD_ROUTE, uploads.put_upload: _UPLOAD_ROUTE,
    uploads.get_upload: _UPLOAD_ROUTE, uploads.cancel_upload: _UPLOAD_ROUTE,
    blobs.get_blob: _BLOB_ROUTE, blobs.head_blob: _BLOB_ROUTE, blobs.delete_blob: _BLOB_ROUTE,
    listings.list_tags: "/v2/{name}/tags/list",
    listings.referrers: "/v2/{name}/referrers/{digest}",
    listings.catalog: "/v2/_catalog",
    token.issue_token: "/v2/auth", token.issue_token_oauth: "/v2/auth",
}


async def _base(request: Request, ctx: RegistryContext) -> Response:
    """``GET /v2/``: 200 for authenticated callers, the token challenge otherwise."""
    identity = await authenticate(request, ctx)
    if identity.subject.anonymous and identity.grant is None:
        raise Challenge("authentication required", challenge(request, ctx))
    return Response(b"{}", status_code=200, headers=API_VERSION_HEADER,
                    media_type="application/json")


def _resolve(path: str, method: str) -> tuple[Handler, tuple[str, ...]]:
    if path in ("/v2", "/v2/"):
        if method in ("GET", "HEAD"):
            return _base, ()
        raise Unsupported("method not allowed")
    if path == "/v2/auth":
        if method == "GET":
            return token.issue_token, ()
        if method == "POST":
            return token.issue_token_oauth, ()
        raise Unsupported("method not allowed")
    if path == "/v2/_catalog":
        if method == "GET":
            return listings.catalog, ()
        raise Unsupported("method not allowed")
    for pattern, methods in _ROUTES:
        match = pattern.match(path)
        if match is None:
            continue
        handler = methods.get(method)
        if handler is None:
            raise Unsupported(f"method {method} not allowed here")
        return handler, tuple(v for v in match.groups() if v is not None)
    raise NameInvalid("no such endpoint or invalid repository name", {"path": path[:255]})


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value not in (b"0", b"")
        if name == b"transfer-encoding":
            return True
    return False


#: Methods that change content; ``POST /v2/auth`` only issues tokens and stays open.
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

READ_ONLY_MESSAGE = ("System is currently read-only. Pulls will succeed but all write "
                     "operations are currently suspended.")


class _BodyTracker:
    """Wraps ``receive`` to learn whether the request body was read to its end."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.complete = False

    async def __call__(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            self.complete = True
        return message


class RegistryApp:
    """The ASGI application serving ``/v2``."""

    def __init__(self, ctx: RegistryContext, read_only: bool = False) -> None:
        self.ctx = ctx
        #: ``REGISTRY_STATE: readonly`` or ``DISABLE_PUSHES``: refuse every write.
        self.read_only = read_only
        self._metrics = RequestMetrics("v2")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        route = "unmatched"
        tracker = _BodyTracker(receive) if _has_body(scope) else None
        request = Request(scope, tracker or receive)
        method = request.method
        try:
            handler, args = _resolve(scope["path"], method)
            route = _ROUTE_TEMPLATES.get(handler, "/v2/")
            if (self.read_only and method in _WRITE_METHODS
                    and handler is not token.issue_token_oauth):
                raise ReadOnlyMode(READ_ONLY_MESSAGE)
            response = await handler(request, self.ctx, *args)
        except Challenge as exc:
            response = error_response(exc, head=method == "HEAD",
                                      headers={"WWW-Authenticate": exc.header})
        except TooManyRequests as exc:
            retry = (exc.detail or {}).get("retry_after", 60)
            response = error_response(exc, head=method == "HEAD",
                                      headers={"Retry-After": str(retry)})
        except RegistryError as exc:
            response = error_response(exc, head=method == "HEAD")
        except Exception:
            log.exception("unhandled error serving %s %s", method, scope["path"])
            error = RegistryError("internal server error")
            response = error_response(error, head=method == "HEAD")
        if tracker is not None and not tracker.complete:
            # Refused before the body was read to its end: the rest is still on the wire,
            # so this connection cannot carry another request.
            response.headers["Connection"] = "close"
        await response(scope, receive, send)
        self._metrics.observe(route, method, response.status_code,
                              time.perf_counter() - start)
