"""The permission rules of proxy-cache organizations (``FEATURE_PROXY_CACHE``)."""

from __future__ import annotations

import pytest

from portside.auth.permissions import (
    ANONYMOUS,
    Action,
    NamespaceRole,
    Policy,
    RepositoryFacts,
    RepositoryRole,
    Subject,
    allowed_actions,
)

USER = Subject(user_id=1, username="alice")
PULL = frozenset({Action.PULL})
NONE: frozenset[Action] = frozenset()

PRIVATE = Policy(proxy_cache=True)
PUBLIC = Policy(proxy_cache=True, proxy_cache_public=True)
PUBLIC_NO_ANON = Policy(anonymous_access=False, proxy_cache=True, proxy_cache_public=True)
FEATURE_OFF = Policy(proxy_cache=False)


def cached(role: NamespaceRole | None = None, exists: bool = True, public: bool = False,
           repository_role: RepositoryRole | None = None) -> RepositoryFacts:
    return RepositoryFacts(namespace_exists=True, namespace_role=role,
                           repository_exists=exists, repository_role=repository_role,
                           public=public, proxy_cache=True)


@pytest.mark.parametrize("role", list(NamespaceRole))
@pytest.mark.parametrize("exists", [True, False])
def test_every_member_pulls_but_nobody_pushes(role: NamespaceRole, exists: bool) -> None:
    granted = allowed_actions(USER, cached(role, exists), PRIVATE)
    assert Action.PULL in granted
    assert Action.PUSH not in granted


def test_admins_keep_delete_and_admin() -> None:
    granted = allowed_actions(USER, cached(NamespaceRole.ADMIN), PRIVATE)
    assert granted == frozenset({Action.PULL, Action.DELETE, Action.ADMIN})


def test_repository_writers_cannot_push() -> None:
    facts = cached(None, repository_role=RepositoryRole.WRITE)
    assert allowed_actions(USER, facts, PRIVATE) == frozenset({Action.PULL, Action.DELETE})


@pytest.mark.parametrize("exists", [True, False])
def test_outsiders_and_anonymous_get_nothing_when_repositories_are_private(
        exists: bool) -> None:
    assert allowed_actions(USER, cached(None, exists), PRIVATE) == NONE
    assert allowed_actions(ANONYMOUS, cached(None, exists), PRIVATE) == NONE


def test_public_on_create_lets_anyone_pull_new_repositories() -> None:
    assert allowed_actions(ANONYMOUS, cached(None, exists=False), PUBLIC) == PULL
    assert allowed_actions(USER, cached(None, exists=False), PUBLIC) == PULL
    # Anonymous access switched off: signed-in users only.
    assert allowed_actions(ANONYMOUS, cached(None, exists=False), PUBLIC_NO_ANON) == NONE
    assert allowed_actions(USER, cached(None, exists=False), PUBLIC_NO_ANON) == PULL


def test_existing_repositories_follow_their_public_flag() -> None:
    # Made private by an administrator: the "public on create" rule no longer applies.
    assert allowed_actions(ANONYMOUS, cached(None, exists=True), PUBLIC) == NONE
    assert allowed_actions(ANONYMOUS, cached(None, exists=True, public=True), PRIVATE) == PULL


def test_without_the_feature_the_organization_is_ordinary() -> None:
    assert allowed_actions(USER, cached(NamespaceRole.MEMBER, exists=False), FEATURE_OFF) == NONE
    assert Action.PUSH in allowed_actions(USER, cached(NamespaceRole.ADMIN), FEATURE_OFF)
