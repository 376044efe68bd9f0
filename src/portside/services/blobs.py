"""Blobs as seen through a repository: lookup, mount, unlink."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portside.db.engine import Database
from portside.db.models import Blob, Manifest, ManifestBlob, RepositoryBlob, utcnow
from portside.services.errors import BlobUnknown, InUse
from portside.services.gc_locks import lock_digests

# Built once: blob HEAD/GET runs this for every layer of every pull.
_BLOB_IN_REPOSITORY = (
    select(Blob.id, Blob.digest, Blob.size, Blob.locations)
    .join(RepositoryBlob, RepositoryBlob.blob_id == Blob.id)
    .where(
        RepositoryBlob.repository_id == bindparam("repository_id"),
        Blob.digest == bindparam("digest"),
    )
)


@dataclass(frozen=True)
class BlobInfo:
    """A blob visible in a repository."""

    id: int
    digest: str
    size: int
    locations: list[str]


class BlobService:
    """Per-repository blob visibility over the global, deduplicated blob table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, repository_id: int, digest: str,
            connection: Connection | None = None) -> BlobInfo:
        """The blob if it is linked to the repository; raises :class:`BlobUnknown`.

        ``connection``: an open read connection to reuse (hot path).
        """
        with self._db.read() if connection is None else nullcontext(connection) as reader:
            row = reader.execute(
                _BLOB_IN_REPOSITORY, {"repository_id": repository_id, "digest": digest}
            ).first()
        if row is None:
            raise BlobUnknown("blob unknown to registry", {"digest": digest})
        return BlobInfo(row.id, row.digest, row.size, list(row.locations or []))

    def repositories_holding(self, digest: str, limit: int = 50) -> list[int]:
        """Ids of repositories the blob is linked into (for automatic mounts)."""
        with self._db.session() as session:
            return list(
                session.scalars(
                    select(RepositoryBlob.repository_id)
                    .join(Blob, Blob.id == RepositoryBlob.blob_id)
                    .where(Blob.digest == digest)
                    .limit(limit)
                )
            )

    def mount(self, from_repository_id: int, to_repository_id: int, digest: str) -> BlobInfo:
        """Link a blob visible in one repository into another.

        Under the digest's lock (see :mod:`portside.services.gc_locks`), with the source
        link re-read inside the transaction: garbage collection, which deletes a blob
        only under the same lock and only when no repository links it, either finishes
        first (the mount then answers :class:`BlobUnknown`) or sees the new link.
        """
        for _attempt in range(3):
            try:
                with self._db.session() as session:
                    lock_digests(session, [digest])
                    row = session.execute(
                        _BLOB_IN_REPOSITORY,
                        {"repository_id": from_repository_id, "digest": digest},
                    ).first()
                    if row is None:
                        raise BlobUnknown("blob unknown to registry", {"digest": digest})
                    touch_link(session, to_repository_id, row.id)
                    return BlobInfo(row.id, row.digest, row.size, list(row.locations or []))
            except IntegrityError:
                continue  # linked concurrently: read again
        return self.get(to_repository_id, digest)

    def unlink(self, repository_id: int, digest: str) -> None:
        """Remove a blob from a repository unless a manifest there still references it."""
        blob = self.get(repository_id, digest)
        with self._db.session() as session:
            referencing = session.scalar(
                select(Manifest.digest)
                .join(ManifestBlob, ManifestBlob.manifest_id == Manifest.id)
                .where(Manifest.repository_id == repository_id, ManifestBlob.blob_id == blob.id)
                .limit(1)
            )
            if referencing is not None:
                raise InUse(
                    f"blob is referenced by manifest {referencing}; delete the manifest first",
                    {"digest": digest},
                )
            session.execute(
                delete(RepositoryBlob).where(
                    RepositoryBlob.repository_id == repository_id,
                    RepositoryBlob.blob_id == blob.id,
                )
            )


def touch_link(session: Session, repository_id: int, blob_id: int) -> None:
    """Link a blob into a repository, or refresh the link's time if it exists.

    A link's ``created_at`` is when a push last vouched for the blob there (upload,
    mount): garbage collection drops a link no manifest references only once the grace
    period (``PUSH_TEMP_TAG_EXPIRATION_SEC``) has passed since then.
    """
    touched = session.execute(
        update(RepositoryBlob)
        .where(RepositoryBlob.repository_id == repository_id,
               RepositoryBlob.blob_id == blob_id)
        .values(created_at=utcnow())
    )
    if touched.rowcount == 0:  # type: ignore[attr-defined]
        session.add(RepositoryBlob(repository_id=repository_id, blob_id=blob_id))
        session.flush()
