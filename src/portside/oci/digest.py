"""Content digests as defined by the OCI image spec (``algorithm:encoded``)."""

from __future__ import annotations

import hashlib
import re

#: The spec's digest grammar; registries must accept sha256 and may accept sha512.
DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")

#: Encoded-part length per supported algorithm (lower-case hex).
SUPPORTED_ALGORITHMS: dict[str, int] = {"sha256": 64, "sha512": 128}
_HEX_RE = re.compile(r"^[a-f0-9]+$")


class InvalidDigest(ValueError):
    """The string is not a digest Portside can verify."""


def parse_digest(value: str) -> tuple[str, str]:
    """Split and validate ``value``; return ``(algorithm, hex)``.

    Raises :class:`InvalidDigest` for malformed digests and unsupported algorithms.
    """
    # fullmatch: with match, "$" would also accept a trailing newline.
    if not DIGEST_RE.fullmatch(value):
        raise InvalidDigest(f"malformed digest {value[:100]!r}")
    algorithm, encoded = value.split(":", 1)
    expected_length = SUPPORTED_ALGORITHMS.get(algorithm)
    if expected_length is None:
        raise InvalidDigest(f"unsupported digest algorithm {algorithm!r}")
    if len(encoded) != expected_length or not _HEX_RE.fullmatch(encoded):
        raise InvalidDigest(f"malformed {algorithm} digest {value[:100]!r}")
    return algorithm, encoded


def is_digest(value: str) -> bool:
    """True if ``value`` looks like a digest reference (contains ``:``)."""
    return ":" in value


def new_hasher(algorithm: str = "sha256") -> hashlib._Hash:
    """A fresh hash object for ``algorithm`` (one of :data:`SUPPORTED_ALGORITHMS`)."""
    if algorithm not in SUPPORTED_ALGORITHMS:
        raise InvalidDigest(f"unsupported digest algorithm {algorithm!r}")
    return hashlib.new(algorithm)


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    """The digest of ``data``."""
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
