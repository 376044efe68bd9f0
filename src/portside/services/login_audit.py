"""Registry logins in the audit log: ``login_success`` / ``login_failure`` for
``/v2/auth`` token requests and Basic-auth logins on ``/v2`` (Quay's kinds, with
metadata ``{"type": "v2auth", "kind", "username", "useragent"}``).

Neither path may gain a database write per request: ``/v2/auth`` answers well over a
thousand token requests a second, and clients using Basic auth on ``/v2`` send their
credentials with *every* request. So:

- every entry goes through the :class:`~portside.services.audit.LogBuffer` (written in
  one batch about once a second, off the request path; a crash loses at most that);
- a token request with credentials logs every time, as Quay does;
- a Basic-auth login on ``/v2`` logs a success once per credential per
  :data:`DEDUPE_TTL_S` seconds (this process remembers a hash of the ``Authorization``
  header, like the password check's own success cache, whose lifetime it matches):
  a ``docker pull`` of twenty layers is one login, not twenty;
- failures always log (the login-failure limiter already bounds how many one address
  can cause).
"""

from __future__ import annotations

import hashlib
import threading
import time

from portside.auth.permissions import Subject
from portside.services.audit import LogBuffer
from portside.services.robots import is_robot_username

#: How long a successful Basic-auth login is not logged again (per credential).
DEDUPE_TTL_S = 60.0
#: Remembered credentials per process, at most (cleared beyond).
_MAX_REMEMBERED = 10_000
#: Longest user agent kept in an entry.
_MAX_USER_AGENT = 255


def credential_kind(username: str | None) -> str:
    """Quay's ``kind`` of a login from the user name presented."""
    if username == "$oauthtoken":
        return "oauth"
    if username == "$app":
        return "app_specific_token"
    if username and is_robot_username(username):
        return "robot"
    return "user"


class RegistryLoginAudit:
    """Buffers registry login entries (see the module docstring for what is logged)."""

    def __init__(self, buffer: LogBuffer, dedupe_ttl_s: float = DEDUPE_TTL_S) -> None:
        self._buffer = buffer
        self._ttl = dedupe_ttl_s
        self._seen: dict[bytes, float] = {}
        self._lock = threading.Lock()

    def _first_in_period(self, credential: str) -> bool:
        key = hashlib.sha256(credential.encode()).digest()
        now = time.monotonic()
        with self._lock:
            expires = self._seen.get(key)
            if expires is not None and expires > now:
                return False
            if len(self._seen) >= _MAX_REMEMBERED:
                self._seen.clear()
            self._seen[key] = now + self._ttl
            return True

    def success(self, subject: Subject, presented_username: str, *, ip: str | None,
                user_agent: str | None, dedupe_credential: str | None = None) -> None:
        """Log a successful login. With ``dedupe_credential`` (the Basic ``Authorization``
        value on ``/v2``), only the first use of that credential per period is logged."""
        if dedupe_credential is not None and not self._first_in_period(dedupe_credential):
            return
        metadata = {"type": "v2auth", "kind": credential_kind(presented_username),
                    "username": subject.username or presented_username,
                    "useragent": (user_agent or "")[:_MAX_USER_AGENT]}
        self._buffer.add_entry("login_success", performer=subject, ip=ip, metadata=metadata,
                               namespace_of_user=subject.username)

    def failure(self, presented_username: str | None, *, ip: str | None,
                user_agent: str | None) -> None:
        """Log a refused login, filed under the namespace of the account it named
        (if any) so that its owner sees attempts on it."""
        metadata: dict[str, str] = {"type": "v2auth",
                                    "kind": credential_kind(presented_username),
                                    "useragent": (user_agent or "")[:_MAX_USER_AGENT]}
        if presented_username is not None:
            metadata["username"] = presented_username[:255]
        named_account = (presented_username
                         if credential_kind(presented_username) in ("user", "robot")
                         else None)
        self._buffer.add_entry("login_failure", performer=None, ip=ip, metadata=metadata,
                               namespace_of_user=named_account)
