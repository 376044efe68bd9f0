"""The audit log: Quay's log entries (``push_repo``, ``create_robot``, ...).

Changes are recorded with :func:`record` on the *caller's* session, so an entry commits
or rolls back together with the change it describes: a rejected manifest leaves no
``push_repo`` entry behind. Pulls are not transactions and are the hottest path, so
they go through :class:`LogBuffer` instead (see its docstring for what that costs), as do
registry logins (see :mod:`portside.services.login_audit`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import logging
import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import anyio.to_thread
from sqlalchemy import Date, cast, func, insert, select
from sqlalchemy.orm import Session

from portside.auth.permissions import (
    Action,
    NamespaceAction,
    NamespaceRole,
    Policy,
    Subject,
    acts_as_superuser,
    allowed_actions,
    namespace_actions,
    strongest_namespace_role,
)
from portside.db.engine import Database
from portside.db.models import LogEntry, Namespace, Repository, Team, TeamMember, User, utcnow

log = logging.getLogger(__name__)

#: Entries per page of ``/logs`` (Quay's ``LOGS_PER_PAGE``).
LOGS_PER_PAGE = 20


class LogAccessError(Exception):
    """A refused or invalid log read; the API maps ``status`` to Quay's error JSON."""

    status = 400
    error_type = "invalid_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthenticated(LogAccessError):
    """No credentials (401)."""

    status = 401
    error_type = "invalid_token"


class Forbidden(LogAccessError):
    """Not allowed to read these logs (403)."""

    status = 403
    error_type = "insufficient_scope"


class NotFound(LogAccessError):
    """No such repository or organization (404)."""

    status = 404
    error_type = "not_found"


class InvalidInput(LogAccessError):
    """A malformed argument (400)."""


@dataclass(frozen=True)
class AuditContext:
    """Who made a change and from where, handed from the HTTP layer to a service that
    does not otherwise know them."""

    performer: Subject | None
    ip: str | None = None


def record(session: Session, kind: str, *, performer: Subject | None, namespace_id: int | None,
           repository_id: int | None = None, ip: str | None = None,
           metadata: dict[str, Any]) -> None:
    """Add a log entry to ``session``: it commits or rolls back with the caller's change."""
    session.add(LogEntry(
        kind=kind,
        namespace_id=namespace_id,
        performer_id=performer.user_id if performer is not None else None,
        repository_id=repository_id,
        ip=ip,
        metadata_json=metadata,
        created_at=utcnow(),
    ))


def record_for_repository(session: Session, kind: str, repository_id: int,
                          audit: AuditContext | None, **metadata: Any) -> None:
    """:func:`record` for a repository known by id: adds Quay's ``repo`` and
    ``namespace`` names to ``metadata`` (names outlive the ids they describe)."""
    row = session.execute(
        select(Repository.namespace_id, Repository.name, Namespace.name)
        .join(Namespace, Namespace.id == Repository.namespace_id)
        .where(Repository.id == repository_id)
    ).first()
    if row is None:
        return
    record(session, kind, performer=audit.performer if audit else None,
           namespace_id=row[0], repository_id=repository_id,
           ip=audit.ip if audit else None,
           metadata={"repo": row[1], "namespace": row[2], **metadata})


def record_login(db: Database, success: bool, username: str, performer: Subject | None,
                 ip: str | None) -> None:
    """Record ``login_success`` or ``login_failure`` (Quay's kinds) in its own
    transaction: a sign-in changes nothing else that the entry could share one with.

    A failure is filed under the namespace of the user it named, if there is one, so
    that the user sees attempts on its account.
    """
    with db.session() as session:
        namespace_id = session.scalar(select(User.namespace_id)
                                      .where(User.username == username))
        record(session, "login_success" if success else "login_failure",
               performer=performer if success else None, namespace_id=namespace_id, ip=ip,
               metadata={"type": "quayauth", "kind": "user", "username": username})


@dataclass(frozen=True)
class _Buffered:
    kind: str
    repository_id: int | None
    namespace_id: int | None
    #: File the entry under this user's namespace (a robot's: its owner's) at flush.
    namespace_of_user: str | None
    performer_id: int | None
    ip: str | None
    metadata: dict[str, Any]
    created_at: datetime


