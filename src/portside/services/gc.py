"""Online garbage collection: one pass removes what nothing can reach any more, while
the registry keeps serving pushes and pulls.

A pass, each step in small transactions (SQLite has one writer; pushes go between):

1. end active tags whose ``expiration_ms`` passed (``lifetime_end_ms = expiration_ms``),
   except immutable ones (flag or immutability policy);
2. delete ended tag rows older than their namespace's time-machine window;
3. purge repositories and namespaces marked for deletion (``gc_purge``);
4. delete manifests nothing reaches any more (``gc_reach``), under the repository's
   lock, re-checked inside the deleting transaction; the links of their blobs are
   refreshed, so those blobs stay for the grace period before step 5 drops them;
5. drop repository links to blobs that no manifest of the repository references and
   that no push vouched for during the grace period (upload, mount);
6. delete blobs that no manifest references and no repository links, older than the
   grace period: under the digests' locks (``gc_locks``, one round trip per batch),
   references re-checked, the stored objects of the batch deleted in every location
   (a few in parallel), then the rows of the blobs whose objects are all gone, then the
   commit -- a blob whose object could not be deleted keeps its row for a later pass;
7. remove abandoned uploads.

The grace period is ``PUSH_TEMP_TAG_EXPIRATION_SEC``. A dry run computes the same
counts and changes nothing but its own ``gc_run`` record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, and_, cast, delete, exists, func, literal, select, update
from sqlalchemy.orm import Session

from portside.db.engine import Database
from portside.db.models import (
    Blob,
    BlobUpload,
    GcRun,
    Manifest,
    ManifestBlob,
    ManifestChild,
    ManifestLabel,
    Namespace,
    Repository,
    RepositoryBlob,
    Tag,
    utcnow,
)
from portside.services.gc_locks import lock_digests, try_gc_lock
from portside.services.gc_purge import Purger
from portside.services.gc_reach import ManifestNode, unreachable
from portside.services.manifests import lock_repository, now_ms
from portside.services.uploads import UploadService
from portside.storage.layout import blob_path
from portside.storage.placements import Placements

log = logging.getLogger(__name__)

#: Rows handled per transaction.
BATCH = 200
#: Unreachable manifests deleted per transaction (the repository's reachability is
#: computed again, under its lock, for every transaction).
MANIFEST_BATCH = 500
#: Repository links examined per scan (dropped in one transaction per repository).
LINK_SCAN = 2000
#: Blobs deleted per transaction; each also costs a storage delete per location, made
#: while the transaction holds the digests' locks. SQLite's single write lock stops
#: every push meanwhile, so its batches stay small enough to hold it only briefly;
#: PostgreSQL's per-digest locks only stop uploads of these very digests.
BLOB_BATCH_SQLITE = 100
BLOB_BATCH = 500
#: Garbage-blob candidates read per scan (then deleted batch by batch).
CANDIDATE_SCAN = 10_000
#: Threads deleting one batch's stored objects (object stores and fsyncs are latency
#: bound, not CPU bound).
STORAGE_THREADS = 16

#: The counters of ``portside gc run --json``, in order.
COUNTERS = (
    "tags_expired",
    "manifests_deleted",
    "blobs_deleted",
    "bytes_reclaimed",
    "uploads_deleted",
    "repositories_purged",
    "namespaces_purged",
)


@dataclass
class GcReport:
    """What one pass did (or, for a dry run, would do)."""

    dry_run: bool = False
    tags_expired: int = 0
    #: Ended tag rows deleted past their namespace's window.
    history_deleted: int = 0
    manifests_deleted: int = 0
    links_dropped: int = 0
    blobs_deleted: int = 0
    bytes_reclaimed: int = 0
    uploads_deleted: int = 0
    repositories_purged: int = 0
    namespaces_purged: int = 0
    duration_s: float = 0.0
    #: Another pass held the lock: this one did nothing.
    skipped: bool = False
    error: str | None = None
    started_at: datetime | None = field(default=None, repr=False)

    def counters(self) -> dict[str, Any]:
        """The ``GcRun`` counters with ``duration_s`` and ``dry_run`` (``--json``)."""
        data = {name: getattr(self, name) for name in COUNTERS}
        data["duration_s"] = round(self.duration_s, 3)
        data["dry_run"] = self.dry_run
        return data

    def summary(self) -> str:
        """One line for the log and the CLI."""
        if self.skipped:
            return "gc: skipped, another pass is running"
        kind = "gc dry run" if self.dry_run else "gc"
        line = (
            f"{kind}: {self.tags_expired} tags expired, {self.history_deleted} history "
            f"rows deleted, {self.manifests_deleted} manifests, {self.links_dropped} "
            f"links, {self.blobs_deleted} blobs ({self.bytes_reclaimed} bytes), "
            f"{self.uploads_deleted} uploads, {self.repositories_purged} repositories, "
            f"{self.namespaces_purged} namespaces in {self.duration_s:.2f}s"
        )
        return line + (f"; error: {self.error}" if self.error else "")


@dataclass(frozen=True)
class GcRunInfo:
    """A recorded pass (``gc_run`` row), newest first from :meth:`recent_runs`."""

    id: int
    started_at: datetime
    finished_at: datetime | None
    dry_run: bool
    tags_expired: int
    manifests_deleted: int
    blobs_deleted: int
    bytes_reclaimed: int
    uploads_deleted: int
    repositories_purged: int
    namespaces_purged: int
    error: str | None


@dataclass
class _DryState:
    """What a dry run pretends earlier steps did, for the counts of later ones."""

    manifests: set[int] = field(default_factory=set)
    links: set[tuple[int, int]] = field(default_factory=set)
    repositories: set[int] = field(default_factory=set)


class GarbageCollector:
    """Runs garbage-collection passes; one at a time across every process."""

    def __init__(
        self,
        db: Database,
        placements: Placements,
        uploads: UploadService,
        *,
        default_window_s: int,
        grace_s: int,
        upload_expiration_s: int,
    ) -> None:
        self._db = db
        self._placements = placements
        self._uploads = uploads
        self.default_window_s = default_window_s
        self.grace_s = grace_s
        self.upload_expiration_s = upload_expiration_s
        self._purger = Purger(db, placements)

    # --- public ---------------------------------------------------------------------
    def run(self, dry_run: bool = False) -> GcReport:
        """One pass. Returns a report with ``skipped`` when another pass is running."""
        report = GcReport(dry_run=dry_run)
        with try_gc_lock(self._db) as acquired:
            if not acquired:
                report.skipped = True
                log.info(report.summary())
                return report
            started = time.monotonic()
            with self._db.session() as session:
                row = GcRun(dry_run=dry_run)
                session.add(row)
                session.flush()
                run_id = row.id
            try:
                self._pass(report)
            except Exception as exc:
                log.exception("garbage collection failed")
                report.error = f"{type(exc).__name__}: {exc}"[:2000]
            report.duration_s = time.monotonic() - started
            with self._db.session() as session:
                session.execute(
                    update(GcRun)
                    .where(GcRun.id == run_id)
                    .values(
                        finished_at=utcnow(),
                        error=report.error,
                        **{name: getattr(report, name) for name in COUNTERS},
                    )
                )
        log.info(report.summary())
        return report

    def recent_runs(self, limit: int = 10) -> list[GcRunInfo]:
        """The last ``limit`` recorded passes, newest first (for metrics and admins)."""
        with self._db.session() as session:
            rows = session.scalars(select(GcRun).order_by(GcRun.id.desc()).limit(limit))
            return [
                GcRunInfo(
                    r.id,
                    r.started_at,
                    r.finished_at,
                    r.dry_run,
                    r.tags_expired,
                    r.manifests_deleted,
                    r.blobs_deleted,
                    r.bytes_reclaimed,
                    r.uploads_deleted,
                    r.repositories_purged,
                    r.namespaces_purged,
                    r.error,
                )
                for r in rows
            ]

    # --- the pass -------------------------------------------------------------------
    def _pass(self, report: GcReport) -> None:
        dry = _DryState() if report.dry_run else None
        now = now_ms()
        self._expire_tags(report, now)
        self._delete_history(report, now)
        self._purge_marked(report, dry)
        self._collect_manifests(report, now, dry)
        self._drop_links(report, dry)
        self._collect_blobs(report, dry)
        self._remove_uploads(report)

    def _cutoff(self) -> datetime:
        return utcnow() - timedelta(seconds=self.grace_s)

    # 1. expired tags
    def _expire_tags(self, report: GcReport, now: int) -> None:
        from portside.services.immutability import immutable_tags  # optional module

        with self._db.session() as session:
            rows = session.execute(
                select(Tag.id, Tag.repository_id, Tag.name).where(
                    Tag.lifetime_end_ms.is_(None),
                    Tag.expiration_ms <= now,
                    Tag.immutable.is_(False),
                )
            ).all()
            by_repo: dict[int, list[tuple[int, str]]] = {}
            for tag_id, repository_id, name in rows:
                by_repo.setdefault(repository_id, []).append((tag_id, name))
            ids: list[int] = []
            for repository_id, tags in by_repo.items():
                frozen = immutable_tags(session, repository_id, (n for _, n in tags))
                ids += [tag_id for tag_id, name in tags if name not in frozen]
        if report.dry_run:
            report.tags_expired = len(ids)
            return
        for chunk in _chunks(ids, BATCH):
            with self._db.session() as session:
                result = session.execute(
                    update(Tag)
                    .where(
                        Tag.id.in_(chunk), Tag.lifetime_end_ms.is_(None), Tag.expiration_ms <= now
                    )
                    .values(lifetime_end_ms=Tag.expiration_ms)
                )
                report.tags_expired += result.rowcount  # type: ignore[attr-defined]

    # 2. history past the window
    def _history_query(self, now: int, dry_run: bool) -> Any:
        window_ms = (
            cast(func.coalesce(Namespace.tag_expiration_s, self.default_window_s), BigInteger)
            * 1000
        )
        # A dry run counts expired rows as ended at their expiry, as step 1 would.
        ended = (
            func.coalesce(Tag.lifetime_end_ms, Tag.expiration_ms)
            if dry_run
            else Tag.lifetime_end_ms
        )
        query = (
            select(Tag.id)
            .join(Repository, Repository.id == Tag.repository_id)
            .join(Namespace, Namespace.id == Repository.namespace_id)
            .where(
                ended.is_not(None),
                ended <= literal(now, BigInteger) - window_ms,
                Repository.deleted_at.is_(None),
            )
        )
        if dry_run:
            query = query.where(Tag.immutable.is_(False))
        return query

    def _delete_history(self, report: GcReport, now: int) -> None:
        query = self._history_query(now, report.dry_run)
        if report.dry_run:
            with self._db.session() as session:
                report.history_deleted = len(session.scalars(query).all())
            return
        while True:
            with self._db.session() as session:
                ids = list(session.scalars(query.limit(BATCH)))
                if not ids:
                    return
                session.execute(delete(Tag).where(Tag.id.in_(ids)))
                report.history_deleted += len(ids)

    # 3. marked repositories and namespaces
    def _purge_marked(self, report: GcReport, dry: _DryState | None) -> None:
        repositories, namespaces = self._purger.marked()
        report.repositories_purged = len(repositories)
        report.namespaces_purged = len(namespaces)
        if dry is not None:
            dry.repositories = set(repositories)
            return
        for repository_id in repositories:
            self._purger.purge_repository(repository_id)
        for namespace_id in namespaces:
            self._purger.purge_namespace(namespace_id)

    # 4. unreachable manifests
    def _candidate_repositories(self, dry_run: bool) -> list[int]:
        """Repositories holding an old manifest that no tag row references (everything
        else is kept anyway): children and referrers qualify and are checked fully. A dry
        run has not ended or deleted any tag row: it looks at every repository."""
        query = (
            select(Manifest.repository_id)
            .join(Repository, Repository.id == Manifest.repository_id)
            .where(Manifest.created_at < self._cutoff(), Repository.deleted_at.is_(None))
        )
        if not dry_run:
            query = query.where(~exists().where(Tag.manifest_id == Manifest.id))
        with self._db.session() as session:
            return list(session.scalars(query.distinct()))

    def _unreachable_in(
        self, session: Session, repository_id: int, now: int, dry_run: bool
    ) -> set[int]:
        cutoff = self._cutoff()
        nodes = [
            ManifestNode(row.id, row.digest, row.subject_digest, bool(row.young))
            for row in session.execute(
                select(
                    Manifest.id,
                    Manifest.digest,
                    Manifest.subject_digest,
                    (Manifest.created_at >= cutoff).label("young"),
                ).where(Manifest.repository_id == repository_id)
            )
        ]
        tag_query = select(Tag.manifest_id).where(Tag.repository_id == repository_id)
        if dry_run:
            tag_query = tag_query.where(Tag.id.not_in(self._history_query(now, True)))
        tagged = set(session.scalars(tag_query))
        edges = session.execute(
            select(ManifestChild.manifest_id, ManifestChild.child_id)
            .join(Manifest, Manifest.id == ManifestChild.manifest_id)
            .where(Manifest.repository_id == repository_id)
        ).all()
        return unreachable(nodes, tagged, edges)

    def _collect_manifests(self, report: GcReport, now: int, dry: _DryState | None) -> None:
        for repository_id in self._candidate_repositories(dry is not None):
            if dry is not None:
                with self._db.session() as session:
                    doomed = self._unreachable_in(session, repository_id, now, True)
                dry.manifests |= doomed
                report.manifests_deleted += len(doomed)
                continue
            with self._db.session() as session:
                if not self._unreachable_in(session, repository_id, now, False):
                    continue
            while True:
                with self._db.session() as session:
                    # Pushes and tag moves in this repository wait; the reachability is
                    # computed again under the lock, so nothing tagged meanwhile goes.
                    lock_repository(session, repository_id)
                    ordered = sorted(self._unreachable_in(session, repository_id, now, False))
                    if not ordered:
                        break
                    report.manifests_deleted += _delete_manifests(
                        session, repository_id, ordered[:MANIFEST_BATCH]
                    )
                    if len(ordered) <= MANIFEST_BATCH:
                        break

    # 5. links no manifest needs
    def _unneeded_links(self, cutoff: datetime, after: tuple[int, int] | None) -> Any:
        referenced = exists().where(
            ManifestBlob.blob_id == RepositoryBlob.blob_id,
            Manifest.id == ManifestBlob.manifest_id,
            Manifest.repository_id == RepositoryBlob.repository_id,
        )
        query = select(RepositoryBlob.repository_id, RepositoryBlob.blob_id).where(
            RepositoryBlob.created_at < cutoff, ~referenced
        )
        if after is not None:
            query = query.where(
                (RepositoryBlob.repository_id > after[0])
                | and_(RepositoryBlob.repository_id == after[0], RepositoryBlob.blob_id > after[1])
            )
        return query.order_by(RepositoryBlob.repository_id, RepositoryBlob.blob_id)

    def _drop_links(self, report: GcReport, dry: _DryState | None) -> None:
        cutoff = self._cutoff()
        if dry is not None:
            self._dry_links(report, dry, cutoff)
            return
        after: tuple[int, int] | None = None
        while True:
            with self._db.session() as session:
                pairs = [
                    (r[0], r[1])
                    for r in session.execute(self._unneeded_links(cutoff, after).limit(LINK_SCAN))
                ]
            if not pairs:
                return
            after = pairs[-1]
            by_repo: dict[int, list[int]] = {}
            for repository_id, blob_id in pairs:
                by_repo.setdefault(repository_id, []).append(blob_id)
            for repository_id, blob_ids in by_repo.items():
                with self._db.session() as session:
                    # Manifest pushes hold this lock while they check their blobs'
                    # links: a link is never dropped under a manifest being stored.
                    lock_repository(session, repository_id)
                    referenced = exists().where(
                        ManifestBlob.blob_id == RepositoryBlob.blob_id,
                        Manifest.id == ManifestBlob.manifest_id,
                        Manifest.repository_id == repository_id,
                    )
                    result = session.execute(
                        delete(RepositoryBlob)
                        .where(
                            RepositoryBlob.repository_id == repository_id,
                            RepositoryBlob.blob_id.in_(blob_ids),
                            RepositoryBlob.created_at < cutoff,
                            ~referenced,
                        )
                        .execution_options(synchronize_session=False)
                    )
                    report.links_dropped += result.rowcount  # type: ignore[attr-defined]

    def _dry_links(self, report: GcReport, dry: _DryState, cutoff: datetime) -> None:
        """Links a real pass would drop: old unreferenced ones, plus (grace 0 only) those
        whose last referencing manifest the pass deletes (deleting refreshes a link)."""
        with self._db.session() as session:
            dropped = {(r[0], r[1]) for r in session.execute(self._unneeded_links(cutoff, None))}
            if self.grace_s == 0 and dry.manifests:
                refs = session.execute(
                    select(Manifest.repository_id, ManifestBlob.blob_id, Manifest.id)
                    .join(ManifestBlob, ManifestBlob.manifest_id == Manifest.id)
                    .where(
                        Manifest.repository_id.in_(
                            select(Manifest.repository_id).where(Manifest.id.in_(dry.manifests))
                        )
                    )
                ).all()
                kept: set[tuple[int, int]] = set()
                touched: set[tuple[int, int]] = set()
                for repository_id, blob_id, manifest_id in refs:
                    target = touched if manifest_id in dry.manifests else kept
                    target.add((repository_id, blob_id))
                dropped |= touched - kept
        dropped = {p for p in dropped if p[0] not in dry.repositories}
        dry.links = dropped
        report.links_dropped = len(dropped)

    # 6. blobs
    def _garbage_blobs(self, cutoff: datetime) -> Any:
        linked = exists().where(RepositoryBlob.blob_id == Blob.id)
        referenced = exists().where(ManifestBlob.blob_id == Blob.id)
        return select(Blob.id, Blob.digest, Blob.size, Blob.locations).where(
            Blob.created_at < cutoff, ~linked, ~referenced
        )

    def _collect_blobs(self, report: GcReport, dry: _DryState | None) -> None:
        cutoff = self._cutoff()
        if dry is not None:
            self._dry_blobs(report, dry, cutoff)
            return
        size = BLOB_BATCH_SQLITE if self._db.is_sqlite else BLOB_BATCH
        last_id = 0
        with ThreadPoolExecutor(STORAGE_THREADS, thread_name_prefix="gc-storage") as pool:
            while True:
                # Candidates by keyset, many batches per (read-only) scan, outside any
                # write transaction; each batch is checked again under its locks.
                with self._db.read() as connection:
                    digests = list(
                        connection.execute(
                            self._garbage_blobs(cutoff)
                            .with_only_columns(Blob.id, Blob.digest)
                            .where(Blob.id > last_id)
                            .order_by(Blob.id)
                            .limit(CANDIDATE_SCAN)
                        )
                    )
                if not digests:
                    return
                last_id = digests[-1][0]
                for start in range(0, len(digests), size):
                    chunk = [digest for _, digest in digests[start : start + size]]
                    try:
                        self._delete_blobs(report, chunk, cutoff, pool)
                    except Exception:
                        # Rolled back: the rows stay, and a later pass retries.
                        log.exception("could not delete %d blobs; will retry", len(chunk))

    def _delete_blobs(
        self, report: GcReport, digests: list[str], cutoff: datetime, pool: ThreadPoolExecutor
    ) -> None:
        with self._db.session() as session:
            # Uploads and mounts of these digests wait; the references are checked again
            # under the lock, so a blob linked or referenced meanwhile stays.
            lock_digests(session, digests)
            rows = session.execute(
                self._garbage_blobs(cutoff).where(Blob.digest.in_(digests))
            ).all()
            if not rows:
                return
            # Still holding the locks: an upload of the same content cannot put its bytes
            # at the path (and find its row gone) before the commit. The objects go
            # first, so a row is deleted only when every object of it is gone.
            futures = [
                (row, pool.submit(self._delete_objects, row.digest, row.locations)) for row in rows
            ]
            gone = []
            try:
                for row, future in futures:
                    try:
                        future.result()
                    except Exception:
                        log.exception("could not delete the objects of %s; will retry", row.digest)
                    else:
                        gone.append(row)
            finally:
                # Never let a delete outlive the locks, whatever interrupted the wait.
                wait([future for _, future in futures])
            if not gone:
                return
            session.execute(
                delete(Blob)
                .where(Blob.id.in_([row.id for row in gone]))
                .execution_options(synchronize_session=False)
            )
            report.blobs_deleted += len(gone)
            report.bytes_reclaimed += sum(row.size for row in gone)

    def _delete_objects(self, digest: str, locations: list[str] | None) -> None:
        """Delete a blob's stored object in every location it was written to."""
        path = blob_path(digest)
        for location in locations or [self._placements.write_location]:
            self._placements.driver(location).delete(path)

    def _dry_blobs(self, report: GcReport, dry: _DryState, cutoff: datetime) -> None:
        with self._db.session() as session:
            doomed = {row.id: row.size for row in session.execute(self._garbage_blobs(cutoff))}
            candidates: set[int] = {b for _, b in dry.links}
            for chunk in _chunks(sorted(dry.manifests), BATCH):
                candidates |= set(
                    session.scalars(
                        select(ManifestBlob.blob_id).where(ManifestBlob.manifest_id.in_(chunk))
                    )
                )
            for chunk in _chunks(sorted(dry.repositories), BATCH):
                candidates |= set(
                    session.scalars(
                        select(RepositoryBlob.blob_id).where(
                            RepositoryBlob.repository_id.in_(chunk)
                        )
                    )
                )
            candidates -= set(doomed)
            for chunk in _chunks(sorted(candidates), BATCH):
                blobs = {
                    row.id: row
                    for row in session.execute(
                        select(Blob.id, Blob.size, Blob.created_at < cutoff).where(
                            Blob.id.in_(chunk)
                        )
                    )
                }
                links: dict[int, set[tuple[int, int]]] = {}
                for repository_id, blob_id in session.execute(
                    select(RepositoryBlob.repository_id, RepositoryBlob.blob_id).where(
                        RepositoryBlob.blob_id.in_(chunk)
                    )
                ):
                    links.setdefault(blob_id, set()).add((repository_id, blob_id))
                refs: dict[int, set[int]] = {}
                for manifest_id, blob_id, repository_id in session.execute(
                    select(ManifestBlob.manifest_id, ManifestBlob.blob_id, Manifest.repository_id)
                    .join(Manifest, Manifest.id == ManifestBlob.manifest_id)
                    .where(ManifestBlob.blob_id.in_(chunk))
                ):
                    if repository_id not in dry.repositories:
                        refs.setdefault(blob_id, set()).add(manifest_id)
                for blob_id, row in blobs.items():
                    if not row[2]:
                        continue  # younger than the grace period
                    live_links = {
                        p
                        for p in links.get(blob_id, set())
                        if p not in dry.links and p[0] not in dry.repositories
                    }
                    if not live_links and refs.get(blob_id, set()) <= dry.manifests:
                        doomed[blob_id] = row.size
        report.blobs_deleted = len(doomed)
        report.bytes_reclaimed = sum(doomed.values())

    # 7. abandoned uploads
    def _remove_uploads(self, report: GcReport) -> None:
        if report.dry_run:
            cutoff = utcnow() - timedelta(seconds=self.upload_expiration_s)
            with self._db.session() as session:
                report.uploads_deleted = (
                    session.scalar(
                        select(func.count())
                        .select_from(BlobUpload)
                        .where(BlobUpload.updated_at < cutoff)
                    )
                    or 0
                )
            return
        report.uploads_deleted = self._uploads.cleanup_expired(self.upload_expiration_s)


