"""Organizations and their teams: Quay's organization model, on Portside's schema.

Every operation runs in its own transaction and decides what the caller may do only
through :mod:`portside.auth.permissions`: the caller's namespace role is the strongest
role of its teams in the organization, and superusers administer every organization as
if they held the ``admin`` role (still capped by their token's scopes).

Mutations lock the organization's namespace row first, so that concurrent changes to
one organization are serialised: the "an organization keeps an administrator" rule
could otherwise be broken by two admins removing each other at the same time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import delete, func, select
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
    Namespace,
    Repository,
    RepositoryPermission,
    Team,
    TeamMember,
    User,
)
from portside.oci.names import is_valid_namespace
from portside.services.audit import record
from portside.services.emails import email_in_use, email_problem
from portside.services.gc_marks import mark_namespace
from portside.services.refusals import Forbidden, Invalid, NotFound, Refusal
from portside.services.repositories import create_organization
from portside.services.tag_history import WindowInvalid, WindowPolicy, set_namespace_window

T = TypeVar("T")

#: Quay's team name grammar (``data/model/team.py``), 2 to 255 characters.
TEAM_NAME_RE = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
TEAM_NAME_MIN, TEAM_NAME_MAX = 2, 255
TEAM_ROLES = frozenset(role.value for role in NamespaceRole)

#: Attempts for an operation that lost a race on a unique constraint (e.g. two requests
#: adding the same member): the retry sees the winner's row and succeeds or refuses.
_ATTEMPTS = 3


# The refusals this module raises (re-exported: other services import them from here).
OrganizationError = Refusal


@dataclass(frozen=True)
class TeamInfo:
    """A team as the organization view shows it."""

    name: str
    description: str
    role: str
    member_count: int
    repo_count: int
    can_view: bool


@dataclass(frozen=True)
class OrganizationInfo:
    """An organization as seen by one caller (``teams`` is ``None`` for outsiders).

    ``email`` and ``tag_expiration_s`` are the stored settings, for administrators'
    eyes; the API leaves them out of other callers' views.
    """

    name: str
    is_admin: bool
    is_member: bool
    teams: list[TeamInfo] | None
    email: str | None = None
    tag_expiration_s: int | None = None


@dataclass(frozen=True)
class MemberInfo:
    """A user or robot in a team."""

    name: str
    is_robot: bool


@dataclass(frozen=True)
class OrganizationMember:
    """A person in some team of the organization, with its teams and direct grants."""

    name: str
    teams: list[str]
    repositories: list[str]


@dataclass(frozen=True)
class TeamMembers:
    """A team's members and whether the caller may change them."""

    name: str
    members: list[MemberInfo]
    can_edit: bool


def check_email(session: Session, email: str, *, namespace_id: int | None = None) -> None:
    """Refuse a malformed address or one that another user or organization has."""
    problem = email_problem(email)
    if problem is not None:
        raise Invalid(problem)
    if email_in_use(session, email, namespace_id=namespace_id):
        raise Invalid("E-mail address already used")


def remove_namespace(session: Session, namespace_id: int) -> None:
    """Delete a namespace: gone for users at once (its name is free again; the user,
    robots and teams are removed now), its repositories purged by garbage collection
    (see :mod:`portside.services.gc_marks`)."""
    mark_namespace(session, namespace_id)


def is_valid_team_name(name: str) -> bool:
    """True if ``name`` is a valid team name (Quay's grammar)."""
    return TEAM_NAME_MIN <= len(name) <= TEAM_NAME_MAX and bool(TEAM_NAME_RE.fullmatch(name))


@dataclass(frozen=True)
class _Access:
    """What the caller may do in one organization, and whether it belongs to it."""

    actions: frozenset[NamespaceAction]
    role: NamespaceRole | None

    def require(self, action: NamespaceAction) -> None:
        """Refuse unless ``action`` is allowed."""
        if action not in self.actions:
            raise Forbidden("Unauthorized")