class LogBuffer:
    """Collects audit entries written off the request path (``pull_repo``, registry
    ``login_success``/``login_failure``) and writes them in one insert per flush.

    Adding an entry costs an append to a deque (no database round trip in the request).
    The flusher (:meth:`run`, started in the app's lifespan) writes the buffer at most
    once a second. **Up to a second of buffered entries (or everything buffered, if the
    database is unreachable) is lost when the process crashes**; that is the price of
    keeping the hottest paths free of writes. The buffer is bounded: beyond ``max_size``
    pending entries the oldest are dropped (and counted in :attr:`dropped`) rather than
    letting an unreachable database exhaust memory.

    Namespaces may be resolved at flush time, in one query per batch: from the
    repository (pulls) or from a user name (logins).
    """

    def __init__(self, db: Database, max_size: int = 10_000, interval_s: float = 1.0) -> None:
        self._db = db
        self._pending: deque[_Buffered] = deque(maxlen=max_size)
        self._lock = threading.Lock()
        self.interval_s = interval_s
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._pending)

    def add_entry(self, kind: str, *, performer: Subject | None, ip: str | None,
                  metadata: dict[str, Any], repository_id: int | None = None,
                  namespace_id: int | None = None,
                  namespace_of_user: str | None = None) -> None:
        """Queue one entry of any kind (thread-safe, no I/O).

        Without ``namespace_id``, the namespace is looked up at flush time from
        ``repository_id`` or else from ``namespace_of_user``.
        """
        entry = _Buffered(kind, repository_id, namespace_id, namespace_of_user,
                          performer.user_id if performer else None, ip, metadata, utcnow())
        with self._lock:
            if len(self._pending) == self._pending.maxlen:
                self.dropped += 1
            self._pending.append(entry)

    def add(self, repository_id: int, performer: Subject | None, ip: str | None,
            metadata: dict[str, Any]) -> None:
        """Queue one ``pull_repo`` entry (thread-safe, no I/O)."""
        self.add_entry("pull_repo", performer=performer, ip=ip, metadata=metadata,
                       repository_id=repository_id)

    def flush(self) -> int:
        """Write everything queued in one transaction; returns the number written.

        On a database error the batch is put back (within the bound) for the next try.
        """
        with self._lock:
            batch = list(self._pending)
            self._pending.clear()
        if not batch:
            return 0
        try:
            with self._db.session() as session:
                # Entries of repositories deleted since keep a null namespace (their
                # metadata still names it).
                repo_ids = {e.repository_id for e in batch
                            if e.namespace_id is None and e.repository_id is not None}
                by_repo = {row[0]: row[1] for row in session.execute(
                    select(Repository.id, Repository.namespace_id)
                    .where(Repository.id.in_(repo_ids))
                )} if repo_ids else {}
                names = {e.namespace_of_user for e in batch
                         if e.namespace_id is None and e.repository_id is None
                         and e.namespace_of_user}
                by_user = {row[0]: row[1] if row[1] is not None else row[2]
                           for row in session.execute(
                               select(User.username, User.namespace_id, User.robot_owner_id)
                               .where(User.username.in_(names))
                           )} if names else {}
                session.execute(insert(LogEntry), [
                    {"kind": e.kind,
                     "namespace_id": e.namespace_id if e.namespace_id is not None else (
                         by_repo.get(e.repository_id) if e.repository_id is not None
                         else by_user.get(e.namespace_of_user or "")),
                     "performer_id": e.performer_id, "repository_id": e.repository_id,
                     "ip": e.ip, "metadata_json": e.metadata, "created_at": e.created_at}
                    for e in batch
                ])
        except Exception:
            log.exception("could not write %d buffered log entries", len(batch))
            with self._lock:
                self._pending.extendleft(reversed(batch))
            return 0
        return len(batch)

    async def run(self) -> None:
        """Flush every ``interval_s`` until cancelled, then flush what is left."""
        try:
            while True:
                await asyncio.sleep(self.interval_s)
                if self._pending:
                    await anyio.to_thread.run_sync(self.flush)
        finally:
            self.flush()


