"""OAuth applications of organizations, and the API access tokens issued through them.

An organization's administrators register applications (Quay's ``OAuthApplication``):
a name, a redirect URI and a generated client id and secret; the secret is stored
encrypted with the database secret key so that administrators can read it back, as in
Quay. Any signed-in user may then authorize an application to act for them with chosen
Quay scopes, which issues an :class:`~portside.db.models.AccessToken` bound to the
application. A token never grants more than its scopes *and* the user's own rights
(:mod:`portside.auth.permissions` applies both), so requesting a scope one could not use
is harmless. Deleting an application deletes its tokens (the foreign key cascades).

Authorization codes (the code flow) need no table: a code is the SecretBox encryption of
who authorized which client for what, until when, together with the access token it
will become. Redeeming it inserts that token; the token's hash is unique, so a second
redemption fails on the database's constraint, on every process and node alike, and
then revokes the token as RFC 6749 (section 4.1.2) recommends.
"""

from __future__ import annotations

import hmac
import json
import secrets
import string
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from sqlalchemy import delete, or_, select, update
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
from portside.auth.secrets import SecretBox, SecretError
from portside.db.engine import Database
from portside.db.models import (
    AccessToken,
    Namespace,
    OAuthApplication,
    Team,
    TeamMember,
    User,
    utcnow,
)
from portside.services.audit import record
from portside.services.organizations import Forbidden, Invalid, NotFound
from portside.services.users import token_digest

T = TypeVar("T")

#: Quay's scopes, in the order they are shown, with a title and a short explanation.
SCOPES: dict[str, tuple[str, str, bool]] = {
    "repo:read": ("View all visible repositories",
                  "Pull and list every repository the user can see.", False),
    "repo:write": ("Read/Write to any accessible repositories",
                   "Push to and delete tags of every repository the user can write to.",
                   False),
    "repo:admin": ("Administer Repositories",
                   "Administer every repository the user administers (permissions, "
                   "visibility, deletion).", False),
    "repo:create": ("Create Repositories",
                    "Create repositories in every namespace the user may create them in.",
                    False),
    "user:read": ("Read User Information",
                  "Read the user's account and the organizations it belongs to.", False),
    "user:admin": ("Administer User",
                   "Administer the user's account, robots and organizations it creates.",
                   True),
    "org:admin": ("Administer Organization",
                  "Administer every organization the user administers (teams, robots, "
                  "applications, logs).", True),
    "super:user": ("Super User Access",
                   "Act with the user's superuser rights, if it has them.", True),
}

#: Lifetime of tokens issued through applications: Quay's ten years, in effect no expiry.
TOKEN_LIFETIME_S = int(10 * 365.25 * 24 * 3600)
#: Lifetime of authorization codes (RFC 6749 recommends at most ten minutes).
CODE_LIFETIME_S = 300
#: Quay's client ids (20) and secrets (40): upper-case letters and digits.
_CLIENT_ALPHABET = string.ascii_uppercase + string.digits
_CLIENT_ID_LENGTH, _CLIENT_SECRET_LENGTH = 20, 40
#: Marks a SecretBox plaintext as an authorization code (nothing else decrypts to it).
_CODE_PURPOSE = "portside-oauth-code-v1"
MAX_NAME, MAX_URI, MAX_EMAIL, MAX_DESCRIPTION = 255, 1024, 255, 65536


class InvalidClient(NotFound):
    """No application has this client id (or its secret does not match)."""


class InvalidRedirect(Invalid):
    """The redirect URI is not one the application registered."""


class InvalidScope(Invalid):
    """A requested scope is unknown, or none was requested."""


class InvalidGrant(Invalid):
    """An authorization code is malformed, expired, used, or for another client."""


@dataclass(frozen=True)
class ApplicationFields:
    """What an administrator sets on an application."""

    name: str
    description: str = ""
    application_uri: str = ""
    redirect_uri: str = ""
    avatar_email: str | None = None