class OrganizationService:
    """Creates, shows, changes and deletes organizations, their teams and members."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # --- organizations ------------------------------------------------------------
    def create(self, subject: Subject, name: str, email: str | None = None) -> None:
        """Create organization ``name`` administered by ``subject`` (in ``owners``),
        with contact address ``email`` (unique among users and organizations)."""
        creator = self._person(subject)
        if not is_valid_namespace(name):
            raise Invalid(
                f"Invalid organization name {name[:100]!r}: use 2-255 lower-case letters, "
                "digits and separators (. _ -), starting and ending with a letter or digit"
            )

        def work(session: Session) -> None:
            if session.scalar(select(Namespace.id).where(Namespace.name == name)):
                raise Invalid("A user or organization with this name already exists")
            if email:
                check_email(session, email)
            created = create_organization(session, name, creator)
            created.email = email or None
            record(session, "org_create", performer=subject, namespace_id=created.id,
                   metadata={"namespace": name, "email": email or None})

        try:
            self._write(work)
        except IntegrityError:
            # Created by a concurrent request between the check and the insert.
            raise Invalid("A user or organization with this name already exists") from None

    def get(self, subject: Subject, org: str) -> OrganizationInfo:
        """The organization as ``subject`` may see it: members (and superusers) get its
        teams, anyone else (anonymous callers too) only its name, as in Quay."""
        with self._reading() as session:
            namespace = self._organization(session, org)
            access = self._access(session, subject, namespace)
            if NamespaceAction.VIEW not in access.actions:
                return OrganizationInfo(namespace.name, False, False, None)
            return self._info(session, subject, namespace, access)

    def update(self, subject: Subject, org: str, email: str | None = None,
               tag_expiration_s: int | None = None,
               windows: WindowPolicy | None = None) -> OrganizationInfo:
        """Change the organization's contact address and time-machine window
        (administrators only) and return its view; ``None`` leaves a setting as it is.
        ``tag_expiration_s`` must be one of the ``windows`` the registry offers."""

        def work(session: Session) -> OrganizationInfo:
            namespace = self._organization(session, org, lock=True)
            access = self._access(session, subject, namespace)
            access.require(NamespaceAction.ADMINISTER)
            if tag_expiration_s is not None:
                if windows is None:
                    raise Invalid("Changing tag_expiration_s is not available")
                try:
                    windows.check(tag_expiration_s)
                except WindowInvalid as exc:
                    raise Invalid(str(exc)) from None
                set_namespace_window(session, namespace, tag_expiration_s, subject)
            if email is not None and email != namespace.email:
                check_email(session, email, namespace_id=namespace.id)
                record(session, "org_change_email", performer=subject,
                       namespace_id=namespace.id,
                       metadata={"namespace": org, "email": email,
                                 "old_email": namespace.email})
                namespace.email = email
                session.flush()
            return self._info(session, subject, namespace, access)

        return self._write(work)

    def delete(self, subject: Subject, org: str) -> None:
        """Delete the organization; its teams, robots and repositories go with it (the
        database cascades), while blobs are left for garbage collection."""

        def work(session: Session) -> None:
            namespace = self._organization(session, org, lock=True)
            self._access(session, subject, namespace).require(NamespaceAction.ADMINISTER)
            remove_namespace(session, namespace.id)
            record(session, "org_delete", performer=subject, namespace_id=namespace.id,
                   metadata={"namespace": org})

        self._write(work)

    def members(self, subject: Subject, org: str) -> list[OrganizationMember]:
        """The people in the organization's teams (robots excluded, as in Quay)."""
        with self._reading() as session:
            namespace = self._organization(session, org)
            self._access(session, subject, namespace).require(NamespaceAction.ADMINISTER)
            rows = session.execute(
                select(User.username, Team.name)
                .join(TeamMember, TeamMember.user_id == User.id)
                .join(Team, Team.id == TeamMember.team_id)
                .where(Team.namespace_id == namespace.id, User.robot_owner_id.is_(None))
                .order_by(User.username, Team.id)
            ).all()
            teams: dict[str, list[str]] = {}
            for username, team in rows:
                teams.setdefault(username, []).append(team)
            grants = session.execute(
                select(User.username, Repository.name)
                .join(RepositoryPermission, RepositoryPermission.user_id == User.id)
                .join(Repository, Repository.id == RepositoryPermission.repository_id)
                .where(Repository.namespace_id == namespace.id,
                       Repository.deleted_at.is_(None))
                .order_by(Repository.name)
            ).all()
            repositories: dict[str, list[str]] = {}
            for username, repository in grants:
                repositories.setdefault(username, []).append(repository)
            return [OrganizationMember(name, names, repositories.get(name, []))
                    for name, names in teams.items()]

    # --- teams --------------------------------------------------------------------
    def put_team(self, subject: Subject, org: str, team: str, role: str | None,
                 description: str | None) -> tuple[TeamInfo, bool]:
        """Create team ``team`` or change its role or description.

        Returns the team and whether it was created. A new team without a role gets
        ``member``; an existing team keeps whatever is not given.
        """
        if role is not None and role not in TEAM_ROLES:
            raise Invalid(f"Invalid role {role[:50]!r}: use one of member, creator, admin")

        def work(session: Session) -> tuple[TeamInfo, bool]:
            namespace = self._organization(session, org, lock=True)
            self._access(session, subject, namespace).require(NamespaceAction.ADMINISTER)
            row = self._team_row(session, namespace, team, must_exist=False)
            created = row is None
            if row is None:
                if not is_valid_team_name(team):
                    raise Invalid(
                        f"Invalid team name {team[:100]!r}: use 2-255 lower-case letters "
                        "and digits, with single separators (. _ -) between them"
                    )
                row = Team(namespace_id=namespace.id, name=team,
                           role=role or NamespaceRole.MEMBER.value,
                           description=description or "")
                session.add(row)
            else:
                before = self._administrators(session, namespace.id)
                if description is not None:
                    row.description = description
                if role is not None:
                    row.role = role
                session.flush()
                self._keep_administered(session, namespace.id, before)
            session.flush()
            if created or role is not None:
                record(session, "org_create_team" if created else "org_set_team_role",
                       performer=subject, namespace_id=namespace.id,
                       metadata={"namespace": org, "team": team, "role": row.role})
            members, repos = self._team_counts(session, [row.id])
            return self._team_info(row, True, members, repos), created

        return self._write(work)

    def delete_team(self, subject: Subject, org: str, team: str) -> None:
        """Delete a team; the organization's last admin team cannot be deleted."""

        def work(session: Session) -> None:
            namespace = self._organization(session, org, lock=True)
            self._access(session, subject, namespace).require(NamespaceAction.ADMINISTER)
            row = self._team(session, namespace, team)
            if row.role == NamespaceRole.ADMIN.value:
                admin_teams = session.scalar(
                    select(func.count(Team.id)).where(
                        Team.namespace_id == namespace.id,
                        Team.role == NamespaceRole.ADMIN.value)
                )
                if (admin_teams or 0) <= 1:
                    raise Invalid(f"Cannot delete team {team!r}: it is the organization's "
                                  "last team with the admin role")
            before = self._administrators(session, namespace.id)
            session.execute(delete(Team).where(Team.id == row.id))
            record(session, "org_delete_team", performer=subject, namespace_id=namespace.id,
                   metadata={"namespace": org, "team": team})
            self._keep_administered(session, namespace.id, before)

        self._write(work)

    def team_members(self, subject: Subject, org: str, team: str) -> TeamMembers:
        """A team's members: visible to organization admins and to the team's members."""
        with self._reading() as session:
            namespace = self._organization(session, org)
            access = self._access(session, subject, namespace)
            # Rights first: outsiders must not learn which team names exist.
            access.require(NamespaceAction.VIEW)
            row = self._team(session, namespace, team)
            can_edit = NamespaceAction.ADMINISTER in access.actions
            if not can_edit and row.id not in self._own_team_ids(session, subject, namespace):
                raise Forbidden("Unauthorized")
            members = session.execute(
                select(User.username, User.robot_owner_id)
                .join(TeamMember, TeamMember.user_id == User.id)
                .where(TeamMember.team_id == row.id)
                .order_by(User.username)
            ).all()
            return TeamMembers(
                row.name,
                [MemberInfo(name, owner is not None) for name, owner in members],
                can_edit,
            )

    def add_member(self, subject: Subject, org: str, team: str, member: str) -> MemberInfo:
        """Add a user, or a robot of this organization, to a team (idempotent)."""

        def work(session: Session) -> MemberInfo:
            namespace = self._organization(session, org, lock=True)
            self._access(session, subject, namespace).require(NamespaceAction.ADMINISTER)
            row = self._team(session, namespace, team)
            user = session.scalar(select(User).where(User.username == member))
            if user is None:
                raise Invalid("Unknown user")
            if user.robot_owner_id is not None and user.robot_owner_id != namespace.id:
                raise Invalid("Cannot add the specified robot to this team, as it is not a "
                              "member of the organization")
            present = session.scalar(select(TeamMember.user_id).where(
                TeamMember.team_id == row.id, TeamMember.user_id == user.id))
            if present is None:
                session.add(TeamMember(team_id=row.id, user_id=user.id))
                session.flush()
                record(session, "org_add_team_member", performer=subject,
                       namespace_id=namespace.id,
                       metadata={"namespace": org, "team": team, "member": user.username})
            return MemberInfo(user.username, user.robot_owner_id is not None)

        return self._write(work)

    def remove_member(self, subject: Subject, org: str, team: str, member: str) -> None:
        """Remove a member from a team; the organization must keep an administrator."""

        def work(session: Session) -> None:
            namespace = self._organization(session, org, lock=True)
            self._access(session, subject, namespace).require(NamespaceAction.ADMINISTER)
            row = self._team(session, namespace, team)
            user_id = session.scalar(select(User.id).where(User.username == member))
            if user_id is None:
                raise NotFound(f"Unknown member {member[:100]!r}")
            before = self._administrators(session, namespace.id)
            removed = session.execute(delete(TeamMember).where(
                TeamMember.team_id == row.id, TeamMember.user_id == user_id))
            if not removed.rowcount:  # type: ignore[attr-defined]
                raise NotFound(f"{member[:100]!r} is not a member of team {team!r}")
            record(session, "org_remove_team_member", performer=subject,
                   namespace_id=namespace.id,
                   metadata={"namespace": org, "team": team, "member": member})
            self._keep_administered(session, namespace.id, before)

        self._write(work)

    # --- helpers ------------------------------------------------------------------
    @contextmanager
    def _reading(self) -> Iterator[Session]:
        """An ORM session on a read connection: views must not take SQLite's write lock
        (write sessions begin ``IMMEDIATE``)."""
        with self._db.read() as connection, Session(bind=connection) as session:
            yield session

    def _write(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in a write transaction, retrying lost unique-constraint races."""
        for attempt in range(_ATTEMPTS):
            try:
                with self._db.session() as session:
                    return work(session)
            except IntegrityError:
                if attempt == _ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _person(self, subject: Subject) -> int:
        """The id of the signed-in person behind ``subject`` (robots are refused)."""
        if subject.user_id is None:
            raise Forbidden("Requires a signed-in user")
        with self._db.session() as session:
            user = session.get(User, subject.user_id)
        if user is None or user.robot_owner_id is not None:
            raise Forbidden("Robot accounts cannot create organizations")
        return user.id

    @staticmethod
    def _organization(session: Session, org: str, lock: bool = False) -> Namespace:
        """The organization's namespace row (locked for update when ``lock``)."""
        query = select(Namespace).where(Namespace.name == org,
                                        Namespace.kind == "organization")
        if lock:
            query = query.with_for_update()
        namespace = session.scalar(query)
        if namespace is None:
            raise NotFound(f"Unknown organization {org[:100]!r}")
        return namespace

    @staticmethod
    def _team_row(session: Session, namespace: Namespace, team: str,
                  must_exist: bool = True) -> Team | None:
        row = session.scalar(select(Team).where(Team.namespace_id == namespace.id,
                                                Team.name == team))
        if row is None and must_exist:
            raise NotFound(f"Unknown team {team[:100]!r}")
        return row

    def _team(self, session: Session, namespace: Namespace, team: str) -> Team:
        row = self._team_row(session, namespace, team)
        assert row is not None
        return row

    @staticmethod
    def _own_team_ids(session: Session, subject: Subject, namespace: Namespace) -> set[int]:
        if subject.user_id is None:
            return set()
        return set(session.scalars(
            select(Team.id).join(TeamMember, TeamMember.team_id == Team.id)
            .where(Team.namespace_id == namespace.id, TeamMember.user_id == subject.user_id)
        ))

    @staticmethod
    def _access(session: Session, subject: Subject, namespace: Namespace) -> _Access:
        """The caller's namespace actions, from its team roles (or superuser status)."""
        role = None
        if subject.user_id is not None:
            role = strongest_namespace_role(session.scalars(
                select(Team.role).join(TeamMember, TeamMember.team_id == Team.id)
                .where(Team.namespace_id == namespace.id,
                       TeamMember.user_id == subject.user_id)
            ))
        # Superusers administer every organization, within their token's scopes.
        effective = NamespaceRole.ADMIN if acts_as_superuser(subject) else role
        return _Access(namespace_actions(subject, effective, is_organization=True), role)

    @staticmethod
    def _administrators(session: Session, namespace_id: int) -> int:
        """People (not robots) in the organization's admin teams."""
        return session.scalar(
            select(func.count(func.distinct(TeamMember.user_id)))
            .join(Team, Team.id == TeamMember.team_id)
            .join(User, User.id == TeamMember.user_id)
            .where(Team.namespace_id == namespace_id,
                   Team.role == NamespaceRole.ADMIN.value,
                   User.robot_owner_id.is_(None))
        ) or 0

    def _keep_administered(self, session: Session, namespace_id: int, before: int) -> None:
        """Refuse a change that leaves an administered organization without admins."""
        session.flush()
        if before and not self._administrators(session, namespace_id):
            raise Invalid("This change would leave the organization without an "
                          "administrator")

    def _info(self, session: Session, subject: Subject, namespace: Namespace,
              access: _Access) -> OrganizationInfo:
        is_admin = NamespaceAction.ADMINISTER in access.actions
        own = self._own_team_ids(session, subject, namespace)
        rows = session.scalars(
            select(Team).where(Team.namespace_id == namespace.id).order_by(Team.id)
        ).all()
        members, repos = self._team_counts(session, [row.id for row in rows])
        teams = [self._team_info(row, is_admin or row.id in own, members, repos)
                 for row in rows]
        return OrganizationInfo(namespace.name, is_admin, access.role is not None, teams,
                                namespace.email, namespace.tag_expiration_s)

    @staticmethod
    def _team_counts(session: Session,
                     team_ids: list[int]) -> tuple[dict[int, int], dict[int, int]]:
        """Members and repository grants per team: two grouped queries for all teams."""
        if not team_ids:
            return {}, {}
        members = session.execute(
            select(TeamMember.team_id, func.count())
            .where(TeamMember.team_id.in_(team_ids)).group_by(TeamMember.team_id))
        repos = session.execute(
            select(RepositoryPermission.team_id, func.count())
            .where(RepositoryPermission.team_id.in_(team_ids))
            .group_by(RepositoryPermission.team_id))
        return ({team: count for team, count in members},
                {team: count for team, count in repos if team is not None})

    @staticmethod
    def _team_info(row: Team, can_view: bool, members: dict[int, int],
                   repos: dict[int, int]) -> TeamInfo:
        return TeamInfo(row.name, row.description or "", row.role, members.get(row.id, 0),
                        repos.get(row.id, 0), can_view)
