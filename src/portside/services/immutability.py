"""Immutable tags: the per-tag flag, immutability policies of namespaces and repositories,
and the one decision every tag-changing path asks (:func:`is_immutable`).

A tag is immutable when its active row carries the flag (``Tag.immutable``) or when its
name is matched by an immutability policy of its repository or of the repository's
namespace. Policies are evaluated when a tag is about to change, so a policy applies to
tags pushed before it as well as after, and deleting the policy lifts it again. An
immutable tag is never moved, deleted, expired or pruned; pushing a *new* tag whose name
matches a policy works (the tag is immutable from then on).

Policy patterns are Python regular expressions anchored at the start of the tag name
(``re.match``, as Quay evaluates them): ``v[0-9]`` covers ``v1`` and ``v1.2.3``, ``.*-rc``
covers ``1.0-rc``; add ``$`` to pin the end.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

from sqlalchemy import Connection, Select, and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portside.auth.permissions import (
    Action,
    NamespaceAction,
    NamespaceRole,
    Policy,
    Subject,
    acts_as_superuser,
    namespace_actions,
    strongest_namespace_role,
)
from portside.db.engine import Database
from portside.db.models import (
    ImmutabilityPolicy,
    Namespace,
    Repository,
    Tag,
    Team,
    TeamMember,
    User,
)
from portside.oci.names import is_valid_tag
from portside.services.audit import AuditContext, record, record_for_repository
from portside.services.errors import InUse
from portside.services.organizations import Forbidden, Invalid, NotFound
from portside.services.repositories import RepositoryRef
from portside.services.repository_access import authorize_repository

T = TypeVar("T")

#: Longest accepted pattern (the column's size; Quay allows 256).
MAX_PATTERN_LENGTH = 255
#: Tag names looked up per query by the bulk check.
_BULK_CHUNK = 500


class TagImmutable(InUse):
    """The tag is immutable: it cannot be moved or deleted (HTTP 409)."""

    code = "TAG_IMMUTABLE"

    def __init__(self, tag: str) -> None:
        super().__init__(f"tag '{tag}' is immutable", {"tag": tag})
        self.tag = tag


# --- patterns ---------------------------------------------------------------------------
@lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> re.Pattern[str] | None:
    """The compiled pattern (cached: policies are evaluated on every tag change);
    ``None`` for one that does not compile (stored before validation, never matches)."""
    try:
        return re.compile(pattern)
    except (re.error, RecursionError, OverflowError):
        return None


def check_pattern(pattern: object, *, field: str = "tagPattern") -> str:
    """``pattern`` as a policy may store it; raises :class:`Invalid` (400) otherwise."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise Invalid(f"{field} must be a non-empty string")
    pattern = pattern.strip()
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise Invalid(f"{field} must be {MAX_PATTERN_LENGTH} characters or less")
    if "\x00" in pattern:
        raise Invalid(f"{field} must not contain NUL characters")
    try:
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise Invalid(f"Invalid regular expression in {field}: {exc}") from None
    return pattern


def policy_matches(tag: str, pattern: str, pattern_matches: bool) -> bool:
    """True if an immutability policy with ``pattern`` covers ``tag``."""
    compiled = compile_pattern(pattern)
    if compiled is None:
        return False
    matched = compiled.match(tag) is not None
    return matched if pattern_matches else not matched


# --- the decision -----------------------------------------------------------------------
def _policies(session: Session | Connection, repository_id: int) -> list[tuple[str, bool]]:
    """``(pattern, pattern_matches)`` of every policy covering the repository: its own
    and its namespace's, in one query."""
    namespace_id = (
        select(Repository.namespace_id).where(Repository.id == repository_id).scalar_subquery()
    )
    rows = session.execute(
        select(ImmutabilityPolicy.tag_pattern, ImmutabilityPolicy.tag_pattern_matches).where(
            or_(
                ImmutabilityPolicy.repository_id == repository_id,
                and_(
                    ImmutabilityPolicy.repository_id.is_(None),
                    ImmutabilityPolicy.namespace_id == namespace_id,
                ),
            )
        )
    ).all()
    return [(row[0], bool(row[1])) for row in rows]


