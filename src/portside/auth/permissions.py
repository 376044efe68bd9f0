"""The one permission decision used by every surface (/v2, /api/v1, the UI).

It is a pure function of facts gathered by the caller: who is asking, what is known
about the repository and its namespace, and the registry's policy switches.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Action(StrEnum):
    """Repository actions as named in Docker token scopes."""

    PULL = "pull"
    PUSH = "push"
    DELETE = "delete"
    ADMIN = "*"


ALL_ACTIONS = frozenset(Action)
NO_ACTIONS: frozenset[Action] = frozenset()


@dataclass(frozen=True)
class Subject:
    """An authenticated user, or the anonymous caller (``user_id is None``)."""

    user_id: int | None = None
    username: str | None = None
    superuser: bool = False
    #: Quay API scopes when the caller authenticated with an access token (``None``:
    #: a password or session login, limited only by the user's rights).
    scopes: frozenset[str] | None = None

    @property
    def anonymous(self) -> bool:
        """True when no credentials were presented."""
        return self.user_id is None


ANONYMOUS = Subject()


@dataclass(frozen=True)
class RepositoryFacts:
    """What the decision needs to know about a (possibly not yet existing) repository."""

    namespace_exists: bool
    #: Users who administer the namespace: the user itself, or an organization's creator.
    namespace_admins: frozenset[int] = frozenset()
    repository_exists: bool = False
    public: bool = False
    #: Quay's repository state: ``NORMAL``, ``READ_ONLY`` or ``MIRROR``.
    state: str = "NORMAL"


@dataclass(frozen=True)
class Policy:
    """Registry-wide switches that affect permissions."""

    anonymous_access: bool = True
    create_namespace_on_push: bool = False


def allowed_actions(subject: Subject, facts: RepositoryFacts, policy: Policy) -> frozenset[Action]:
    """Every action ``subject`` may perform on the repository described by ``facts``."""
    if not facts.namespace_exists:
        # Pushing into a namespace that does not exist creates it (as an organization
        # administered by the pusher) only when the registry allows it.
        if subject.anonymous or not policy.create_namespace_on_push:
            return NO_ACTIONS
        return ALL_ACTIONS
    if subject.user_id is not None and subject.user_id in facts.namespace_admins:
        granted = ALL_ACTIONS
    elif facts.repository_exists and facts.public and (
        policy.anonymous_access or not subject.anonymous
    ):
        granted = frozenset({Action.PULL})
    else:
        return NO_ACTIONS
    if facts.state in ("READ_ONLY", "MIRROR"):
        granted = granted - {Action.PUSH, Action.DELETE}
    if subject.scopes is not None:
        granted = granted & scope_actions(subject.scopes, facts.repository_exists)
    return granted


def scope_actions(scopes: frozenset[str], repository_exists: bool) -> frozenset[Action]:
    """The most an access token with Quay's ``scopes`` may do on a repository.

    ``repo:read`` pulls, ``repo:write`` also pushes and deletes tags, ``repo:admin``
    allows everything; creating a repository by pushing to it needs ``repo:create``.
    """
    if "repo:admin" in scopes:
        capped = set(ALL_ACTIONS)
    elif "repo:write" in scopes:
        capped = {Action.PULL, Action.PUSH, Action.DELETE}
    elif "repo:read" in scopes:
        capped = {Action.PULL}
    else:
        capped = set()
    if not repository_exists and "repo:create" not in scopes:
        capped.discard(Action.PUSH)
    return frozenset(capped)


def may(subject: Subject, action: Action, facts: RepositoryFacts, policy: Policy) -> bool:
    """True if ``subject`` may perform ``action``."""
    return action in allowed_actions(subject, facts, policy)
