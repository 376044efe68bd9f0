"""Purging repositories and namespaces marked for deletion (see ``gc_marks``).

Everything is deleted in small batches, each its own transaction, so a repository with
millions of tags never holds the (SQLite: only) write lock for long. The repository row
goes last; what still references it then is removed by the database's cascades. The
blobs the repository linked become garbage for the blob step of the same pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import Executable, Select, delete, select

from portside.db.engine import Database
from portside.db.models import (
    BlobUpload,
    Manifest,
    ManifestBlob,
    ManifestChild,
    ManifestLabel,
    Namespace,
    Repository,
    RepositoryBlob,
    Tag,
)
from portside.storage.placements import Placements

log = logging.getLogger(__name__)


class Purger:
    """Deletes the rows of marked repositories and namespaces, batch by batch."""

    def __init__(self, db: Database, placements: Placements, batch: int = 500) -> None:
        self._db = db
        self._placements = placements
        self._batch = batch

    def marked(self) -> tuple[list[int], list[int]]:
        """Ids of marked repositories (incl. those of marked namespaces) and namespaces."""
        with self._db.session() as session:
            repositories = list(
                session.scalars(
                    select(Repository.id)
                    .where(Repository.deleted_at.is_not(None))
                    .order_by(Repository.id)
                )
            )
            namespaces = list(
                session.scalars(
                    select(Namespace.id)
                    .where(Namespace.deleted_at.is_not(None))
                    .order_by(Namespace.id)
                )
            )
        return repositories, namespaces

    def purge_namespace(self, namespace_id: int) -> None:
        """Purge every repository of the namespace, then the namespace row (cascades
        take its teams, robots, policies, quota and applications)."""
        with self._db.session() as session:
            repositories = list(
                session.scalars(
                    select(Repository.id).where(Repository.namespace_id == namespace_id)
                )
            )
        for repository_id in repositories:
            self.purge_repository(repository_id)
        with self._db.session() as session:
            session.execute(
                delete(Namespace).where(
                    Namespace.id == namespace_id, Namespace.deleted_at.is_not(None)
                )
            )

    def purge_repository(self, repository_id: int) -> None:
        """Delete a marked repository's rows in batches, the repository row last."""
        manifests = select(Manifest.id).where(Manifest.repository_id == repository_id)
        self._drain(
            select(Tag.id).where(Tag.repository_id == repository_id),
            lambda ids: [delete(Tag).where(Tag.id.in_(ids))],
        )
        # Child edges first: a child may be listed by a parent of a later batch.
        self._drain(
            select(ManifestChild.manifest_id)
            .where(ManifestChild.manifest_id.in_(manifests))
            .distinct(),
            lambda ids: [delete(ManifestChild).where(ManifestChild.manifest_id.in_(ids))],
        )
        self._drain(
            manifests,
            lambda ids: [
                delete(ManifestBlob).where(ManifestBlob.manifest_id.in_(ids)),
                delete(ManifestLabel).where(ManifestLabel.manifest_id.in_(ids)),
                delete(Manifest).where(Manifest.id.in_(ids)),
            ],
        )
        self._drain(
            select(RepositoryBlob.blob_id).where(RepositoryBlob.repository_id == repository_id),
            lambda ids: [
                delete(RepositoryBlob).where(
                    RepositoryBlob.repository_id == repository_id, RepositoryBlob.blob_id.in_(ids)
                )
            ],
        )
        with self._db.session() as session:
            uploads = session.execute(
                select(BlobUpload.id, BlobUpload.location, BlobUpload.storage_state).where(
                    BlobUpload.repository_id == repository_id
                )
            ).all()
        for upload_id, location, state in uploads:
            try:
                self._placements.driver(location).cancel_upload(upload_id, state)
            except Exception:  # the upload sweep removes leftovers later
                log.exception("could not remove upload %s of a deleted repository", upload_id)
        with self._db.session() as session:
            session.execute(
                delete(Repository).where(
                    Repository.id == repository_id, Repository.deleted_at.is_not(None)
                )
            )

    def _drain(
        self, ids_query: Select[Any], statements: Callable[[list[int]], list[Executable]]
    ) -> None:
        """Repeat: take up to ``batch`` ids, run ``statements(ids)``; until none left."""
        while True:
            with self._db.session() as session:
                ids = list(session.scalars(ids_query.limit(self._batch)))
                if not ids:
                    return
                for statement in statements(ids):
                    session.execute(statement)
