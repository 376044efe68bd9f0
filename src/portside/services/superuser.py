"""What superusers see of the whole registry: every user and organization."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from portside.db.engine import Database
from portside.db.models import Namespace, User


@dataclass(frozen=True)
class UserSummary:
    """A person's account (robots are listed with their owners, not here)."""

    username: str
    email: str | None
    superuser: bool
    enabled: bool


class SuperuserService:
    """Registry-wide listings; callers check ``acts_as_superuser`` first."""

    def __init__(self, db: Database, super_users: list[str]) -> None:
        self._db = db
        self._super_users = frozenset(super_users)

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

    def organizations(self) -> list[str]:
        """Every organization's name."""
        with self._db.read() as connection:
            return list(connection.execute(
                select(Namespace.name).where(Namespace.kind == "organization")
                .order_by(Namespace.name)
            ).scalars())
