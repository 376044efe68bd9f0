"""Repository administration: list, create, inspect, change visibility, delete, and the
per-repository permissions of users, robots and teams.

Every decision goes through :mod:`portside.auth.permissions` (``allowed_actions`` for
repositories, ``namespace_actions`` for creating one); this module gathers the facts and
performs the change, each operation in one transaction.

Authorization comes before existence: a caller without the needed right gets
:class:`Unauthenticated` (anonymous) or :class:`Forbidden`, whether or not the repository
exists, so that probing cannot reveal private names (as in Quay, whose permission
decorators run before the repository is loaded). Only a caller with the right learns
that a repository is missing (:class:`NotFound`).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import and_, delete, exists, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portside.auth.permissions import (
    Action,
    NamespaceAction,
    Policy,
    RepositoryRole,
    Subject,
    allowed_actions,
    namespace_actions,
)
from portside.db.engine import Database
from portside.db.models import (
    Manifest,
    Namespace,
    Repository,
    RepositoryPermission,
    RepositoryStar,
    Tag,
    Team,
    TeamMember,
    User,
)
from portside.oci.names import InvalidName, validate_repository_name
from portside.services.audit import AuditContext, record_for_repository
from portside.services.catalog import visibility_conditions
from portside.services.default_permissions import apply_default_permissions
from portside.services.gc_marks import mark_repository
from portside.services.repositories import (
    Lookup,
    grant_creator_admin,
    lookup_in_session,
)
from portside.services.tag_history import active_clause

T = TypeVar("T")

#: Quay's page size for ``GET /api/v1/repository``.
REPOSITORIES_PER_PAGE = 100

VISIBILITIES = ("public", "private")
ROLES = tuple(role.value for role in RepositoryRole)


class RepositoryAdminError(Exception):
    """Base class of this module's refusals; ``message`` is safe to show the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthenticated(RepositoryAdminError):
    """The caller is anonymous and the operation needs a signed-in user."""


class Forbidden(RepositoryAdminError):
    """The caller may not do this (or may not know whether the repository exists)."""


class NotFound(RepositoryAdminError):
    """The repository, user, team or permission does not exist."""


class InvalidInput(RepositoryAdminError):
    """The request is malformed or contradicts the current state."""


#: Longest accepted repository description (Markdown).
MAX_DESCRIPTION_LENGTH = 100_000


@dataclass(frozen=True)
class RepositorySummary:
    """One entry of the repository list."""

    namespace: str
    name: str
    public: bool
    state: str
    description: str | None = None
    #: Whether the caller starred it.
    starred: bool = False


@dataclass(frozen=True)
class TagInfo:
    """An active tag, for the repository view."""

    name: str
    manifest_digest: str
    size: int
    lifetime_start_ms: int
    #: When the tag expires (ms), if it does.
    expiration_ms: int | None = None


@dataclass(frozen=True)
class RepositoryDetails:
    """A repository as its readers see it, with what the caller may do there."""

    namespace: str
    name: str
    public: bool
    state: str
    is_organization: bool
    can_write: bool
    can_admin: bool
    tags: list[TagInfo]
    description: str | None = None
    #: Whether the caller starred it.
    starred: bool = False
    #: The namespace's time-machine window (``None``: the registry's default).
    tag_expiration_s: int | None = None


@dataclass(frozen=True)
class UserPermission:
    """A role held directly by a user or robot on a repository."""

    username: str
    role: str
    is_robot: bool
    is_org_member: bool


@dataclass(frozen=True)
class TeamPermission:
    """A role held by a team on a repository of its organization."""

    team: str
    role: str


def encode_page_token(full_name: str) -> str:
    """The opaque ``next_page`` token: the last full name returned, base64url-encoded."""
    return base64.urlsafe_b64encode(full_name.encode()).decode().rstrip("=")


def decode_page_token(token: str) -> str:
    """The full name a ``next_page`` token stands for; :class:`InvalidInput` if garbled."""
    try:
        padded = token + "=" * (-len(token) % 4)
        # validate: the lenient default would silently drop stray characters.
        return base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeError, ValueError):
        raise InvalidInput("Invalid next_page token.") from None


