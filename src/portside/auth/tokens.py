"""Registry bearer tokens: RS256-signed JWTs issued by ``/v2/auth``.

Signing keys live in the database so that every node trusts every node's keys; the
first start generates one. Verified tokens are cached until they expire, because RSA
verification would otherwise dominate the cost of small requests.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from portside.auth.scopes import Scope
from portside.db.engine import Database
from portside.db.models import SigningKey

ISSUER = "portside"
_ALGORITHM = "RS256"
_CACHE_LIMIT = 50_000
#: Unknown key ids trigger a reload from the database at most this often, so forged
#: tokens cannot turn every request into a database query.
_KEY_RELOAD_INTERVAL_S = 10.0


class InvalidToken(Exception):
    """The bearer token is malformed, expired, or not signed by a trusted key."""


@dataclass(frozen=True)
class TokenGrant:
    """The verified content of a registry token."""

    username: str | None
    user_id: int | None
    expires_at: float
    #: Repository name -> granted actions; other resource types under ``type:name``.
    access: dict[str, frozenset[str]] = field(default_factory=dict)

    def actions_for(self, repository: str) -> frozenset[str]:
        """Actions granted on ``repository``."""
        return self.access.get(repository, frozenset())


class TokenService:
    """Issues and verifies registry tokens for one ``audience`` (the registry's host)."""

    def __init__(self, db: Database, audience: str, lifetime_s: int) -> None:
        self._db = db
        self.audience = audience
        self.lifetime_s = lifetime_s
        self._lock = threading.Lock()
        self._private: tuple[str, rsa.RSAPrivateKey] | None = None
        self._public: dict[str, rsa.RSAPublicKey] = {}
        self._verified: dict[str, TokenGrant] = {}
        self._last_reload = 0.0

    def load_keys(self) -> None:
        """Load every stored key; generate and store one if there is none."""
        with self._db.session() as session:
            rows = session.scalars(select(SigningKey).order_by(SigningKey.created_at)).all()
            if not rows:
                key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                pem = key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ).decode()
                row = SigningKey(kid=uuid.uuid4().hex, private_key_pem=pem)
                session.add(row)
                rows = [row]
            loaded = {}
            for row in rows:
                private = serialization.load_pem_private_key(
                    row.private_key_pem.encode(), password=None
                )
                assert isinstance(private, rsa.RSAPrivateKey)
                loaded[row.kid] = private
        newest_kid = rows[-1].kid
        with self._lock:
            self._private = (newest_kid, loaded[newest_kid])
            self._public = {kid: key.public_key() for kid, key in loaded.items()}

    def issue(self, username: str | None, user_id: int | None,
              access: list[Scope]) -> tuple[str, int, int]:
        """Sign a token; return ``(token, expires_in, issued_at)``."""
        if self._private is None:
            self.load_keys()
        assert self._private is not None
        kid, key = self._private
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": self.audience,
            "sub": username or "",
            "iat": now,
            "nbf": now - 5,
            "exp": now + self.lifetime_s,
            "jti": uuid.uuid4().hex,
            "access": [scope.to_claim() for scope in access],
            "context": {"user_id": user_id},
        }
        token = jwt.encode(claims, key, algorithm=_ALGORITHM, headers={"kid": kid})
        return token, self.lifetime_s, now

    def verify(self, token: str) -> TokenGrant:
        """Check signature, issuer, audience and expiry; return the grant."""
        cached = self._verified.get(token)
        now = time.time()
        if cached is not None:
            if cached.expires_at > now:
                return cached
            self._verified.pop(token, None)
            raise InvalidToken("token expired")
        grant = self._verify_uncached(token)
        if len(self._verified) >= _CACHE_LIMIT:
            self._verified.clear()
        self._verified[token] = grant
        return grant

    def _verify_uncached(self, token: str) -> TokenGrant:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed token: {exc}") from None
        public = self._public.get(kid) if isinstance(kid, str) else None
        if public is None and time.monotonic() - self._last_reload > _KEY_RELOAD_INTERVAL_S:
            # Another node may have rotated in a new key since we loaded ours.
            self._last_reload = time.monotonic()
            self.load_keys()
            public = self._public.get(kid) if isinstance(kid, str) else None
        if public is None:
            raise InvalidToken("token signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                public,
                algorithms=[_ALGORITHM],
                audience=self.audience,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "aud", "iss"]},
                leeway=5,
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from None
        access: dict[str, frozenset[str]] = {}
        for entry in claims.get("access") or []:
            if not isinstance(entry, dict):
                continue
            name = entry.get("name")
            actions = entry.get("actions") or []
            if not isinstance(name, str) or not isinstance(actions, list):
                continue
            key = name if entry.get("type") == "repository" else f"{entry.get('type')}:{name}"
            access[key] = access.get(key, frozenset()) | frozenset(map(str, actions))
        context = claims.get("context") or {}
        user_id = context.get("user_id") if isinstance(context, dict) else None
        return TokenGrant(
            username=claims.get("sub") or None,
            user_id=user_id if isinstance(user_id, int) else None,
            expires_at=float(claims["exp"]),
            access=access,
        )