@dataclass(frozen=True)
class Application:
    """An application as its organization's administrators see it (with the secret)."""

    organization: str
    client_id: str
    client_secret: str
    name: str
    description: str
    application_uri: str
    redirect_uri: str
    avatar_email: str | None


@dataclass(frozen=True)
class AuthorizationRequest:
    """A validated request to authorize an application: what the user is asked."""

    organization: str
    client_id: str
    name: str
    description: str
    application_uri: str
    avatar_email: str | None
    redirect_uri: str
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class IssuedToken:
    """A new access token (shown once) with its scopes and lifetime."""

    token: str
    scopes: tuple[str, ...]
    expires_in: int


@dataclass(frozen=True)
class Authorization:
    """A token the user issued through an application (never the token itself)."""

    id: int
    organization: str
    client_id: str
    name: str
    description: str
    application_uri: str
    avatar_email: str | None
    scopes: tuple[str, ...]
    created: datetime
    expires: datetime | None


def parse_scopes(value: str | None) -> tuple[str, ...]:
    """Quay's scope string: space- or comma-separated known scopes (at least one).

    Raises :class:`InvalidScope` naming the first unknown scope.
    """
    names = [part for part in (value or "").replace(",", " ").split() if part]
    if not names:
        raise InvalidScope("At least one scope is required")
    for name in names:
        if name not in SCOPES:
            raise InvalidScope(f"Unknown scope {name[:64]!r}: use one of {', '.join(SCOPES)}")
    return tuple(dict.fromkeys(names))


def is_plain_uri(value: str) -> bool:
    """True if ``value`` has only printable ASCII without spaces, as an encoded URI has:
    nothing that ``urlsplit`` would silently drop or a ``Location`` header could not
    carry (CR, LF, tabs, NUL)."""
    return value.isascii() and value.isprintable() and " " not in value


def is_client_id(value: str) -> bool:
    """True if ``value`` could be a client id (letters and digits, at most 64)."""
    return 0 < len(value) <= 64 and value.isascii() and value.isalnum()


def redirect_allowed(registered: str, presented: str) -> bool:
    """True if ``presented`` is at or below the application's ``registered`` URI: same
    scheme and host (with port), and a path equal to the registered one or beneath it
    (at a ``/`` boundary, without ``.``/``..`` segments that could climb out of it)."""
    if not is_plain_uri(presented) or len(presented) > 4 * MAX_URI:
        return False
    wanted, got = urlsplit(registered), urlsplit(presented)
    if not wanted.scheme or not wanted.netloc or got.fragment:
        return False
    if (got.scheme.lower(), got.netloc.lower()) != (wanted.scheme.lower(),
                                                    wanted.netloc.lower()):
        return False
    path = got.path or "/"
    if any(unquote(part) in (".", "..") for part in path.split("/")):
        return False
    base = wanted.path or "/"
    return path == base or path.startswith(base if base.endswith("/") else base + "/")


def _validate(fields: ApplicationFields) -> ApplicationFields:
    name = fields.name.strip()
    if not name or len(name) > MAX_NAME:
        raise Invalid(f"The application name must have 1 to {MAX_NAME} characters")
    # The databases cannot store NUL characters (PostgreSQL refuses them).
    if any("\x00" in value for value in (name, fields.description, fields.avatar_email or "")):
        raise Invalid("The application's fields must not contain NUL characters")
    if len(fields.description) > MAX_DESCRIPTION:
        raise Invalid(f"The description is longer than {MAX_DESCRIPTION} characters")
    for label, uri in (("redirect_uri", fields.redirect_uri),
                       ("application_uri", fields.application_uri)):
        if len(uri) > MAX_URI:
            raise Invalid(f"{label} is longer than {MAX_URI} characters")
        if uri and not is_plain_uri(uri):
            raise Invalid(f"{label} must be an encoded URL (printable ASCII, no spaces)")
        if uri:
            parts = urlsplit(uri)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
                raise Invalid(f"{label} must be an absolute http(s) URL without a fragment")
    if fields.avatar_email is not None and len(fields.avatar_email) > MAX_EMAIL:
        raise Invalid(f"avatar_email is longer than {MAX_EMAIL} characters")
    return ApplicationFields(name, fields.description, fields.application_uri,
                             fields.redirect_uri, fields.avatar_email or None)