class RepositoryAdminService:
    """The repository API's domain operations, on behalf of a :class:`Subject`."""

    def __init__(self, db: Database, policy: Policy) -> None:
        self._db = db
        self._policy = policy

    # --- authorization ---------------------------------------------------------------
    def _authorize(self, session: Session, subject: Subject, namespace: str, name: str,
                   action: Action) -> tuple[Lookup, frozenset[Action]]:
        """Look the repository up and require ``action`` on it, then its existence."""
        lookup = lookup_in_session(session, namespace, name, subject.user_id)
        actions = allowed_actions(subject, lookup.facts, self._policy)
        if action not in actions:
            if subject.anonymous:
                raise Unauthenticated("Requires authentication.")
            raise Forbidden("You do not have permission for this repository.")
        if lookup.repository is None:
            raise NotFound(f"Repository {namespace}/{name} not found.")
        return lookup, actions

    def _admin_op(self, subject: Subject, namespace: str, name: str,
                  then: Callable[[Session, Lookup], T]) -> T:
        """Run ``then`` in one transaction once ``subject`` administers the repository."""
        with self._db.session() as session:
            lookup, _ = self._authorize(session, subject, namespace, name, Action.ADMIN)
            return then(session, lookup)

    # --- repositories ----------------------------------------------------------------
    def list_repositories(self, subject: Subject, *, namespace: str | None,
                          include_public: bool, starred: bool, after: str | None,
                          limit: int = REPOSITORIES_PER_PAGE,
                          ) -> tuple[list[RepositorySummary], str | None]:
        """Repositories visible to ``subject`` in order of full name, after ``after``.

        As in Quay, public repositories of others are listed only with
        ``include_public``; without it the list holds the repositories the subject has a
        role on (its own namespace, organizations it administers, granted permissions).
        ``starred`` lists the subject's starred repositories that it can still see
        (public ones included, as in Quay). Each entry says whether the subject starred
        it, from the same query. Returns the page and the full name to continue after
        (``None`` on the last page).
        """
        full_name = Namespace.name + "/" + Repository.name
        visible = visibility_conditions(subject, self._policy, include_public or starred)
        if not visible:
            return [], None
        # -1 is never a user id: the anonymous caller has starred nothing.
        star = and_(RepositoryStar.repository_id == Repository.id,
                    RepositoryStar.user_id == (subject.user_id or -1))
        query = (
            select(Namespace.name, Repository.name, Repository.public, Repository.state,
                   Repository.description, RepositoryStar.user_id.is_not(None))
            .select_from(Repository)
            .join(Namespace, Namespace.id == Repository.namespace_id)
            .outerjoin(RepositoryStar, star)
            .where(or_(*visible), Repository.deleted_at.is_(None))
        )
        if starred:
            query = query.where(RepositoryStar.user_id.is_not(None))
        if namespace is not None:
            query = query.where(Namespace.name == namespace)
        if after:
            query = query.where(full_name > after)
        # One row more than asked tells whether another page follows.
        query = query.order_by(full_name).limit(limit + 1)
        with self._db.session() as session:
            rows = session.execute(query).all()
        page = [RepositorySummary(ns, name, bool(public), state or "NORMAL", description,
                                  bool(is_starred))
                for ns, name, public, state, description, is_starred in rows[:limit]]
        following = f"{page[-1].namespace}/{page[-1].name}" if len(rows) > limit else None
        return page, following

    def create(self, subject: Subject, namespace: str, name: str, visibility: str,
               repo_kind: str = "image", description: str | None = None,
               ) -> RepositorySummary:
        """Create an empty repository; the creator needs ``CREATE_REPOSITORY`` there."""
        if subject.anonymous:
            raise Unauthenticated("Requires authentication.")
        if visibility not in VISIBILITIES:
            raise InvalidInput("visibility must be 'public' or 'private'.")
        if repo_kind != "image":
            raise InvalidInput("Only repositories of kind 'image' are supported.")
        try:
            validate_repository_name(f"{namespace}/{name}")
        except InvalidName as exc:
            raise InvalidInput(f"Invalid repository name: {exc}") from None
        try:
            with self._db.session() as session:
                lookup = lookup_in_session(session, namespace, name, subject.user_id)
                # A namespace that does not exist gets the same answer as one the
                # subject has no role in: creating must not reveal which names exist.
                namespace_row = session.scalar(
                    select(Namespace).where(Namespace.name == namespace))
                is_org = namespace_row is not None and namespace_row.kind == "organization"
                granted = namespace_actions(subject, lookup.facts.namespace_role, is_org)
                if namespace_row is None or NamespaceAction.CREATE_REPOSITORY not in granted:
                    raise Forbidden(f"You may not create repositories in {namespace}.")
                if lookup.repository is not None:
                    raise InvalidInput("Repository already exists.")
                repository = Repository(namespace_id=namespace_row.id, name=name,
                                        public=visibility == "public",
                                        description=description)
                session.add(repository)
                session.flush()
                grant_creator_admin(session, namespace_row, repository.id, subject.user_id)
                apply_default_permissions(session, namespace_row, repository.id,
                                          subject.user_id)
                record_for_repository(session, "create_repo", repository.id,
                                      AuditContext(subject))
        except IntegrityError:
            # Created concurrently (by a push or another API call).
            raise InvalidInput("Repository already exists.") from None
        return RepositorySummary(namespace, name, visibility == "public", "NORMAL",
                                 description)

    def get(self, subject: Subject, namespace: str, name: str) -> RepositoryDetails:
        """The repository and its active tags, for anyone who may pull from it."""
        with self._db.session() as session:
            lookup, actions = self._authorize(session, subject, namespace, name, Action.PULL)
            assert lookup.repository is not None
            kind, window = session.execute(
                select(Namespace.kind, Namespace.tag_expiration_s)
                .where(Namespace.name == namespace)).first() or (None, None)
            description = session.scalar(
                select(Repository.description).where(Repository.id == lookup.repository.id))
            starred = subject.user_id is not None and session.scalar(
                select(RepositoryStar.user_id).where(
                    RepositoryStar.repository_id == lookup.repository.id,
                    RepositoryStar.user_id == subject.user_id)) is not None
            rows = session.execute(
                select(Tag.name, Manifest.digest, Manifest.size, Tag.lifetime_start_ms,
                       Tag.expiration_ms)
                .join(Manifest, Manifest.id == Tag.manifest_id)
                .where(Tag.repository_id == lookup.repository.id,
                       active_clause(int(time.time() * 1000)))
                .order_by(Tag.name)
            ).all()
        return RepositoryDetails(
            namespace=namespace, name=name, public=lookup.repository.public,
            state=lookup.repository.state or "NORMAL",
            is_organization=kind == "organization",
            can_write=Action.PUSH in actions, can_admin=Action.ADMIN in actions,
            tags=[TagInfo(*row) for row in rows],
            description=description,
            tag_expiration_s=window,
            starred=starred,
        )

    def set_description(self, subject: Subject, namespace: str, name: str,
                        description: str) -> None:
        """Change the description (write access suffices, as in Quay)."""
        if len(description) > MAX_DESCRIPTION_LENGTH:
            raise InvalidInput(
                f"description longer than {MAX_DESCRIPTION_LENGTH} characters")
        with self._db.session() as session:
            lookup, _actions = self._authorize(session, subject, namespace, name, Action.PUSH)
            assert lookup.repository is not None
            repository = session.get(Repository, lookup.repository.id)
            if repository is not None:
                repository.description = description

    def set_visibility(self, subject: Subject, namespace: str, name: str,
                       visibility: str) -> None:
        """Make the repository public or private (administrators only)."""
        if visibility not in VISIBILITIES:
            raise InvalidInput("visibility must be 'public' or 'private'.")

        def change(session: Session, lookup: Lookup) -> None:
            assert lookup.repository is not None
            repository = session.get(Repository, lookup.repository.id)
            if repository is not None:
                repository.public = visibility == "public"
            record_for_repository(session, "change_repo_visibility", lookup.repository.id,
                                  AuditContext(subject), visibility=visibility)

        self._admin_op(subject, namespace, name, change)

    def delete(self, subject: Subject, namespace: str, name: str) -> None:
        """Delete the repository: marked at once (see :mod:`portside.services.gc_marks`);
        garbage collection purges its tags, manifests, links and uploads, then its blobs.
        """
        def remove(session: Session, lookup: Lookup) -> None:
            assert lookup.repository is not None
            # Recorded first: the entry copies the names from the rows about to go.
            record_for_repository(session, "delete_repo", lookup.repository.id,
                                  AuditContext(subject))
            # Gone for users at once, name free again; garbage collection purges the
            # content (see portside.services.gc_marks).
            mark_repository(session, lookup.repository.id)

        self._admin_op(subject, namespace, name, remove)

    # --- permissions -----------------------------------------------------------------
    def list_user_permissions(self, subject: Subject, namespace: str,
                              name: str) -> list[UserPermission]:
        """Every direct user and robot permission on the repository."""
        def read(session: Session, lookup: Lookup) -> list[UserPermission]:
            assert lookup.repository is not None
            rows = session.execute(
                select(User, RepositoryPermission.role)
                .join(RepositoryPermission, RepositoryPermission.user_id == User.id)
                .where(RepositoryPermission.repository_id == lookup.repository.id)
                .order_by(User.username)
            ).all()
            return [self._user_permission(session, namespace, user, role)
                    for user, role in rows]

        return self._admin_op(subject, namespace, name, read)

    def get_user_permission(self, subject: Subject, namespace: str, name: str,
                            username: str) -> UserPermission:
        """The direct permission of ``username`` (:class:`NotFound` if it has none)."""
        def read(session: Session, lookup: Lookup) -> UserPermission:
            assert lookup.repository is not None
            user = self._user(session, username, NotFound)
            role = session.scalar(select(RepositoryPermission.role).where(
                RepositoryPermission.repository_id == lookup.repository.id,
                RepositoryPermission.user_id == user.id))
            if role is None:
                raise NotFound(f"User {username} has no permission on this repository.")
            return self._user_permission(session, namespace, user, role)

        return self._admin_op(subject, namespace, name, read)

    def set_user_permission(self, subject: Subject, namespace: str, name: str,
                            username: str, role: str) -> UserPermission:
        """Grant ``role`` to a user or robot (replacing any direct role it had)."""
        _check_role(role)

        def write(session: Session, lookup: Lookup) -> UserPermission:
            assert lookup.repository is not None
            user = self._user(session, username, InvalidInput)
            if user.robot_owner_id is not None:
                owner = session.scalar(select(Namespace.name).where(
                    Namespace.id == user.robot_owner_id))
                if owner != namespace:
                    # As in Quay: robots only act within the namespace that owns them.
                    raise InvalidInput(
                        f"Robot {username} belongs to another namespace.")
            _upsert(session, lookup.repository.id, role, user_id=user.id)
            record_for_repository(session, "change_repo_permission", lookup.repository.id,
                                  AuditContext(subject), username=username, role=role)
            return self._user_permission(session, namespace, user, role)

        return self._retrying(lambda: self._admin_op(subject, namespace, name, write))

    def delete_user_permission(self, subject: Subject, namespace: str, name: str,
                               username: str) -> None:
        """Remove the direct permission of ``username`` (:class:`InvalidInput` if none)."""
        def remove(session: Session, lookup: Lookup) -> None:
            assert lookup.repository is not None
            user = self._user(session, username, InvalidInput)
            deleted = session.execute(delete(RepositoryPermission).where(
                RepositoryPermission.repository_id == lookup.repository.id,
                RepositoryPermission.user_id == user.id))
            if not deleted.rowcount:  # type: ignore[attr-defined]
                raise InvalidInput(f"User {username} has no permission on this repository.")
            record_for_repository(session, "delete_repo_permission", lookup.repository.id,
                                  AuditContext(subject), username=username)

        self._admin_op(subject, namespace, name, remove)

    def list_team_permissions(self, subject: Subject, namespace: str,
                              name: str) -> list[TeamPermission]:
        """Every team permission on the repository (none in a user namespace)."""
        def read(session: Session, lookup: Lookup) -> list[TeamPermission]:
            assert lookup.repository is not None
            rows = session.execute(
                select(Team.name, RepositoryPermission.role)
                .join(RepositoryPermission, RepositoryPermission.team_id == Team.id)
                .where(RepositoryPermission.repository_id == lookup.repository.id)
                .order_by(Team.name)
            ).all()
            return [TeamPermission(team, role) for team, role in rows]

        return self._admin_op(subject, namespace, name, read)

    def get_team_permission(self, subject: Subject, namespace: str, name: str,
                            team_name: str) -> TeamPermission:
        """The permission of a team of the repository's organization."""
        def read(session: Session, lookup: Lookup) -> TeamPermission:
            assert lookup.repository is not None
            team = self._team(session, namespace, team_name, NotFound)
            role = session.scalar(select(RepositoryPermission.role).where(
                RepositoryPermission.repository_id == lookup.repository.id,
                RepositoryPermission.team_id == team.id))
            if role is None:
                raise NotFound(f"Team {team_name} has no permission on this repository.")
            return TeamPermission(team.name, role)

        return self._admin_op(subject, namespace, name, read)

    def set_team_permission(self, subject: Subject, namespace: str, name: str,
                            team_name: str, role: str) -> TeamPermission:
        """Grant ``role`` to a team of the repository's organization."""
        _check_role(role)

        def write(session: Session, lookup: Lookup) -> TeamPermission:
            assert lookup.repository is not None
            team = self._team(session, namespace, team_name, InvalidInput)
            _upsert(session, lookup.repository.id, role, team_id=team.id)
            record_for_repository(session, "change_repo_permission", lookup.repository.id,
                                  AuditContext(subject), team=team.name, role=role)
            return TeamPermission(team.name, role)

        return self._retrying(lambda: self._admin_op(subject, namespace, name, write))

    def delete_team_permission(self, subject: Subject, namespace: str, name: str,
                               team_name: str) -> None:
        """Remove a team's permission (:class:`InvalidInput` if it has none)."""
        def remove(session: Session, lookup: Lookup) -> None:
            assert lookup.repository is not None
            team = self._team(session, namespace, team_name, InvalidInput)
            deleted = session.execute(delete(RepositoryPermission).where(
                RepositoryPermission.repository_id == lookup.repository.id,
                RepositoryPermission.team_id == team.id))
            if not deleted.rowcount:  # type: ignore[attr-defined]
                raise InvalidInput(f"Team {team_name} has no permission on this repository.")
            record_for_repository(session, "delete_repo_permission", lookup.repository.id,
                                  AuditContext(subject), team=team_name)

        self._admin_op(subject, namespace, name, remove)

    # --- helpers ---------------------------------------------------------------------
    @staticmethod
    def _retrying(operation: Callable[[], T]) -> T:
        """Run ``operation`` again once if a concurrent grant won the insert race."""
        try:
            return operation()
        except IntegrityError:
            return operation()

    @staticmethod
    def _user(session: Session, username: str,
              missing: type[RepositoryAdminError]) -> User:
        user = session.scalar(select(User).where(User.username == username))
        if user is None:
            raise missing(f"Unknown user or robot {username}.")
        return user

    @staticmethod
    def _team(session: Session, namespace: str, team_name: str,
              missing: type[RepositoryAdminError]) -> Team:
        row = session.execute(select(Namespace.id, Namespace.kind).where(
            Namespace.name == namespace)).first()
        if row is None or row.kind != "organization":
            raise InvalidInput("Team permissions exist only for repositories of "
                               "organizations.")
        team = session.scalar(select(Team).where(Team.namespace_id == row.id,
                                                 Team.name == team_name))
        if team is None:
            raise missing(f"No team {team_name} in organization {namespace}.")
        return team

    @staticmethod
    def _user_permission(session: Session, namespace: str, user: User,
                         role: str) -> UserPermission:
        """Quay's view of a user permission, with whether the user belongs to the
        namespace (a member of one of the organization's teams, the owner of a user
        namespace, or a robot of either)."""
        namespace_row = session.execute(select(Namespace.id, Namespace.kind).where(
            Namespace.name == namespace)).one()
        if user.robot_owner_id is not None:
            member = user.robot_owner_id == namespace_row.id
        elif namespace_row.kind == "organization":
            member = bool(session.scalar(select(exists().where(
                TeamMember.user_id == user.id,
                TeamMember.team_id.in_(select(Team.id).where(
                    Team.namespace_id == namespace_row.id))))))
        else:
            member = user.namespace_id == namespace_row.id
        return UserPermission(user.username, role, user.robot_owner_id is not None, member)


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise InvalidInput("role must be one of read, write, admin.")


def _upsert(session: Session, repository_id: int, role: str, *, user_id: int | None = None,
            team_id: int | None = None) -> None:
    """Set the role of a user or a team on a repository (one row per grantee)."""
    grantee = (RepositoryPermission.user_id == user_id if user_id is not None
               else RepositoryPermission.team_id == team_id)
    permission = session.scalar(select(RepositoryPermission).where(
        RepositoryPermission.repository_id == repository_id, grantee))
    if permission is None:
        session.add(RepositoryPermission(repository_id=repository_id, user_id=user_id,
                                         team_id=team_id, role=role))
    else:
        permission.role = role
    session.flush()
