"""Repositories and namespaces as the registry sees them: lookup, facts, create on push."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Connection, and_, bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portside.auth.permissions import RepositoryFacts, Subject
from portside.db.engine import Database
from portside.db.models import Namespace, Repository, User

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


# Built once: this query runs on every registry request, and constructing a statement
# costs more than SQLite takes to answer it.
_LOOKUP = (
    select(
        Namespace.kind,
        Namespace.created_by_user_id,
        User.id.label("owner_id"),
        Repository.id.label("repo_id"),
        Repository.public,
        Repository.state,
    )
    .select_from(Namespace)
    .outerjoin(User, User.namespace_id == Namespace.id)
    .outerjoin(
        Repository,
        and_(Repository.namespace_id == Namespace.id,
             Repository.name == bindparam("repo_name")),
    )
    .where(Namespace.name == bindparam("namespace_name"))
)


def lookup_in_session(session: Session | Connection, namespace_name: str,
                      repo_name: str) -> Lookup:
    """:meth:`RepositoryService.lookup` on an existing session or connection (one query)."""
    row = session.execute(
        _LOOKUP, {"namespace_name": namespace_name, "repo_name": repo_name}
    ).first()
    if row is None:
        return Lookup(RepositoryFacts(namespace_exists=False), None)
    admin = row.owner_id if row.kind == "user" else row.created_by_user_id
    admins = frozenset({admin}) if admin is not None else frozenset()
    if row.repo_id is None:
        return Lookup(RepositoryFacts(namespace_exists=True, namespace_admins=admins), None)
    facts = RepositoryFacts(
        namespace_exists=True,
        namespace_admins=admins,
        repository_exists=True,
        public=row.public,
        state=row.state,
    )
    ref = RepositoryRef(row.repo_id, namespace_name, repo_name, row.public, row.state)
    return Lookup(facts, ref)


class RepositoryService:
    """Finds repositories and creates them on first push."""

    def __init__(self, db: Database, create_private_on_push: bool) -> None:
        self._db = db
        self._create_private = create_private_on_push

    def lookup(self, namespace_name: str, repo_name: str) -> Lookup:
        """Everything the permission decision and the handlers need about a name."""
        with self._db.read() as connection:
            return lookup_in_session(connection, namespace_name, repo_name)

    def lookup_then(self, namespace_name: str, repo_name: str,
                    then: Callable[[Lookup, Connection], T]) -> T:
        """Look up a name and hand the result and the same connection to ``then``.

        Hot read paths check permissions and fetch what they serve on one connection.
        """
        with self._db.read() as connection:
            return then(lookup_in_session(connection, namespace_name, repo_name), connection)

    def lookup_by_id(self, repository_id: int) -> Lookup | None:
        """Like :meth:`lookup`, for a repository known by id (``None`` if gone)."""
        with self._db.session() as session:
            row = session.execute(
                select(Namespace.name, Repository.name)
                .join(Namespace, Namespace.id == Repository.namespace_id)
                .where(Repository.id == repository_id)
            ).first()
            if row is None:
                return None
            return lookup_in_session(session, row[0], row[1])

    def ensure_for_push(self, subject: Subject, namespace_name: str,
                        repo_name: str) -> RepositoryRef:
        """Return the repository, creating it (and an organization namespace) if missing.

        The caller has already decided that ``subject`` may push here.
        """
        for _attempt in range(3):
            try:
                with self._db.session() as session:
                    namespace = session.scalar(
                        select(Namespace).where(Namespace.name == namespace_name)
                    )
                    if namespace is None:
                        namespace = Namespace(
                            name=namespace_name,
                            kind="organization",
                            created_by_user_id=subject.user_id,
                        )
                        session.add(namespace)
                        session.flush()
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
                    return RepositoryRef(
                        repo.id, namespace_name, repo.name, repo.public, repo.state
                    )
            except IntegrityError:
                # Another request created the namespace or repository concurrently.
                continue
        raise RuntimeError(f"could not create repository {namespace_name}/{repo_name}")
