"""An organization's default permissions (Quay's "permission prototypes"): rules that
grant a user, robot or team a role on every repository created in the organization,
optionally only on those created by one particular user.

Only the organization's administrators (and superusers, within their token's scopes)
may list or change them; the decision goes through
:func:`portside.auth.permissions.namespace_actions`. Every change is audited with Quay's
kinds in its own transaction. The rules are applied by
:mod:`portside.services.default_permissions` when a repository is created.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portside.auth.permissions import (
    NamespaceAction,
    NamespaceRole,
    RepositoryRole,
    Subject,
    acts_as_superuser,
    namespace_actions,
    strongest_namespace_role,
)
from portside.db.engine import Database
from portside.db.models import Namespace, PermissionPrototype, Team, TeamMember, User
from portside.services.audit import record
from portside.services.organizations import Forbidden, Invalid, NotFound

T = TypeVar("T")

ROLES = tuple(role.value for role in RepositoryRole)
DELEGATE_KINDS = ("user", "team")

#: Attempts for a change that lost a race with a concurrent deletion of its delegate
#: (a foreign key violation): the retry finds the delegate gone and refuses with 400.
_ATTEMPTS = 2


@dataclass(frozen=True)
class PrototypeUser:
    """A user or robot named by a prototype."""

    name: str
    is_robot: bool
    #: In one of the organization's teams (robots of the organization always are).
    is_org_member: bool


@dataclass(frozen=True)
class PrototypeInfo:
    """One default permission: ``delegate_user`` or ``delegate_team`` gets ``role``."""

    id: str
    role: str
    delegate_user: PrototypeUser | None
    delegate_team: str | None
    activating_user: PrototypeUser | None


class PrototypeService:
    """Lists, creates, changes and deletes an organization's default permissions."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def prototypes(self, subject: Subject, org: str) -> list[PrototypeInfo]:
        """Every default permission of ``org``, oldest first."""
        # A read connection: listing must not take SQLite's write lock.
        with self._db.read() as connection, Session(bind=connection) as session:
            namespace = self._administered(session, subject, org)
            rows = session.scalars(
                select(PermissionPrototype)
                .where(PermissionPrototype.namespace_id == namespace.id)
                .order_by(PermissionPrototype.id)
            ).all()
            return self._infos(session, namespace, list(rows))

    def create(
        self,
        subject: Subject,
        org: str,
        *,
        role: str,
        delegate_kind: str,
        delegate_name: str,
        activating_user: str | None,
    ) -> PrototypeInfo:
        """Add a default permission giving ``role`` to the user, robot (``org+name``) or
        team ``delegate_name``, on repositories created by ``activating_user`` (a user,
        or a robot of this organization, as CI pushes often are) or, when it is ``None``,
        by anyone."""

        def work(session: Session) -> PrototypeInfo:
            namespace = self._administered(session, subject, org, lock=True)
            _check_role(role)
            if delegate_kind not in DELEGATE_KINDS:
                raise Invalid(f"Invalid delegate kind {delegate_kind[:50]!r}: use user or team")
            row = PermissionPrototype(uuid=str(uuid.uuid4()), namespace_id=namespace.id, role=role)
            if delegate_kind == "user":
                row.delegate_user_id = self._delegate_user(session, namespace, delegate_name).id
            else:
                row.delegate_team_id = self._team(session, namespace, delegate_name).id
            if activating_user:
                row.activating_user_id = self._activating_user(
                    session, namespace, activating_user
                ).id
            session.add(row)
            session.flush()
            info = self._infos(session, namespace, [row])[0]
            self._audit(session, subject, namespace, "create_prototype_permission", info)
            return info

        return self._write(work)

    def update(self, subject: Subject, org: str, prototype_id: str, role: str) -> PrototypeInfo:
        """Change the role of a default permission."""

        def work(session: Session) -> PrototypeInfo:
            namespace = self._administered(session, subject, org, lock=True)
            row = self._prototype(session, namespace, prototype_id)
            _check_role(role)
            original = row.role
            row.role = role
            session.flush()
            info = self._infos(session, namespace, [row])[0]
            self._audit(
                session,
                subject,
                namespace,
                "modify_prototype_permission",
                info,
                original_role=original,
            )
            return info

        return self._write(work)

    def delete(self, subject: Subject, org: str, prototype_id: str) -> None:
        """Remove a default permission (repositories keep what it already granted)."""

        def work(session: Session) -> None:
            namespace = self._administered(session, subject, org, lock=True)
            row = self._prototype(session, namespace, prototype_id)
            info = self._infos(session, namespace, [row])[0]
            session.delete(row)
            self._audit(session, subject, namespace, "delete_prototype_permission", info)

        self._write(work)

    # --- helpers ------------------------------------------------------------------
    def _write(self, work: Callable[[Session], T]) -> T:
        for attempt in range(_ATTEMPTS):
            try:
                with self._db.session() as session:
                    return work(session)
            except IntegrityError:
                if attempt == _ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _administered(
        session: Session, subject: Subject, org: str, lock: bool = False
    ) -> Namespace:
        """The organization's namespace row, once ``subject`` may administer it."""
        query = select(Namespace).where(Namespace.name == org, Namespace.kind == "organization")
        if lock:
            # Serialises changes with team and robot deletions in the same organization.
            query = query.with_for_update()
        namespace = session.scalar(query)
        if namespace is None:
            raise NotFound(f"Unknown organization {org[:100]!r}")
        role = None
        if subject.user_id is not None:
            role = strongest_namespace_role(
                session.scalars(
                    select(Team.role)
                    .join(TeamMember, TeamMember.team_id == Team.id)
                    .where(Team.namespace_id == namespace.id, TeamMember.user_id == subject.user_id)
                )
            )
        # Superusers administer every organization, within their token's scopes.
        effective = NamespaceRole.ADMIN if acts_as_superuser(subject) else role
        if NamespaceAction.ADMINISTER not in namespace_actions(
            subject, effective, is_organization=True
        ):
            raise Forbidden("Unauthorized")
        return namespace

    @staticmethod
    def _prototype(
        session: Session, namespace: Namespace, prototype_id: str
    ) -> PermissionPrototype:
        row = session.scalar(
            select(PermissionPrototype).where(
                PermissionPrototype.namespace_id == namespace.id,
                PermissionPrototype.uuid == prototype_id,
            )
        )
        if row is None:
            raise NotFound(f"Unknown default permission {prototype_id[:100]!r}")
        return row

    @staticmethod
    def _delegate_user(session: Session, namespace: Namespace, name: str) -> User:
        user = session.scalar(select(User).where(User.username == name))
        if user is None:
            raise Invalid(f"Unknown user or robot {name[:100]!r}")
        if user.robot_owner_id is not None and user.robot_owner_id != namespace.id:
            # As for repository permissions: robots act only within their own namespace.
            raise Invalid(
                f"Robot {name[:100]!r} does not belong to organization {namespace.name!r}"
            )
        return user

    @staticmethod
    def _team(session: Session, namespace: Namespace, name: str) -> Team:
        team = session.scalar(
            select(Team).where(Team.namespace_id == namespace.id, Team.name == name)
        )
        if team is None:
            raise Invalid(f"Unknown team {name[:100]!r} in organization {namespace.name!r}")
        return team

    @staticmethod
    def _activating_user(session: Session, namespace: Namespace, name: str) -> User:
        user = session.scalar(select(User).where(User.username == name))
        if user is None:
            raise Invalid(f"Unknown activating user {name[:100]!r}")
        if user.robot_owner_id is not None and user.robot_owner_id != namespace.id:
            raise Invalid("A robot account of another namespace cannot be the activating user")
        return user

    @staticmethod
    def _infos(
        session: Session, namespace: Namespace, rows: list[PermissionPrototype]
    ) -> list[PrototypeInfo]:
        """The API's view of ``rows``: three queries however many rows there are."""
        user_ids = {
            uid
            for row in rows
            for uid in (row.delegate_user_id, row.activating_user_id)
            if uid is not None
        }
        team_ids = {row.delegate_team_id for row in rows if row.delegate_team_id is not None}
        users: dict[int, User] = {}
        members: set[int] = set()
        teams: dict[int, str] = {}
        if user_ids:
            users = {
                user.id: user for user in session.scalars(select(User).where(User.id.in_(user_ids)))
            }
            members = set(
                session.scalars(
                    select(TeamMember.user_id)
                    .join(Team, Team.id == TeamMember.team_id)
                    .where(Team.namespace_id == namespace.id, TeamMember.user_id.in_(user_ids))
                )
            )
        if team_ids:
            teams = {
                team_id: name
                for team_id, name in session.execute(
                    select(Team.id, Team.name).where(Team.id.in_(team_ids))
                )
            }

        def person(user_id: int | None) -> PrototypeUser | None:
            user = users.get(user_id) if user_id is not None else None
            if user is None:
                return None
            robot = user.robot_owner_id is not None
            return PrototypeUser(user.username, robot, robot or user.id in members)

        return [
            PrototypeInfo(
                id=row.uuid,
                role=row.role,
                delegate_user=person(row.delegate_user_id),
                delegate_team=(
                    teams.get(row.delegate_team_id) if row.delegate_team_id is not None else None
                ),
                activating_user=person(row.activating_user_id),
            )
            for row in rows
        ]

    @staticmethod
    def _audit(
        session: Session,
        subject: Subject,
        namespace: Namespace,
        kind: str,
        info: PrototypeInfo,
        **extra: Any,
    ) -> None:
        """Quay's metadata for prototype changes, plus the organization's name."""
        metadata: dict[str, Any] = {
            "namespace": namespace.name,
            "prototypeid": info.id,
            "username": subject.username,
            "activating_username": info.activating_user.name if info.activating_user else None,
            "role": info.role,
            **extra,
        }
        if info.delegate_user is not None:
            metadata["delegate_user"] = info.delegate_user.name
        elif info.delegate_team is not None:
            metadata["delegate_team"] = info.delegate_team
        record(session, kind, performer=subject, namespace_id=namespace.id, metadata=metadata)


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise Invalid(f"Invalid role {role[:50]!r}: use one of read, write, admin")
