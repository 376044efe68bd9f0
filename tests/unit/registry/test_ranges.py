"""Range and Content-Range parsing."""

from __future__ import annotations

import pytest

from portside.registry.ranges import UnsatisfiableRange, parse_content_range, parse_read_range
from portside.services.errors import BlobUploadInvalid, RangeNotSatisfiable


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-9", (0, 9)),
        ("bytes=5-", (5, 99)),
        ("bytes=-10", (90, 99)),
        ("bytes=90-1000", (90, 99)),
        ("bytes=0-0,5-6", None),
        ("items=1-2", None),
    ],
)
def test_read_ranges(header: str, expected: tuple[int, int] | None) -> None:
    assert parse_read_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=5-2", "bytes=-0", "bytes=-", "bytes=x-"])
def test_unsatisfiable_read_ranges(header: str) -> None:
    with pytest.raises(UnsatisfiableRange):
        parse_read_range(header, 100)


def test_content_range() -> None:
    assert parse_content_range(None, 10) is None
    assert parse_content_range("0-9", 10) == 0
    assert parse_content_range("bytes 10-19/*", 10) == 10
    with pytest.raises(BlobUploadInvalid):
        parse_content_range("ten-twenty", None)
    with pytest.raises(RangeNotSatisfiable):
        parse_content_range("0-9", 5)
    with pytest.raises(RangeNotSatisfiable):
        parse_content_range("9-0", None)
