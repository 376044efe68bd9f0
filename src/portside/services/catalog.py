"""The repository catalog: every repository the caller can see, paginated."""

from __future__ import annotations

from sqlalchemy import ColumnElement, or_, select

from portside.auth.permissions import NamespaceRole, Policy, Subject
from portside.db.engine import Database
from portside.db.models import (
    Namespace,
    Repository,
    RepositoryPermission,
    Team,
    TeamMember,
    User,
)


class CatalogService:
    """Lists repositories visible to a subject in lexical order of full name."""

    def __init__(self, db: Database, policy: Policy) -> None:
        self._db = db
        self._policy = policy

    def list(self, subject: Subject, last: str | None, limit: int | None) -> list[str]:
        """Full names after ``last`` (exclusive), at most ``limit``."""
        full_name = Namespace.name + "/" + Repository.name
        # The selected expression mentions both tables: name the join's left side.
        query = (
            select(full_name)
            .select_from(Repository)
            .join(Namespace, Namespace.id == Repository.namespace_id)
        )
        visible: list[ColumnElement[bool]] = []
        if not subject.anonymous or self._policy.anonymous_access:
            visible.append(Repository.public.is_(True))
        if subject.user_id is not None:
            own = select(User.namespace_id).where(User.id == subject.user_id)
            teams = select(TeamMember.team_id).where(TeamMember.user_id == subject.user_id)
            # Organizations where one of the subject's teams administers everything.
            administered = select(Team.namespace_id).where(
                Team.id.in_(teams), Team.role == NamespaceRole.ADMIN.value
            )
            granted = select(RepositoryPermission.repository_id).where(
                or_(RepositoryPermission.user_id == subject.user_id,
                    RepositoryPermission.team_id.in_(teams))
            )
            visible.append(Repository.namespace_id.in_(own))
            visible.append(Repository.namespace_id.in_(administered))
            visible.append(Repository.id.in_(granted))
        if not visible:
            return []
        query = query.where(or_(*visible))
        if last:
            query = query.where(full_name > last)
        query = query.order_by(full_name)
        if limit is not None:
            query = query.limit(limit)
        with self._db.session() as session:
            return list(session.scalars(query))
