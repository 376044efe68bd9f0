"""Deletion marks: deleting a repository or namespace is immediate for users and cheap.

The row is renamed to a name no client can ever ask for (it contains ``!``, which the
name grammars refuse, and a random suffix, so two marked rows never collide) and gets
``deleted_at``. Lookups by name therefore miss it at once, the name is free for a new
repository or namespace at once, and every listing filters on ``deleted_at``.
Garbage collection (:mod:`portside.services.gc_purge`) deletes the rows in batches
later; their blobs then become garbage.

What must stop working at once goes at once: the user of a user namespace, the robots
and teams of the namespace (credentials and memberships), and its OAuth applications
(with the tokens they issued).
"""

from __future__ import annotations

import uuid

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from portside.db.models import Namespace, OAuthApplication, Repository, Team, User, utcnow

#: Marked names keep a readable prefix of the old name (audit displays).
_KEPT_PREFIX = 200


def marked_name(name: str) -> str:
    """A name that can never be valid nor collide: ``<name>!deleted!<uuid>``."""
    return f"{name[:_KEPT_PREFIX]}!deleted!{uuid.uuid4().hex}"


def original_name(name: str) -> str:
    """The name a marked row had (possibly cut), or ``name`` itself if not marked."""
    return name.split("!deleted!", 1)[0]


def mark_repository(session: Session, repository_id: int) -> None:
    """Mark a repository deleted; its content is purged by garbage collection."""
    repository = session.get(Repository, repository_id)
    if repository is None or repository.deleted_at is not None:
        return
    repository.name = marked_name(repository.name)
    repository.deleted_at = utcnow()
    session.flush()


def mark_namespace(session: Session, namespace_id: int) -> None:
    """Mark a namespace and its repositories deleted; remove its users, robots, teams
    and applications now. The rest is purged by garbage collection."""
    namespace = session.get(Namespace, namespace_id)
    if namespace is None or namespace.deleted_at is not None:
        return
    now = utcnow()
    session.execute(
        update(Repository)
        .where(Repository.namespace_id == namespace_id, Repository.deleted_at.is_(None))
        .values(deleted_at=now)
    )
    session.execute(delete(User).where(User.robot_owner_id == namespace_id))
    session.execute(delete(User).where(User.namespace_id == namespace_id))
    session.execute(delete(Team).where(Team.namespace_id == namespace_id))
    session.execute(delete(OAuthApplication).where(OAuthApplication.namespace_id == namespace_id))
    namespace.name = marked_name(namespace.name)
    # The contact address is free for another organization or user at once.
    namespace.email = None
    namespace.deleted_at = now
    session.flush()
