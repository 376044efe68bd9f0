"""Small HTTP helpers shared by the /v2 handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote, urlencode

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from portside.registry.errors import API_VERSION_HEADER
from portside.services.errors import PaginationNumberInvalid, SizeInvalid

#: Largest page a client may ask for in tag lists and the catalog.
MAX_PAGE = 10_000


def empty(status: int, headers: dict[str, str] | None = None) -> Response:
    """A response without a body."""
    response = Response(b"", status_code=status, headers={**API_VERSION_HEADER,
                                                         **(headers or {})})
    return response


class BodyStream:
    """A request body as an async iterator that ends quietly if the client goes away."""

    def __init__(self, request: Request) -> None:
        self._request = request
        self.disconnected = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._request.stream():
                if chunk:
                    yield chunk
        except ClientDisconnect:
            self.disconnected = True


async def read_limited(request: Request, limit: int) -> bytes:
    """Read a whole (small) body, refusing more than ``limit`` bytes."""
    from portside.services.errors import TooLarge

    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"body exceeds the maximum size of {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"body exceeds the maximum size of {limit} bytes")
    return bytes(body)


def content_length(request: Request) -> int | None:
    """The declared ``Content-Length``; a malformed one is a client error."""
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise SizeInvalid(f"invalid Content-Length {value[:50]!r}")
    return int(value)


def page_params(request: Request) -> tuple[int | None, str | None]:
    """``n`` and ``last`` pagination parameters."""
    raw_n = request.query_params.get("n")
    n = None
    if raw_n is not None and raw_n != "":
        if not raw_n.isdigit():
            raise PaginationNumberInvalid(
                f"pagination parameter n must be a non-negative integer, got {raw_n[:20]!r}"
            )
        n = min(int(raw_n), MAX_PAGE)
    return n, request.query_params.get("last") or None


def next_link(path: str, n: int, last: str) -> str:
    """RFC 5988 ``Link`` header value for the next page."""
    return f'<{quote(path)}?{urlencode({"n": n, "last": last})}>; rel="next"'
