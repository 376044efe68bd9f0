"""Applying an organization's default permissions (Quay's permission prototypes) to a
repository as it is created, inside the creating transaction.

This runs on the push path, so it costs one indexed query (on
``permission_prototype.namespace_id``) when the organization has no prototypes, and
nothing at all in a user's namespace. Managing the prototypes themselves is
:mod:`portside.services.prototypes`.
"""

from __future__ import annotations

from sqlalchemy import bindparam, or_, select
from sqlalchemy.orm import Session

from portside.auth.permissions import strongest_repository_role
from portside.db.models import Namespace, PermissionPrototype, RepositoryPermission

# Built once: statement construction costs more than the query on an empty table.
_MATCHING = select(
    PermissionPrototype.delegate_user_id,
    PermissionPrototype.delegate_team_id,
    PermissionPrototype.role,
).where(
    PermissionPrototype.namespace_id == bindparam("namespace_id"),
    or_(
        PermissionPrototype.activating_user_id.is_(None),
        PermissionPrototype.activating_user_id == bindparam("creator_id"),
    ),
)


def apply_default_permissions(
    session: Session, namespace: Namespace, repository_id: int, creator_id: int | None
) -> None:
    """Grant the roles of every prototype of ``namespace`` that applies to a repository
    created by ``creator_id``: those without an activating user, and those whose
    activating user is the creator (a user or one of the organization's robots).

    When several prototypes name the same delegate, the strongest role wins. A role the
    creator already holds (``grant_creator_admin`` runs first) is only ever raised.
    """
    if namespace.kind != "organization":
        return
    rows = session.execute(
        _MATCHING, {"namespace_id": namespace.id, "creator_id": creator_id}
    ).all()
    if not rows:
        return
    users: dict[int, list[str]] = {}
    teams: dict[int, list[str]] = {}
    for user_id, team_id, role in rows:
        if user_id is not None:
            users.setdefault(user_id, []).append(role)
        elif team_id is not None:
            teams.setdefault(team_id, []).append(role)
    if creator_id is not None and creator_id in users:
        # The creator may already hold ``admin`` from grant_creator_admin: one row per
        # grantee, so merge into it instead of inserting a second one.
        existing = session.scalar(
            select(RepositoryPermission).where(
                RepositoryPermission.repository_id == repository_id,
                RepositoryPermission.user_id == creator_id,
            )
        )
        if existing is not None:
            merged = strongest_repository_role([existing.role, *users.pop(creator_id)])
            if merged is not None:
                existing.role = merged.value
    for user_id, roles in users.items():
        _grant(session, repository_id, roles, user_id=user_id)
    for team_id, roles in teams.items():
        _grant(session, repository_id, roles, team_id=team_id)
    session.flush()


def _grant(
    session: Session,
    repository_id: int,
    roles: list[str],
    *,
    user_id: int | None = None,
    team_id: int | None = None,
) -> None:
    role = strongest_repository_role(roles)
    if role is not None:
        session.add(
            RepositoryPermission(
                repository_id=repository_id, user_id=user_id, team_id=team_id, role=role.value
            )
        )
