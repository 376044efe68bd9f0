"""The permission decision, role by action, including every negative case."""

from __future__ import annotations

import pytest

from portside.auth.permissions import (
    ALL_ACTIONS,
    ANONYMOUS,
    Action,
    NamespaceAction,
    NamespaceRole,
    Policy,
    RepositoryFacts,
    RepositoryRole,
    Subject,
    acts_as_superuser,
    allowed_actions,
    namespace_actions,
    strongest_namespace_role,
    strongest_repository_role,
)

USER = Subject(user_id=1, username="alice")
SUPER = Subject(user_id=3, username="root", superuser=True)
PULL = frozenset({Action.PULL})
WRITE = frozenset({Action.PULL, Action.PUSH, Action.DELETE})
NONE: frozenset[Action] = frozenset()

OPEN = Policy(anonymous_access=True, create_namespace_on_push=False)
CLOSED = Policy(anonymous_access=False, create_namespace_on_push=False)
CREATE_NS = Policy(anonymous_access=True, create_namespace_on_push=True)


def repo(namespace_role: NamespaceRole | None = None,
         repository_role: RepositoryRole | None = None, public: bool = False,
         exists: bool = True, state: str = "NORMAL") -> RepositoryFacts:
    return RepositoryFacts(namespace_exists=True, namespace_role=namespace_role,
                           repository_exists=exists, repository_role=repository_role,
                           public=public, state=state)


# Every namespace role against every repository role, private repository.
ROLE_TABLE = [
    # namespace role, repository role, expected
    (None, None, NONE),
    (None, RepositoryRole.READ, PULL),
    (None, RepositoryRole.WRITE, WRITE),
    (None, RepositoryRole.ADMIN, ALL_ACTIONS),
    (NamespaceRole.MEMBER, None, NONE),  # membership alone grants no repository
    (NamespaceRole.MEMBER, RepositoryRole.READ, PULL),
    (NamespaceRole.MEMBER, RepositoryRole.WRITE, WRITE),
    (NamespaceRole.CREATOR, None, NONE),  # creators create, they don't read others' repos
    (NamespaceRole.CREATOR, RepositoryRole.READ, PULL),
    (NamespaceRole.ADMIN, None, ALL_ACTIONS),  # admin teams administer every repository
    (NamespaceRole.ADMIN, RepositoryRole.READ, ALL_ACTIONS),
]


@pytest.mark.parametrize(("namespace_role", "repository_role", "expected"), ROLE_TABLE)
def test_roles_on_a_private_repository(namespace_role: NamespaceRole | None,
                                       repository_role: RepositoryRole | None,
                                       expected: frozenset[Action]) -> None:
    facts = repo(namespace_role, repository_role)
    assert allowed_actions(USER, facts, OPEN) == expected


@pytest.mark.parametrize(("namespace_role", "repository_role", "expected"), ROLE_TABLE)
def test_public_repositories_add_pull_and_nothing_else(
        namespace_role: NamespaceRole | None, repository_role: RepositoryRole | None,
        expected: frozenset[Action]) -> None:
    facts = repo(namespace_role, repository_role, public=True)
    assert allowed_actions(USER, facts, OPEN) == expected | PULL


@pytest.mark.parametrize(
    ("namespace_role", "expected"),
    [(None, NONE), (NamespaceRole.MEMBER, NONE), (NamespaceRole.CREATOR, ALL_ACTIONS),
     (NamespaceRole.ADMIN, ALL_ACTIONS)],
)
def test_creating_a_repository_by_pushing(namespace_role: NamespaceRole | None,
                                          expected: frozenset[Action]) -> None:
    assert allowed_actions(USER, repo(namespace_role, exists=False), OPEN) == expected


@pytest.mark.parametrize(
    ("subject", "facts", "policy", "expected"),
    [
        (ANONYMOUS, repo(public=True), OPEN, PULL),
        (ANONYMOUS, repo(public=True), CLOSED, NONE),
        (ANONYMOUS, repo(), OPEN, NONE),
        (ANONYMOUS, repo(NamespaceRole.ADMIN), OPEN, NONE),  # roles need a subject
        (ANONYMOUS, repo(exists=False), OPEN, NONE),
        (USER, repo(public=True), CLOSED, PULL),  # signed-in users pull public repos
        (SUPER, repo(), OPEN, NONE),  # superusers get no registry rights by default
        (USER, RepositoryFacts(namespace_exists=False), OPEN, NONE),
        (USER, RepositoryFacts(namespace_exists=False), CREATE_NS, ALL_ACTIONS),
        (ANONYMOUS, RepositoryFacts(namespace_exists=False), CREATE_NS, NONE),
        (USER, repo(NamespaceRole.ADMIN, state="READ_ONLY"), OPEN,
         frozenset({Action.PULL, Action.ADMIN})),
        (USER, repo(None, RepositoryRole.WRITE, state="READ_ONLY"), OPEN, PULL),
        (USER, repo(NamespaceRole.ADMIN, state="MIRROR"), OPEN,
         frozenset({Action.PULL, Action.ADMIN})),
        (USER, repo(public=True, state="MIRROR"), OPEN, PULL),
    ],
)
def test_anonymous_states_and_policies(subject: Subject, facts: RepositoryFacts,
                                       policy: Policy, expected: frozenset[Action]) -> None:
    assert allowed_actions(subject, facts, policy) == expected


