"""Copying content from an upstream repository into a Portside repository, and the
tag changes of a sync (with what is needed to undo them).

Blobs are streamed from the upstream into storage through :class:`UploadService` (which
verifies the digest before the blob becomes visible); a blob already stored anywhere in
the registry is only linked into the repository, under its digest lock. Manifests go
through :meth:`ManifestService.put`, children of an index before the index, so every
manifest stored references only content already present.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import anyio.to_thread
from sqlalchemy import select, update

from portside.db.engine import Database
from portside.db.models import Blob, Manifest, Tag
from portside.oci import manifest as oci_manifest
from portside.services.audit import AuditContext, record_for_repository
from portside.services.blobs import touch_link
from portside.services.errors import ManifestUnknown
from portside.services.gc_locks import lock_digests
from portside.services.manifests import ManifestService, lock_repository, now_ms, point_tag
from portside.services.tag_history import active_clause
from portside.services.uploads import UploadService
from portside.services.upstream import FetchedManifest, UpstreamClient, UpstreamError

__all__ = ["ContentCopier", "CurrentTag", "TagChanges", "current_tags", "rollback_tags"]


@dataclass(frozen=True)
class CurrentTag:
    """An active tag of the local repository."""

    manifest_id: int
    digest: str


#: For each tag a sync changed: the manifest id it pointed at before (``None``: the
#: tag did not exist). Only the first change of a tag is remembered.
TagChanges = dict[str, int | None]


def current_tags(db: Database, repository_id: int) -> dict[str, CurrentTag]:
    """The repository's active tags."""
    with db.read() as connection:
        rows = connection.execute(
            select(Tag.name, Tag.manifest_id, Manifest.digest)
            .join(Manifest, Manifest.id == Tag.manifest_id)
            .where(Tag.repository_id == repository_id, active_clause(now_ms()))
        ).all()
    return {row.name: CurrentTag(row.manifest_id, row.digest) for row in rows}


