"""Parsing of Quay-style size strings such as ``20G``, ``512Mi`` or ``4MB``.

Quay reads ``MAXIMUM_LAYER_SIZE`` with ``bitmath.parse_string_unsafe``; Portside follows
the same rules so that a Quay ``config.yaml`` means the same thing here:

* a number (integer or decimal) optionally followed by a unit;
* units ``K``, ``M``, ``G``, ``T`` (optionally followed by ``B``) are decimal, powers of
  1000: ``20G`` is 20,000,000,000 bytes;
* units ``Ki``, ``Mi``, ``Gi``, ``Ti`` (optionally followed by ``B``) are binary, powers of
  1024: ``20Gi`` is 21,474,836,480 bytes;
* ``B`` alone, or no unit at all, means bytes;
* unit letters are case-insensitive and blanks between number and unit are allowed.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

__all__ = ["format_size_hint", "parse_size"]

_SIZE_RE = re.compile(
    r"^\s*(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<prefix>[kmgt])?(?P<binary>i)?(?P<byte>b)?\s*$",
    re.IGNORECASE,
)

_EXPONENT = {None: 0, "k": 1, "m": 2, "g": 3, "t": 4}

_HINT = "a size such as 20G, 512M or 1Gi"


def format_size_hint() -> str:
    """Return the short human description of the accepted size syntax."""
    return _HINT


def parse_size(value: str) -> int:
    """Return the number of bytes described by the size string ``value``.

    Fractional results are rounded down to whole bytes. Raises :class:`ValueError` with
    a one-line message if ``value`` is not a valid size or is not positive.

    >>> parse_size("20G")
    20000000000
    >>> parse_size("1Gi")
    1073741824
    >>> parse_size("512")
    512
    """
    match = _SIZE_RE.match(value)
    if match is None:
        raise ValueError(f"expected {_HINT}, got {value!r}")
    prefix = match.group("prefix")
    binary = match.group("binary")
    if binary and prefix is None:
        # "5i" or "5iB" is not a unit.
        raise ValueError(f"expected {_HINT}, got {value!r}")
    try:
        number = Decimal(match.group("number"))
    except InvalidOperation as exc:  # pragma: no cover - the regex only admits decimals
        raise ValueError(f"expected {_HINT}, got {value!r}") from exc
    base = 1024 if binary else 1000
    exponent = _EXPONENT[prefix.lower() if prefix else None]
    size = int(number * (base**exponent))
    if size <= 0:
        raise ValueError(f"must be larger than zero, got {value!r}")
    return size
