"""Repositories and namespaces as the registry sees them: lookup, facts, create on push."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Connection, and_, bindparam, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portside.auth.permissions import (
    NamespaceRole,
    RepositoryFacts,
    Subject,
    strongest_namespace_role,
    strongest_repository_role,
)
from portside.db.engine import Database
from portside.db.models import (
    Namespace,
    ProxyCacheConfig,
    RepoMirrorConfig,
    Repository,
    RepositoryPermission,
    Team,
    TeamMember,
    User,
)
from portside.services.audit import record
from portside.services.default_permissions import apply_default_permissions

T = TypeVar("T")


@dataclass(frozen=True)
class RepositoryRef:
    """A repository that exists."""

    id: int
    namespace: str
    name: str
    public: bool
    state: str

    @property
    def full_name(self) -> str:
        """``namespace/name`` as clients write it."""
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Lookup:
    """The permission facts for a name, and the repository if it exists."""

    facts: RepositoryFacts
    repository: RepositoryRef | None


# Built once: these queries run on every registry request, and constructing a statement
# costs more than SQLite takes to answer it.
_LOOKUP = (
    select(
        Namespace.id.label("namespace_id"),
        Namespace.kind,
        User.id.label("owner_id"),
        Repository.id.label("repo_id"),
        Repository.public,
        Repository.state,
        ProxyCacheConfig.id.label("proxy_cache_id"),
    )
    .select_from(Namespace)
    .outerjoin(User, User.namespace_id == Namespace.id)
    .outerjoin(ProxyCacheConfig, ProxyCacheConfig.namespace_id == Namespace.id)
    .outerjoin(
        Repository,
        and_(Repository.namespace_id == Namespace.id,
             Repository.name == bindparam("repo_name")),
    )
    .where(Namespace.name == bindparam("namespace_name"))
)
_SUBJECT_TEAMS = select(TeamMember.team_id).where(TeamMember.user_id == bindparam("user_id"))
_TEAM_ROLES = (
    select(Team.role)
    .join(TeamMember, TeamMember.team_id == Team.id)
    .where(Team.namespace_id == bindparam("namespace_id"),
           TeamMember.user_id == bindparam("user_id"))
)
_REPOSITORY_ROLES = select(RepositoryPermission.role).where(
    RepositoryPermission.repository_id == bindparam("repo_id"),
    or_(RepositoryPermission.user_id == bindparam("user_id"),
        RepositoryPermission.team_id.in_(_SUBJECT_TEAMS)),
)

_MIRROR_ROBOT = select(RepoMirrorConfig.robot_id).where(
    RepoMirrorConfig.repository_id == bindparam("repo_id"))


def lookup_in_session(session: Session | Connection, namespace_name: str, repo_name: str,
                      user_id: int | None = None) -> Lookup:
    """:meth:`RepositoryService.lookup` on an existing session or connection.

    One query for the name; for a signed-in subject outside its own namespace, one more
    for its team roles in an organization and one for its roles on the repository.
    """
    row = session.execute(
        _LOOKUP, {"namespace_name": namespace_name, "repo_name": repo_name}
    ).first()
    if row is None:
        return Lookup(RepositoryFacts(namespace_exists=False), None)
    namespace_role = None
    repository_role = None
    if user_id is not None:
        if row.kind == "user":
            namespace_role = NamespaceRole.ADMIN if row.owner_id == user_id else None
        else:
            namespace_role = strongest_namespace_role(session.execute(
                _TEAM_ROLES, {"namespace_id": row.namespace_id, "user_id": user_id}
            ).scalars())
        if row.repo_id is not None and namespace_role != NamespaceRole.ADMIN:
            repository_role = strongest_repository_role(session.execute(
                _REPOSITORY_ROLES, {"repo_id": row.repo_id, "user_id": user_id}
            ).scalars())
    # Only a mirrored repository costs this query: its robot is the one pusher allowed.
    mirror_robot = (row.state == "MIRROR" and user_id is not None and session.execute(
        _MIRROR_ROBOT, {"repo_id": row.repo_id}).scalar() == user_id)
    facts = RepositoryFacts(
        namespace_exists=True,
        namespace_role=namespace_role,
        repository_exists=row.repo_id is not None,
        repository_role=repository_role,
        public=bool(row.public),
        state=row.state or "NORMAL",
        mirror_robot=mirror_robot,
        proxy_cache=row.proxy_cache_id is not None,
    )
    if row.repo_id is None:
        return Lookup(facts, None)
    ref = RepositoryRef(row.repo_id, namespace_name, repo_name, row.public, row.state)
    return Lookup(facts, ref)


OWNERS_TEAM = "owners"


def create_organization(session: Session, name: str, creator_id: int | None) -> Namespace:
    """An organization namespace with Quay's ``owners`` team (admin) holding its creator."""
    namespace = Namespace(name=name, kind="organization", created_by_user_id=creator_id)
    session.add(namespace)
    session.flush()
    owners = Team(namespace_id=namespace.id, name=OWNERS_TEAM, role=NamespaceRole.ADMIN.value,
                  description="Administrators of the organization")
    session.add(owners)
    session.flush()
    if creator_id is not None:
        session.add(TeamMember(team_id=owners.id, user_id=creator_id))
    return namespace


