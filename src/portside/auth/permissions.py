"""The one permission decision used by every surface (/v2, /api/v1, the UI).

It is a pure function of facts gathered by the caller: who is asking, what is known
about the repository and its namespace, and the registry's policy switches.
"""

from __future__ import annotations

from collections.abc import Iterable
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


class NamespaceRole(StrEnum):
    """A subject's role in a namespace: its team roles in an organization (``admin``
    for the owner of a user namespace)."""

    MEMBER = "member"
    CREATOR = "creator"
    ADMIN = "admin"


class RepositoryRole(StrEnum):
    """A role granted on one repository, directly or through a team."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


NAMESPACE_ROLE_ORDER = (NamespaceRole.MEMBER, NamespaceRole.CREATOR, NamespaceRole.ADMIN)
REPOSITORY_ROLE_ORDER = (RepositoryRole.READ, RepositoryRole.WRITE, RepositoryRole.ADMIN)

_REPOSITORY_ROLE_ACTIONS = {
    RepositoryRole.READ: frozenset({Action.PULL}),
    RepositoryRole.WRITE: frozenset({Action.PULL, Action.PUSH, Action.DELETE}),
    RepositoryRole.ADMIN: ALL_ACTIONS,
}


def strongest_namespace_role(roles: Iterable[str]) -> NamespaceRole | None:
    """The highest of several namespace roles (unknown values are ignored)."""
    known = [NamespaceRole(r) for r in roles if r in NamespaceRole._value2member_map_]
    return max(known, key=NAMESPACE_ROLE_ORDER.index, default=None)


def strongest_repository_role(roles: Iterable[str]) -> RepositoryRole | None:
    """The highest of several repository roles (unknown values are ignored)."""
    known = [RepositoryRole(r) for r in roles if r in RepositoryRole._value2member_map_]
    return max(known, key=REPOSITORY_ROLE_ORDER.index, default=None)


@dataclass(frozen=True)
class RepositoryFacts:
    """What the decision needs to know about a (possibly not yet existing) repository,
    as seen by one subject."""

    namespace_exists: bool
    #: The subject's role in the namespace (``None``: none at all).
    namespace_role: NamespaceRole | None = None
    repository_exists: bool = False
    #: The subject's strongest role on the repository, directly or through teams.
    repository_role: RepositoryRole | None = None
    public: bool = False
    #: Quay's repository state: ``NORMAL``, ``READ_ONLY`` or ``MIRROR``.
    state: str = "NORMAL"
    #: The subject is the robot of the repository's mirror configuration: the only one
    #: who may push while the state is ``MIRROR``.
    mirror_robot: bool = False
    #: The namespace is a proxy-cache organization (``ProxyCacheConfig``).
    proxy_cache: bool = False


@dataclass(frozen=True)
class Policy:
    """Registry-wide switches that affect permissions."""

    anonymous_access: bool = True
    create_namespace_on_push: bool = False
    #: ``FEATURE_PROXY_CACHE``: proxy-cache organizations follow their own rules.
    proxy_cache: bool = False
    #: Repositories a proxy cache creates on pull are public
    #: (``CREATE_PRIVATE_REPO_ON_PUSH: false``), so anyone may pull them.
    proxy_cache_public: bool = False


def allowed_actions(subject: Subject, facts: RepositoryFacts, policy: Policy) -> frozenset[Action]:
    """Every action ``subject`` may perform on the repository described by ``facts``."""
    if not facts.namespace_exists:
        # Pushing into a namespace that does not exist creates it (as an organization
        # administered by the pusher) only when the registry allows it.
        if subject.anonymous or not policy.create_namespace_on_push:
            return NO_ACTIONS
        granted = ALL_ACTIONS
    elif subject.anonymous:
        granted = NO_ACTIONS
    elif facts.namespace_role == NamespaceRole.ADMIN:
        granted = ALL_ACTIONS  # owners and admin teams administer every repository
    elif not facts.repository_exists:
        # Creators may create repositories (and administer what they create).
        granted = ALL_ACTIONS if facts.namespace_role == NamespaceRole.CREATOR else NO_ACTIONS
    else:
        granted = _REPOSITORY_ROLE_ACTIONS.get(facts.repository_role, NO_ACTIONS)  # type: ignore[arg-type]
    if facts.repository_exists and facts.public and (
        policy.anonymous_access or not subject.anonymous
    ):
        granted = granted | {Action.PULL}
    proxy_cache = facts.proxy_cache and policy.proxy_cache
    if proxy_cache and (
        (facts.namespace_role is not None and not subject.anonymous)
        or (not facts.repository_exists and policy.proxy_cache_public
            and (policy.anonymous_access or not subject.anonymous))
    ):
        # A pull-through cache (docs/proxy-cache.md): every member of the organization
        # pulls every repository, existing or not (the pull creates it); anyone else
        # only when the repositories it creates would be public (existing ones: their
        # public flag, above).
        granted = granted | {Action.PULL}
    if facts.state == "MIRROR" and facts.mirror_robot and not subject.anonymous:
        # Quay: the mirror's robot pushes, superseding the repository's permissions.
        granted = granted | {Action.PULL, Action.PUSH}
    if not granted:
        return NO_ACTIONS
    if facts.state == "READ_ONLY" or (facts.state == "MIRROR" and not facts.mirror_robot):
        granted = granted - {Action.PUSH, Action.DELETE}
    if proxy_cache:
        granted = granted - {Action.PUSH}  # content comes from the upstream only
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


class NamespaceAction(StrEnum):
    """What a subject may do with a namespace itself."""

    VIEW = "view"  # see the organization, its teams and members
    CREATE_REPOSITORY = "create_repository"
    ADMINISTER = "administer"  # teams, robots, default permissions, settings, logs


_NAMESPACE_ROLE_ACTIONS = {
    NamespaceRole.MEMBER: frozenset({NamespaceAction.VIEW}),
    NamespaceRole.CREATOR: frozenset({NamespaceAction.VIEW, NamespaceAction.CREATE_REPOSITORY}),
    NamespaceRole.ADMIN: frozenset(NamespaceAction),
}


def namespace_actions(subject: Subject, role: NamespaceRole | None,
                      is_organization: bool) -> frozenset[NamespaceAction]:
    """Every namespace action ``subject`` may perform, given its role there.

    Access tokens are capped by Quay's scopes: administering needs ``org:admin`` (or
    ``user:admin`` for a user's own namespace), creating repositories ``repo:create``,
    and viewing ``user:read`` or ``org:admin``.
    """
    if subject.anonymous or role is None:
        return frozenset()
    granted = _NAMESPACE_ROLE_ACTIONS[role]
    if subject.scopes is None:
        return granted
    admin_scope = "org:admin" if is_organization else "user:admin"
    allowed = set()
    if admin_scope in subject.scopes:
        allowed |= {NamespaceAction.ADMINISTER, NamespaceAction.VIEW}
    if "repo:create" in subject.scopes:
        allowed.add(NamespaceAction.CREATE_REPOSITORY)
    if "user:read" in subject.scopes:
        allowed.add(NamespaceAction.VIEW)
    return granted & frozenset(allowed)


def acts_as_superuser(subject: Subject) -> bool:
    """True if ``subject`` is a superuser and (for tokens) holds ``super:user``."""
    return subject.superuser and (subject.scopes is None or "super:user" in subject.scopes)
