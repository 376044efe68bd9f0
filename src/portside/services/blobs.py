"""Blobs as seen through a repository: lookup, mount, unlink."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, delete, select
from sqlalchemy.exc import IntegrityError

from portside.db.engine import Database
from portside.db.models import Blob, Manifest, ManifestBlob, RepositoryBlob
from portside.services.errors import BlobUnknown, InUse

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
        """Link a blob visible in one repository into another."""
        blob = self.get(from_repository_id, digest)
        try:
            with self._db.session() as session:
                exists = session.get(RepositoryBlob, (to_repository_id, blob.id))
                if exists is None:
                    session.add(RepositoryBlob(repository_id=to_repository_id, blob_id=blob.id))
        except IntegrityError:
            pass  # linked concurrently: the outcome is the same
        return blob

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