def grant_creator_admin(session: Session, namespace: Namespace, repository_id: int,
                        user_id: int | None) -> None:
    """Whoever creates a repository in an organization without administering the whole
    organization (a team ``creator``) administers the new repository, as in Quay."""
    if namespace.kind != "organization" or user_id is None:
        return
    roles = session.execute(
        _TEAM_ROLES, {"namespace_id": namespace.id, "user_id": user_id}
    ).scalars()
    if strongest_namespace_role(roles) != NamespaceRole.ADMIN:
        session.add(RepositoryPermission(repository_id=repository_id, user_id=user_id,
                                         role="admin"))


class RepositoryService:
    """Finds repositories and creates them on first push."""

    def __init__(self, db: Database, create_private_on_push: bool) -> None:
        self._db = db
        self._create_private = create_private_on_push

    def lookup(self, namespace_name: str, repo_name: str,
               user_id: int | None = None) -> Lookup:
        """Everything the permission decision and the handlers need about a name, as seen
        by the user ``user_id`` (``None``: anonymous)."""
        with self._db.read() as connection:
            return lookup_in_session(connection, namespace_name, repo_name, user_id)

    def lookup_then(self, namespace_name: str, repo_name: str, user_id: int | None,
                    then: Callable[[Lookup, Connection], T]) -> T:
        """Look up a name and hand the result and the same connection to ``then``.

        Hot read paths check permissions and fetch what they serve on one connection.
        """
        with self._db.read() as connection:
            return then(lookup_in_session(connection, namespace_name, repo_name, user_id),
                        connection)

    def lookup_by_id(self, repository_id: int, user_id: int | None = None) -> Lookup | None:
        """Like :meth:`lookup`, for a repository known by id (``None`` if gone)."""
        with self._db.session() as session:
            row = session.execute(
                select(Namespace.name, Repository.name)
                .join(Namespace, Namespace.id == Repository.namespace_id)
                .where(Repository.id == repository_id, Repository.deleted_at.is_(None))
            ).first()
            if row is None:
                return None
            return lookup_in_session(session, row[0], row[1], user_id)

    def ensure_for_push(self, subject: Subject, namespace_name: str,
                        repo_name: str, *, ip: str | None = None) -> RepositoryRef:
        """Return the repository, creating it (and an organization namespace) if missing.

        The caller has already decided that ``subject`` may push here. Creations are
        audited (``org_create``, ``create_repo``) in the same transaction.
        """
        for _attempt in range(3):
            try:
                with self._db.session() as session:
                    namespace = session.scalar(
                        select(Namespace).where(Namespace.name == namespace_name)
                    )
                    if namespace is None:
                        namespace = create_organization(session, namespace_name,
                                                        subject.user_id)
                        record(session, "org_create", performer=subject,
                               namespace_id=namespace.id, ip=ip,
                               metadata={"namespace": namespace_name})
                    repo = session.scalar(
                        select(Repository).where(
                            Repository.namespace_id == namespace.id,
                            Repository.name == repo_name,
                        )
                    )
                    if repo is None:
                        repo = Repository(
                            namespace_id=namespace.id,
                            name=repo_name,
                            public=not self._create_private,
                        )
                        session.add(repo)
                        session.flush()
                        grant_creator_admin(session, namespace, repo.id, subject.user_id)
                        apply_default_permissions(session, namespace, repo.id,
                                                  subject.user_id)
                        record(session, "create_repo", performer=subject,
                               namespace_id=namespace.id, repository_id=repo.id, ip=ip,
                               metadata={"repo": repo_name, "namespace": namespace_name})
                    return RepositoryRef(
                        repo.id, namespace_name, repo.name, repo.public, repo.state
                    )
            except IntegrityError:
                # Another request created the namespace or repository concurrently.
                continue
        raise RuntimeError(f"could not create repository {namespace_name}/{repo_name}")