class ContentCopier:
    """Copies one upstream repository's manifests and blobs into one local repository.

    ``checkpoint`` is awaited before each blob and manifest: it raises to stop the copy
    (cancel, lost claim).
    """

    def __init__(self, db: Database, uploads: UploadService, manifests: ManifestService,
                 client: UpstreamClient, upstream_repository: str, repository_id: int,
                 audit: AuditContext, architectures: list[str],
                 checkpoint: Callable[[], Awaitable[None]]) -> None:
        self._db = db
        self._uploads = uploads
        self._manifests = manifests
        self._client = client
        self._upstream = upstream_repository
        self._repository_id = repository_id
        self._audit = audit
        self._architectures = architectures
        self._checkpoint = checkpoint
        #: Bytes fetched from the upstream for blobs (for the sync's log line).
        self.blob_bytes = 0
        self.blobs_fetched = 0
        self.blobs_linked = 0

    # --- tags -------------------------------------------------------------------------
    async def sync_tag(self, tag: str, current: CurrentTag | None,
                       changes: TagChanges) -> bool:
        """Make ``tag`` point at what the upstream's tag points at. Returns ``False``
        when the upstream has no such tag any more."""
        head = await self._client.head_manifest(self._upstream, tag)
        if head is None:
            return False
        digest, _media_type = head
        if current is not None and current.digest == digest:
            return True  # unchanged (an index filtered by architecture never matches)
        fetched = await self._client.get_manifest(self._upstream, digest)
        raw, media_type = await self._copy_manifest(fetched, top=True)
        changes.setdefault(tag, current.manifest_id if current else None)
        await anyio.to_thread.run_sync(
            lambda: self._manifests.put(self._repository_id, tag, media_type, raw,
                                        audit=self._audit))
        return True

    def remove_tag(self, tag: str, current: CurrentTag, changes: TagChanges) -> None:
        """Delete a tag the rules or the upstream no longer have (blocking)."""
        changes.setdefault(tag, current.manifest_id)
        with contextlib.suppress(ManifestUnknown):  # gone meanwhile: nothing to do
            self._manifests.delete(self._repository_id, tag, audit=self._audit)

    # --- manifests --------------------------------------------------------------------
    async def _copy_manifest(self, fetched: FetchedManifest, top: bool) -> tuple[bytes, str]:
        """Store everything ``fetched`` references; returns the bytes and type to store
        for it (an index filtered by architecture is rewritten)."""
        try:
            parsed = oci_manifest.parse_manifest(fetched.content, fetched.media_type)
        except (oci_manifest.ManifestInvalid, oci_manifest.ManifestUnsupported) as exc:
            raise UpstreamError(f"manifest {fetched.digest}: {exc}") from None
        if not parsed.is_index:
            for descriptor in parsed.blob_descriptors():
                await self._copy_blob(descriptor.digest)
            return fetched.content, fetched.media_type
        children = list(parsed.children)
        if self._architectures and top:
            children = [c for c in children
                        if (c.platform or {}).get("architecture") in self._architectures]
            if not children:
                raise UpstreamError(
                    f"index {fetched.digest} has no manifest for the architectures "
                    f"{', '.join(self._architectures)}")
        for child in children:
            await self._ensure_manifest(child.digest)
        if len(children) == len(parsed.children):
            return fetched.content, fetched.media_type  # copied whole: same digest
        document = json.loads(fetched.content)
        keep = {c.digest for c in children}
        document["manifests"] = [m for m in document["manifests"] if m.get("digest") in keep]
        return json.dumps(document, separators=(",", ":")).encode(), fetched.media_type

    async def _ensure_manifest(self, digest: str) -> None:
        """Store the manifest ``digest`` (and what it references) unless present."""
        await self._checkpoint()
        present = await anyio.to_thread.run_sync(self._manifest_present, digest)
        if present:
            return
        fetched = await self._client.get_manifest(self._upstream, digest)
        raw, media_type = await self._copy_manifest(fetched, top=False)
        await anyio.to_thread.run_sync(
            lambda: self._manifests.put(self._repository_id, digest, media_type, raw,
                                        audit=self._audit))

    def _manifest_present(self, digest: str) -> bool:
        with self._db.read() as connection:
            return connection.execute(
                select(Manifest.id).where(Manifest.repository_id == self._repository_id,
                                          Manifest.digest == digest)
            ).first() is not None

    # --- blobs ------------------------------------------------------------------------
    async def _copy_blob(self, digest: str) -> None:
        await self._checkpoint()
        if await anyio.to_thread.run_sync(self._link_existing, digest):
            self.blobs_linked += 1
            return
        stream = await self._client.open_blob(self._upstream, digest)
        status = await anyio.to_thread.run_sync(self._uploads.start, self._repository_id)
        counted = self._count(stream.chunks)
        try:
            await self._uploads.finish(self._repository_id, status.id, digest, body=counted)
        except BaseException:
            with contextlib.suppress(Exception):
                await anyio.to_thread.run_sync(self._uploads.cancel, self._repository_id,
                                               status.id)
            raise
        finally:
            with contextlib.suppress(Exception):
                await stream.chunks.aclose()  # type: ignore[attr-defined]
        self.blobs_fetched += 1

    async def _count(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            self.blob_bytes += len(chunk)
            yield chunk

    def _link_existing(self, digest: str) -> bool:
        """Link a blob the registry already stores into the repository (no download);
        ``False`` when it is not stored. Under the digest's lock: garbage collection
        either deleted the row first or sees the new link."""
        with self._db.session() as session:
            lock_digests(session, [digest])
            blob_id = session.scalar(select(Blob.id).where(Blob.digest == digest))
            if blob_id is None:
                return False
            touch_link(session, self._repository_id, blob_id)
            return True


def rollback_tags(db: Database, repository_id: int, changes: TagChanges,
                  audit: AuditContext | None) -> list[str]:
    """Put every tag a sync changed back as it was (blocking). Returns the tags that could
    not be restored (e.g. their old manifest was garbage-collected meanwhile)."""
    failed: list[str] = []
    for tag, previous in changes.items():
        try:
            with db.session() as session:
                lock_repository(session, repository_id)
                if previous is None:
                    now = now_ms()
                    ended = session.execute(
                        update(Tag).where(Tag.repository_id == repository_id,
                                          Tag.name == tag, active_clause(now))
                        .values(lifetime_end_ms=now))
                    if ended.rowcount:  # type: ignore[attr-defined]
                        record_for_repository(session, "delete_tag",
                                              repository_id, audit,
                                              tag=tag, reason="mirror rollback")
                    continue
                digest = session.scalar(select(Manifest.digest).where(
                    Manifest.id == previous,
                    Manifest.repository_id == repository_id))
                if digest is None:
                    failed.append(tag)
                    continue
                before = point_tag(session, repository_id, tag, previous,
                                   reversion=True)
                if before != previous:
                    record_for_repository(session, "revert_tag", repository_id,
                                          audit, tag=tag, manifest_digest=digest,
                                          reason="mirror rollback")
        except Exception:  # one tag must not keep the others from being restored
            failed.append(tag)
    return failed
