"""E-mail addresses of users and organizations: format and uniqueness.

Quay keeps users and organizations in one table, so an address belongs to at most one
of them. Portside keeps a user's address on its ``user`` row and an organization's on
its ``namespace`` row; :func:`email_in_use` looks at both.
"""

from __future__ import annotations

import re

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portside.db.models import Namespace, User

#: Longest address the columns hold.
MAX_EMAIL_LENGTH = 255

# Deliberately loose (one "@", a dot in the domain, no spaces): the only real check of
# an address is a message that arrives, and Portside sends none.
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")


def email_problem(email: str) -> str | None:
    """Why ``email`` is not an acceptable address (``None`` if it is)."""
    if len(email) > MAX_EMAIL_LENGTH:
        return f"E-mail address longer than {MAX_EMAIL_LENGTH} characters"
    if not _EMAIL_RE.fullmatch(email):
        return f"Invalid e-mail address {email[:100]!r}"
    return None


def email_in_use(session: Session, email: str, *, user_id: int | None = None,
                 namespace_id: int | None = None) -> bool:
    """True if a user or organization other than ``user_id`` / ``namespace_id`` has
    ``email`` (compared case-insensitively, as mail systems do)."""
    folded = email.lower()
    users = select(User.id).where(func.lower(User.email) == folded)
    if user_id is not None:
        users = users.where(User.id != user_id)
    if session.scalar(users.limit(1)) is not None:
        return True
    orgs = select(Namespace.id).where(Namespace.kind == "organization",
                                      func.lower(Namespace.email) == folded)
    if namespace_id is not None:
        orgs = orgs.where(Namespace.id != namespace_id)
    return session.scalar(orgs.limit(1)) is not None