def scoped(*scopes: str) -> Subject:
    return Subject(user_id=1, username="alice", scopes=frozenset(scopes))


@pytest.mark.parametrize(
    ("subject", "facts", "expected"),
    [
        (scoped("repo:read"), repo(NamespaceRole.ADMIN), PULL),
        (scoped("repo:write"), repo(NamespaceRole.ADMIN), WRITE),
        (scoped("repo:admin"), repo(NamespaceRole.ADMIN), ALL_ACTIONS),
        (scoped("user:read"), repo(NamespaceRole.ADMIN), NONE),
        (scoped(), repo(public=True), NONE),
        (scoped("repo:write"), repo(NamespaceRole.ADMIN, exists=False),
         frozenset({Action.PULL, Action.DELETE})),
        (scoped("repo:write", "repo:create"), repo(NamespaceRole.ADMIN, exists=False), WRITE),
        # A scope never grants more than the subject's own rights.
        (scoped("repo:admin"), repo(), NONE),
        (scoped("repo:admin"), repo(public=True), PULL),
        (scoped("repo:admin"), repo(None, RepositoryRole.READ), PULL),
        (scoped("repo:admin"), repo(NamespaceRole.ADMIN, state="READ_ONLY"),
         frozenset({Action.PULL, Action.ADMIN})),
    ],
)
def test_token_scopes_cap_actions(subject: Subject, facts: RepositoryFacts,
                                  expected: frozenset[Action]) -> None:
    assert allowed_actions(subject, facts, OPEN) == expected


VIEW = frozenset({NamespaceAction.VIEW})
CREATE = frozenset({NamespaceAction.VIEW, NamespaceAction.CREATE_REPOSITORY})
ADMINISTER = frozenset(NamespaceAction)


@pytest.mark.parametrize(
    ("subject", "role", "is_org", "expected"),
    [
        (USER, None, True, frozenset()),
        (USER, NamespaceRole.MEMBER, True, VIEW),
        (USER, NamespaceRole.CREATOR, True, CREATE),
        (USER, NamespaceRole.ADMIN, True, ADMINISTER),
        (ANONYMOUS, NamespaceRole.ADMIN, True, frozenset()),
        (SUPER, None, True, frozenset()),  # superuser powers are separate
        (scoped("org:admin"), NamespaceRole.ADMIN, True,
         frozenset({NamespaceAction.ADMINISTER, NamespaceAction.VIEW})),
        (scoped("user:admin"), NamespaceRole.ADMIN, True, frozenset()),
        (scoped("user:admin"), NamespaceRole.ADMIN, False,
         frozenset({NamespaceAction.ADMINISTER, NamespaceAction.VIEW})),
        (scoped("repo:create"), NamespaceRole.CREATOR, True,
         frozenset({NamespaceAction.CREATE_REPOSITORY})),
        (scoped("repo:create"), NamespaceRole.MEMBER, True, frozenset()),
        (scoped("org:admin"), NamespaceRole.MEMBER, True, VIEW),
        (scoped("user:read"), NamespaceRole.ADMIN, True, VIEW),
    ],
)
def test_namespace_actions(subject: Subject, role: NamespaceRole | None, is_org: bool,
                           expected: frozenset[NamespaceAction]) -> None:
    assert namespace_actions(subject, role, is_org) == expected


def test_superuser_actions_need_the_flag_and_the_scope() -> None:
    assert acts_as_superuser(SUPER)
    assert not acts_as_superuser(USER)
    assert acts_as_superuser(Subject(3, "root", True, frozenset({"super:user"})))
    assert not acts_as_superuser(Subject(3, "root", True, frozenset({"org:admin"})))


def test_strongest_roles() -> None:
    assert strongest_namespace_role(["member", "admin", "creator"]) == NamespaceRole.ADMIN
    assert strongest_namespace_role(["member", "bogus"]) == NamespaceRole.MEMBER
    assert strongest_namespace_role([]) is None
    assert strongest_repository_role(["read", "write"]) == RepositoryRole.WRITE
    assert strongest_repository_role(["nope"]) is None