def is_immutable(session: Session | Connection, repository_id: int, tag_name: str) -> bool:
    """True if tag ``tag_name`` of the repository is immutable: its active row carries
    the flag, or a policy of the repository or its namespace covers the name."""
    flagged = session.scalar(
        select(Tag.immutable).where(
            Tag.repository_id == repository_id, Tag.name == tag_name, Tag.lifetime_end_ms.is_(None)
        )
    )
    if flagged:
        return True
    return any(
        policy_matches(tag_name, pattern, matches)
        for pattern, matches in _policies(session, repository_id)
    )


def immutable_tags(
    session: Session | Connection, repository_id: int, tag_names: Iterable[str]
) -> set[str]:
    """The names among ``tag_names`` that are immutable (see :func:`is_immutable`), with
    one policy query and one flag query per 500 names."""
    names = list(dict.fromkeys(tag_names))
    if not names:
        return set()
    policies = _policies(session, repository_id)
    result = {name for name in names if any(policy_matches(name, p, m) for p, m in policies)}
    rest = [name for name in names if name not in result]
    for start in range(0, len(rest), _BULK_CHUNK):
        chunk = rest[start : start + _BULK_CHUNK]
        result.update(
            session.scalars(
                select(Tag.name).where(
                    Tag.repository_id == repository_id,
                    Tag.name.in_(chunk),
                    Tag.lifetime_end_ms.is_(None),
                    Tag.immutable.is_(True),
                )
            )
        )
    return result


def check_mutable(session: Session | Connection, repository_id: int, tag_name: str) -> None:
    """Raise :class:`TagImmutable` if the tag is active and immutable (a tag that is not
    active is left to the caller's own "unknown tag" answer)."""
    flagged = session.scalar(
        select(Tag.immutable).where(
            Tag.repository_id == repository_id, Tag.name == tag_name, Tag.lifetime_end_ms.is_(None)
        )
    )
    if flagged is None:
        return
    if flagged or any(
        policy_matches(tag_name, pattern, matches)
        for pattern, matches in _policies(session, repository_id)
    ):
        raise TagImmutable(tag_name)


# --- who may manage policies ----------------------------------------------------------
def administered_namespace(
    session: Session, subject: Subject, name: str, *, lock: bool = False
) -> Namespace:
    """Namespace ``name`` (an organization or a user's own namespace), once ``subject``
    administers it: an organization's admin teams, the user of a user namespace, and
    superusers (within their token's scopes: ``org:admin`` or ``user:admin``)."""
    query = select(Namespace).where(Namespace.name == name, Namespace.deleted_at.is_(None))
    if lock:
        query = query.with_for_update()
    namespace = session.scalar(query)
    if namespace is None:
        raise NotFound(f"Unknown namespace {name[:100]!r}")
    is_org = namespace.kind == "organization"
    role: NamespaceRole | None = None
    if subject.user_id is not None:
        if is_org:
            role = strongest_namespace_role(
                session.scalars(
                    select(Team.role)
                    .join(TeamMember, TeamMember.team_id == Team.id)
                    .where(Team.namespace_id == namespace.id, TeamMember.user_id == subject.user_id)
                )
            )
        elif session.scalar(
            select(User.id).where(User.id == subject.user_id, User.namespace_id == namespace.id)
        ):
            role = NamespaceRole.ADMIN
    effective = NamespaceRole.ADMIN if acts_as_superuser(subject) else role
    if NamespaceAction.ADMINISTER not in namespace_actions(subject, effective, is_org):
        raise Forbidden("Unauthorized")
    return namespace


def administered_repository(
    session: Session, subject: Subject, namespace: str, name: str, policy: Policy
) -> RepositoryRef:
    """The repository once ``subject`` administers it (tokens need ``repo:admin``)."""
    return authorize_repository(session, subject, namespace, name, Action.ADMIN, policy)


def write_retrying(db: Database, work: Callable[[Session], T]) -> T:
    """Run ``work`` in a write transaction; once more after a lost race (an integrity
    error from a concurrent change), whose retry then sees the winner's outcome."""
    for attempt in range(2):
        try:
            with db.session() as session:
                return work(session)
        except IntegrityError:
            if attempt == 1:
                raise
    raise AssertionError("unreachable")


# --- policies -------------------------------------------------------------------------
@dataclass(frozen=True)
class ImmutabilityPolicyInfo:
    """One immutability policy, as Quay shows it."""

    uuid: str
    tag_pattern: str
    tag_pattern_matches: bool


def _info(row: ImmutabilityPolicy) -> ImmutabilityPolicyInfo:
    return ImmutabilityPolicyInfo(row.uuid, row.tag_pattern, bool(row.tag_pattern_matches))