def _delete_manifests(session: Session, repository_id: int, ids: list[int]) -> int:
    """Delete manifests with their blob references, child edges and labels; refresh the
    repository's links to their blobs (the grace period starts now for them)."""
    blob_ids = set(
        session.scalars(select(ManifestBlob.blob_id).where(ManifestBlob.manifest_id.in_(ids)))
    )
    # An unreachable child has only unreachable parents: their edges go too, even when
    # the parent itself is in a later batch.
    session.execute(
        delete(ManifestChild).where(
            ManifestChild.manifest_id.in_(ids) | ManifestChild.child_id.in_(ids)
        )
    )
    session.execute(delete(ManifestBlob).where(ManifestBlob.manifest_id.in_(ids)))
    session.execute(delete(ManifestLabel).where(ManifestLabel.manifest_id.in_(ids)))
    result = session.execute(delete(Manifest).where(Manifest.id.in_(ids)))
    for chunk in _chunks(sorted(blob_ids), BATCH):
        session.execute(
            update(RepositoryBlob)
            .where(RepositoryBlob.repository_id == repository_id, RepositoryBlob.blob_id.in_(chunk))
            .values(created_at=utcnow())
        )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def garbage_collector_for(services: Any) -> GarbageCollector:
    """The collector configured from ``services`` (an :class:`portside.app.Services`)."""
    config = services.config
    return GarbageCollector(
        services.db,
        services.registry.placements,
        services.registry.uploads,
        default_window_s=config.default_tag_expiration_s,
        grace_s=config.PUSH_TEMP_TAG_EXPIRATION_SEC,
        upload_expiration_s=config.BLOB_UPLOAD_EXPIRATION_S,
    )


__all__ = ["GarbageCollector", "GcReport", "GcRunInfo", "garbage_collector_for"]
