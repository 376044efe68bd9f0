"""Storage quotas per namespace (Quay's quota management).

Usage is never stored: it is computed from the database on demand, so it cannot drift
from what is really there. A namespace uses the sizes of the **distinct** blobs that the
manifests of its live repositories (``Repository.deleted_at IS NULL``) reference: a
layer shared by two repositories of the namespace counts once. As in Quay, manifests
themselves are not counted, nor are blobs that were uploaded but never referenced.

A quota is a byte limit with thresholds (:class:`~portside.db.models.QuotaLimit`):
``Warning`` (the push succeeds and a ``quota_warning`` audit entry is written when usage
first crosses it) and ``Reject`` (a push that would cross it is refused with ``DENIED``).
Without a quota, ``DEFAULT_SYSTEM_REJECT_QUOTA_BYTES`` (when not 0) rejects like a
``Reject`` limit at 100%.

Only superusers create, change and delete quotas and their limits; members of an
organization (and a user for its own namespace) read them. Changes are audited with
Quay's kinds (``org_create_quota``, ``org_change_quota``, ``org_delete_quota``,
``org_create_quota_limit``, ``org_change_quota_limit``, ``org_delete_quota_limit``), for
user namespaces too, as Quay does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, delete, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portside.auth.permissions import (
    NamespaceAction,
    NamespaceRole,
    Subject,
    acts_as_superuser,
    namespace_actions,
    strongest_namespace_role,
)
from portside.db.engine import Database
from portside.db.models import (
    Blob,
    Manifest,
    ManifestBlob,
    Namespace,
    NamespaceQuota,
    QuotaLimit,
    Repository,
    Team,
    TeamMember,
    User,
)
from portside.oci.manifest import ParsedManifest
from portside.services.audit import AuditContext, record
from portside.services.errors import Denied
from portside.services.notification_events import emit_event
from portside.services.refusals import Forbidden, Invalid, NotFound, Refusal

T = TypeVar("T")

#: Quay's limit types, by their lower-case spelling (the API accepts any case).
LIMIT_TYPES = {"warning": "Warning", "reject": "Reject"}
#: Largest byte limit a BIGINT column holds.
MAX_LIMIT_BYTES = 2**63 - 1
#: Key space of the PostgreSQL advisory locks that serialise quota checks of one
#: namespace (``pg_advisory_xact_lock(QUOTA_LOCK_CLASS, namespace_id)``).
QUOTA_LOCK_CLASS = 0x51554F54  # "QUOT"

__all__ = [
    "LIMIT_TYPES",
    "Forbidden",
    "Invalid",
    "LimitInfo",
    "NotFound",
    "QuotaError",
    "QuotaExceeded",
    "QuotaGuard",
    "QuotaInfo",
    "QuotaReport",
    "QuotaService",
    "human_size",
    "namespace_usage",
    "registry_usage",
    "repository_usage",
]


QuotaError = Refusal


class QuotaExceeded(Denied):
    """A push would bring its namespace over its ``Reject`` limit (OCI ``DENIED``, 403)."""


def announce_quota_error(db: Database, repository_id: int, exc: QuotaExceeded) -> None:
    """Raise the ``quota_error`` notification event for a refused push, in a transaction
    of its own: the push's transaction rolls back, and the event must not."""
    detail = exc.detail if isinstance(exc.detail, dict) else {}
    with db.session() as session:
        emit_event(session, repository_id, "quota_error", {
            "usage_bytes": detail.get("usage_bytes"),
            "requested_bytes": detail.get("requested_bytes"),
            "limit_bytes": detail.get("limit_bytes"), "message": exc.message})


# --- usage ------------------------------------------------------------------------------


def _namespace_blob_ids(namespace_id: int) -> Select[Any]:
    """Ids of the blobs referenced by manifests of the namespace's live repositories."""
    return (
        select(ManifestBlob.blob_id)
        .join(Manifest, Manifest.id == ManifestBlob.manifest_id)
        .join(Repository, Repository.id == Manifest.repository_id)
        .where(Repository.namespace_id == namespace_id, Repository.deleted_at.is_(None))
    )


