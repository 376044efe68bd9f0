"""Manifests and tags: push, pull, delete, referrers.

A manifest is accepted only when everything it references is already in the
repository (blobs for image manifests, manifests for indexes), so a pull of anything
the registry acknowledged always succeeds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

from sqlalchemy import Connection, Row, and_, bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portside.db.engine import Database
from portside.db.models import (
    Blob,
    Manifest,
    ManifestBlob,
    ManifestChild,
    Repository,
    RepositoryBlob,
    Tag,
    utcnow,
)
from portside.oci import manifest as oci_manifest
from portside.oci import mediatypes as mt
from portside.oci.digest import InvalidDigest, digest_of, is_digest, parse_digest
from portside.oci.names import is_valid_tag
from portside.services.audit import AuditContext, record_for_repository
from portside.services.errors import (
    DigestInvalid,
    InUse,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    TooLarge,
    UnsupportedMediaType,
)
from portside.services.gc_locks import lock_digests
from portside.services.labels import insert_manifest_labels, read_config_labels
from portside.services.notification_events import emit_event
from portside.services.quotas import QuotaExceeded, QuotaGuard, announce_quota_error
from portside.services.tag_history import active_clause, end_lapsed, is_lapsed, label_expiry_s
from portside.storage.placements import Placements


@dataclass(frozen=True)
class StoredManifest:
    """A manifest as served to clients."""

    digest: str
    media_type: str
    content: bytes
    subject_digest: str | None = None


@dataclass(frozen=True)
class PushedManifest:
    """The outcome of a manifest ``PUT``."""

    digest: str
    subject_digest: str | None


_COLUMNS = (Manifest.digest, Manifest.media_type, Manifest.content, Manifest.subject_digest)
# Built once: manifest GETs are the registry's hottest path.
_BY_DIGEST = select(*_COLUMNS).where(
    Manifest.repository_id == bindparam("repository_id"),
    Manifest.digest == bindparam("reference"),
)
_BY_TAG = (
    select(*_COLUMNS)
    .join(Tag, Tag.manifest_id == Manifest.id)
    .where(
        Tag.repository_id == bindparam("repository_id"),
        Tag.name == bindparam("reference"),
        # "now" is bound per request: an expired tag is gone at once, without a query.
        active_clause(bindparam("now")),
    )
)


def _match_descriptors(descriptors: Iterable[oci_manifest.Descriptor],
                       rows: Sequence[Row[int, str, int]],
                       kind: str) -> set[int]:
    """Check every descriptor against the stored ``rows`` (id, digest, size) it names.

    A missing target is ``MANIFEST_BLOB_UNKNOWN``; a size that differs from what is
    stored is ``MANIFEST_INVALID``. Returns the ids of the rows referenced.
    """
    found = {row.digest: row for row in rows}
    for descriptor in descriptors:
        row = found.get(descriptor.digest)
        if row is None:
            raise ManifestBlobUnknown(
                f"manifest references {kind} {descriptor.digest} that is not in the repository",
                {"digest": descriptor.digest},
            )
        if row.size != descriptor.size:
            raise ManifestInvalid(
                f"descriptor size {descriptor.size} of {descriptor.digest} does not match "
                f"the stored {kind}'s size {row.size}",
                {"digest": descriptor.digest},
            )
    return {row.id for row in rows}


def now_ms() -> int:
    """Current time in milliseconds (tag lifetimes)."""
    return int(time.time() * 1000)


def check_reference(reference: str) -> None:
    """Validate a manifest reference (tag or digest) from a URL."""
    if is_digest(reference):
        try:
            parse_digest(reference)
        except InvalidDigest as exc:
            raise DigestInvalid(str(exc), {"reference": reference[:200]}) from None
    elif not is_valid_tag(reference):
        raise ManifestInvalid("invalid tag name", {"reference": reference[:200]})


class ManifestService:
    """Stores, resolves and deletes manifests and tags of a repository."""

    def __init__(self, db: Database, max_manifest_size: int,
                 placements: Placements | None = None,
                 quotas: QuotaGuard | None = None) -> None:
        self._db = db
        self.max_manifest_size = max_manifest_size
        #: Storage quota check of pushes (``None``: quota management is off).
        self._quotas = quotas
        #: Where image configs are read from for their labels (``None``: not read).
        self._placements = placements

    # --- read -------------------------------------------------------------------
    def get(self, repository_id: int, reference: str,
            connection: Connection | None = None) -> StoredManifest:
        """Resolve a tag or digest; raises :class:`ManifestUnknown`.

        ``connection``: an open read connection to reuse (hot path).
        """
        check_reference(reference)
        query = _BY_DIGEST if is_digest(reference) else _BY_TAG
        with self._db.read() if connection is None else nullcontext(connection) as reader:
            row = reader.execute(
                query, {"repository_id": repository_id, "reference": reference,
                        "now": now_ms()}
            ).first()
        if row is None:
            raise ManifestUnknown("manifest unknown", {"reference": reference})
        return StoredManifest(row.digest, row.media_type, row.content, row.subject_digest)

    def tags(self, repository_id: int, last: str | None, limit: int | None) -> list[str]:
        """Active tag names in lexical order, after ``last``, at most ``limit``."""
        query = select(Tag.name).where(
            Tag.repository_id == repository_id, active_clause(now_ms())
        )
        if last:
            query = query.where(Tag.name > last)
        query = query.order_by(Tag.name)
        if limit is not None:
            query = query.limit(limit)
        with self._db.session() as session:
            return list(session.scalars(query))

    def referrers(self, repository_id: int, subject: str,
                  artifact_type: str | None) -> bytes:
        """An OCI index of the manifests whose ``subject`` is ``subject``."""
        try:
            parse_digest(subject)
        except InvalidDigest as exc:
            raise DigestInvalid(str(exc), {"digest": subject[:200]}) from None
        query = select(Manifest.digest, Manifest.media_type, Manifest.size,
                       Manifest.artifact_type, Manifest.content).where(
            Manifest.repository_id == repository_id, Manifest.subject_digest == subject
        )
        if artifact_type:
            query = query.where(Manifest.artifact_type == artifact_type)
        with self._db.session() as session:
            rows = session.execute(query.order_by(Manifest.id)).all()
        descriptors = []
        for row in rows:
            descriptor: dict[str, object] = {
                "mediaType": row.media_type,
                "digest": row.digest,
                "size": row.size,
            }
            if row.artifact_type:
                descriptor["artifactType"] = row.artifact_type
            annotations = json.loads(row.content).get("annotations")
            if annotations:
                descriptor["annotations"] = annotations
            descriptors.append(descriptor)
        index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": descriptors}
        return json.dumps(index, separators=(",", ":")).encode()

    # --- write ------------------------------------------------------------------
    def put(self, repository_id: int, reference: str, content_type: str | None,
            raw: bytes, *, audit: AuditContext | None = None) -> PushedManifest:
        """Validate and store a manifest; point the tag at it when ``reference`` is one.

        Records Quay's ``push_repo`` entry (tag and digest) in the same transaction.
        """
        check_reference(reference)
        if len(raw) > self.max_manifest_size:
            raise TooLarge(f"manifest exceeds the maximum size of {self.max_manifest_size} bytes")
        if is_digest(reference):
            algorithm = reference.split(":", 1)[0]
            digest = digest_of(raw, algorithm)
            if digest != reference:
                raise DigestInvalid(
                    "manifest digest does not match the content",
                    {"expected": reference, "actual": digest},
                )
        else:
            digest = digest_of(raw)
        try:
            parsed = oci_manifest.parse_manifest(raw, content_type)
        except oci_manifest.ManifestUnsupported as exc:
            raise UnsupportedMediaType(str(exc)) from None
        except oci_manifest.ManifestInvalid as exc:
            raise ManifestInvalid(str(exc)) from None
        tag = None if is_digest(reference) else reference
        # Read before the transaction: a storage round trip must not hold the lock.
        labels = ({} if self._placements is None
                  else read_config_labels(self._db, self._placements, repository_id, parsed))
        for _attempt in range(3):
            try:
                with self._db.session() as session:
                    lock_repository(session, repository_id)
                    # Garbage collection deletes a blob only under its digest's lock.
                    lock_digests(session, (d.digest for d in parsed.blob_descriptors()))
                    if self._quotas is not None:  # refuses before anything is stored
                        self._quotas.check_push(session, repository_id, parsed, audit)
                    manifest_id = self._store(session, repository_id, digest, raw, parsed,
                                              labels)
                    if tag is not None:
                        point_tag(session, repository_id, tag, manifest_id)
                    pushed: dict[str, str] = {"manifest_digest": digest}
                    if tag is not None:
                        pushed["tag"] = tag
                    record_for_repository(session, "push_repo", repository_id, audit, **pushed)
                    if tag is not None:
                        emit_event(session, repository_id, "repo_push", {"updated_tags": [tag]})
                break
            except IntegrityError:
                continue  # a concurrent push of the same manifest or tag; re-read and retry
            except QuotaExceeded as exc:
                announce_quota_error(self._db, repository_id, exc)
                raise
        else:
            raise RuntimeError("could not store manifest after concurrent updates")
        return PushedManifest(digest, parsed.subject.digest if parsed.subject else None)

    def delete(self, repository_id: int, reference: str, *,
               audit: AuditContext | None = None) -> None:
        """Delete a tag (only the tag) or a manifest by digest (with its tags).

        Records Quay's ``delete_tag`` for each tag removed, in the same transaction.
        """
        check_reference(reference)
        with self._db.session() as session:
            from portside.services.immutability import (  # import cycle
                TagImmutable,
                check_mutable,
                immutable_tags,
            )

            if not is_digest(reference):
                check_mutable(session, repository_id, reference)
                now = now_ms()
                result = session.execute(
                    update(Tag)
                    .where(Tag.repository_id == repository_id, Tag.name == reference,
                           active_clause(now))
                    .values(lifetime_end_ms=now)
                )
                if result.rowcount == 0:  # type: ignore[attr-defined]
                    raise ManifestUnknown("tag unknown", {"reference": reference})
                record_for_repository(session, "delete_tag", repository_id, audit,
                                      tag=reference)
                return
            manifest = session.scalar(
                select(Manifest).where(Manifest.repository_id == repository_id,
                                       Manifest.digest == reference)
            )
            if manifest is None:
                raise ManifestUnknown("manifest unknown", {"reference": reference})
            parent = session.scalar(
                select(Manifest.digest)
                .join(ManifestChild, ManifestChild.manifest_id == Manifest.id)
                .where(ManifestChild.child_id == manifest.id)
                .limit(1)
            )
            if parent is not None:
                raise InUse(
                    f"manifest is referenced by index {parent}; delete the index first",
                    {"digest": reference},
                )
            active = list(session.scalars(select(Tag.name).where(
                Tag.manifest_id == manifest.id, active_clause(now_ms()))))
            refused = sorted(immutable_tags(session, repository_id, active))
            if refused:
                raise TagImmutable(refused[0])
            for tag_name in active:
                record_for_repository(session, "delete_tag", repository_id, audit,
                                      tag=tag_name, manifest_digest=reference)
            session.execute(delete(Tag).where(Tag.manifest_id == manifest.id))
            session.execute(delete(ManifestBlob).where(ManifestBlob.manifest_id == manifest.id))
            session.execute(
                delete(ManifestChild).where(ManifestChild.manifest_id == manifest.id)
            )
            session.delete(manifest)

    # --- internals ----------------------------------------------------------------
    def _store(self, session: Session, repository_id: int, digest: str, raw: bytes,
               parsed: oci_manifest.ParsedManifest,
               labels: Mapping[str, str] | None = None) -> int:
        existing = session.scalar(
            select(Manifest.id).where(Manifest.repository_id == repository_id,
                                      Manifest.digest == digest)
        )
        if existing is not None:
            # A push vouches for the manifest again: its grace period against garbage
            # collection (when untagged) starts anew, e.g. for an index's children.
            session.execute(update(Manifest).where(Manifest.id == existing)
                            .values(created_at=utcnow()))
            return existing
        blob_ids = self._check_blobs(session, repository_id, parsed)
        child_ids = self._check_children(session, repository_id, parsed)
        manifest = Manifest(
            repository_id=repository_id,
            digest=digest,
            media_type=parsed.media_type,
            artifact_type=parsed.effective_artifact_type,
            subject_digest=parsed.subject.digest if parsed.subject else None,
            size=len(raw),
            content=raw,
        )
        session.add(manifest)
        session.flush()
        session.add_all(ManifestBlob(manifest_id=manifest.id, blob_id=b) for b in blob_ids)
        session.add_all(ManifestChild(manifest_id=manifest.id, child_id=c) for c in child_ids)
        if labels:
            insert_manifest_labels(session, manifest.id, labels)
        return manifest.id

    @staticmethod
    def _check_blobs(session: Session, repository_id: int,
                     parsed: oci_manifest.ParsedManifest) -> set[int]:
        descriptors = parsed.blob_descriptors()
        if not descriptors:
            return set()
        wanted = {d.digest for d in descriptors}
        rows = session.execute(
            select(Blob.id, Blob.digest, Blob.size)
            .join(RepositoryBlob, and_(RepositoryBlob.blob_id == Blob.id,
                                       RepositoryBlob.repository_id == repository_id))
            .where(Blob.digest.in_(wanted))
        ).all()
        return _match_descriptors(descriptors, rows, "blob")

    @staticmethod
    def _check_children(session: Session, repository_id: int,
                        parsed: oci_manifest.ParsedManifest) -> set[int]:
        if not parsed.children:
            return set()
        wanted = {d.digest for d in parsed.children}
        rows = session.execute(
            select(Manifest.id, Manifest.digest, Manifest.size).where(
                Manifest.repository_id == repository_id, Manifest.digest.in_(wanted)
            )
        ).all()
        return _match_descriptors(parsed.children, rows, "manifest")


def lock_repository(session: Session, repository_id: int) -> None:
    """Serialise manifest and tag writes in one repository until the commit.

    Without it, concurrent pushes of one tag on PostgreSQL all end the same active
    row and then collide on the new one, often enough to exhaust the retries. SQLite
    has a single writer already (it ignores ``FOR UPDATE``).
    """
    session.execute(
        select(Repository.id).where(Repository.id == repository_id).with_for_update()
    )


def point_tag(session: Session, repository_id: int, name: str, manifest_id: int, *,
              reversion: bool = False) -> int | None:
    """Point tag ``name`` at a manifest, as a push and the tag API do.

    Returns the id of the manifest the tag pointed at before (``None``: the tag was not
    active); nothing changes when that is ``manifest_id`` already. The new lifetime
    expires as the manifest's ``quay.expires-after`` label says, except for a restore
    (``reversion``, Quay's flag on the new row). Call it after :func:`lock_repository`,
    in the caller's transaction.
    """
    current = session.execute(
        select(Tag.id, Tag.manifest_id, Tag.expiration_ms).where(
            Tag.repository_id == repository_id, Tag.name == name,
            Tag.lifetime_end_ms.is_(None)
        )
    ).first()
    now = now_ms()
    if (current is not None and current.expiration_ms is not None
            and is_lapsed(None, current.expiration_ms, now)):
        # Expired but not yet ended by garbage collection: end it now, so the new row
        # does not collide with it on the unique index of active names.
        end_lapsed(session, current.id, current.expiration_ms)
        current = None
    if current is not None and current.manifest_id == manifest_id:
        return manifest_id
    if current is not None:
        # Only a move needs the check: pushing a new tag never touches an immutable one.
        from portside.services.immutability import check_mutable  # import cycle

        check_mutable(session, repository_id, name)
    expires_after_s = None if reversion else label_expiry_s(session, manifest_id)
    if current is not None:
        # Moving a tag ends its current lifetime and starts a new one (tag history).
        session.execute(update(Tag).where(Tag.id == current.id).values(lifetime_end_ms=now))
    session.add(Tag(repository_id=repository_id, name=name, manifest_id=manifest_id,
                    lifetime_start_ms=now, reversion=reversion,
                    expiration_ms=(now + expires_after_s * 1000
                                   if expires_after_s is not None else None)))
    session.flush()
    return current.manifest_id if current is not None else None
