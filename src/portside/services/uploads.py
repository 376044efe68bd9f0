"""Resumable blob uploads: start, append chunks, finish with digest verification, cancel.

The upload's size and the storage driver's state are stored in the database after every
append, so an upload survives a restart or continues on another node. Python cannot
serialise a running SHA-256, so each process keeps the live hasher of the uploads it
served last; on a miss (restart, another node) the hash is rebuilt by reading back the
bytes already stored. Either way the digest is verified before a blob becomes visible.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import anyio.to_thread
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from portside.db.engine import Database
from portside.db.models import Blob, BlobUpload, utcnow
from portside.oci.digest import InvalidDigest, parse_digest
from portside.services.blobs import BlobInfo, touch_link
from portside.services.errors import (
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    RangeNotSatisfiable,
    TooLarge,
)
from portside.services.gc_locks import lock_digests
from portside.services.metrics import blob_uploaded
from portside.storage.base import StorageDriver, UploadAppender
from portside.storage.layout import blob_path
from portside.storage.placements import Placements

log = logging.getLogger(__name__)

#: Bytes gathered from the network before they are hashed and written in one go.
WRITE_BATCH = 4 << 20
#: Live hashers kept per process; beyond this the oldest are rebuilt on demand.
HASHER_CACHE_LIMIT = 1024

T = TypeVar("T")


async def _in_thread(func: Callable[..., T], *args: Any) -> T:
    return await anyio.to_thread.run_sync(func, *args)


@dataclass(frozen=True)
class UploadStatus:
    """Where an upload stands: its id and how many bytes it holds."""

    id: str
    size: int


class UploadService:
    """Drives uploads from the first byte to a verified, committed blob."""

    def __init__(self, db: Database, placements: Placements, max_blob_size: int) -> None:
        self._db = db
        self._placements = placements
        self._max_blob_size = max_blob_size
        self._hashers: dict[str, tuple[int, Any]] = {}
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    # --- lifecycle ------------------------------------------------------------------
    def start(self, repository_id: int) -> UploadStatus:
        """Create an empty upload in the preferred storage location."""
        upload_id = str(uuid.uuid4())
        location = self._placements.write_location
        # The row comes first: storage data without a row is then always an orphan.
        # Its timestamps come from this module's clock, the one the expiry cutoff uses.
        now = utcnow()
        with self._db.session() as session:
            session.add(
                BlobUpload(id=upload_id, repository_id=repository_id, size=0,
                           location=location, storage_state={}, created_at=now,
                           updated_at=now)
            )
        state = self._placements.driver(location).start_upload(upload_id)
        with self._db.session() as session:
            session.execute(
                update(BlobUpload).where(BlobUpload.id == upload_id).values(storage_state=state)
            )
        return UploadStatus(upload_id, 0)

    def status(self, repository_id: int, upload_id: str) -> UploadStatus:
        """The upload's current size; raises :class:`BlobUploadUnknown`."""
        row = self._load(repository_id, upload_id)
        return UploadStatus(row.id, row.size)

    def cancel(self, repository_id: int, upload_id: str) -> None:
        """Discard an upload and its stored bytes."""
        row = self._load(repository_id, upload_id)
        self._placements.driver(row.location).cancel_upload(row.id, row.storage_state)
        with self._db.session() as session:
            session.execute(delete(BlobUpload).where(BlobUpload.id == upload_id))
        self._hashers.pop(upload_id, None)

    # --- data -----------------------------------------------------------------------
    async def append(self, repository_id: int, upload_id: str, body: AsyncIterator[bytes],
                     start: int | None = None) -> UploadStatus:
        """Append a chunk. ``start`` (from ``Content-Range``) must equal the current size.

        If the body ends early (client gone), the bytes received so far are kept, so the
        client can ask for the upload's status and resume.
        """
        async with self._lock_for(upload_id):
            return await self._append_locked(repository_id, upload_id, body, start)

    async def finish(self, repository_id: int, upload_id: str, digest: str,
                     body: AsyncIterator[bytes] | None = None,
                     start: int | None = None) -> BlobInfo:
        """Append an optional last chunk, verify ``digest`` and commit the blob."""
        try:
            algorithm, _ = parse_digest(digest)
        except InvalidDigest as exc:
            raise DigestInvalid(str(exc), {"digest": digest}) from None
        async with self._lock_for(upload_id):
            if body is not None:
                await self._append_locked(repository_id, upload_id, body, start)
            row = await _in_thread(self._load, repository_id, upload_id)
            driver = self._placements.driver(row.location)
            cached = self._hashers.get(row.id)
            if algorithm == "sha256" and cached is not None and cached[0] == row.size:
                actual_hex = cached[1].hexdigest()
            elif algorithm == "sha256" and row.sha256_so_far:
                actual_hex = row.sha256_so_far  # recorded with the bytes, on another node
            elif algorithm == "sha256":
                actual_hex = (await _in_thread(self._hasher_for, row, driver)).hexdigest()
            else:
                actual_hex = (await _in_thread(self._rehash, row, driver, algorithm)).hexdigest()
            actual = f"{algorithm}:{actual_hex}"
            if actual != digest:
                # Bytes that do not match their digest are never stored.
                await _in_thread(self.cancel, repository_id, upload_id)
                raise DigestInvalid(
                    "provided digest did not match uploaded content",
                    {"expected": digest, "actual": actual},
                )
            info = await _in_thread(self._commit, row, driver, digest)
            self._hashers.pop(upload_id, None)
            blob_uploaded(row.size)
            return info

    # --- housekeeping -----------------------------------------------------------------
    def cleanup_expired(self, max_age_s: int) -> int:
        """Delete uploads untouched for ``max_age_s`` and storage data without a row."""
        cutoff = utcnow() - timedelta(seconds=max_age_s)
        with self._db.session() as session:
            stale = session.execute(
                select(BlobUpload.id, BlobUpload.location, BlobUpload.storage_state).where(
                    BlobUpload.updated_at < cutoff
                )
            ).all()
        removed = 0
        for upload_id, location, state in stale:
            try:
                self._placements.driver(location).cancel_upload(upload_id, state)
            except Exception:
                log.exception("could not remove stale upload %s", upload_id)
                continue
            with self._db.session() as session:
                session.execute(delete(BlobUpload).where(BlobUpload.id == upload_id))
            self._hashers.pop(upload_id, None)
            removed += 1
        for name, driver in self._placements.drivers.items():
            stored = set(driver.list_uploads())
            if not stored:
                continue
            with self._db.session() as session:
                known = set(
                    session.scalars(select(BlobUpload.id).where(BlobUpload.id.in_(stored)))
                )
            for orphan in stored - known:
                log.info("removing orphaned upload data %s in %s", orphan, name)
                driver.cancel_upload(orphan, {})
                removed += 1
        return removed

    # --- internals ------------------------------------------------------------------
    def _lock_for(self, upload_id: str) -> asyncio.Lock:
        lock = self._locks.get(upload_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[upload_id] = lock
        return lock

    def _load(self, repository_id: int, upload_id: str) -> BlobUpload:
        with self._db.session() as session:
            row = session.get(BlobUpload, upload_id) if _valid_upload_id(upload_id) else None
        if row is None or row.repository_id != repository_id:
            raise BlobUploadUnknown("blob upload unknown to registry", {"upload": upload_id})
        return row

    def _rehash(self, row: BlobUpload, driver: StorageDriver, algorithm: str) -> Any:
        hasher = hashlib.new(algorithm)
        remaining = row.size
        for chunk in driver.read_upload(row.id, row.storage_state):
            if remaining <= 0:
                break
            piece = chunk[:remaining]
            hasher.update(piece)
            remaining -= len(piece)
        if remaining:
            raise BlobUploadInvalid(
                "upload data is incomplete in storage; restart the upload",
                {"upload": row.id},
            )
        return hasher

    def _hasher_for(self, row: BlobUpload, driver: StorageDriver) -> Any:
        cached = self._hashers.get(row.id)
        if cached is not None and cached[0] == row.size:
            return cached[1]
        # Nothing stored yet: nothing to read back (a storage round trip on S3).
        hasher = hashlib.sha256() if row.size == 0 else self._rehash(row, driver, "sha256")
        self._remember(row.id, row.size, hasher)
        return hasher

    def _remember(self, upload_id: str, size: int, hasher: Any) -> None:
        if len(self._hashers) >= HASHER_CACHE_LIMIT and upload_id not in self._hashers:
            self._hashers.pop(next(iter(self._hashers)))
        self._hashers[upload_id] = (size, hasher)

    async def _append_locked(self, repository_id: int, upload_id: str,
                             body: AsyncIterator[bytes], start: int | None) -> UploadStatus:
        row = await _in_thread(self._load, repository_id, upload_id)
        if start is not None and start != row.size:
            raise RangeNotSatisfiable(
                f"chunk starts at {start} but the upload holds {row.size} bytes",
                {"upload": upload_id, "size": row.size},
            )
        chunks = body.__aiter__()
        first = await anext(chunks, None)
        if first is None:
            # An empty body (e.g. the final PUT after the last PATCH) changes nothing:
            # no hasher to rebuild, no appender to open.
            return UploadStatus(upload_id, row.size)
        driver = self._placements.driver(row.location)
        hasher = await _in_thread(self._hasher_for, row, driver)
        # From here on the cached hasher is being mutated: forget it until we succeed.
        self._hashers.pop(upload_id, None)
        appender: UploadAppender = await _in_thread(
            driver.append_upload, upload_id, row.storage_state, row.size
        )
        written = 0
        pending: asyncio.Future[list[None]] | None = None

        def dispatch(data: bytes) -> asyncio.Future[list[None]]:
            # Hashing and writing both release the GIL: run them side by side in two
            # threads, while the event loop keeps receiving the next batch.
            return asyncio.gather(_in_thread(hasher.update, data),
                                  _in_thread(appender.write, data))

        try:
            batch: list[bytes] = []
            batch_size = 0
            async for chunk in _prepend(first, chunks):
                if not chunk:
                    continue
                batch.append(chunk)
                batch_size += len(chunk)
                if row.size + written + batch_size > self._max_blob_size:
                    raise TooLarge(
                        f"blob exceeds the maximum layer size of {self._max_blob_size} bytes"
                    )
                if batch_size >= WRITE_BATCH:
                    if pending is not None:
                        await pending  # batches are hashed and written in order
                    data = b"".join(batch)
                    batch, batch_size = [], 0
                    pending = dispatch(data)
                    written += len(data)
            if pending is not None:
                await pending
                pending = None
            if batch:
                data = b"".join(batch)
                await dispatch(data)
                written += len(data)
            state = await _in_thread(appender.close)
        except BaseException:
            if pending is not None:
                await asyncio.gather(pending, return_exceptions=True)
            await _in_thread(appender.abort)
            raise
        new_size = row.size + written
        await _in_thread(self._save_progress, upload_id, row.size, new_size, state,
                         hasher.hexdigest())
        self._remember(upload_id, new_size, hasher)
        return UploadStatus(upload_id, new_size)

    def _save_progress(self, upload_id: str, old_size: int, new_size: int,
                       state: dict[str, Any], sha256_hex: str) -> None:
        with self._db.session() as session:
            result = session.execute(
                update(BlobUpload)
                .where(BlobUpload.id == upload_id, BlobUpload.size == old_size)
                .values(size=new_size, storage_state=state, sha256_so_far=sha256_hex,
                        updated_at=utcnow())
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise BlobUploadUnknown("blob upload was cancelled or changed concurrently",
                                        {"upload": upload_id})

    def _commit(self, row: BlobUpload, driver: StorageDriver, digest: str) -> BlobInfo:
        """Move the verified bytes to their content address and record the blob.

        Runs under the digest's lock (:mod:`portside.services.gc_locks`; on SQLite the
        write transaction itself), which garbage collection also takes before it deletes
        a blob's row and stored objects: the bytes are moved and the row created or
        reused as one step that collection cannot interleave with. ``commit_upload``
        keeps an object already at the path and writes it when missing, so a row whose
        object went away (a collection that could not commit) heals here.
        """
        path = blob_path(digest)
        location = row.location
        for _attempt in range(3):
            try:
                with self._db.session() as session:
                    lock_digests(session, [digest])
                    # Bytes become durable at their content address before any row
                    # points there: a crash leaves at most an unreferenced object.
                    driver.commit_upload(row.id, row.storage_state, path)
                    blob = session.scalar(select(Blob).where(Blob.digest == digest))
                    if blob is None:
                        blob = Blob(digest=digest, size=row.size, locations=[location])
                        session.add(blob)
                        session.flush()
                    elif location not in (blob.locations or []):
                        blob.locations = [*blob.locations, location]
                    touch_link(session, row.repository_id, blob.id)
                    session.execute(delete(BlobUpload).where(BlobUpload.id == row.id))
                    return BlobInfo(blob.id, blob.digest, blob.size, list(blob.locations))
            except IntegrityError:
                continue  # a concurrent upload of the same digest won the insert; re-read
        raise RuntimeError(f"could not record blob {digest}")


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


def _valid_upload_id(upload_id: str) -> bool:
    try:
        uuid.UUID(upload_id)
    except ValueError:
        return False
    return True
