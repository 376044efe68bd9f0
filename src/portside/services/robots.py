"""Robot accounts: ``<namespace>+<shortname>`` principals owned by a user or organization.

Robots are rows of the ``user`` table (as in Quay) without a namespace or password; they
authenticate to the registry with a generated token that is stored encrypted (see
:mod:`portside.auth.secrets`) because Quay's API shows it again on request.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import string
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portside.auth.permissions import NamespaceRole, strongest_namespace_role
from portside.auth.secrets import SecretBox, SecretError
from portside.db.engine import Database
from portside.db.models import (
    Namespace,
    Repository,
    RepositoryPermission,
    Team,
    TeamMember,
    User,
)
from portside.services.audit import AuditContext, record

log = logging.getLogger(__name__)

#: Quay's grammar for the part after ``+``.
ROBOT_SHORTNAME_RE = re.compile(r"^[a-z][a-z0-9_]{1,254}$")
#: Longest full robot name (the ``user.username`` column).
MAX_ROBOT_USERNAME = 255
#: Quay's robot tokens: 64 upper-case letters and digits (~330 bits).
_TOKEN_ALPHABET = string.ascii_uppercase + string.digits
_TOKEN_LENGTH = 64


class RobotError(ValueError):
    """A robot cannot be created as asked (bad or taken name)."""


class RobotNotFound(LookupError):
    """No such robot in the namespace."""


def is_robot_username(username: str | None) -> bool:
    """True for ``<namespace>+<shortname>`` (user names can never contain ``+``)."""
    return username is not None and "+" in username


def new_robot_token() -> str:
    """A fresh robot token, in Quay's format."""
    return "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(_TOKEN_LENGTH))


def _audit(session: Session, kind: str, owner: OwnerNamespace, robot: str,
           audit: AuditContext | None) -> None:
    """Record a robot change in the owner's namespace, in the caller's transaction."""
    record(session, kind, performer=audit.performer if audit else None,
           namespace_id=owner.id, ip=audit.ip if audit else None,
           metadata={"robot": robot, "namespace": owner.name})


@dataclass(frozen=True)
class OwnerNamespace:
    """The namespace that owns robots."""

    id: int
    name: str
    kind: str

    @property
    def is_organization(self) -> bool:
        """True for organizations (``user`` namespaces belong to one user)."""
        return self.kind == "organization"


@dataclass(frozen=True)
class Robot:
    """A robot as the API shows it."""

    name: str
    description: str | None
    created: datetime
    #: The token in clear; ``None`` when it cannot be decrypted (database secret changed).
    token: str | None
    #: With ``permissions``: team names and repository names where it has a role.
    teams: tuple[str, ...] = ()
    repositories: tuple[str, ...] = ()


@dataclass(frozen=True)
class RobotPermission:
    """A role the robot holds directly on a repository."""

    repository: str
    public: bool
    role: str


def verify_robot_token(session: Session, box: SecretBox, username: str,
                       token: str) -> User | None:
    """The robot ``username`` if ``token`` is its current token, else ``None``.

    The stored token is decrypted and compared in constant time; decryption failures
    (a changed DATABASE_SECRET_KEY) are logged and treated as a mismatch.
    """
    robot = session.scalar(select(User).where(User.username == username,
                                              User.robot_owner_id.is_not(None)))
    if robot is None or not robot.robot_token_encrypted:
        return None
    try:
        expected = box.decrypt(robot.robot_token_encrypted)
    except SecretError:
        log.warning("cannot decrypt the token of robot %s: was DATABASE_SECRET_KEY "
                    "changed?", username)
        return None
    if not hmac.compare_digest(expected.encode(), token.encode()):
        return None
    return robot