#: The earlier name of :class:`LogBuffer`, when it held pulls only.
PullLogBuffer = LogBuffer


# --- reading -----------------------------------------------------------------------


@dataclass(frozen=True)
class LogScope:
    """Whose entries to read: one namespace, one repository, or one performer."""

    namespace_id: int | None = None
    repository_id: int | None = None
    performer_id: int | None = None


@dataclass(frozen=True)
class LogView:
    """One entry, with the names the API shows."""

    kind: str
    metadata: dict[str, Any]
    ip: str | None
    created_at: datetime
    performer: str | None
    performer_is_robot: bool
    namespace: str | None
    namespace_is_org: bool


def _as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def encode_page(entry_id: int) -> str:
    """An opaque ``next_page`` token: the last id shown."""
    return base64.urlsafe_b64encode(f"log:{entry_id}".encode()).decode().rstrip("=")


def decode_page(token: str) -> int:
    """The id in a ``next_page`` token (:class:`InvalidInput` if it is not one)."""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        prefix, _, number = text.partition(":")
        if prefix != "log" or not number.isdigit():
            raise ValueError(token)
        return int(number)
    except (binascii.Error, UnicodeError, ValueError):
        raise InvalidInput("Invalid next_page token.") from None


class AuditLogService:
    """Reads the audit log for the API, after checking who may."""

    def __init__(self, db: Database, policy: Policy) -> None:
        self._db = db
        self._policy = policy

    # --- authorization ---------------------------------------------------------------
    def repository_scope(self, subject: Subject, namespace: str, name: str) -> LogScope:
        """Repository logs need :attr:`Action.ADMIN` on it."""
        # Imported here: the repository service imports this module to audit creations.
        from portside.services.repositories import lookup_in_session

        with self._db.session() as session:
            lookup = lookup_in_session(session, namespace, name, subject.user_id)
            facts = lookup.facts
            if acts_as_superuser(subject) and facts.namespace_exists:
                facts = dataclasses.replace(facts, namespace_role=NamespaceRole.ADMIN)
            if Action.ADMIN not in allowed_actions(subject, facts, self._policy):
                if subject.anonymous:
                    raise Unauthenticated("Requires authentication.")
                raise Forbidden("Unauthorized")
            if lookup.repository is None:
                raise NotFound(f"Repository {namespace}/{name} not found.")
            return LogScope(repository_id=lookup.repository.id)

    def organization_scope(self, subject: Subject, org: str) -> LogScope:
        """Organization logs need :attr:`NamespaceAction.ADMINISTER` there."""
        if subject.anonymous:
            raise Unauthenticated("Requires authentication.")
        with self._db.session() as session:
            namespace = session.scalar(
                select(Namespace).where(Namespace.name == org, Namespace.kind == "organization")
            )
            role = None
            if namespace is not None:
                role = strongest_namespace_role(session.scalars(
                    select(Team.role).join(TeamMember, TeamMember.team_id == Team.id)
                    .where(Team.namespace_id == namespace.id,
                           TeamMember.user_id == subject.user_id)
                ))
            if acts_as_superuser(subject):
                role = NamespaceRole.ADMIN
            if NamespaceAction.ADMINISTER not in namespace_actions(subject, role, True):
                raise Forbidden("Unauthorized")
            if namespace is None:
                raise NotFound(f"Organization {org} not found.")
            return LogScope(namespace_id=namespace.id)

    def user_scope(self, subject: Subject) -> LogScope:
        """The caller's own namespace (Quay's ``/user/logs``; needs ``user:admin``)."""
        if subject.anonymous or subject.user_id is None:
            raise Unauthenticated("Requires authentication.")
        if subject.scopes is not None and "user:admin" not in subject.scopes:
            raise Forbidden("Unauthorized")
        with self._db.session() as session:
            namespace_id = session.scalar(select(User.namespace_id)
                                          .where(User.id == subject.user_id))
        if namespace_id is None:
            raise NotFound("User not found.")
        return LogScope(namespace_id=namespace_id)

    # --- queries ---------------------------------------------------------------------
    def _filtered(self, session: Session, scope: LogScope, start: datetime, end: datetime,
                  performer: str | None) -> Any:
        query = select(LogEntry).where(LogEntry.created_at >= start, LogEntry.created_at < end)
        # Entries only name ids, and SQLite hands the id of a purged namespace or
        # repository to the next one created: entries older than the namespace or
        # repository itself belong to an earlier owner of its id.
        if scope.namespace_id is not None:
            query = query.where(
                LogEntry.namespace_id == scope.namespace_id,
                LogEntry.created_at >= select(Namespace.created_at)
                .where(Namespace.id == scope.namespace_id).scalar_subquery())
        if scope.repository_id is not None:
            query = query.where(
                LogEntry.repository_id == scope.repository_id,
                LogEntry.created_at >= select(Repository.created_at)
                .where(Repository.id == scope.repository_id).scalar_subquery())
        if scope.performer_id is not None:
            query = query.where(LogEntry.performer_id == scope.performer_id)
        if performer:
            user_id = session.scalar(select(User.id).where(User.username == performer))
            # An unknown performer matches nothing (-1 is never an id).
            query = query.where(LogEntry.performer_id == (user_id if user_id else -1))
        return query

    def entries(self, scope: LogScope, start: datetime, end: datetime, *,
             performer: str | None = None, page_token: str | None = None,
             page_size: int = LOGS_PER_PAGE) -> tuple[list[LogView], str | None]:
        """Entries in ``[start, end)``, newest first, and the next page's token."""
        query_start = start
        with self._db.session() as session:
            query = self._filtered(session, scope, query_start, end, performer)
            if page_token:
                query = query.where(LogEntry.id < decode_page(page_token))
            rows = list(session.scalars(
                query.order_by(LogEntry.id.desc()).limit(page_size + 1)))
            more = len(rows) > page_size
            rows = rows[:page_size]
            user_ids = {r.performer_id for r in rows if r.performer_id is not None}
            users = {u.id: (u.username, u.robot_owner_id is not None) for u in session.scalars(
                select(User).where(User.id.in_(user_ids)))} if user_ids else {}
            ns_ids = {r.namespace_id for r in rows if r.namespace_id is not None}
            namespaces = {n.id: (n.name, n.kind == "organization") for n in session.scalars(
                select(Namespace).where(Namespace.id.in_(ns_ids)))} if ns_ids else {}
            views = []
            for row in rows:
                who = users.get(row.performer_id) if row.performer_id is not None else None
                where = namespaces.get(row.namespace_id) if row.namespace_id is not None else None
                views.append(LogView(
                    kind=row.kind, metadata=dict(row.metadata_json or {}), ip=row.ip,
                    created_at=_as_utc(row.created_at),
                    performer=who[0] if who else None, performer_is_robot=bool(who and who[1]),
                    namespace=where[0] if where else None,
                    namespace_is_org=bool(where and where[1]),
                ))
            return views, (encode_page(rows[-1].id) if more and rows else None)

    def aggregate(self, scope: LogScope, start: datetime, end: datetime, *,
                  performer: str | None = None) -> list[tuple[str, date, int]]:
        """``(kind, day, count)`` for each kind and UTC day in ``[start, end)``, counted
        by the database (``GROUP BY`` kind and day)."""
        with self._db.session() as session:
            day = self._utc_day(session)
            query = self._filtered(session, scope, start, end, performer)
            query = (query.with_only_columns(LogEntry.kind, day, func.count(LogEntry.id))
                     .group_by(LogEntry.kind, day))
            rows = [(str(kind), _as_date(value), int(count))
                    for kind, value, count in session.execute(query)]
        return sorted(rows, key=lambda item: (item[1], item[0]))

    @staticmethod
    def _utc_day(session: Session) -> Any:
        """The UTC day of ``created_at`` as SQL: SQLite stores UTC text, whose
        ``date()`` is the day; PostgreSQL converts ``timestamptz`` to UTC explicitly,
        whatever the session's time zone."""
        if session.get_bind().dialect.name == "sqlite":
            return func.date(LogEntry.created_at)
        return cast(func.timezone("UTC", LogEntry.created_at), Date)


def _as_date(value: Any) -> date:
    """A day from the database: a ``date`` (PostgreSQL) or ``YYYY-MM-DD`` (SQLite)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))
