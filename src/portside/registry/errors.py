"""Maps domain errors to HTTP responses in the spec's JSON error format."""

from __future__ import annotations

import json

from starlette.responses import Response

from portside.services import errors as e

API_VERSION_HEADER = {"Docker-Distribution-API-Version": "registry/2.0"}

_STATUS: dict[type[e.RegistryError], int] = {
    e.BlobUnknown: 404,
    e.RangeNotSatisfiable: 416,
    e.BlobUploadInvalid: 400,
    e.BlobUploadUnknown: 404,
    e.DigestInvalid: 400,
    e.ManifestBlobUnknown: 400,
    e.ManifestInvalid: 400,
    e.ManifestUnknown: 404,
    e.NameInvalid: 400,
    e.NameUnknown: 404,
    e.PaginationNumberInvalid: 400,
    e.TooLarge: 413,
    e.SizeInvalid: 400,
    e.Unauthorized: 401,
    # Quay answers writes in read-only mode with 405 and the DENIED code.
    e.ReadOnlyMode: 405,
    e.Denied: 403,
    e.UnsupportedMediaType: 415,
    e.InUse: 409,
    e.Unsupported: 405,
    e.TooManyRequests: 429,
}


def status_for(error: e.RegistryError) -> int:
    """The HTTP status of a domain error (most specific class wins)."""
    for cls in type(error).__mro__:
        status = _STATUS.get(cls)
        if status is not None:
            return status
    return 500


def error_body(code: str, message: str, detail: object = None) -> bytes:
    """The spec's ``{"errors": [...]}`` body."""
    error: dict[str, object] = {"code": code, "message": message}
    if detail is not None:
        error["detail"] = detail
    return json.dumps({"errors": [error]}).encode()


def error_response(error: e.RegistryError, head: bool = False,
                   headers: dict[str, str] | None = None) -> Response:
    """A JSON error response (header-only for HEAD requests, as the spec requires)."""
    all_headers = {**API_VERSION_HEADER, **(headers or {})}
    body = b"" if head else error_body(error.code, error.message, error.detail)
    response = Response(body, status_code=status_for(error), headers=all_headers,
                        media_type="application/json")
    if head:
        response.headers["content-length"] = "0"
    return response
