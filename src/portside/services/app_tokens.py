"""Application-specific tokens: per-application passwords for CLI logins (Quay's ``$app``).

A token is 80 random letters and digits. Its first 32 characters (the *prefix*) find
the row; only the SHA-256 of the whole token is stored, so the token is shown once, at
creation. Presented as the password of user ``$app`` on ``/v2`` it acts as the token's
owner. A revoked token is deleted; an expired one is refused and deleted later by
:meth:`AppTokenService.purge_expired` (``EXPIRED_APP_SPECIFIC_TOKEN_GC``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from portside.auth.permissions import Subject
from portside.db.engine import Database
from portside.db.models import AppSpecificToken, User, utcnow
from portside.services.audit import AuditContext, record
from portside.services.organizations import Invalid, NotFound
from portside.services.robots import is_robot_username

__all__ = [
    "APP_TOKEN_LENGTH",
    "AppToken",
    "AppTokenService",
    "new_app_token",
    "user_for_app_token",
]

_ALPHABET = string.ascii_letters + string.digits
#: Characters that find the row (the ``token_prefix`` column holds 32).
PREFIX_LENGTH = 32
#: Whole token: prefix plus 48 secret characters (~285 bits in all; Quay's are longer
#: but the prefix column caps ours, and 48 secret characters are ~285 bits already).
APP_TOKEN_LENGTH = 80
#: Longest title (the column).
MAX_TITLE_LENGTH = 255
#: ``last_accessed_at`` is written at most this often per token: a Basic-auth client
#: logs in on every request, and a write per request would be wasteful.
LAST_ACCESSED_RESOLUTION = timedelta(seconds=60)
#: Without ``APP_SPECIFIC_TOKEN_EXPIRATION``, ``?expiring=true`` looks this far ahead.
_DEFAULT_EXPIRING_WINDOW = timedelta(weeks=4)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _as_utc(value: datetime) -> datetime:
    # SQLite returns naive datetimes (stored as UTC).
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def new_app_token() -> str:
    """A fresh random token."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(APP_TOKEN_LENGTH))


@dataclass(frozen=True)
class AppToken:
    """A token as the API shows it (never with its secret, which is not stored)."""

    uuid: str
    title: str
    created: datetime
    expiration: datetime | None
    last_accessed: datetime | None

    @classmethod
    def of(cls, row: AppSpecificToken) -> AppToken:
        """The view of a row."""
        return cls(
            uuid=row.uuid,
            title=row.title,
            created=_as_utc(row.created_at),
            expiration=_as_utc(row.expires_at) if row.expires_at is not None else None,
            last_accessed=(_as_utc(row.last_accessed_at)
                           if row.last_accessed_at is not None else None),
        )


def user_for_app_token(db: Database, token: str) -> User | None:
    """The owner of a valid (well-formed, known, unexpired) token, or ``None``.

    Not cached, so revocation takes effect on the very next request: the check is one
    indexed query and a hash. Touches ``last_accessed_at`` when it is more than
    :data:`LAST_ACCESSED_RESOLUTION` old.
    """
    if len(token) != APP_TOKEN_LENGTH or not token.isascii() or not token.isalnum():
        return None
    with db.session() as session:
        row = session.execute(
            select(AppSpecificToken.id, AppSpecificToken.token_hash,
                   AppSpecificToken.expires_at, AppSpecificToken.last_accessed_at, User)
            .join(User, User.id == AppSpecificToken.user_id)
            .where(AppSpecificToken.token_prefix == token[:PREFIX_LENGTH])
        ).first()
        if row is None:
            return None
        token_id, token_hash, expires_at, last_accessed, user = row
        if not hmac.compare_digest(token_hash, _digest(token)):
            return None
        now = utcnow()
        if expires_at is not None and _as_utc(expires_at) <= now:
            return None
        stale = now - LAST_ACCESSED_RESOLUTION
        if last_accessed is None or _as_utc(last_accessed) < stale:
            # Conditional, so concurrent logins on several workers write once.
            session.execute(
                update(AppSpecificToken)
                .where(AppSpecificToken.id == token_id,
                       or_(AppSpecificToken.last_accessed_at.is_(None),
                           AppSpecificToken.last_accessed_at < stale))
                .values(last_accessed_at=now)
            )
        return user


class AppTokenService:
    """Creates, lists and revokes a user's tokens (stateless: build one per request)."""

    def __init__(self, db: Database, lifetime: timedelta | None = None) -> None:
        self._db = db
        #: ``APP_SPECIFIC_TOKEN_EXPIRATION``; ``None``: tokens never expire.
        self._lifetime = lifetime

    def list(self, subject: Subject, expiring: bool = False) -> list[AppToken]:
        """The caller's tokens, oldest first; with ``expiring``, only those expiring
        within a tenth of the configured lifetime (or four weeks) from now."""
        owner = self._owner(subject)
        query = select(AppSpecificToken).where(AppSpecificToken.user_id == owner)
        if expiring:
            window = (self._lifetime or _DEFAULT_EXPIRING_WINDOW) / 10
            window = max(window, timedelta(seconds=1))
            query = query.where(AppSpecificToken.expires_at.is_not(None),
                                AppSpecificToken.expires_at <= utcnow() + window)
        with self._db.session() as session:
            rows = session.scalars(query.order_by(AppSpecificToken.id)).all()
            return [AppToken.of(row) for row in rows]

    def create(self, subject: Subject, title: str,
               audit: AuditContext | None = None) -> tuple[AppToken, str]:
        """A new token for the caller: its view and the token itself (shown only now).

        Records ``create_app_specific_token`` in the same transaction.
        """
        owner = self._owner(subject)
        title = title.strip()
        if not title:
            raise Invalid("The token title must not be empty.")
        if len(title) > MAX_TITLE_LENGTH:
            raise Invalid(f"The token title must be at most {MAX_TITLE_LENGTH} characters.")
        token = new_app_token()
        now = utcnow()
        with self._db.session() as session:
            row = AppSpecificToken(
                uuid=str(uuid.uuid4()), user_id=owner, title=title,
                token_prefix=token[:PREFIX_LENGTH], token_hash=_digest(token),
                created_at=now,
                expires_at=now + self._lifetime if self._lifetime is not None else None,
            )
            session.add(row)
            session.flush()
            self._audit(session, "create_app_specific_token", owner, row, audit)
            return AppToken.of(row), token

    def get(self, subject: Subject, token_uuid: str) -> AppToken:
        """One of the caller's tokens; :class:`NotFound` for others' and unknown ones."""
        owner = self._owner(subject)
        with self._db.session() as session:
            row = self._find(session, owner, token_uuid)
            return AppToken.of(row)

    def revoke(self, subject: Subject, token_uuid: str,
               audit: AuditContext | None = None) -> AppToken:
        """Delete one of the caller's tokens (it stops working at once) and record
        ``revoke_app_specific_token``."""
        owner = self._owner(subject)
        with self._db.session() as session:
            row = self._find(session, owner, token_uuid)
            view = AppToken.of(row)
            self._audit(session, "revoke_app_specific_token", owner, row, audit)
            session.delete(row)
            return view

    def purge_expired(self, retention: timedelta) -> int:
        """Delete tokens that expired more than ``retention`` ago; returns how many."""
        with self._db.session() as session:
            result = session.execute(
                delete(AppSpecificToken)
                .where(AppSpecificToken.expires_at < utcnow() - retention)
            )
            return int(getattr(result, "rowcount", 0) or 0)

    @staticmethod
    def _owner(subject: Subject) -> int:
        # Robots log in with their own token; tokens are for people.
        if subject.user_id is None or is_robot_username(subject.username):
            raise Invalid("Only users can have application-specific tokens.")
        return subject.user_id

    @staticmethod
    def _find(session: Session, owner: int, token_uuid: str) -> AppSpecificToken:
        row = None
        if len(token_uuid) <= 36:  # the column's length: longer cannot match
            row = session.scalar(select(AppSpecificToken).where(
                AppSpecificToken.uuid == token_uuid, AppSpecificToken.user_id == owner))
        if row is None:
            raise NotFound("Token not found.")
        return row

    @staticmethod
    def _audit(session: Session, kind: str, owner: int, row: AppSpecificToken,
               audit: AuditContext | None) -> None:
        namespace_id = session.scalar(select(User.namespace_id).where(User.id == owner))
        record(session, kind, performer=audit.performer if audit else None,
               namespace_id=namespace_id, ip=audit.ip if audit else None,
               metadata={"app_specific_token_title": row.title,
                         "app_specific_token": row.uuid})
