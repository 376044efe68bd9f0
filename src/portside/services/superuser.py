"""What superusers do to the whole registry: list, create, change and delete users, and
rename and delete organizations.

Callers check ``acts_as_superuser`` first. Every change is audited (Quay's kinds:
``user_create``, ``user_change_password``, ``user_change_email``, ``user_disable``,
``user_enable``, ``user_delete``, ``org_change_name``, ``org_delete``) in the
transaction that makes it. As in Quay, superusers themselves (the ``superuser`` flag or
``SUPER_USERS``) cannot be changed or deleted here; superuser status comes from the
configuration (or ``portside user create --superuser``), never from the API.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portside.auth.passwords import MIN_PASSWORD_LENGTH, hash_password
from portside.auth.permissions import Subject
from portside.db.engine import Database
from portside.db.models import Namespace, User
from portside.oci.names import is_valid_namespace
from portside.services.audit import record
from portside.services.emails import email_in_use, email_problem
from portside.services.organizations import remove_namespace
from portside.services.refusals import Invalid, NotFound, Refusal

T = TypeVar("T")

#: Generated passwords: Quay's alphabet and length (upper-case letters and digits, 32).
_PASSWORD_ALPHABET = string.ascii_uppercase + string.digits
_PASSWORD_LENGTH = 32


SuperuserError = Refusal


@dataclass(frozen=True)
class UserSummary:
    """A person's account (robots are listed with their owners, not here)."""

    username: str
    email: str | None
    superuser: bool
    enabled: bool


@dataclass(frozen=True)
class OrganizationSummary:
    """An organization's name and contact address."""

    name: str
    email: str | None


@dataclass(frozen=True)
class UserChanges:
    """What ``PUT /superuser/users/{name}`` asks for (``None``: leave as it is)."""

    password: str | None = None
    email: str | None = None
    enabled: bool | None = None


def generate_password() -> str:
    """A random password in Quay's format for a user created by a superuser."""
    return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(_PASSWORD_LENGTH))


