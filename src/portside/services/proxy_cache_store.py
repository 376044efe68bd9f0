"""Database writes of the proxy cache: cached repositories, manifests, tags, blob links.

A manifest fetched from the upstream is stored byte for byte *before* its blobs are in
the registry (a pull must not wait for gigabytes of layers before it gets its
manifest). It is linked (``ManifestBlob``, ``ManifestChild``) to the blobs and child
manifests the repository already holds; the others are fetched when first pulled, and
:func:`link_fetched_blob` / the child storing path then add the missing links, so that
garbage collection keeps everything a cached tag reaches. Nothing here trusts a blob the
repository has not itself received from the upstream: blobs stored for other
repositories are never linked by digest alone (visibility stays per repository).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import and_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portside.auth.permissions import Subject
from portside.db.engine import Database
from portside.db.models import (
    Blob,
    Manifest,
    ManifestBlob,
    ManifestChild,
    Namespace,
    Repository,
    RepositoryBlob,
    Tag,
    utcnow,
)
from portside.oci import manifest as oci_manifest
from portside.services.audit import record
from portside.services.default_permissions import apply_default_permissions
from portside.services.gc_locks import lock_digests
from portside.services.manifests import StoredManifest, lock_repository, now_ms, point_tag
from portside.services.tag_history import active_clause

_ATTEMPTS = 3


@dataclass(frozen=True)
class CachedRepository:
    """A repository of a proxy-cache organization."""

    id: int
    namespace: str
    name: str


def ensure_repository(db: Database, namespace_id: int, namespace: str, name: str, *,
                      public: bool, subject: Subject, ip: str | None) -> CachedRepository:
    """The cached repository ``namespace/name``, created (state NORMAL) if missing.

    Unlike a push, the puller gets no rights on it: the organization's rules and its
    default permissions (prototypes) decide who may do what.
    """
    for _attempt in range(_ATTEMPTS):
        try:
            with db.session() as session:
                repo_id = session.scalar(select(Repository.id).where(
                    Repository.namespace_id == namespace_id, Repository.name == name))
                if repo_id is None:
                    repo = Repository(namespace_id=namespace_id, name=name, public=public,
                                      state="NORMAL")
                    session.add(repo)
                    session.flush()
                    repo_id = repo.id
                    owner = session.get(Namespace, namespace_id)
                    if owner is not None:
                        apply_default_permissions(session, owner, repo.id, subject.user_id)
                    record(session, "create_repo", performer=subject,
                           namespace_id=namespace_id, repository_id=repo.id, ip=ip,
                           metadata={"repo": name, "namespace": namespace,
                                     "proxy_cache": True})
                return CachedRepository(repo_id, namespace, name)
        except IntegrityError:
            continue  # created concurrently by another pull: read it
    raise RuntimeError(f"could not create cached repository {namespace}/{name}")


def store_manifest(db: Database, repository_id: int, digest: str, raw: bytes,
                   parsed: oci_manifest.ParsedManifest, tag: str | None,
                   expiration_s: int) -> StoredManifest:
    """Store (or reuse) a manifest from the upstream; point ``tag`` at it with an expiry
    of now + ``expiration_s``. Blobs and children not yet cached may be missing."""
    for _attempt in range(_ATTEMPTS):
        try:
            with db.session() as session:
                lock_repository(session, repository_id)
                lock_digests(session, (d.digest for d in parsed.blob_descriptors()))
                manifest_id = session.scalar(select(Manifest.id).where(
                    Manifest.repository_id == repository_id, Manifest.digest == digest))
                if manifest_id is None:
                    manifest = Manifest(
                        repository_id=repository_id, digest=digest,
                        media_type=parsed.media_type,
                        artifact_type=parsed.effective_artifact_type,
                        subject_digest=parsed.subject.digest if parsed.subject else None,
                        size=len(raw), content=raw)
                    session.add(manifest)
                    session.flush()
                    manifest_id = manifest.id
                    _link_present(session, repository_id, manifest_id, parsed)
                    _link_to_parents(session, repository_id, manifest_id, digest)
                else:
                    # Fetched again: its grace period against collection starts anew.
                    session.execute(update(Manifest).where(Manifest.id == manifest_id)
                                    .values(created_at=utcnow()))
                if tag is not None:
                    point_tag(session, repository_id, tag, manifest_id)
                    _set_expiry(session, repository_id, tag, expiration_s)
            return StoredManifest(digest, parsed.media_type, raw,
                                  parsed.subject.digest if parsed.subject else None)
        except IntegrityError:
            continue  # a concurrent pull stored it first: retry, reusing its rows
    raise RuntimeError("could not store the cached manifest after concurrent updates")


def renew_tag(db: Database, repository_id: int, tag: str, expiration_s: int) -> None:
    """A pull of a cached tag: it expires ``expiration_s`` from now."""
    with db.session() as session:
        _set_expiry(session, repository_id, tag, expiration_s)


def link_fetched_blob(db: Database, repository_id: int, blob_id: int, digest: str) -> None:
    """A blob of the repository arrived from the upstream: link it to every cached
    manifest of the repository that references it (and was stored without it)."""
    needle = digest.encode()
    for _attempt in range(_ATTEMPTS):
        try:
            with db.session() as session:
                lock_digests(session, [digest])
                candidates = session.execute(
                    select(Manifest.id, Manifest.content)
                    .outerjoin(ManifestBlob, and_(ManifestBlob.manifest_id == Manifest.id,
                                                  ManifestBlob.blob_id == blob_id))
                    .where(Manifest.repository_id == repository_id,
                           ManifestBlob.blob_id.is_(None))
                ).all()
                for manifest_id, content in candidates:
                    if needle not in content:  # cheap filter before parsing
                        continue
                    try:
                        parsed = oci_manifest.parse_manifest(content, None)
                    except (oci_manifest.ManifestInvalid, oci_manifest.ManifestUnsupported):
                        continue
                    if any(d.digest == digest for d in parsed.blob_descriptors()):
                        session.add(ManifestBlob(manifest_id=manifest_id, blob_id=blob_id))
            return
        except IntegrityError:
            continue  # linked concurrently by another pull of the same blob: look again


# --- helpers ------------------------------------------------------------------------------
def _set_expiry(session: Session, repository_id: int, tag: str, expiration_s: int) -> None:
    now = now_ms()
    session.execute(
        update(Tag)
        .where(Tag.repository_id == repository_id, Tag.name == tag, active_clause(now))
        .values(expiration_ms=now + expiration_s * 1000)
    )


def _link_present(session: Session, repository_id: int, manifest_id: int,
                  parsed: oci_manifest.ParsedManifest) -> None:
    """Link the blobs and child manifests the repository already holds."""
    blobs = {d.digest: d.size for d in parsed.blob_descriptors()}
    if blobs:
        rows = session.execute(
            select(Blob.id, Blob.digest, Blob.size)
            .join(RepositoryBlob, and_(RepositoryBlob.blob_id == Blob.id,
                                       RepositoryBlob.repository_id == repository_id))
            .where(Blob.digest.in_(blobs))
        ).all()
        session.add_all(ManifestBlob(manifest_id=manifest_id, blob_id=row.id)
                        for row in rows if blobs[row.digest] == row.size)
    children = {d.digest for d in parsed.children}
    if children:
        child_ids = session.scalars(select(Manifest.id).where(
            Manifest.repository_id == repository_id, Manifest.digest.in_(children)))
        session.add_all(ManifestChild(manifest_id=manifest_id, child_id=child_id)
                        for child_id in set(child_ids))


def _link_to_parents(session: Session, repository_id: int, manifest_id: int,
                     digest: str) -> None:
    """A child manifest arrived after its index: link it under every cached index of
    the repository that lists it (indexes stay the roots that keep their children)."""
    needle = digest.encode()
    rows = session.execute(select(Manifest.id, Manifest.content).where(
        Manifest.repository_id == repository_id, Manifest.id != manifest_id)).all()
    for parent_id, content in rows:
        if needle not in content:
            continue
        try:
            document = json.loads(content)
        except ValueError:
            continue
        children = document.get("manifests") if isinstance(document, dict) else None
        if isinstance(children, list) and any(
                isinstance(c, dict) and c.get("digest") == digest for c in children):
            session.add(ManifestChild(manifest_id=parent_id, child_id=manifest_id))