def _random(length: int) -> str:
    return "".join(secrets.choice(_CLIENT_ALPHABET) for _ in range(length))


class ApplicationService:
    """Organization applications, token issuing through them, and users' authorizations."""

    def __init__(self, db: Database, box: SecretBox,
                 token_lifetime_s: int = TOKEN_LIFETIME_S) -> None:
        self._db = db
        self._box = box
        self._token_lifetime_s = token_lifetime_s

    # --- applications (organization administrators) -------------------------------
    def list_applications(self, subject: Subject, org: str) -> list[Application]:
        """The organization's applications, oldest first."""
        with self._reading() as session:
            namespace = self._administered(session, subject, org)
            rows = session.scalars(select(OAuthApplication).where(
                OAuthApplication.namespace_id == namespace.id).order_by(OAuthApplication.id))
            return [self._view(org, row) for row in rows]

    def get(self, subject: Subject, org: str, client_id: str) -> Application:
        """One application of the organization."""
        with self._reading() as session:
            namespace = self._administered(session, subject, org)
            return self._view(org, self._application(session, namespace, client_id))

    def create(self, subject: Subject, org: str, fields: ApplicationFields,
               ip: str | None = None) -> Application:
        """Register an application with a new client id and secret."""
        fields = _validate(fields)

        def work(session: Session) -> Application:
            namespace = self._administered(session, subject, org, lock=True)
            row = OAuthApplication(
                namespace_id=namespace.id, client_id=_random(_CLIENT_ID_LENGTH),
                client_secret_encrypted=self._box.encrypt(_random(_CLIENT_SECRET_LENGTH)),
                name=fields.name, description=fields.description,
                application_uri=fields.application_uri, redirect_uri=fields.redirect_uri,
                avatar_email=fields.avatar_email)
            session.add(row)
            session.flush()
            self._audit(session, "create_application", subject, namespace, row, ip)
            return self._view(org, row)

        # A client id collision (one in 36^20) fails the unique constraint: retry.
        return self._write(work)

    def update(self, subject: Subject, org: str, client_id: str, fields: ApplicationFields,
               ip: str | None = None) -> Application:
        """Replace the application's settings (its client id and secret stay)."""
        fields = _validate(fields)

        def work(session: Session) -> Application:
            namespace = self._administered(session, subject, org, lock=True)
            row = self._application(session, namespace, client_id)
            row.name, row.description = fields.name, fields.description
            row.application_uri, row.redirect_uri = fields.application_uri, fields.redirect_uri
            row.avatar_email = fields.avatar_email
            self._audit(session, "update_application", subject, namespace, row, ip)
            return self._view(org, row)

        return self._write(work)

    def reset_secret(self, subject: Subject, org: str, client_id: str,
                     ip: str | None = None) -> Application:
        """Give the application a new client secret (the old one stops working at once;
        tokens already issued stay valid, as in Quay)."""

        def work(session: Session) -> Application:
            namespace = self._administered(session, subject, org, lock=True)
            row = self._application(session, namespace, client_id)
            row.client_secret_encrypted = self._box.encrypt(_random(_CLIENT_SECRET_LENGTH))
            self._audit(session, "reset_application_client_secret", subject, namespace,
                        row, ip)
            return self._view(org, row)

        return self._write(work)

    def delete(self, subject: Subject, org: str, client_id: str,
               ip: str | None = None) -> None:
        """Delete the application; every token issued through it goes with it."""

        def work(session: Session) -> None:
            namespace = self._administered(session, subject, org, lock=True)
            row = self._application(session, namespace, client_id)
            self._audit(session, "delete_application", subject, namespace, row, ip)
            # A Core delete lets the database cascade to the application's tokens.
            session.execute(delete(OAuthApplication).where(OAuthApplication.id == row.id))

        self._write(work)

    # --- authorizing an application (any signed-in user) --------------------------
    def authorization_request(self, client_id: str, redirect_uri: str, scope: str | None,
                              local_redirect: str | None = None) -> AuthorizationRequest:
        """Validate an authorization request and describe it for the user.

        ``local_redirect`` is Portside's own token page, accepted for every application
        (Quay's "generate token" flow, for applications without a redirect URI).
        """
        if not is_client_id(client_id):
            raise InvalidClient(f"Unknown application {client_id[:64]!r}")
        with self._reading() as session:
            row = session.execute(
                select(OAuthApplication, Namespace.name)
                .join(Namespace, Namespace.id == OAuthApplication.namespace_id)
                .where(OAuthApplication.client_id == client_id)
            ).first()
        if row is None:
            raise InvalidClient(f"Unknown application {client_id[:64]!r}")
        app, org = row
        if not redirect_uri or not (redirect_uri == local_redirect
                                    or redirect_allowed(app.redirect_uri, redirect_uri)):
            raise InvalidRedirect("The redirect_uri does not match the application's "
                                  "registered redirect URI")
        scopes = parse_scopes(scope)
        return AuthorizationRequest(org, app.client_id, app.name, app.description or "",
                                    app.application_uri or "", app.avatar_email,
                                    redirect_uri, scopes)

    def issue_token(self, subject: Subject, request: AuthorizationRequest) -> IssuedToken:
        """Issue an access token for ``subject`` through the requested application
        (the implicit flow). ``request`` comes from :meth:`authorization_request`."""
        user_id = self._person(subject)
        token = secrets.token_urlsafe(30)
        with self._db.session() as session:
            application_id = session.scalar(select(OAuthApplication.id).where(
                OAuthApplication.client_id == request.client_id))
            if application_id is None:  # deleted meanwhile
                raise InvalidClient(f"Unknown application {request.client_id[:64]!r}")
            session.add(self._token_row(user_id, application_id, token, request.scopes))
        return IssuedToken(token, request.scopes, self._token_lifetime_s)

    def issue_code(self, subject: Subject, request: AuthorizationRequest) -> str:
        """An authorization code for ``subject`` (the code flow): single-use, valid for
        :data:`CODE_LIFETIME_S` seconds, and only for the same client and redirect URI."""
        user_id = self._person(subject)
        payload = {"p": _CODE_PURPOSE, "c": request.client_id, "u": user_id,
                   "s": list(request.scopes), "r": request.redirect_uri,
                   "e": int(time.time()) + CODE_LIFETIME_S,
                   "t": secrets.token_urlsafe(30)}
        return self._box.encrypt(json.dumps(payload, separators=(",", ":")))

    def redeem_code(self, client_id: str, client_secret: str, code: str,
                    redirect_uri: str) -> IssuedToken:
        """Exchange an authorization code for its access token (once)."""
        payload = self._code_payload(code)
        if not is_client_id(client_id):
            raise InvalidClient("Client authentication failed")
        with self._reading() as session:
            app = session.scalar(select(OAuthApplication).where(
                OAuthApplication.client_id == client_id))
            if app is None or not self._secret_matches(app, client_secret):
                raise InvalidClient("Client authentication failed")
            if payload["c"] != client_id:
                raise InvalidGrant("The code was issued to another client")
            if payload["r"] != redirect_uri:
                raise InvalidGrant("The redirect_uri differs from the authorization "
                                   "request's")
            enabled = session.scalar(select(User.enabled).where(User.id == payload["u"]))
            if not enabled:
                raise InvalidGrant("The user who authorized the code cannot sign in")
            application_id = app.id
        token, scopes = payload["t"], tuple(payload["s"])
        try:
            with self._db.session() as session:
                session.add(self._token_row(payload["u"], application_id, token, scopes))
        except IntegrityError:
            # Redeemed before: the code may have leaked, so revoke what it gave.
            with self._db.session() as session:
                _expire_now(session, AccessToken.token_hash == token_digest(token))
            raise InvalidGrant("The code was already used") from None
        return IssuedToken(token, scopes, self._token_lifetime_s)

    # --- the user's own authorizations ---------------------------------------------
    def authorizations(self, subject: Subject) -> list[Authorization]:
        """The tokens ``subject`` issued through applications, newest first."""
        user_id = self._person(subject)
        with self._reading() as session:
            return [self._authorization(*row) for row in session.execute(
                self._authorization_query().where(AccessToken.user_id == user_id)
                .order_by(AccessToken.id.desc()))]

    def authorization(self, subject: Subject, authorization_id: str) -> Authorization:
        """One of ``subject``'s authorizations, by id."""
        user_id = self._person(subject)
        with self._reading() as session:
            row = session.execute(self._authorization_query().where(
                AccessToken.user_id == user_id,
                AccessToken.id == self._authorization_id(authorization_id))).first()
        if row is None:
            raise NotFound("Unknown authorization")
        return self._authorization(*row)

    def revoke(self, subject: Subject, authorization_id: str) -> None:
        """Revoke one of ``subject``'s application tokens: it stops working at once.

        The row stays, expired, as a tombstone: its unique hash makes a second
        redemption of the authorization code that issued it fail (and a deleted row
        would let that code mint the token again while the code is still valid).
        """
        user_id = self._person(subject)
        with self._db.session() as session:
            revoked = _expire_now(
                session, AccessToken.id == self._authorization_id(authorization_id),
                AccessToken.user_id == user_id, AccessToken.application_id.is_not(None))
            if not revoked:
                raise NotFound("Unknown authorization")

    # --- helpers ------------------------------------------------------------------
    @contextmanager
    def _reading(self) -> Iterator[Session]:
        """An ORM session on a read connection (no SQLite write lock)."""
        with self._db.read() as connection, Session(bind=connection) as session:
            yield session

    def _write(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in a write transaction, once more if it lost a unique race."""
        try:
            with self._db.session() as session:
                return work(session)
        except IntegrityError:
            with self._db.session() as session:
                return work(session)

    def _administered(self, session: Session, subject: Subject, org: str,
                      lock: bool = False) -> Namespace:
        """The organization, if ``subject`` may administer it (``org:admin`` for tokens).

        Outsiders get 403 like members, as for Quay's other organization endpoints.
        """
        if subject.anonymous:
            raise Forbidden("Requires authentication")
        if "\x00" in org:
            raise NotFound("Unknown organization")
        query = select(Namespace).where(Namespace.name == org,
                                        Namespace.kind == "organization")
        namespace = session.scalar(query.with_for_update() if lock else query)
        if namespace is None:
            raise NotFound(f"Unknown organization {org[:100]!r}")
        role = strongest_namespace_role(session.scalars(
            select(Team.role).join(TeamMember, TeamMember.team_id == Team.id)
            .where(Team.namespace_id == namespace.id, TeamMember.user_id == subject.user_id)))
        if acts_as_superuser(subject):
            role = NamespaceRole.ADMIN
        if NamespaceAction.ADMINISTER not in namespace_actions(subject, role,
                                                               is_organization=True):
            raise Forbidden("Unauthorized")
        return namespace

    @staticmethod
    def _application(session: Session, namespace: Namespace, client_id: str
                     ) -> OAuthApplication:
        if not is_client_id(client_id):
            raise NotFound(f"Unknown application {client_id[:64]!r}")
        row = session.scalar(select(OAuthApplication).where(
            OAuthApplication.namespace_id == namespace.id,
            OAuthApplication.client_id == client_id))
        if row is None:
            raise NotFound(f"Unknown application {client_id[:64]!r}")
        return row

    def _view(self, org: str, row: OAuthApplication) -> Application:
        return Application(org, row.client_id, self._secret(row), row.name,
                           row.description or "", row.application_uri or "",
                           row.redirect_uri or "", row.avatar_email)

    def _secret(self, row: OAuthApplication) -> str:
        try:
            return self._box.decrypt(row.client_secret_encrypted)
        except SecretError:
            raise Invalid("The client secret cannot be decrypted (was DATABASE_SECRET_KEY "
                          "changed?): reset it") from None

    def _secret_matches(self, row: OAuthApplication, presented: str) -> bool:
        try:
            expected = self._box.decrypt(row.client_secret_encrypted)
        except SecretError:
            return False
        return hmac.compare_digest(expected.encode(), presented.encode())

    @staticmethod
    def _audit(session: Session, kind: str, subject: Subject, namespace: Namespace,
               row: OAuthApplication, ip: str | None) -> None:
        record(session, kind, performer=subject, namespace_id=namespace.id, ip=ip,
               metadata={"application_name": row.name, "client_id": row.client_id,
                         "namespace": namespace.name})

    def _person(self, subject: Subject) -> int:
        """The signed-in user behind ``subject`` (robots cannot authorize applications)."""
        if subject.user_id is None:
            raise Forbidden("Requires a signed-in user")
        with self._reading() as session:
            robot_owner = session.execute(select(User.robot_owner_id).where(
                User.id == subject.user_id)).first()
        if robot_owner is None or robot_owner[0] is not None:
            raise Forbidden("Requires a signed-in user")
        return subject.user_id

    def _token_row(self, user_id: int, application_id: int, token: str,
                   scopes: tuple[str, ...]) -> AccessToken:
        return AccessToken(user_id=user_id, token_hash=token_digest(token),
                           scopes=" ".join(scopes), application_id=application_id,
                           expires_at=utcnow() + timedelta(seconds=self._token_lifetime_s))

    def _code_payload(self, code: str) -> dict[str, Any]:
        if not code or len(code) > 4096:
            raise InvalidGrant("Invalid authorization code")
        try:
            payload = json.loads(self._box.decrypt(code))
        except (SecretError, ValueError):
            raise InvalidGrant("Invalid authorization code") from None
        if (not isinstance(payload, dict) or payload.get("p") != _CODE_PURPOSE
                or not isinstance(payload.get("e"), int)):
            raise InvalidGrant("Invalid authorization code")
        if payload["e"] < time.time():
            raise InvalidGrant("The authorization code has expired")
        return payload

    @staticmethod
    def _authorization_query() -> Any:
        return (select(AccessToken, OAuthApplication, Namespace.name)
                .join(OAuthApplication, OAuthApplication.id == AccessToken.application_id)
                .join(Namespace, Namespace.id == OAuthApplication.namespace_id)
                .where(_live()))

    @staticmethod
    def _authorization_id(value: str) -> int:
        if not (value.isascii() and value.isdigit()) or len(value) > 18:
            raise NotFound("Unknown authorization")
        return int(value)

    @staticmethod
    def _authorization(token: AccessToken, app: OAuthApplication, org: str) -> Authorization:
        return Authorization(token.id, org, app.client_id, app.name, app.description or "",
                             app.application_uri or "", app.avatar_email,
                             tuple(token.scopes.split()), token.created_at, token.expires_at)


def _live() -> Any:
    """Tokens that have not expired (or been revoked, which expires them)."""
    return or_(AccessToken.expires_at.is_(None), AccessToken.expires_at > utcnow())


def _expire_now(session: Session, *conditions: Any) -> int:
    """Expire the live tokens matching ``conditions``; returns how many."""
    result = session.execute(update(AccessToken).where(_live(), *conditions)
                             .values(expires_at=utcnow()))
    return int(result.rowcount)  # type: ignore[attr-defined]
