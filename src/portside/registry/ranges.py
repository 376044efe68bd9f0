"""HTTP ``Range`` (blob reads) and ``Content-Range`` (upload chunks) parsing."""

from __future__ import annotations

import re

from portside.services.errors import BlobUploadInvalid, RangeNotSatisfiable

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CONTENT_RANGE_RE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)(?:/(?:\d+|\*))?$")


class UnsatisfiableRange(Exception):
    """The requested range lies outside the blob."""


def parse_read_range(header: str, size: int) -> tuple[int, int] | None:
    """Parse a single-range ``Range`` header against a blob of ``size`` bytes.

    Returns inclusive ``(start, end)``, or ``None`` to serve the whole blob (the header
    is not a single byte range we understand: several ranges are answered whole, as
    RFC 9110 allows). Raises :class:`UnsatisfiableRange`.
    """
    match = _RANGE_RE.match(header.strip().replace(" ", ""))
    if match is None:
        if header.strip().startswith("bytes=") and "," not in header:
            raise UnsatisfiableRange(header)
        return None
    first, last = match.groups()
    if not first and not last:
        raise UnsatisfiableRange(header)
    if not first:  # suffix range: the last N bytes
        length = int(last)
        if length == 0:
            raise UnsatisfiableRange(header)
        return max(size - length, 0), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size or end < start:
        raise UnsatisfiableRange(header)
    return start, min(end, size - 1)


def parse_content_range(header: str | None, content_length: int | None) -> int | None:
    """The start offset of an upload chunk, or ``None`` if no ``Content-Range`` was sent."""
    if header is None:
        return None
    match = _CONTENT_RANGE_RE.match(header.strip())
    if match is None:
        raise BlobUploadInvalid(f"malformed Content-Range {header[:100]!r}")
    start, end = int(match.group(1)), int(match.group(2))
    if end < start:
        raise RangeNotSatisfiable(f"Content-Range {header!r} ends before it starts")
    if content_length is not None and end - start + 1 != content_length:
        raise RangeNotSatisfiable(
            f"Content-Range {header!r} does not match Content-Length {content_length}"
        )
    return start