class RobotService:
    """Creates, lists, regenerates and deletes robots of a namespace."""

    def __init__(self, db: Database, box: SecretBox) -> None:
        self._db = db
        self._box = box

    # --- namespaces and the caller's role -------------------------------------------
    def namespace(self, name: str) -> OwnerNamespace | None:
        """The namespace ``name``, if it exists."""
        with self._db.session() as session:
            row = session.execute(select(Namespace.id, Namespace.name, Namespace.kind)
                                  .where(Namespace.name == name)).first()
        return OwnerNamespace(row.id, row.name, row.kind) if row is not None else None

    def user_namespace(self, user_id: int) -> OwnerNamespace | None:
        """The own namespace of the user ``user_id`` (``None`` for robots)."""
        with self._db.session() as session:
            row = session.execute(
                select(Namespace.id, Namespace.name, Namespace.kind)
                .join(User, User.namespace_id == Namespace.id)
                .where(User.id == user_id)
            ).first()
        return OwnerNamespace(row.id, row.name, row.kind) if row is not None else None

    def organization_role(self, namespace_id: int, user_id: int) -> NamespaceRole | None:
        """The strongest role ``user_id`` holds in an organization through its teams."""
        with self._db.session() as session:
            roles = session.scalars(
                select(Team.role).join(TeamMember, TeamMember.team_id == Team.id)
                .where(Team.namespace_id == namespace_id, TeamMember.user_id == user_id)
            ).all()
        return strongest_namespace_role(roles)

    # --- robots -----------------------------------------------------------------------
    def list_robots(self, owner: OwnerNamespace, include_token: bool,
             include_permissions: bool) -> list[Robot]:
        """The robots of ``owner``, by name."""
        with self._db.session() as session:
            robots = session.scalars(select(User).where(User.robot_owner_id == owner.id)
                                     .order_by(User.username)).all()
            result = []
            for robot in robots:
                teams: tuple[str, ...] = ()
                repositories: tuple[str, ...] = ()
                if include_permissions:
                    teams = tuple(session.scalars(
                        select(Team.name).join(TeamMember, TeamMember.team_id == Team.id)
                        .where(TeamMember.user_id == robot.id).order_by(Team.name)).all())
                    repositories = tuple(p.repository for p in self._permissions(session,
                                                                                  robot.id))
                result.append(self._robot(robot, include_token, teams, repositories))
            return result

    def get(self, owner: OwnerNamespace, shortname: str) -> Robot:
        """One robot, with its token. Raises :class:`RobotNotFound`."""
        with self._db.session() as session:
            return self._robot(self._find(session, owner, shortname), include_token=True)

    def create(self, owner: OwnerNamespace, shortname: str, description: str | None,
               *, audit: AuditContext | None = None) -> Robot:
        """Create ``<owner>+<shortname>`` with a new token. Raises :class:`RobotError`."""
        if not ROBOT_SHORTNAME_RE.fullmatch(shortname):
            raise RobotError(
                f"Invalid robot account shortname {shortname[:300]!r}: use 2-255 lower-case "
                "letters, digits and underscores, starting with a letter"
            )
        username = f"{owner.name}+{shortname}"
        if len(username) > MAX_ROBOT_USERNAME:
            raise RobotError(f"Robot name {username[:300]!r} is longer than "
                             f"{MAX_ROBOT_USERNAME} characters")
        token = new_robot_token()
        try:
            with self._db.session() as session:
                if session.scalar(select(User.id).where(User.username == username)):
                    raise RobotError(f"Existing robot with name: {username}")
                robot = User(username=username, namespace_id=None, robot_owner_id=owner.id,
                             robot_token_encrypted=self._box.encrypt(token),
                             description=description, password_hash=None)
                session.add(robot)
                session.flush()
                _audit(session, "create_robot", owner, username, audit)
                return self._robot(robot, include_token=True)
        except IntegrityError:
            # Created concurrently by another request.
            raise RobotError(f"Existing robot with name: {username}") from None

    def regenerate(self, owner: OwnerNamespace, shortname: str, *,
                   audit: AuditContext | None = None) -> Robot:
        """Replace the robot's token; the old one stops working at once."""
        with self._db.session() as session:
            robot = self._find(session, owner, shortname)
            robot.robot_token_encrypted = self._box.encrypt(new_robot_token())
            session.flush()
            _audit(session, "regenerate_robot_token", owner, robot.username, audit)
            return self._robot(robot, include_token=True)

    def delete(self, owner: OwnerNamespace, shortname: str, *,
               audit: AuditContext | None = None) -> None:
        """Delete the robot with its team memberships and repository permissions."""
        with self._db.session() as session:
            robot = self._find(session, owner, shortname)
            _audit(session, "delete_robot", owner, robot.username, audit)
            # The foreign keys cascade too; deleting explicitly does not depend on the
            # database enforcing them.
            session.execute(delete(TeamMember).where(TeamMember.user_id == robot.id))
            session.execute(delete(RepositoryPermission)
                            .where(RepositoryPermission.user_id == robot.id))
            session.delete(robot)

    def permissions(self, owner: OwnerNamespace, shortname: str) -> list[RobotPermission]:
        """The repositories the robot holds a role on directly, by name."""
        with self._db.session() as session:
            robot = self._find(session, owner, shortname)
            return self._permissions(session, robot.id)

    # --- helpers ----------------------------------------------------------------------
    def _find(self, session: Session, owner: OwnerNamespace, shortname: str) -> User:
        robot = session.scalar(select(User).where(
            User.username == f"{owner.name}+{shortname}", User.robot_owner_id == owner.id))
        if robot is None:
            raise RobotNotFound(f"Could not find robot with specified username: "
                                f"{owner.name}+{shortname[:300]}")
        return robot

    @staticmethod
    def _permissions(session: Session, robot_id: int) -> list[RobotPermission]:
        rows = session.execute(
            select(Repository.name, Repository.public, RepositoryPermission.role)
            .join(RepositoryPermission, RepositoryPermission.repository_id == Repository.id)
            .where(RepositoryPermission.user_id == robot_id,
                   Repository.deleted_at.is_(None))
            .order_by(Repository.name)
        ).all()
        return [RobotPermission(name, bool(public), role) for name, public, role in rows]

    def _robot(self, robot: User, include_token: bool, teams: tuple[str, ...] = (),
               repositories: tuple[str, ...] = ()) -> Robot:
        token = None
        if include_token and robot.robot_token_encrypted:
            try:
                token = self._box.decrypt(robot.robot_token_encrypted)
            except SecretError:
                log.warning("cannot decrypt the token of robot %s: was DATABASE_SECRET_KEY "
                            "changed? Regenerate the token.", robot.username)
        return Robot(name=robot.username, description=robot.description,
                     created=robot.created_at, token=token, teams=teams,
                     repositories=repositories)
