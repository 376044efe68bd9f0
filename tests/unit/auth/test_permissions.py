"""The permission decision, role by action, including every negative case."""

from __future__ import annotations

import pytest

from portside.auth.permissions import (
    ALL_ACTIONS,
    ANONYMOUS,
    Action,
    Policy,
    RepositoryFacts,
    Subject,
    allowed_actions,
)

OWNER = Subject(user_id=1, username="alice")
OTHER = Subject(user_id=2, username="bob")
SUPER = Subject(user_id=3, username="root", superuser=True)
PULL = frozenset({Action.PULL})
NONE: frozenset[Action] = frozenset()

PRIVATE = RepositoryFacts(namespace_exists=True, namespace_admins=frozenset({1}),
                          repository_exists=True, public=False)
PUBLIC = RepositoryFacts(namespace_exists=True, namespace_admins=frozenset({1}),
                         repository_exists=True, public=True)
MISSING_REPO = RepositoryFacts(namespace_exists=True, namespace_admins=frozenset({1}))
MISSING_NAMESPACE = RepositoryFacts(namespace_exists=False)
READ_ONLY = RepositoryFacts(namespace_exists=True, namespace_admins=frozenset({1}),
                            repository_exists=True, public=True, state="READ_ONLY")
MIRROR = RepositoryFacts(namespace_exists=True, namespace_admins=frozenset({1}),
                         repository_exists=True, public=False, state="MIRROR")

OPEN = Policy(anonymous_access=True, create_namespace_on_push=False)
CLOSED = Policy(anonymous_access=False, create_namespace_on_push=False)
CREATE_NS = Policy(anonymous_access=True, create_namespace_on_push=True)

CASES = [
    # subject, facts, policy, expected
    (OWNER, PRIVATE, OPEN, ALL_ACTIONS),
    (OWNER, PUBLIC, CLOSED, ALL_ACTIONS),
    (OWNER, MISSING_REPO, OPEN, ALL_ACTIONS),  # creates on push
    (OTHER, PRIVATE, OPEN, NONE),
    (OTHER, PUBLIC, OPEN, PULL),
    (OTHER, PUBLIC, CLOSED, PULL),  # logged-in users pull public repos either way
    (OTHER, MISSING_REPO, OPEN, NONE),  # cannot create in someone else's namespace
    (ANONYMOUS, PUBLIC, OPEN, PULL),
    (ANONYMOUS, PUBLIC, CLOSED, NONE),
    (ANONYMOUS, PRIVATE, OPEN, NONE),
    (ANONYMOUS, MISSING_REPO, OPEN, NONE),
    (SUPER, PRIVATE, OPEN, NONE),  # superusers get no registry rights by default
    (SUPER, PUBLIC, OPEN, PULL),
    (OWNER, MISSING_NAMESPACE, OPEN, NONE),
    (OWNER, MISSING_NAMESPACE, CREATE_NS, ALL_ACTIONS),
    (ANONYMOUS, MISSING_NAMESPACE, CREATE_NS, NONE),
    (OWNER, READ_ONLY, OPEN, frozenset({Action.PULL, Action.ADMIN})),
    (OTHER, READ_ONLY, OPEN, PULL),
    (OWNER, MIRROR, OPEN, frozenset({Action.PULL, Action.ADMIN})),
    (OTHER, MIRROR, OPEN, NONE),
]


@pytest.mark.parametrize(("subject", "facts", "policy", "expected"), CASES)
def test_allowed_actions(subject: Subject, facts: RepositoryFacts, policy: Policy,
                         expected: frozenset[Action]) -> None:
    assert allowed_actions(subject, facts, policy) == expected


def test_organization_creator_administers_it() -> None:
    org = RepositoryFacts(namespace_exists=True, namespace_admins=frozenset({2}),
                          repository_exists=True)
    assert allowed_actions(OTHER, org, OPEN) == ALL_ACTIONS
    assert allowed_actions(OWNER, org, OPEN) == NONE


def scoped(*scopes: str) -> Subject:
    return Subject(user_id=1, username="alice", scopes=frozenset(scopes))


@pytest.mark.parametrize(
    ("subject", "facts", "expected"),
    [
        (scoped("repo:read"), PRIVATE, PULL),
        (scoped("repo:write"), PRIVATE, frozenset({Action.PULL, Action.PUSH, Action.DELETE})),
        (scoped("repo:admin"), PRIVATE, ALL_ACTIONS),
        (scoped("user:read"), PRIVATE, NONE),  # no repository scope, no repository access
        (scoped(), PUBLIC, NONE),
        (scoped("repo:write"), MISSING_REPO, frozenset({Action.PULL, Action.DELETE})),
        (scoped("repo:write", "repo:create"), MISSING_REPO,
         frozenset({Action.PULL, Action.PUSH, Action.DELETE})),
        # A scope never grants more than the user's own rights.
        (Subject(user_id=2, username="bob", scopes=frozenset({"repo:admin"})), PRIVATE, NONE),
        (Subject(user_id=2, username="bob", scopes=frozenset({"repo:admin"})), PUBLIC, PULL),
        (scoped("repo:admin"), READ_ONLY, frozenset({Action.PULL, Action.ADMIN})),
    ],
)
def test_token_scopes_cap_actions(subject: Subject, facts: RepositoryFacts,
                                  expected: frozenset[Action]) -> None:
    assert allowed_actions(subject, facts, OPEN) == expected
