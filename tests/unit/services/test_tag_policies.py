"""Pattern and value rules of immutability and auto-prune policies, without a server."""

from __future__ import annotations

import pytest

from portside.services.autoprune import _Rule, check_policy
from portside.services.immutability import check_pattern, policy_matches
from portside.services.organizations import Invalid


@pytest.mark.parametrize(
    ("tag", "pattern", "matches", "expected"),
    [
        ("v1.2", "v[0-9]", True, True),  # anchored at the start only
        ("xv1", "v[0-9]", True, False),
        ("v1", "v1$", True, True),
        ("v1.0", "v1$", True, False),
        ("latest", "dev-", False, True),  # inverted: what does not match
        ("dev-1", "dev-", False, False),
        ("v1", "([", True, False),  # never matches on a broken pattern
    ],
)
def test_immutability_patterns_match_at_the_start(
    tag: str, pattern: str, matches: bool, expected: bool
) -> None:
    assert policy_matches(tag, pattern, matches) is expected


def test_auto_prune_patterns_are_searched() -> None:
    rule = _Rule("u", "number_of_tags", "1", "rc", True)
    assert rule.covers("1.0-rc1") and not rule.covers("1.0")
    assert _Rule("u", "number_of_tags", "1", "rc", False).covers("1.0")
    assert _Rule("u", "number_of_tags", "1", None, False).covers("anything")


@pytest.mark.parametrize("pattern", ["", "   ", "([", "a" * 256, 7, None, "a\x00"])
def test_bad_patterns_are_refused(pattern: object) -> None:
    with pytest.raises(Invalid):
        check_pattern(pattern)


def test_patterns_are_stripped() -> None:
    assert check_pattern("  v1 ") == "v1"


@pytest.mark.parametrize(
    ("method", "value", "stored"),
    [
        ("number_of_tags", 5, "5"),
        ("creation_date", "2w", "2w"),
        ("creation_date", "36h", "36h"),
    ],
)
def test_good_policies(method: str, value: object, stored: str) -> None:
    assert check_policy(method, value, None, None) == (method, stored, None, True)


@pytest.mark.parametrize(
    ("method", "value"),
    [
        ("number_of_tags", 0),
        ("number_of_tags", -1),
        ("number_of_tags", "5"),
        ("number_of_tags", True),
        ("number_of_tags", 2.0),
        ("number_of_tags", 2**40),
        ("creation_date", "2y"),
        ("creation_date", 3),
        ("creation_date", ""),
        ("other", 1),
        (None, 1),
    ],
)
def test_bad_policies(method: object, value: object) -> None:
    with pytest.raises(Invalid):
        check_policy(method, value, None, None)
