"""Where things live inside a storage location: pure path helpers, no I/O.

Every driver stores objects under its own root (a directory for ``LocalStorage``, a
key prefix inside a bucket for ``S3Storage``). Below that root the layout is::

    sha256/<h0h1>/<hex>          a committed blob, e.g.
                                 sha256/ab/ab12...ef  for digest sha256:ab12...ef
    sha512/<h0h1>/<hex>          the same for sha512 digests
    uploads/<upload id>/...      an upload in progress; the content is driver-specific:
                                   LocalStorage: uploads/<id>/data (one growing file)
                                   S3Storage:    uploads/<id>/<seq:08d> (one object per
                                                 append request, "segments")

The two-hex-character fan-out directory keeps directories (and S3 listing pages) small
even with millions of blobs; it also mirrors what Quay and Docker Distribution do, which
keeps migrations simple.

Paths handed to drivers are always *relative*, use ``/`` as separator and never contain
empty, ``.`` or ``..`` components: :func:`check_path` enforces that so that neither a
crafted digest nor a buggy caller can make a driver touch anything outside its root.
"""

from __future__ import annotations

import re

UPLOADS_DIR = "uploads"
"""Top-level directory (key prefix) holding uploads in progress."""

#: The OCI digest grammar: ``algorithm ":" encoded``. The patterns of this module are
#: used with ``fullmatch``: with ``match``, ``$`` would also accept a trailing newline.
DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")

#: Digest algorithms Portside stores blobs for, with the length of their hex encoding.
#: Other algorithms are syntactically valid OCI digests but are refused: their encoded
#: part is not necessarily hex, so the fan-out directory would not be meaningful.
BLOB_ALGORITHMS: dict[str, int] = {"sha256": 64, "sha512": 128}

_HEX_RE = re.compile(r"^[0-9a-f]+$")

#: Upload ids are opaque (UUIDs in practice) but end up in paths, so they are restricted
#: to characters that cannot express a path component other than themselves.
UPLOAD_ID_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")


def blob_path(digest: str) -> str:
    """Return the storage path of the blob with ``digest``, e.g. ``sha256/ab/ab12...``.

    Raises :class:`ValueError` for anything that is not a well-formed ``sha256`` or
    ``sha512`` digest with a lowercase hex encoding of the right length.
    """
    if not isinstance(digest, str) or "/" in digest or ".." in digest:
        raise ValueError(f"invalid digest {digest!r}")
    if not DIGEST_RE.fullmatch(digest):
        raise ValueError(f"invalid digest {digest!r}")
    algorithm, _, encoded = digest.partition(":")
    expected_length = BLOB_ALGORITHMS.get(algorithm)
    if expected_length is None:
        raise ValueError(f"unsupported digest algorithm {algorithm!r} in {digest!r}")
    if len(encoded) != expected_length or not _HEX_RE.fullmatch(encoded):
        raise ValueError(
            f"invalid digest {digest!r}: {algorithm} needs {expected_length} lowercase hex chars"
        )
    return f"{algorithm}/{encoded[:2]}/{encoded}"


def check_upload_id(upload_id: str) -> str:
    """Return ``upload_id`` unchanged if it is safe to use in a path, else raise ValueError."""
    if not isinstance(upload_id, str) or not UPLOAD_ID_RE.fullmatch(upload_id):
        raise ValueError(f"invalid upload id {upload_id!r}")
    return upload_id


def upload_dir(upload_id: str) -> str:
    """The directory (key prefix, without trailing slash) holding an upload's data."""
    return f"{UPLOADS_DIR}/{check_upload_id(upload_id)}"


def check_path(path: str) -> str:
    """Return ``path`` unchanged if it is a safe relative object path, else raise ValueError.

    Safe means: a non-empty string, relative (no leading ``/``), ``/``-separated, without
    backslashes or NUL characters and without empty, ``.`` or ``..`` components.
    """
    if not isinstance(path, str) or not path:
        raise ValueError(f"invalid storage path {path!r}: must be a non-empty string")
    if path.startswith("/") or "\\" in path or "\x00" in path:
        raise ValueError(f"invalid storage path {path!r}: must be relative and use '/'")
    for component in path.split("/"):
        if component in ("", ".", ".."):
            raise ValueError(f"invalid storage path {path!r}: empty, '.' or '..' component")
    return path


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` unchanged if it is a safe listing prefix, else raise ValueError.

    A prefix is either empty (everything) or a safe path (see :func:`check_path`),
    optionally ending with ``/``; its last component may be partial (``sha256/a``).
    """
    if prefix == "":
        return prefix
    check_path(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix
