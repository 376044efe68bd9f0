"""Users: creation, authentication of every kind of credential, first-user bootstrap.

Registry logins (``/v2`` Basic authentication and ``/v2/auth``) accept, as Quay does:

- ``<namespace>+<robot>`` and the robot's token;
- ``$oauthtoken`` and an API access token (acting with the token's scopes);
- ``$app`` and an application-specific token (acting as the token's owner);
- a user name and a *client key*, the encrypted password from
  ``POST /api/v1/user/clientkey`` (see :mod:`portside.auth.client_keys`);
- a user name and its password, unless ``FEATURE_REQUIRE_ENCRYPTED_BASIC_AUTH`` is on.

Signing in to the API (:meth:`UserService.authenticate_password`) takes only the password.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portside.auth.client_keys import (
    decrypt_client_key,
    encrypt_client_key,
    looks_like_client_key,
)
from portside.auth.passwords import MIN_PASSWORD_LENGTH, hash_password, verify_password
from portside.auth.permissions import Subject
from portside.auth.secrets import SecretBox
from portside.db.engine import Database
from portside.db.models import AccessToken, Namespace, User, utcnow
from portside.oci.names import is_valid_namespace
from portside.services.app_tokens import user_for_app_token
from portside.services.audit import AuditContext, record
from portside.services.robots import is_robot_username, verify_robot_token


class UserError(ValueError):
    """A user cannot be created as asked (bad name, taken name, weak password)."""


class AlreadyInitialized(UserError):
    """The first-user bootstrap was attempted on a registry that already has users."""


#: Quay's refusal of a plain password when encrypted ones are required.
PLAIN_PASSWORD_REFUSED = (
    "Client login with unencrypted passwords is disabled. Please generate an encrypted "
    "password in the user admin panel for use here."
)


class PlainPasswordRefused(Exception):
    """A registry login presented a plain user password while
    ``FEATURE_REQUIRE_ENCRYPTED_BASIC_AUTH`` is on (the password was not checked)."""

    def __init__(self) -> None:
        super().__init__(PLAIN_PASSWORD_REFUSED)
        self.message = PLAIN_PASSWORD_REFUSED


#: Username that marks an API access token used as a password (Quay's convention).
OAUTH_TOKEN_USERNAME = "$oauthtoken"
#: Username that marks an application-specific token used as a password (Quay's).
APP_TOKEN_USERNAME = "$app"
#: Scopes of the token returned by the first-user bootstrap: everything.
ALL_API_SCOPES = (
    "repo:read repo:write repo:admin repo:create user:read user:admin org:admin super:user"
)


def token_digest(token: str) -> str:
    """How an access token is stored: its SHA-256, never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()


# A successful password check is remembered this long, keyed by a hash of the user
# name and password: Argon2 is deliberately slow, and clients using Basic auth send the
# password on every request. Failures are never cached. Tokens (robot, API, app) are
# never cached: checking one is a single indexed query, and a revoked token must stop
# working on the next request.
_AUTH_CACHE_TTL_S = 60.0
#: Password verifications that may run at the same time in one process.
_CONCURRENT_VERIFICATIONS = 2


class UserService:
    """Creates and authenticates users."""

    def __init__(self, db: Database, super_users: list[str],
                 secret_box: SecretBox | None = None, *, app_tokens: bool = True,
                 require_encrypted_passwords: bool = False) -> None:
        self._db = db
        #: Decrypts robot tokens and client keys; without it neither can log in.
        self._secret_box = secret_box
        #: ``FEATURE_APP_SPECIFIC_TOKENS``: whether ``$app`` logins are accepted.
        self._app_tokens = app_tokens
        #: ``FEATURE_REQUIRE_ENCRYPTED_BASIC_AUTH``.
        self._require_encrypted = require_encrypted_passwords
        self._super_users = frozenset(super_users)
        self._auth_cache: dict[bytes, tuple[Subject, float]] = {}
        self._lock = threading.Lock()
        self._verify_slots = threading.BoundedSemaphore(_CONCURRENT_VERIFICATIONS)

    def create_user(self, username: str, password: str, email: str | None = None,
                    superuser: bool = False) -> Subject:
        """Create a user and its namespace. Raises :class:`UserError`."""
        return self._create(username, password, email, superuser, only_if_empty=False)[0]

    def initialize(self, username: str, password: str, email: str | None,
                   with_token: bool) -> tuple[Subject, str | None]:
        """Quay's first-user bootstrap: create a superuser while no user exists.

        Returns the subject and, if asked, a new API access token with every scope.
        """
        return self._create(username, password, email, True, only_if_empty=True,
                            with_token=with_token)

    def _create(self, username: str, password: str, email: str | None, superuser: bool,
                only_if_empty: bool, with_token: bool = False) -> tuple[Subject, str | None]:
        if not is_valid_namespace(username):
            raise UserError(
                f"invalid username {username!r}: use 2-255 lower-case letters, digits and "
                "separators (. _ -), starting and ending with a letter or digit"
            )
        if len(password) < MIN_PASSWORD_LENGTH:
            raise UserError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
        try:
            with self._db.session() as session:
                if only_if_empty:
                    self._lock_users(session)
                    if session.scalar(select(func.count(User.id))):
                        raise AlreadyInitialized(
                            "cannot initialize: the registry already has users"
                        )
                if session.scalar(select(Namespace.id).where(Namespace.name == username)):
                    raise UserError(f"the name {username!r} is already taken")
                namespace = Namespace(name=username, kind="user")
                session.add(namespace)
                session.flush()
                user = User(
                    namespace_id=namespace.id,
                    username=username,
                    email=email,
                    password_hash=hash_password(password),
                    superuser=superuser,
                )
                session.add(user)
                session.flush()
                token = None
                if with_token:
                    token = secrets.token_urlsafe(30)
                    session.add(AccessToken(user_id=user.id, token_hash=token_digest(token),
                                            scopes=ALL_API_SCOPES))
                return self._subject(user), token
        except IntegrityError:
            raise UserError(f"the name {username!r} or e-mail is already taken") from None

    def count(self) -> int:
        """Number of users."""
        with self._db.session() as session:
            return session.scalar(select(func.count(User.id))) or 0

    def authenticate(self, username: str, password: str) -> Subject | None:
        """Check registry login credentials (any kind listed in the module docstring);
        ``None`` if they do not name an enabled account.

        Raises :class:`PlainPasswordRefused` for a plain user password while encrypted
        passwords are required; the password is not even checked then.
        """
        if is_robot_username(username):
            return self._authenticate_robot(username, password)
        if username == OAUTH_TOKEN_USERNAME:
            return self.authenticate_token(password)
        if username == APP_TOKEN_USERNAME:
            return self._authenticate_app_token(password) if self._app_tokens else None
        if self._secret_box is not None and looks_like_client_key(password):
            decrypted = decrypt_client_key(self._secret_box, username, password)
            if decrypted is not None:
                return self.authenticate_password(username, decrypted)
            if self._require_encrypted:
                return None  # a forged or foreign key, not a plain password
        if self._require_encrypted:
            raise PlainPasswordRefused()
        return self.authenticate_password(username, password)

    def authenticate_password(self, username: str, password: str) -> Subject | None:
        """Check a user's own password (API sign-in; the last step of registry logins).

        Robots have no password, and tokens are not passwords: both give ``None``.
        """
        if is_robot_username(username) or not username or username.startswith("$"):
            return None
        key = hashlib.sha256(f"{username}\0{password}".encode()).digest()
        now = time.monotonic()
        cached = self._auth_cache.get(key)
        if cached is not None and cached[1] > now and self._still_enabled(cached[0]):
            return cached[0]
        with self._db.session() as session:
            user = session.scalar(select(User).where(User.username == username))
        if user is None or user.password_hash is None:
            return None
        # Each Argon2 check takes 64 MiB for a moment: bound how many run at once.
        with self._verify_slots:
            if not verify_password(user.password_hash, password):
                return None
        if not user.enabled:
            return None
        subject = self._subject(user)
        with self._lock:
            if len(self._auth_cache) > 10_000:
                self._auth_cache.clear()
            self._auth_cache[key] = (subject, now + _AUTH_CACHE_TTL_S)
        return subject

    def _authenticate_app_token(self, token: str) -> Subject | None:
        user = user_for_app_token(self._db, token)
        if user is None or not user.enabled or is_robot_username(user.username):
            return None
        return self._subject(user)

    def create_client_key(self, subject: Subject, password: str,
                          audit: AuditContext | None = None) -> str | None:
        """An encrypted form of the caller's password for CLI logins; ``None`` if
        ``password`` is not the caller's password. Records ``user_generate_client_key``.
        """
        if self._secret_box is None or subject.user_id is None or subject.username is None:
            return None
        if is_robot_username(subject.username):
            return None
        with self._db.session() as session:
            user = session.get(User, subject.user_id)
        if user is None or user.password_hash is None or not user.enabled:
            return None
        with self._verify_slots:
            if not verify_password(user.password_hash, password):
                return None
        key = encrypt_client_key(self._secret_box, user.username, password)
        with self._db.session() as session:
            record(session, "user_generate_client_key",
                   performer=audit.performer if audit else subject,
                   namespace_id=user.namespace_id, ip=audit.ip if audit else None,
                   metadata={"username": user.username})
        return key

    def _still_enabled(self, subject: Subject) -> bool:
        """True if the user behind a remembered login still exists and is enabled: a
        user disabled or deleted (in any process) is refused at once, not a minute
        later. One primary-key query, far cheaper than the Argon2 check it saves."""
        with self._db.read() as connection:
            return bool(connection.execute(
                select(User.enabled).where(User.id == subject.user_id)).scalar())

    def forget_logins(self) -> None:
        """Drop every remembered password check of this process (after a password
        change, so that the old password stops working here at once)."""
        with self._lock:
            self._auth_cache.clear()

    def _authenticate_robot(self, username: str, token: str) -> Subject | None:
        # Not cached: checking a token costs a query and a decryption (microseconds, no
        # Argon2), and a regenerated or deleted robot must be refused at once.
        if self._secret_box is None:
            return None
        with self._db.session() as session:
            robot = verify_robot_token(session, self._secret_box, username, token)
        if robot is None or not robot.enabled:
            return None
        return Subject(user_id=robot.id, username=robot.username)

    def authenticate_token(self, token: str) -> Subject | None:
        """The subject of an API access token (with its scopes), if valid and enabled."""
        found = self._user_for_token(token)
        if found is None or not found[0].enabled:
            return None
        return self._subject(*found)

    def _user_for_token(self, token: str) -> tuple[User, frozenset[str]] | None:
        with self._db.session() as session:
            row = session.execute(
                select(User, AccessToken.expires_at, AccessToken.scopes)
                .join(AccessToken, AccessToken.user_id == User.id)
                .where(AccessToken.token_hash == token_digest(token))
            ).first()
        if row is None:
            return None
        user, expires_at, scopes = row
        if expires_at is not None and expires_at.replace(tzinfo=expires_at.tzinfo or
                                                         utcnow().tzinfo) <= utcnow():
            return None
        return user, frozenset(scopes.split())

    def _lock_users(self, session: Session) -> None:
        # SQLite serialises writers already; PostgreSQL needs an explicit lock so two
        # concurrent bootstraps cannot both see an empty table.
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text('LOCK TABLE "user" IN SHARE ROW EXCLUSIVE MODE'))

    def get_subject(self, user_id: int) -> Subject | None:
        """The subject of an enabled user, by id (session logins)."""
        with self._db.session() as session:
            user = session.get(User, user_id)
        return self._subject(user) if user is not None and user.enabled else None

    def profile(self, user_id: int) -> User | None:
        """The user's row (for ``GET /api/v1/user/``)."""
        with self._db.session() as session:
            return session.get(User, user_id)

    def _subject(self, user: User, scopes: frozenset[str] | None = None) -> Subject:
        return Subject(
            user_id=user.id,
            username=user.username,
            superuser=user.superuser or user.username in self._super_users,
            scopes=scopes,
        )