def _sum_of(blob_ids: Select[Any]) -> Select[Any]:
    """Total size of the distinct blobs among ``blob_ids`` (``IN`` removes repeats)."""
    return select(func.coalesce(func.sum(Blob.size), 0)).where(Blob.id.in_(blob_ids))


def namespace_usage(session: Session, namespace_id: int) -> int:
    """Bytes used by a namespace: its distinct referenced blobs (one query)."""
    return int(session.scalar(_sum_of(_namespace_blob_ids(namespace_id))) or 0)


def repository_usage(session: Session, repository_id: int) -> int:
    """Bytes used by one repository: the distinct blobs its manifests reference."""
    blob_ids = (select(ManifestBlob.blob_id)
                .join(Manifest, Manifest.id == ManifestBlob.manifest_id)
                .where(Manifest.repository_id == repository_id))
    return int(session.scalar(_sum_of(blob_ids)) or 0)


def registry_usage(session: Session) -> int:
    """Bytes of every distinct blob any manifest references (deleted repositories
    included: their blobs take space until garbage collection removes them)."""
    return int(session.scalar(_sum_of(select(ManifestBlob.blob_id))) or 0)


def human_size(size: int) -> str:
    """``1073741824`` -> ``"1.0 GiB"`` (the form Quay's audit metadata shows)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{size} B"
        value /= 1024
    raise AssertionError("unreachable")


# --- views ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LimitInfo:
    """One threshold of a quota."""

    id: int
    type: str
    threshold_percent: int


@dataclass(frozen=True)
class QuotaInfo:
    """A namespace's quota with its limits. ``default_config``: the registry-wide
    ``DEFAULT_SYSTEM_REJECT_QUOTA_BYTES`` stands in for a missing quota (``id`` is
    ``None`` then)."""

    id: int | None
    limit_bytes: int
    limits: list[LimitInfo]
    default_config: bool = False


@dataclass(frozen=True)
class QuotaReport:
    """Usage and the configured byte limit (``None``: no quota, no system default)."""

    quota_bytes: int
    configured_quota: int | None


# --- management -------------------------------------------------------------------------


class QuotaService:
    """Reads and changes quotas and reports usage; decides who may."""

    def __init__(self, db: Database, default_reject_bytes: int = 0) -> None:
        self._db = db
        self.default_reject_bytes = default_reject_bytes

    # --- reading ----------------------------------------------------------------------
    def quotas(self, subject: Subject, namespace: str, kind: str | None) -> list[QuotaInfo]:
        """The namespace's quota (at most one), or the system default stand-in."""
        with self._reading() as session:
            row = self._namespace(session, namespace, kind)
            self._authorize(session, subject, row, write=False)
            quota = self._quota_row(session, row.id)
            if quota is not None:
                return [self._info(session, quota)]
            if self.default_reject_bytes:
                return [QuotaInfo(None, self.default_reject_bytes, [], default_config=True)]
            return []

    def quota(self, subject: Subject, namespace: str, kind: str | None,
              quota_id: str) -> QuotaInfo:
        """One quota by id."""
        with self._reading() as session:
            row = self._namespace(session, namespace, kind)
            self._authorize(session, subject, row, write=False)
            return self._info(session, self._quota(session, row.id, quota_id))

    def limits(self, subject: Subject, namespace: str, kind: str | None,
               quota_id: str) -> list[LimitInfo]:
        """The quota's limits."""
        return self.quota(subject, namespace, kind, quota_id).limits

    def limit(self, subject: Subject, namespace: str, kind: str | None, quota_id: str,
              limit_id: str) -> LimitInfo:
        """One limit of the quota."""
        for item in self.limits(subject, namespace, kind, quota_id):
            if str(item.id) == limit_id:
                return item
        raise NotFound("Quota limit not found")

    def own_namespace(self, subject: Subject) -> str:
        """The name of the caller's own (user) namespace."""
        if subject.user_id is None:
            raise Forbidden("Requires a signed-in user")
        with self._reading() as session:
            name = session.scalar(
                select(Namespace.name).join(User, User.namespace_id == Namespace.id)
                .where(User.id == subject.user_id))
        if name is None:
            raise NotFound("User not found")
        return name

    # --- quotas -----------------------------------------------------------------------
    def create_quota(self, subject: Subject, namespace: str, kind: str | None,
                     limit_bytes: int) -> None:
        """Give the namespace its quota (one per namespace)."""
        check_limit_bytes(limit_bytes)

        def work(session: Session) -> None:
            row = self._namespace(session, namespace, kind, lock=True)
            self._authorize(session, subject, row, write=True)
            if self._quota_row(session, row.id) is not None:
                label = "Organization quota" if row.kind == "organization" else "Quota"
                raise Invalid(f"{label} for '{row.name}' already exists")
            session.add(NamespaceQuota(namespace_id=row.id, limit_bytes=limit_bytes))
            session.flush()
            record(session, "org_create_quota", performer=subject, namespace_id=row.id,
                   metadata={"namespace": row.name, "limit_bytes": limit_bytes,
                             "limit": human_size(limit_bytes)})

        self._write(work)

    def update_quota(self, subject: Subject, namespace: str, kind: str | None,
                     quota_id: str, limit_bytes: int | None) -> QuotaInfo:
        """Change the byte limit (``None`` leaves it)."""
        if limit_bytes is not None:
            check_limit_bytes(limit_bytes)

        def work(session: Session) -> QuotaInfo:
            row = self._namespace(session, namespace, kind, lock=True)
            self._authorize(session, subject, row, write=True)
            quota = self._quota(session, row.id, quota_id)
            if limit_bytes is not None and limit_bytes != quota.limit_bytes:
                previous = quota.limit_bytes
                quota.limit_bytes = limit_bytes
                session.flush()
                record(session, "org_change_quota", performer=subject, namespace_id=row.id,
                       metadata={"namespace": row.name, "quota_id": quota.id,
                                 "limit_bytes": limit_bytes, "limit": human_size(limit_bytes),
                                 "previous_limit_bytes": previous,
                                 "previous_limit": human_size(previous)})
            return self._info(session, quota)

        return self._write(work)

    def delete_quota(self, subject: Subject, namespace: str, kind: str | None,
                     quota_id: str) -> None:
        """Remove the quota and its limits."""

        def work(session: Session) -> None:
            row = self._namespace(session, namespace, kind, lock=True)
            self._authorize(session, subject, row, write=True)
            quota = self._quota(session, row.id, quota_id)
            record(session, "org_delete_quota", performer=subject, namespace_id=row.id,
                   metadata={"namespace": row.name, "quota_id": quota.id,
                             "limit_bytes": quota.limit_bytes,
                             "limit": human_size(quota.limit_bytes)})
            # Explicitly: SQLite enforces ON DELETE CASCADE only with foreign keys on.
            session.execute(delete(QuotaLimit).where(QuotaLimit.quota_id == quota.id))
            session.delete(quota)

        self._write(work)

    # --- limits -----------------------------------------------------------------------
    def create_limit(self, subject: Subject, namespace: str, kind: str | None,
                     quota_id: str, limit_type: str, threshold_percent: int) -> None:
        """Add a ``Warning`` or ``Reject`` threshold (one ``Reject`` per quota)."""
        normalized = check_limit(limit_type, threshold_percent)

        def work(session: Session) -> None:
            row = self._namespace(session, namespace, kind, lock=True)
            self._authorize(session, subject, row, write=True)
            quota = self._quota(session, row.id, quota_id)
            existing = self._limit_rows(session, quota.id)
            self._check_unique(existing, normalized, threshold_percent)
            limit = QuotaLimit(quota_id=quota.id, kind=normalized,
                               threshold_percent=threshold_percent)
            session.add(limit)
            session.flush()
            record(session, "org_create_quota_limit", performer=subject,
                   namespace_id=row.id,
                   metadata={"namespace": row.name, "quota_id": quota.id,
                             "limit_id": limit.id, "type": normalized,
                             "threshold_percent": threshold_percent})

        self._write(work)

    def update_limit(self, subject: Subject, namespace: str, kind: str | None,
                     quota_id: str, limit_id: str, limit_type: str | None,
                     threshold_percent: int | None) -> QuotaInfo:
        """Change a limit's type or threshold; returns the quota."""

        def work(session: Session) -> QuotaInfo:
            row = self._namespace(session, namespace, kind, lock=True)
            self._authorize(session, subject, row, write=True)
            quota = self._quota(session, row.id, quota_id)
            limits = self._limit_rows(session, quota.id)
            limit = next((item for item in limits if str(item.id) == limit_id), None)
            if limit is None:
                raise NotFound("Quota limit not found")
            new_type = limit.kind if limit_type is None else check_limit(limit_type, 1)
            new_percent = (limit.threshold_percent if threshold_percent is None
                           else threshold_percent)
            check_limit(new_type, new_percent)
            if (new_type, new_percent) != (limit.kind, limit.threshold_percent):
                self._check_unique([item for item in limits if item.id != limit.id],
                                   new_type, new_percent)
                record(session, "org_change_quota_limit", performer=subject,
                       namespace_id=row.id,
                       metadata={"namespace": row.name, "quota_id": quota.id,
                                 "limit_id": limit.id, "type": new_type,
                                 "threshold_percent": new_percent,
                                 "previous_type": limit.kind,
                                 "previous_threshold_percent": limit.threshold_percent})
                limit.kind, limit.threshold_percent = new_type, new_percent
                session.flush()
            return self._info(session, quota)

        return self._write(work)

    def delete_limit(self, subject: Subject, namespace: str, kind: str | None,
                     quota_id: str, limit_id: str) -> None:
        """Remove one limit."""

        def work(session: Session) -> None:
            row = self._namespace(session, namespace, kind, lock=True)
            self._authorize(session, subject, row, write=True)
            quota = self._quota(session, row.id, quota_id)
            limit = next((item for item in self._limit_rows(session, quota.id)
                          if str(item.id) == limit_id), None)
            if limit is None:
                raise NotFound("Quota limit not found")
            record(session, "org_delete_quota_limit", performer=subject, namespace_id=row.id,
                   metadata={"namespace": row.name, "quota_id": quota.id,
                             "limit_id": limit.id, "type": limit.kind,
                             "threshold_percent": limit.threshold_percent})
            session.delete(limit)

        self._write(work)

    # --- reports ----------------------------------------------------------------------
    def namespace_view(self, namespace: str) -> tuple[QuotaReport, list[QuotaInfo]] | None:
        """Usage, configured limit and quota of a namespace for its view (``None``: no
        such namespace). Callers have checked that the caller may see the namespace."""
        with self._reading() as session:
            row = session.scalar(select(Namespace).where(Namespace.name == namespace,
                                                         Namespace.deleted_at.is_(None)))
            if row is None:
                return None
            quota = self._quota_row(session, row.id)
            report = QuotaReport(namespace_usage(session, row.id),
                                 self._configured(quota.limit_bytes if quota else None))
            return report, [self._info(session, quota)] if quota is not None else []

    def repository_report(self, namespace: str, name: str) -> QuotaReport | None:
        """Usage of one repository and its namespace's configured limit."""
        with self._reading() as session:
            row = session.execute(
                select(Repository.id, NamespaceQuota.limit_bytes)
                .join(Namespace, Namespace.id == Repository.namespace_id)
                .outerjoin(NamespaceQuota, NamespaceQuota.namespace_id == Namespace.id)
                .where(Namespace.name == namespace, Repository.name == name,
                       Repository.deleted_at.is_(None))).first()
            if row is None:
                return None
            return QuotaReport(repository_usage(session, row.id),
                               self._configured(row.limit_bytes))

    def registry_size(self, subject: Subject) -> int:
        """Bytes referenced by every manifest of the registry (superusers only)."""
        if not acts_as_superuser(subject):
            raise Forbidden("Requires superuser rights (super:user).")
        with self._reading() as session:
            return registry_usage(session)

    # --- helpers ----------------------------------------------------------------------
    def _configured(self, limit_bytes: int | None) -> int | None:
        if limit_bytes is not None:
            return int(limit_bytes)
        return self.default_reject_bytes or None

    @contextmanager
    def _reading(self) -> Iterator[Session]:
        """An ORM session on a read connection (no SQLite write lock)."""
        with self._db.read() as connection, Session(bind=connection) as session:
            yield session

    def _write(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in a write transaction; a lost race on the one-quota-per-namespace
        constraint is reported as the duplicate it is."""
        try:
            with self._db.session() as session:
                return work(session)
        except IntegrityError:
            raise Invalid("Quota already exists") from None

    @staticmethod
    def _namespace(session: Session, name: str, kind: str | None,
                   lock: bool = False) -> Namespace:
        """The namespace row; ``kind`` ``organization`` or ``user`` narrows it."""
        query = select(Namespace).where(Namespace.name == name, Namespace.deleted_at.is_(None))
        if kind is not None:
            query = query.where(Namespace.kind == kind)
        if lock:
            query = query.with_for_update()
        row = session.scalar(query)
        if row is None:
            what = {"organization": "organization", "user": "user"}.get(kind or "", "namespace")
            raise NotFound(f"Unknown {what} {name[:100]!r}")
        return row

    @staticmethod
    def _authorize(session: Session, subject: Subject, namespace: Namespace,
                   write: bool) -> None:
        """Superusers do everything; organization members (and a user in its own
        namespace) read. Everyone else is refused."""
        if acts_as_superuser(subject):
            return
        if write:
            raise Forbidden("Only superusers may change quotas")
        if subject.user_id is None:
            raise Forbidden("Unauthorized")
        if namespace.kind == "organization":
            role = strongest_namespace_role(session.scalars(
                select(Team.role).join(TeamMember, TeamMember.team_id == Team.id)
                .where(Team.namespace_id == namespace.id,
                       TeamMember.user_id == subject.user_id)))
            actions = namespace_actions(subject, role, is_organization=True)
            if NamespaceAction.VIEW not in actions:
                raise Forbidden("Unauthorized")
            return
        own = session.scalar(select(User.namespace_id).where(User.id == subject.user_id))
        # A user's own quota is account data: Quay's user:admin scope for tokens.
        actions = namespace_actions(subject, NamespaceRole.ADMIN, is_organization=False)
        if own != namespace.id or NamespaceAction.ADMINISTER not in actions:
            raise Forbidden("Unauthorized")

    @staticmethod
    def _quota_row(session: Session, namespace_id: int) -> NamespaceQuota | None:
        return session.scalar(select(NamespaceQuota)
                              .where(NamespaceQuota.namespace_id == namespace_id))

    def _quota(self, session: Session, namespace_id: int, quota_id: str) -> NamespaceQuota:
        quota = self._quota_row(session, namespace_id)
        if quota is None or str(quota.id) != quota_id:
            raise NotFound("Quota not found")
        return quota

    @staticmethod
    def _limit_rows(session: Session, quota_id: int) -> list[QuotaLimit]:
        return list(session.scalars(select(QuotaLimit).where(QuotaLimit.quota_id == quota_id)
                                    .order_by(QuotaLimit.id)))

    def _info(self, session: Session, quota: NamespaceQuota) -> QuotaInfo:
        limits = [LimitInfo(item.id, item.kind, item.threshold_percent)
                  for item in self._limit_rows(session, quota.id)]
        return QuotaInfo(quota.id, int(quota.limit_bytes), limits)

    @staticmethod
    def _check_unique(existing: Sequence[QuotaLimit], limit_type: str, percent: int) -> None:
        if any(item.kind == limit_type and item.threshold_percent == percent
               for item in existing):
            raise Invalid("Quota limit already exists")
        if limit_type == "Reject" and any(item.kind == "Reject" for item in existing):
            raise Invalid("Only one quota limit of type 'Reject' allowed.")


def check_limit_bytes(limit_bytes: int) -> None:
    """Refuse a byte limit that is not positive or does not fit the database."""
    if limit_bytes <= 0 or limit_bytes > MAX_LIMIT_BYTES:
        raise Invalid(f"Invalid quota size limit value: '{limit_bytes}'")


def check_limit(limit_type: str, threshold_percent: int) -> str:
    """Validate a limit; returns the type spelled as Quay does (``Warning``/``Reject``)."""
    normalized = LIMIT_TYPES.get(limit_type.lower()) if isinstance(limit_type, str) else None
    if normalized is None:
        raise Invalid("Quota type must be one of [Warning, Reject]")
    if not 1 <= threshold_percent <= 100:
        raise Invalid("Quota limit threshold must be between 1 and 100")
    return normalized


# --- enforcement on push ----------------------------------------------------------------


@dataclass(frozen=True)
class _Thresholds:
    namespace_id: int
    namespace: str
    repository: str
    quota_bytes: int | None
    reject_bytes: int | None
    #: (bytes, percent) of each Warning limit.
    warnings: tuple[tuple[int, int], ...]


class QuotaGuard:
    """Checks a manifest push against its namespace's quota, inside the push's
    transaction (so a refusal stores nothing and a warning entry commits with the push).

    Costs: one indexed query (repository -> namespace -> quota -> limits) when the
    namespace has no quota and no system default applies. Otherwise one more indexed
    query for the bytes the manifest would add (a few index probes), and only when that
    is not zero the namespace's usage. On PostgreSQL a per-namespace advisory lock makes
    concurrent pushes into one namespace check one after the other.

    The usage query grows with the namespace (about 60 ms for 5,000 manifests and
    20,000 blobs on PostgreSQL, see ``benchmarks/quota_usage.py``). When it took longer
    than :attr:`SLOW_QUERY_S`, its result is kept in this process for
    :attr:`CACHE_S` seconds and raised by what this process adds: within that window,
    pushes through *other* processes are not seen here, so a namespace can exceed its
    limit by what they pushed in the last ``CACHE_S`` seconds. Namespaces whose usage
    is quick to compute are always checked exactly.
    """

    #: A usage query slower than this (seconds) is cached.
    SLOW_QUERY_S = 0.025
    #: How long (seconds) a cached usage is used.
    CACHE_S = 5.0

    def __init__(self, default_reject_bytes: int = 0) -> None:
        self.default_reject_bytes = default_reject_bytes
        self._usage: dict[int, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def check_push(self, session: Session, repository_id: int, parsed: ParsedManifest,
                   audit: AuditContext | None = None) -> None:
        """Raise :class:`QuotaExceeded` if storing ``parsed`` would bring the namespace
        over its ``Reject`` limit; record ``quota_warning`` when it crosses a
        ``Warning`` limit. Content that adds no new blob to the namespace (a re-push,
        a tag move, an index) is never refused."""
        limits = self._thresholds(session, repository_id)
        if limits is None:
            return
        digests = {descriptor.digest for descriptor in parsed.blob_descriptors()}
        if not digests:
            return  # an index or an artifact without blobs adds nothing
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:cls, :ns)"),
                            {"cls": QUOTA_LOCK_CLASS, "ns": limits.namespace_id})
        added = self._added_bytes(session, limits.namespace_id, digests)
        if added == 0:
            return
        current = self._current_usage(session, limits.namespace_id)
        projected = current + added
        if limits.reject_bytes is not None and projected > limits.reject_bytes:
            raise QuotaExceeded(
                f"Quota has been exceeded on namespace {limits.namespace}: this push would "
                f"bring its usage from {current} to {projected} bytes, over the limit of "
                f"{limits.reject_bytes} bytes",
                {"namespace": limits.namespace, "usage_bytes": current,
                 "requested_bytes": added, "limit_bytes": limits.reject_bytes},
            )
        self._note_added(limits.namespace_id, added)
        crossed = [(size, percent) for size, percent in limits.warnings
                   if current <= size < projected]
        if crossed:
            size, percent = max(crossed)
            record(session, "quota_warning",
                   performer=audit.performer if audit else None,
                   namespace_id=limits.namespace_id, repository_id=repository_id,
                   ip=audit.ip if audit else None,
                   metadata={"namespace": limits.namespace, "repo": limits.repository,
                             "usage_bytes": projected, "limit_bytes": size,
                             "quota_limit_bytes": limits.quota_bytes,
                             "threshold_percent": percent})
            emit_event(session, repository_id, "quota_warning",
                       {"usage_bytes": projected, "limit_bytes": size,
                        "quota_limit_bytes": limits.quota_bytes,
                        "threshold_percent": percent})

    @staticmethod
    def _added_bytes(session: Session, namespace_id: int, digests: set[str]) -> int:
        """Sizes of the blobs among ``digests`` that no manifest of the namespace
        references yet (one index probe per blob)."""
        referenced = (
            select(ManifestBlob.blob_id)
            .join(Manifest, Manifest.id == ManifestBlob.manifest_id)
            .join(Repository, Repository.id == Manifest.repository_id)
            .where(ManifestBlob.blob_id == Blob.id, Repository.namespace_id == namespace_id,
                   Repository.deleted_at.is_(None))
        )
        return int(session.scalar(
            select(func.coalesce(func.sum(Blob.size), 0))
            .where(Blob.digest.in_(digests), ~referenced.exists())) or 0)

    def _current_usage(self, session: Session, namespace_id: int) -> int:
        """The namespace's usage: computed, or cached when computing it is slow."""
        now = time.monotonic()
        with self._lock:
            cached = self._usage.get(namespace_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        usage = namespace_usage(session, namespace_id)
        took = time.monotonic() - now
        with self._lock:
            if took > self.SLOW_QUERY_S:
                self._usage[namespace_id] = (now + self.CACHE_S, usage)
            else:
                self._usage.pop(namespace_id, None)
        return usage

    def _note_added(self, namespace_id: int, added: int) -> None:
        """Raise a cached usage by what this push adds (if the push fails later, the
        cache over-counts until it expires, which only errs on the safe side)."""
        with self._lock:
            cached = self._usage.get(namespace_id)
            if cached is not None:
                self._usage[namespace_id] = (cached[0], cached[1] + added)

    def _thresholds(self, session: Session, repository_id: int) -> _Thresholds | None:
        """The namespace's Reject and Warning byte thresholds (``None``: nothing applies)."""
        rows = session.execute(
            select(Repository.namespace_id, Namespace.name, Repository.name,
                   NamespaceQuota.limit_bytes, QuotaLimit.kind, QuotaLimit.threshold_percent)
            .join(Namespace, Namespace.id == Repository.namespace_id)
            .outerjoin(NamespaceQuota, NamespaceQuota.namespace_id == Repository.namespace_id)
            .outerjoin(QuotaLimit, QuotaLimit.quota_id == NamespaceQuota.id)
            .where(Repository.id == repository_id)
        ).all()
        if not rows:
            return None
        first: Any = rows[0]
        quota_bytes = first.limit_bytes
        if quota_bytes is None:
            if not self.default_reject_bytes:
                return None
            return _Thresholds(first.namespace_id, first[1], first[2], None,
                               self.default_reject_bytes, ())
        reject = [int(quota_bytes * row.threshold_percent / 100) for row in rows
                  if row.kind == "Reject"]
        warnings = tuple((int(quota_bytes * row.threshold_percent / 100), row.threshold_percent)
                         for row in rows if row.kind == "Warning")
        if not reject and not warnings:
            return None
        return _Thresholds(first.namespace_id, first[1], first[2], int(quota_bytes),
                           min(reject) if reject else None, warnings)
