"""The registry domain's errors, named after the OCI Distribution error codes.

HTTP status codes are assigned in one place, :mod:`portside.registry.errors`.
"""

from __future__ import annotations

from typing import Any


class RegistryError(Exception):
    """Base class: ``code`` is the OCI error code sent to clients."""

    code = "UNKNOWN"

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class BlobUnknown(RegistryError):
    """The blob is not known to the repository."""

    code = "BLOB_UNKNOWN"


class BlobUploadInvalid(RegistryError):
    """The upload request or its body is invalid."""

    code = "BLOB_UPLOAD_INVALID"


class RangeNotSatisfiable(BlobUploadInvalid):
    """A chunk does not continue the upload where it stands (HTTP 416)."""


class BlobUploadUnknown(RegistryError):
    """No such upload in this repository."""

    code = "BLOB_UPLOAD_UNKNOWN"


class DigestInvalid(RegistryError):
    """A digest is malformed or does not match the content."""

    code = "DIGEST_INVALID"


class ManifestBlobUnknown(RegistryError):
    """A manifest references a blob or manifest that the repository does not hold."""

    code = "MANIFEST_BLOB_UNKNOWN"


class ManifestInvalid(RegistryError):
    """The manifest is malformed or inconsistent."""

    code = "MANIFEST_INVALID"


class ManifestUnknown(RegistryError):
    """No such manifest or tag in the repository."""

    code = "MANIFEST_UNKNOWN"


class NameInvalid(RegistryError):
    """The repository name breaks the grammar."""

    code = "NAME_INVALID"


class NameUnknown(RegistryError):
    """The repository does not exist."""

    code = "NAME_UNKNOWN"


class PaginationNumberInvalid(RegistryError):
    """The ``n`` pagination parameter is not a non-negative integer."""

    code = "PAGINATION_NUMBER_INVALID"


class SizeInvalid(RegistryError):
    """A size is wrong or beyond a limit."""

    code = "SIZE_INVALID"


class TooLarge(SizeInvalid):
    """The content exceeds a configured maximum (HTTP 413)."""


class Unauthorized(RegistryError):
    """Authentication is required (or the credentials are wrong)."""

    code = "UNAUTHORIZED"


class Denied(RegistryError):
    """The authenticated caller may not do this."""

    code = "DENIED"


class ReadOnlyMode(Denied):
    """A write while the registry is read-only (``REGISTRY_STATE: readonly``)."""


class Unsupported(RegistryError):
    """The operation or format is not supported."""

    code = "UNSUPPORTED"


class UnsupportedMediaType(Unsupported):
    """A manifest format Portside does not accept (HTTP 415)."""


class InUse(Unsupported):
    """Deleting this would break something that references it (HTTP 409)."""


class TooManyRequests(RegistryError):
    """The caller is being rate limited."""

    code = "TOOMANYREQUESTS"