class SuperuserService:
    """Registry-wide user and organization management."""

    def __init__(self, db: Database, super_users: list[str]) -> None:
        self._db = db
        self._super_users = frozenset(super_users)

    # --- listings -------------------------------------------------------------------
    def users(self) -> list[UserSummary]:
        """Every person, by name (``SUPER_USERS`` counts as superuser too)."""
        with self._db.read() as connection:
            rows = connection.execute(
                select(User.username, User.email, User.superuser, User.enabled)
                .where(User.robot_owner_id.is_(None))
                .order_by(User.username)
            ).all()
        return [UserSummary(name, email, bool(is_super) or name in self._super_users,
                            bool(enabled))
                for name, email, is_super, enabled in rows]

    def organizations(self) -> list[OrganizationSummary]:
        """Every organization, by name."""
        with self._db.read() as connection:
            rows = connection.execute(
                select(Namespace.name, Namespace.email)
                .where(Namespace.kind == "organization", Namespace.deleted_at.is_(None))
                .order_by(Namespace.name)
            ).all()
        return [OrganizationSummary(name, email) for name, email in rows]

    # --- users ----------------------------------------------------------------------
    def user(self, username: str) -> UserSummary:
        """One person's account (:class:`NotFound` for robots and unknown names)."""
        with self._db.session() as session:
            return self._summary(self._person(session, username))

    def create_user(self, performer: Subject, username: str,
                    email: str | None) -> tuple[UserSummary, str]:
        """Create a user (and its namespace) with a generated password; returns the
        account and the password, which is shown this once."""
        if not is_valid_namespace(username):
            raise Invalid(
                f"Invalid username {username[:100]!r}: use 2-255 lower-case letters, "
                "digits and separators (. _ -), starting and ending with a letter or digit"
            )
        password = generate_password()
        password_hash = hash_password(password)

        def work(session: Session) -> UserSummary:
            if session.scalar(select(Namespace.id).where(Namespace.name == username)):
                raise Invalid("A user or organization with this name already exists")
            if email is not None:
                self._check_email(session, email)
            namespace = Namespace(name=username, kind="user")
            session.add(namespace)
            session.flush()
            user = User(namespace_id=namespace.id, username=username, email=email,
                        password_hash=password_hash, superuser=False)
            session.add(user)
            session.flush()
            record(session, "user_create", performer=performer, namespace_id=namespace.id,
                   metadata={"username": username, "email": email,
                             "superuser": performer.username})
            return self._summary(user)

        try:
            return self._write(work), password
        except IntegrityError:
            # Created concurrently between the checks and the insert.
            raise Invalid("A user with this name or e-mail address already exists") from None

    def update_user(self, performer: Subject, username: str,
                    changes: UserChanges) -> UserSummary:
        """Change a user's password, e-mail address or enabled state."""
        if changes.password is not None and len(changes.password) < MIN_PASSWORD_LENGTH:
            raise Invalid(f"The password must be at least {MIN_PASSWORD_LENGTH} characters")
        # Hashed before the transaction: Argon2 takes a while and must not hold locks.
        new_hash = hash_password(changes.password) if changes.password is not None else None

        def work(session: Session) -> UserSummary:
            user = self._person(session, username, lock=True)
            self._refuse_superuser(user, "update")
            audit: list[tuple[str, dict[str, object]]] = []
            if new_hash is not None:
                user.password_hash = new_hash
                audit.append(("user_change_password", {}))
            if changes.email is not None and changes.email != user.email:
                self._check_email(session, changes.email, user_id=user.id)
                audit.append(("user_change_email",
                              {"email": changes.email, "old_email": user.email}))
                user.email = changes.email
            if changes.enabled is not None and changes.enabled != user.enabled:
                user.enabled = changes.enabled
                audit.append(("user_enable" if changes.enabled else "user_disable", {}))
            session.flush()
            for kind, metadata in audit:
                record(session, kind, performer=performer, namespace_id=user.namespace_id,
                       metadata={"username": username, "superuser": performer.username,
                                 **metadata})
            return self._summary(user)

        try:
            return self._write(work)
        except IntegrityError:
            raise Invalid("E-mail address already used") from None

    def delete_user(self, performer: Subject, username: str) -> None:
        """Delete a user with its namespace, repositories and robots."""

        def work(session: Session) -> None:
            user = self._person(session, username, lock=True)
            self._refuse_superuser(user, "delete")
            assert user.namespace_id is not None  # people always own a namespace
            # Recorded first, filed under the namespace about to go: entries outlive it.
            record(session, "user_delete", performer=performer,
                   namespace_id=user.namespace_id,
                   metadata={"username": username, "superuser": performer.username})
            remove_namespace(session, user.namespace_id)

        self._write(work)

    # --- organizations --------------------------------------------------------------
    def rename_organization(self, performer: Subject, name: str,
                            new_name: str | None) -> OrganizationSummary:
        """Rename an organization; its repositories, teams and robots follow (robots
        become ``<new_name>+<short>``, their tokens unchanged)."""
        if new_name is not None and new_name != name and not is_valid_namespace(new_name):
            raise Invalid(
                f"Invalid organization name {new_name[:100]!r}: use 2-255 lower-case "
                "letters, digits and separators (. _ -), starting and ending with a "
                "letter or digit"
            )

        def work(session: Session) -> OrganizationSummary:
            namespace = self._organization(session, name, lock=True)
            if new_name is None or new_name == name:
                return OrganizationSummary(namespace.name, namespace.email)
            if session.scalar(select(Namespace.id).where(Namespace.name == new_name)):
                raise Invalid("A user or organization with this name already exists")
            robots = list(session.scalars(
                select(User).where(User.robot_owner_id == namespace.id)))
            for robot in robots:
                short = robot.username.partition("+")[2]
                renamed = f"{new_name}+{short}"
                if len(renamed) > 255:
                    raise Invalid(f"The robot name {renamed[:100]!r}... would be too long")
                robot.username = renamed
            namespace.name = new_name
            session.flush()
            record(session, "org_change_name", performer=performer,
                   namespace_id=namespace.id,
                   metadata={"namespace": new_name, "old_name": name, "new_name": new_name,
                             "superuser": performer.username})
            return OrganizationSummary(namespace.name, namespace.email)

        try:
            return self._write(work)
        except IntegrityError:
            raise Invalid("A user or organization with this name already exists") from None

    def delete_organization(self, performer: Subject, name: str) -> None:
        """Delete an organization with its teams, robots and repositories."""

        def work(session: Session) -> None:
            namespace = self._organization(session, name, lock=True)
            record(session, "org_delete", performer=performer, namespace_id=namespace.id,
                   metadata={"namespace": name, "superuser": performer.username})
            remove_namespace(session, namespace.id)

        self._write(work)

    # --- helpers --------------------------------------------------------------------
    def _write(self, work: Callable[[Session], T]) -> T:
        with self._db.session() as session:
            return work(session)

    def _summary(self, user: User) -> UserSummary:
        return UserSummary(user.username, user.email, self._is_superuser(user),
                           bool(user.enabled))

    def _is_superuser(self, user: User) -> bool:
        return bool(user.superuser) or user.username in self._super_users

    def _refuse_superuser(self, user: User, verb: str) -> None:
        # Quay's rule: the superuser panel manages ordinary accounts only, which also
        # keeps a superuser from locking itself (or a peer) out.
        if self._is_superuser(user):
            raise Invalid(f"Cannot {verb} a superuser")

    @staticmethod
    def _check_email(session: Session, email: str, *, user_id: int | None = None) -> None:
        problem = email_problem(email)
        if problem is not None:
            raise Invalid(problem)
        if email_in_use(session, email, user_id=user_id):
            raise Invalid("E-mail address already used")

    @staticmethod
    def _person(session: Session, username: str, lock: bool = False) -> User:
        query = select(User).where(User.username == username,
                                   User.robot_owner_id.is_(None))
        if lock:
            query = query.with_for_update()
        user = session.scalar(query)
        if user is None:
            raise NotFound(f"Unknown user {username[:100]!r}")
        return user

    @staticmethod
    def _organization(session: Session, name: str, lock: bool = False) -> Namespace:
        query = select(Namespace).where(Namespace.name == name,
                                        Namespace.kind == "organization")
        if lock:
            query = query.with_for_update()
        namespace = session.scalar(query)
        if namespace is None:
            raise NotFound(f"Unknown organization {name[:100]!r}")
        return namespace
