"""The blob storage driver protocol.

Every storage backend (local folder, S3-compatible object storage, ...) implements
:class:`StorageDriver`. Upper layers never build paths themselves: they ask
:mod:`portside.storage.layout` for them.

Layout of a storage location (relative to the driver's ``storage_path``)::

    sha256/<first two hex chars>/<hex>        a committed, verified blob
    uploads/<upload id>/...                   an upload in progress (driver-specific)

A blob object exists only after its bytes were received completely, verified against
their digest and made durable; an upload becomes a blob by :meth:`StorageDriver.commit_upload`,
which is atomic from a reader's point of view (rename on a local disk, a completed
multipart upload or server-side copy on S3).

Uploads are resumable across requests, processes and restarts: the driver keeps whatever
it needs in a small JSON-serialisable *state* that the caller stores in the database
after every successful append and hands back on the next call.

Drivers are synchronous: the HTTP layer calls them from worker threads.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

UploadState = dict[str, Any]
"""Opaque, JSON-serialisable per-upload bookkeeping owned by the driver."""


class StorageError(Exception):
    """A storage operation failed for a reason other than a missing object."""


class ObjectNotFound(StorageError):
    """The requested object does not exist."""


class UploadAppender(Protocol):
    """Appends bytes to an upload; obtained from :meth:`StorageDriver.append_upload`."""

    def write(self, data: bytes) -> None:
        """Append ``data``. May buffer; nothing is durable before :meth:`close`."""

    def close(self) -> UploadState:
        """Make everything written durable and return the new upload state.

        Also called after a client disconnects mid-body, so that the bytes received so
        far are kept and the upload can be resumed from the returned size.
        """

    def abort(self) -> None:
        """Discard what this appender wrote; the upload stays as it was before."""


@runtime_checkable
class StorageDriver(Protocol):
    """A place where blobs live. Implementations: ``LocalStorage``, ``S3Storage``."""

    #: The driver's registered name as used in ``DISTRIBUTED_STORAGE_CONFIG``.
    driver_name: str

    # --- committed objects -------------------------------------------------------
    def stat(self, path: str) -> int | None:
        """Return the size of the object at ``path`` or ``None`` if it does not exist."""

    def read(self, path: str, offset: int = 0, length: int | None = None,
             chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream ``length`` bytes (all remaining if ``None``) starting at ``offset``.

        Raises :class:`ObjectNotFound` (before yielding anything) if ``path`` is missing.
        """

    def local_path(self, path: str) -> str | None:
        """An absolute filesystem path for zero-copy serving, or ``None`` (object storage)."""

    def download_url(self, path: str, expires_in: int = 600) -> str | None:
        """A pre-signed URL a client may GET directly, or ``None`` if unsupported."""

    def put_bytes(self, path: str, data: bytes) -> None:
        """Durably write a small object in one call (replacing any existing one)."""

    def get_bytes(self, path: str) -> bytes:
        """Read a small object whole. Raises :class:`ObjectNotFound`."""

    def delete(self, path: str) -> None:
        """Delete one object; deleting a missing object is not an error."""

    def list(self, prefix: str) -> Iterator[str]:
        """Yield the paths of all objects whose path starts with ``prefix``."""

    # --- resumable uploads -------------------------------------------------------
    def start_upload(self, upload_id: str) -> UploadState:
        """Prepare a new, empty upload and return its initial state."""

    def append_upload(self, upload_id: str, state: UploadState, offset: int) -> UploadAppender:
        """Open an appender continuing the upload at byte ``offset``.

        ``offset`` is the upload size the caller recorded last; bytes beyond it that a
        previous, interrupted request may have left behind are discarded.
        """

    def read_upload(self, upload_id: str, state: UploadState,
                    chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream the bytes received so far (used to rebuild a hash after a restart)."""

    def commit_upload(self, upload_id: str, state: UploadState, path: str) -> None:
        """Atomically turn the upload into the object at ``path`` and free the upload.

        If an object already exists at ``path`` (content-addressed, so identical), the
        upload is simply discarded.
        """

    def cancel_upload(self, upload_id: str, state: UploadState) -> None:
        """Discard an upload and everything it stored. Missing uploads are not an error."""

    def list_uploads(self) -> Iterator[str]:
        """Yield the ids of uploads that have data in this location (for cleanup)."""