def _check_matches(value: object) -> bool:
    if value is None:
        return True
    if not isinstance(value, bool):
        raise Invalid("tagPatternMatches must be a boolean")
    return value


class ImmutabilityService:
    """Immutability policies of namespaces and repositories, and the per-tag flag."""

    def __init__(self, db: Database, policy: Policy) -> None:
        self._db = db
        self._policy = policy

    # --- scopes ------------------------------------------------------------------------
    def _scope(
        self, session: Session, subject: Subject, namespace: str, repository: str | None
    ) -> tuple[Namespace | None, RepositoryRef | None, int]:
        """The namespace row (namespace policies) or repository (repository policies)
        once ``subject`` administers it, and the namespace id."""
        if repository is None:
            ns = administered_namespace(session, subject, namespace)
            return ns, None, ns.id
        repo = administered_repository(session, subject, namespace, repository, self._policy)
        namespace_id = session.scalar(
            select(Repository.namespace_id).where(Repository.id == repo.id)
        )
        return None, repo, int(namespace_id or 0)

    @staticmethod
    def _rows(namespace_id: int, repository_id: int | None) -> Select[ImmutabilityPolicy]:
        query = select(ImmutabilityPolicy).where(ImmutabilityPolicy.namespace_id == namespace_id)
        if repository_id is None:
            query = query.where(ImmutabilityPolicy.repository_id.is_(None))
        else:
            query = query.where(ImmutabilityPolicy.repository_id == repository_id)
        return query.order_by(ImmutabilityPolicy.id)

    def policies(
        self, subject: Subject, namespace: str, repository: str | None = None
    ) -> list[ImmutabilityPolicyInfo]:
        """The policies of the namespace (``repository`` ``None``) or of the repository."""
        with self._db.read() as connection, Session(bind=connection) as session:
            _ns, repo, namespace_id = self._scope(session, subject, namespace, repository)
            rows = session.scalars(self._rows(namespace_id, repo.id if repo else None)).all()
            return [_info(row) for row in rows]

    def get(
        self, subject: Subject, namespace: str, repository: str | None, policy_uuid: str
    ) -> ImmutabilityPolicyInfo:
        """One policy; :class:`NotFound` if it is not one of the scope's."""
        with self._db.read() as connection, Session(bind=connection) as session:
            _ns, repo, namespace_id = self._scope(session, subject, namespace, repository)
            return _info(self._row(session, namespace_id, repo, policy_uuid))

    @staticmethod
    def _row(
        session: Session, namespace_id: int, repo: RepositoryRef | None, policy_uuid: str
    ) -> ImmutabilityPolicy:
        query = select(ImmutabilityPolicy).where(
            ImmutabilityPolicy.uuid == policy_uuid[:36],
            ImmutabilityPolicy.namespace_id == namespace_id,
        )
        query = query.where(
            ImmutabilityPolicy.repository_id.is_(None)
            if repo is None
            else ImmutabilityPolicy.repository_id == repo.id
        )
        row = session.scalar(query)
        if row is None:
            raise NotFound(f"Immutability policy {policy_uuid[:100]!r} not found")
        return row

    def _duplicate(
        self,
        session: Session,
        namespace_id: int,
        repo: RepositoryRef | None,
        pattern: str,
        exclude: str | None,
    ) -> None:
        query = select(ImmutabilityPolicy.uuid).where(
            ImmutabilityPolicy.namespace_id == namespace_id,
            ImmutabilityPolicy.tag_pattern == pattern,
        )
        query = query.where(
            ImmutabilityPolicy.repository_id.is_(None)
            if repo is None
            else ImmutabilityPolicy.repository_id == repo.id
        )
        if any(found != exclude for found in session.scalars(query)):
            raise Invalid("A policy with the same tagPattern already exists")

    def _audit(
        self,
        session: Session,
        kind: str,
        subject: Subject,
        namespace_id: int,
        namespace: str,
        repo: RepositoryRef | None,
        ip: str | None,
        **metadata: object,
    ) -> None:
        if repo is None:
            record(
                session,
                kind,
                performer=subject,
                namespace_id=namespace_id,
                ip=ip,
                metadata={"namespace": namespace, **metadata},
            )
        else:
            record_for_repository(session, kind, repo.id, AuditContext(subject, ip), **metadata)

    def create(
        self,
        subject: Subject,
        namespace: str,
        repository: str | None,
        *,
        tag_pattern: object,
        tag_pattern_matches: object,
        ip: str | None = None,
    ) -> ImmutabilityPolicyInfo:
        """Add a policy; records ``create_immutability_policy``."""

        def work(session: Session) -> ImmutabilityPolicyInfo:
            _ns, repo, namespace_id = self._scope(session, subject, namespace, repository)
            pattern = check_pattern(tag_pattern)
            matches = _check_matches(tag_pattern_matches)
            self._duplicate(session, namespace_id, repo, pattern, None)
            row = ImmutabilityPolicy(
                uuid=str(uuid.uuid4()),
                namespace_id=namespace_id,
                repository_id=repo.id if repo else None,
                tag_pattern=pattern,
                tag_pattern_matches=matches,
            )
            session.add(row)
            session.flush()
            self._audit(
                session,
                "create_immutability_policy",
                subject,
                namespace_id,
                namespace,
                repo,
                ip,
                policy_uuid=row.uuid,
                tag_pattern=pattern,
                tag_pattern_matches=matches,
            )
            return _info(row)

        return write_retrying(self._db, work)

    def update(
        self,
        subject: Subject,
        namespace: str,
        repository: str | None,
        policy_uuid: str,
        *,
        tag_pattern: object,
        tag_pattern_matches: object,
        ip: str | None = None,
    ) -> ImmutabilityPolicyInfo:
        """Change a policy; records ``update_immutability_policy``."""

        def work(session: Session) -> ImmutabilityPolicyInfo:
            _ns, repo, namespace_id = self._scope(session, subject, namespace, repository)
            row = self._row(session, namespace_id, repo, policy_uuid)
            pattern = check_pattern(tag_pattern)
            matches = _check_matches(tag_pattern_matches)
            self._duplicate(session, namespace_id, repo, pattern, row.uuid)
            row.tag_pattern = pattern
            row.tag_pattern_matches = matches
            session.flush()
            self._audit(
                session,
                "update_immutability_policy",
                subject,
                namespace_id,
                namespace,
                repo,
                ip,
                policy_uuid=row.uuid,
                tag_pattern=pattern,
                tag_pattern_matches=matches,
            )
            return _info(row)

        return write_retrying(self._db, work)

    def delete(
        self,
        subject: Subject,
        namespace: str,
        repository: str | None,
        policy_uuid: str,
        ip: str | None = None,
    ) -> None:
        """Remove a policy (its tags become mutable unless flagged or covered by
        another policy); records ``delete_immutability_policy``."""

        def work(session: Session) -> None:
            _ns, repo, namespace_id = self._scope(session, subject, namespace, repository)
            row = self._row(session, namespace_id, repo, policy_uuid)
            session.delete(row)
            self._audit(
                session,
                "delete_immutability_policy",
                subject,
                namespace_id,
                namespace,
                repo,
                ip,
                policy_uuid=row.uuid,
            )

        write_retrying(self._db, work)

    # --- the per-tag flag --------------------------------------------------------------
    def set_flag(
        self,
        subject: Subject,
        namespace: str,
        name: str,
        tag: str,
        immutable: bool,
        ip: str | None = None,
    ) -> None:
        """Set or clear the immutable flag of an active tag, as Quay allows: writers may
        set it, only administrators clear it. Records ``change_tag_immutability`` when it
        changes. A tag covered by a policy stays immutable whatever its flag."""
        if not is_valid_tag(tag):
            raise Invalid("Invalid tag name")
        with self._db.session() as session:
            action = Action.PUSH if immutable else Action.ADMIN
            repo = authorize_repository(session, subject, namespace, name, action, self._policy)
            current = session.execute(
                select(Tag.id, Tag.immutable, Tag.expiration_ms).where(
                    Tag.repository_id == repo.id, Tag.name == tag, Tag.lifetime_end_ms.is_(None)
                )
            ).first()
            if current is None:
                raise NotFound(f"Tag {tag} not found.")
            if bool(current.immutable) == immutable:
                return
            if immutable and current.expiration_ms is not None:
                # As in Quay: an expiring tag would disappear, which immutability forbids.
                raise Invalid(
                    f"Tag {tag} has an expiration: clear it before making the tag immutable"
                )
            session.execute(update(Tag).where(Tag.id == current.id).values(immutable=immutable))
            record_for_repository(
                session,
                "change_tag_immutability",
                repo.id,
                AuditContext(subject, ip),
                tag=tag,
                immutable=immutable,
                previous_immutable=bool(current.immutable),
            )
