"""Browser sessions: created for CSRF before sign-in, bound to a user at sign-in,
deleted at sign-out. The cookie holds a random value; the database holds its hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select

from portside.db.engine import Database
from portside.db.models import UserSession, utcnow

#: How long a session lives without being renewed by a new sign-in.
SESSION_LIFETIME = timedelta(hours=12)


@dataclass(frozen=True)
class SessionInfo:
    """A live session: who (if anyone) is signed in, and its CSRF token."""

    cookie: str
    user_id: int | None
    csrf_token: str


def _hash(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


class SessionService:
    """Creates, resolves and ends browser sessions."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def create(self, user_id: int | None = None) -> SessionInfo:
        """A new session (anonymous, or signed in as ``user_id``)."""
        cookie = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        with self._db.session() as session:
            session.add(UserSession(id_hash=_hash(cookie), user_id=user_id, csrf_token=csrf,
                                    expires_at=utcnow() + SESSION_LIFETIME))
        return SessionInfo(cookie, user_id, csrf)

    def get(self, cookie: str | None) -> SessionInfo | None:
        """The live session behind a cookie value, if any."""
        if not cookie or len(cookie) > 128:
            return None
        with self._db.session() as session:
            row = session.get(UserSession, _hash(cookie))
            if row is None:
                return None
            expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(
                tzinfo=utcnow().tzinfo)
            if expires <= utcnow():
                session.delete(row)
                return None
            return SessionInfo(cookie, row.user_id, row.csrf_token)

    def sign_in(self, previous: SessionInfo | None, user_id: int) -> SessionInfo:
        """Start a fresh session for ``user_id``, ending ``previous`` (no fixation)."""
        if previous is not None:
            self.end(previous.cookie)
        return self.create(user_id)

    def end(self, cookie: str) -> None:
        """Delete a session (sign-out)."""
        with self._db.session() as session:
            session.execute(delete(UserSession).where(UserSession.id_hash == _hash(cookie)))

    def purge_expired(self) -> int:
        """Delete expired sessions; returns how many."""
        with self._db.session() as session:
            ids = list(session.scalars(
                select(UserSession.id_hash).where(UserSession.expires_at <= utcnow())))
            if ids:
                session.execute(delete(UserSession).where(UserSession.id_hash.in_(ids)))
            return len(ids)


def csrf_matches(session: SessionInfo, presented: str | None) -> bool:
    """Constant-time comparison of the presented CSRF token with the session's."""
    return presented is not None and hmac.compare_digest(session.csrf_token, presented)
