"""Repository stars: a user's bookmarks of repositories it can read (Quay's stars)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.exc import IntegrityError

from portside.auth.permissions import Action, Policy, Subject, allowed_actions
from portside.db.engine import Database
from portside.db.models import Namespace, Repository, RepositoryStar
from portside.services.catalog import visibility_conditions
from portside.services.repositories import lookup_in_session
from portside.services.repository_admin import (
    REPOSITORIES_PER_PAGE,
    Forbidden,
    NotFound,
    Unauthenticated,
)


@dataclass(frozen=True)
class StarredRepository:
    """A starred repository, as Quay's star list shows it."""

    namespace: str
    name: str
    description: str | None
    public: bool


class StarService:
    """Stars and unstars repositories for a signed-in user and lists its stars."""

    def __init__(self, db: Database, policy: Policy) -> None:
        self._db = db
        self._policy = policy

    def list(self, subject: Subject, after: str | None = None,
             limit: int = REPOSITORIES_PER_PAGE,
             ) -> tuple[list[StarredRepository], str | None]:
        """The subject's starred repositories that it can still see, by full name after
        ``after``; returns the page and the full name to continue after (``None`` on
        the last page). A repository made private since it was starred drops out."""
        if subject.user_id is None:
            raise Unauthenticated("Requires authentication.")
        visible = visibility_conditions(subject, self._policy, include_public=True)
        full_name = Namespace.name + "/" + Repository.name
        query = (
            select(Namespace.name, Repository.name, Repository.description,
                   Repository.public)
            .select_from(Repository)
            .join(Namespace, Namespace.id == Repository.namespace_id)
            .join(RepositoryStar, and_(RepositoryStar.repository_id == Repository.id,
                                       RepositoryStar.user_id == subject.user_id))
            .where(or_(*visible), Repository.deleted_at.is_(None))
        )
        if after:
            query = query.where(full_name > after)
        # One row more than asked tells whether another page follows.
        query = query.order_by(full_name).limit(limit + 1)
        with self._db.read() as connection:
            rows = connection.execute(query).all()
        page = [StarredRepository(ns, name, description, bool(public))
                for ns, name, description, public in rows[:limit]]
        following = f"{page[-1].namespace}/{page[-1].name}" if len(rows) > limit else None
        return page, following

    def star(self, subject: Subject, namespace: str, name: str) -> None:
        """Star a repository the subject may pull from (starring twice is harmless)."""
        if subject.user_id is None:
            raise Unauthenticated("Requires authentication.")
        try:
            with self._db.session() as session:
                lookup = lookup_in_session(session, namespace, name, subject.user_id)
                # Rights before existence, as everywhere: no probing for private names.
                if Action.PULL not in allowed_actions(subject, lookup.facts, self._policy):
                    raise Forbidden("You do not have permission for this repository.")
                if lookup.repository is None:
                    raise NotFound(f"Repository {namespace}/{name} not found.")
                present = session.scalar(select(RepositoryStar.user_id).where(
                    RepositoryStar.user_id == subject.user_id,
                    RepositoryStar.repository_id == lookup.repository.id))
                if present is None:
                    session.add(RepositoryStar(user_id=subject.user_id,
                                               repository_id=lookup.repository.id))
        except IntegrityError:
            # A concurrent request starred it first: the star is there either way.
            return

    def unstar(self, subject: Subject, namespace: str, name: str) -> None:
        """Remove the subject's star (removing a missing star is harmless).

        The repository must be one the subject starred or can read: a star on a
        repository made private since can still be removed, while other private names
        stay hidden (:class:`NotFound`, as for a missing repository).
        """
        if subject.user_id is None:
            raise Unauthenticated("Requires authentication.")
        with self._db.session() as session:
            lookup = lookup_in_session(session, namespace, name, subject.user_id)
            if lookup.repository is None:
                raise NotFound(f"Repository {namespace}/{name} not found.")
            removed = session.execute(delete(RepositoryStar).where(
                RepositoryStar.user_id == subject.user_id,
                RepositoryStar.repository_id == lookup.repository.id))
            readable = Action.PULL in allowed_actions(subject, lookup.facts, self._policy)
            if not removed.rowcount and not readable:  # type: ignore[attr-defined]
                raise NotFound(f"Repository {namespace}/{name} not found.")
