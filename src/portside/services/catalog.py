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


def visibility_conditions(subject: Subject, policy: Policy,
                          include_public: bool) -> list[ColumnElement[bool]]:
    """SQL conditions (to be OR-ed) for the repositories ``subject`` may see.

    The same rules as the permission decision, in SQL for listings: public repositories
    (when asked for and allowed), the subject's own namespace, organizations where one
    of its teams is admin, and repositories granted to it or its teams. An empty list
    means nothing is visible.
    """
    visible: list[ColumnElement[bool]] = []
    if include_public and (not subject.anonymous or policy.anonymous_access):
        visible.append(Repository.public.is_(True))
    if subject.user_id is not None:
        own = select(User.namespace_id).where(User.id == subject.user_id)
        teams = select(TeamMember.team_id).where(TeamMember.user_id == subject.user_id)
        administered = select(Team.namespace_id).where(
            Team.id.in_(teams), Team.role == NamespaceRole.ADMIN.value
        )
        granted = select(RepositoryPermission.repository_id).where(
            or_(RepositoryPermission.user_id == subject.user_id,
                RepositoryPermission.team_id.in_(teams))
        )
        visible += [Repository.namespace_id.in_(own),
                    Repository.namespace_id.in_(administered),
                    Repository.id.in_(granted)]
    return visible


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
            .where(Repository.deleted_at.is_(None))  # marked for garbage collection
        )
        visible = visibility_conditions(subject, self._policy, include_public=True)
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
