"""``LocalStorage``: blobs as files in a local (or network-mounted) directory.

Durability: every object is written to a temporary file in its final directory, fsynced,
and moved into place with :func:`os.replace`; the directory is fsynced afterwards. A
reader therefore sees either nothing or the complete object, even after a power loss.

Uploads: ``uploads/<id>/data`` is a single file that grows with every append. The upload
state is ``{"size": <bytes recorded>}``. Committing renames that file into the blob path,
so a commit costs no copying regardless of the blob size.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat as stat_module
import uuid
from collections.abc import Iterator
from typing import BinaryIO

from portside.storage import layout
from portside.storage.base import ObjectNotFound, StorageError, UploadState

#: Temporary files are named like this so that :meth:`LocalStorage.list` can hide them.
_TMP_PREFIX = ".portside-tmp-"
_DATA_FILE = "data"


def _fsync_dir(path: str) -> None:
    """Make a directory entry change (create, rename, unlink) inside ``path`` durable."""
    if os.name == "nt":  # pragma: no cover - directories cannot be opened on Windows
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs_durable(path: str) -> None:
    """Create ``path`` and its missing parents, fsyncing each parent after a creation.

    ``os.makedirs`` alone would leave the new directory entries in the page cache; a crash
    could then lose a directory that a renamed blob already lives in.
    """
    missing: list[str] = []
    current = path
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:  # pragma: no cover - reached the filesystem root
            break
        current = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory)
        except FileExistsError:
            # Another thread or process created it concurrently; that is fine as long as
            # it is a directory.
            if not os.path.isdir(directory):
                raise
        _fsync_dir(os.path.dirname(directory))


class LocalStorage:
    """Stores objects as files below ``storage_path``.

    All paths are validated with :func:`portside.storage.layout.check_path`; anything that
    could escape the root (absolute paths, ``..``) raises :class:`ValueError`.
    """

    driver_name: str = "LocalStorage"

    def __init__(self, storage_path: str) -> None:
        if not storage_path:
            raise ValueError("LocalStorage: storage_path must not be empty")
        self.root = os.path.abspath(storage_path)

    def __repr__(self) -> str:
        return f"LocalStorage(storage_path={self.root!r})"

    # --- helpers -----------------------------------------------------------------
    def _abs(self, path: str) -> str:
        """The absolute filesystem path of the object ``path`` (validated)."""
        layout.check_path(path)
        full = os.path.normpath(os.path.join(self.root, *path.split("/")))
        # check_path already rules out "..", this is defence in depth.
        if os.path.commonpath([self.root, full]) != self.root or full == self.root:
            raise ValueError(f"storage path {path!r} escapes the storage root")
        return full

    def _upload_dir(self, upload_id: str) -> str:
        return self._abs(layout.upload_dir(upload_id))

    def _upload_data(self, upload_id: str) -> str:
        return os.path.join(self._upload_dir(upload_id), _DATA_FILE)

    def _create_temp(self, directory: str) -> tuple[str, int]:
        """Create an empty temporary file in ``directory``; return its path and an fd.

        Created with mode 0o666 so the process umask applies, like for any normal file
        (``tempfile.mkstemp`` would force 0o600).
        """
        _makedirs_durable(directory)
        tmp = os.path.join(directory, f"{_TMP_PREFIX}{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                     0o666)
        return tmp, fd

    # --- committed objects -------------------------------------------------------
    def stat(self, path: str) -> int | None:
        """Return the size of the object at ``path`` or ``None`` if it does not exist."""
        try:
            st = os.stat(self._abs(path))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StorageError(f"cannot stat {path!r}: {exc}") from exc
        # A directory (e.g. "sha256/ab") is not an object.
        return st.st_size if stat_module.S_ISREG(st.st_mode) else None

    def read(self, path: str, offset: int = 0, length: int | None = None,
             chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream ``length`` bytes (all remaining if ``None``) starting at ``offset``.

        The file is opened eagerly, so :class:`ObjectNotFound` is raised by this call
        itself, before any iteration.
        """
        if offset < 0 or (length is not None and length < 0) or chunk_size <= 0:
            raise ValueError("offset and length must be >= 0 and chunk_size > 0")
        fh = self._open_for_read(path)
        return self._stream(fh, offset, length, chunk_size)

    def _open_for_read(self, path: str) -> BinaryIO:
        full = self._abs(path)
        try:
            fh = open(full, "rb")  # noqa: SIM115 - closed by the consuming generator
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise ObjectNotFound(path) from exc
        except OSError as exc:
            raise StorageError(f"cannot open {path!r}: {exc}") from exc
        return fh

    @staticmethod
    def _stream(fh: BinaryIO, offset: int, length: int | None,
                chunk_size: int) -> Iterator[bytes]:
        with fh:
            fh.seek(offset)
            remaining = length
            while remaining is None or remaining > 0:
                want = chunk_size if remaining is None else min(chunk_size, remaining)
                chunk = fh.read(want)
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    def local_path(self, path: str) -> str | None:
        """The absolute path of the object file, or ``None`` if it does not exist."""
        full = self._abs(path)
        return full if os.path.isfile(full) else None

    def download_url(self, path: str, expires_in: int = 600) -> str | None:
        """Local files have no URL of their own: always ``None``."""
        layout.check_path(path)
        return None

    def put_bytes(self, path: str, data: bytes) -> None:
        """Atomically and durably (temp file, fsync, rename, fsync dir) write ``data``."""
        full = self._abs(path)
        directory = os.path.dirname(full)
        try:
            tmp, fd = self._create_temp(directory)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, full)
            except BaseException:
                _unlink_quietly(tmp)
                raise
            _fsync_dir(directory)
        except OSError as exc:
            raise StorageError(f"cannot write {path!r}: {exc}") from exc

    def get_bytes(self, path: str) -> bytes:
        """Read a small object whole. Raises :class:`ObjectNotFound`."""
        with self._open_for_read(path) as fh:
            return fh.read()

    def delete(self, path: str) -> None:
        """Delete one object; deleting a missing object is not an error."""
        full = self._abs(path)
        try:
            os.unlink(full)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise StorageError(f"cannot delete {path!r}: {exc}") from exc
        _fsync_dir(os.path.dirname(full))

    def list(self, prefix: str) -> Iterator[str]:
        """Yield the paths of all objects whose path starts with ``prefix``.

        Temporary files of in-flight writes are never listed. Order is unspecified.
        """
        layout.check_prefix(prefix)
        # Only walk the deepest directory that is fully named by the prefix.
        base_rel = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = os.path.join(self.root, *base_rel.split("/")) if base_rel else self.root
        return self._walk(base, prefix)

    def _walk(self, base: str, prefix: str) -> Iterator[str]:
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in sorted(filenames):
                if name.startswith(_TMP_PREFIX):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, name), self.root)
                rel = rel.replace(os.sep, "/")
                if rel.startswith(prefix):
                    yield rel

    # --- resumable uploads -------------------------------------------------------
    def start_upload(self, upload_id: str) -> UploadState:
        """Create ``uploads/<id>/data`` (empty) and return ``{"size": 0}``."""
        directory = self._upload_dir(upload_id)
        try:
            _makedirs_durable(directory)
            data = os.path.join(directory, _DATA_FILE)
            fd = os.open(data, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0),
                         0o666)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_dir(directory)
        except OSError as exc:
            raise StorageError(f"cannot start upload {upload_id!r}: {exc}") from exc
        return {"size": 0}

    def append_upload(self, upload_id: str, state: UploadState, offset: int) -> LocalAppender:
        """Open the upload's data file, truncate it to ``offset`` and append from there.

        Truncating discards whatever an interrupted request wrote after the last recorded
        offset. Raises :class:`ObjectNotFound` if the upload does not exist and
        :class:`StorageError` if fewer than ``offset`` bytes are stored.
        """
        if offset < 0:
            raise ValueError("offset must be >= 0")
        data = self._upload_data(upload_id)
        try:
            fd = os.open(data, os.O_WRONLY | getattr(os, "O_BINARY", 0))
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"upload {upload_id!r} does not exist") from exc
        except OSError as exc:
            raise StorageError(f"cannot open upload {upload_id!r}: {exc}") from exc
        try:
            stored = os.fstat(fd).st_size
            if stored < offset:
                raise StorageError(
                    f"upload {upload_id!r} has only {stored} bytes stored, "
                    f"cannot continue at offset {offset}"
                )
            os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
        except BaseException as exc:
            os.close(fd)
            if isinstance(exc, OSError):
                raise StorageError(f"cannot open upload {upload_id!r}: {exc}") from exc
            raise
        return LocalAppender(fd, offset, upload_id)

    def read_upload(self, upload_id: str, state: UploadState,
                    chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream the ``state["size"]`` bytes recorded so far (the whole file without it)."""
        size = _state_size(state)
        try:
            fh = open(self._upload_data(upload_id), "rb")  # noqa: SIM115 - generator closes
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"upload {upload_id!r} does not exist") from exc
        except OSError as exc:
            raise StorageError(f"cannot open upload {upload_id!r}: {exc}") from exc
        if size is not None:
            stored = os.fstat(fh.fileno()).st_size
            if stored < size:
                fh.close()
                raise StorageError(
                    f"upload {upload_id!r} has {stored} bytes stored, its state says {size}"
                )
        return self._stream(fh, 0, size, chunk_size)

    def commit_upload(self, upload_id: str, state: UploadState, path: str) -> None:
        """Rename the upload's data file to ``path`` (durably), then remove the upload.

        Bytes beyond ``state["size"]`` (left by an interrupted request) are cut off first.
        If ``path`` already exists the upload is only discarded.
        """
        full = self._abs(path)
        data = self._upload_data(upload_id)
        size = _state_size(state)
        if os.path.isfile(full):
            self.cancel_upload(upload_id, state)
            return
        try:
            fd = os.open(data, os.O_WRONLY | getattr(os, "O_BINARY", 0))
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"upload {upload_id!r} does not exist") from exc
        except OSError as exc:
            raise StorageError(f"cannot open upload {upload_id!r}: {exc}") from exc
        try:
            stored = os.fstat(fd).st_size
            if size is not None:
                if stored < size:
                    raise StorageError(
                        f"upload {upload_id!r} has {stored} bytes stored, its state says {size}"
                    )
                if stored > size:
                    os.ftruncate(fd, size)
            os.fsync(fd)
        except OSError as exc:
            raise StorageError(f"cannot commit upload {upload_id!r}: {exc}") from exc
        finally:
            os.close(fd)
        directory = os.path.dirname(full)
        try:
            _makedirs_durable(directory)
            os.replace(data, full)
            _fsync_dir(directory)
        except OSError as exc:
            raise StorageError(f"cannot commit upload {upload_id!r} to {path!r}: {exc}") from exc
        self.cancel_upload(upload_id, state)

    def cancel_upload(self, upload_id: str, state: UploadState) -> None:
        """Remove ``uploads/<id>`` and everything in it; a missing upload is fine."""
        directory = self._upload_dir(upload_id)
        try:
            shutil.rmtree(directory)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(f"cannot remove upload {upload_id!r}: {exc}") from exc
        _fsync_dir(os.path.dirname(directory))

    def list_uploads(self) -> Iterator[str]:
        """Yield the ids of all upload directories below ``uploads/``."""
        uploads = os.path.join(self.root, layout.UPLOADS_DIR)
        try:
            names = sorted(os.listdir(uploads))
        except FileNotFoundError:
            return iter(())
        return (
            name for name in names
            if layout.UPLOAD_ID_RE.fullmatch(name) and os.path.isdir(os.path.join(uploads, name))
        )


class LocalAppender:
    """Appends to an upload's data file; see :meth:`LocalStorage.append_upload`.

    Writes go straight to the file descriptor (no user-space buffer), so that
    :meth:`abort` can never be undone by a late buffer flush.
    """

    def __init__(self, fd: int, offset: int, upload_id: str) -> None:
        self._fd = fd
        self._start = offset
        self._size = offset
        self._upload_id = upload_id
        self._result: UploadState | None = None
        self._finished = False

    def write(self, data: bytes) -> None:
        """Append ``data`` (in the page cache; durable only after :meth:`close`)."""
        if self._finished:
            raise StorageError(f"appender for upload {self._upload_id!r} is closed")
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
                self._size += written
        except OSError as exc:
            raise StorageError(f"cannot write to upload {self._upload_id!r}: {exc}") from exc

    def close(self) -> UploadState:
        """fsync the data file and return ``{"size": <new size>}``. Idempotent."""
        if self._result is not None:
            return self._result
        if self._finished:
            raise StorageError(f"appender for upload {self._upload_id!r} was aborted")
        try:
            os.fsync(self._fd)
        except OSError as exc:
            # The caller is expected to abort() now; keep the fd open for that.
            raise StorageError(f"cannot sync upload {self._upload_id!r}: {exc}") from exc
        self._finished = True
        os.close(self._fd)
        self._result = {"size": self._size}
        return self._result

    def abort(self) -> None:
        """Cut the file back to the offset it was opened at.

        A no-op after a successful :meth:`close`: the bytes then belong to the upload (a
        caller that fails to record the new state simply resumes at its old offset, which
        discards them).
        """
        if self._finished:
            return
        self._finished = True
        try:
            os.ftruncate(self._fd, self._start)
            os.fsync(self._fd)
        except OSError:
            pass  # best effort: the next append_upload truncates to its offset anyway
        finally:
            os.close(self._fd)


def _state_size(state: UploadState) -> int | None:
    size = state.get("size") if isinstance(state, dict) else None
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise StorageError(f"invalid upload state {state!r}")
    return size


def _unlink_quietly(path: str) -> None:
    """Remove a temporary file while already handling another error."""
    with contextlib.suppress(OSError):
        os.unlink(path)
