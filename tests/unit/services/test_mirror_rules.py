"""Pure mirroring rules: tag globs, dates, the schedule, architectures; and the push
decision for ``READ_ONLY`` and ``MIRROR`` repositories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from portside.auth.permissions import (
    Action,
    NamespaceRole,
    Policy,
    RepositoryFacts,
    RepositoryRole,
    Subject,
    allowed_actions,
)
from portside.services.mirror_rules import (
    MirrorRuleError,
    format_date,
    matching_tags,
    next_start_date,
    parse_architectures,
    parse_date,
    parse_globs,
    tag_matches,
)

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def test_globs_split_commas_and_deduplicate() -> None:
    assert parse_globs(["v1.*, latest", "stable-?", "latest", "v[0-9]"]) == [
        "v1.*", "latest", "stable-?", "v[0-9]"]


@pytest.mark.parametrize("value", [
    "v1", [], [""], [" , "], [1], ["a b"], ["v[1"], ["v]1"], ["v[[1]]"], ["v[]"],
    ["x" * 300], ["$(rm -rf)"], [f"t{i}" for i in range(101)],
])
def test_bad_globs_are_refused(value: object) -> None:
    with pytest.raises(MirrorRuleError):
        parse_globs(value)


def test_matching_is_fnmatch_and_case_sensitive() -> None:
    tags = ["v1.0", "v1.1", "v2.0", "latest", "Latest", "dev", "v10"]
    assert matching_tags(tags, ["v1.*", "latest"]) == ["latest", "v1.0", "v1.1"]
    assert matching_tags(tags, ["v[!1]*"]) == ["v2.0"]
    assert matching_tags(tags, ["v?"]) == []
    assert matching_tags(tags, ["nothing"]) == []
    assert tag_matches("v10", ["v1*"])


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-01-01T12:00:00Z", T0),
    ("2026-01-01T12:00:00z", T0),
    ("2026-01-01T13:00:00+01:00", T0),
    ("2026-01-01T12:00:00.250Z", T0 + timedelta(milliseconds=250)),
])
def test_dates(text: str, expected: datetime) -> None:
    assert parse_date(text) == expected
    assert format_date(expected.replace(microsecond=0)) == "2026-01-01T12:00:00Z"


@pytest.mark.parametrize("text", ["", "tomorrow", "2026-01-01T12:00:00", "2026-02-30T00:00Z",
                                  "0001-01-01T00:00:00Z", 5, None, "9" * 100])
def test_bad_dates(text: object) -> None:
    with pytest.raises(MirrorRuleError):
        parse_date(text)


def test_naive_dates_from_sqlite_are_utc() -> None:
    assert format_date(datetime(2026, 1, 1, 12)) == "2026-01-01T12:00:00Z"
    assert format_date(None) is None


def test_next_start_skips_missed_slots() -> None:
    # Due at T0 every 60 s; the sync ends at T0+10 s: next slot T0+60.
    assert next_start_date(T0, 60, T0 + timedelta(seconds=10)) == T0 + timedelta(seconds=60)
    # Down for a long while: no catching up, the first slot after now.
    assert next_start_date(T0, 60, T0 + timedelta(seconds=3601)) == T0 + timedelta(
        seconds=3660)
    # Exactly on a slot: the next one.
    assert next_start_date(T0, 60, T0 + timedelta(seconds=120)) == T0 + timedelta(
        seconds=180)
    # A sync-now ran before the slot: the slot stays.
    assert next_start_date(T0, 60, T0 - timedelta(seconds=5)) == T0
    # Never scheduled: one interval from now.
    assert next_start_date(None, 60, T0) == T0 + timedelta(seconds=60)
    # Naive (SQLite) previous dates are UTC.
    assert next_start_date(T0.replace(tzinfo=None), 60, T0 + timedelta(seconds=1)) == (
        T0 + timedelta(seconds=60))


def test_architectures() -> None:
    assert parse_architectures(None) == []
    assert parse_architectures(["amd64", "arm64", "amd64"]) == ["amd64", "arm64"]
    for bad in ("amd64", ["AMD64"], ["x 86"], [1], ["a" * 40], ["a"] * 33):
        with pytest.raises(MirrorRuleError):
            parse_architectures(bad)


# --- the push decision ----------------------------------------------------------------------
OWNER = Subject(user_id=1, username="alice")
ROBOT = Subject(user_id=7, username="alice+mirror")
POLICY = Policy()


def _facts(state: str, *, mirror_robot: bool = False, owner: bool = False,
           role: RepositoryRole | None = None) -> RepositoryFacts:
    return RepositoryFacts(namespace_exists=True,
                           namespace_role=NamespaceRole.ADMIN if owner else None,
                           repository_exists=True, repository_role=role, state=state,
                           mirror_robot=mirror_robot)


def test_read_only_refuses_every_push() -> None:
    assert allowed_actions(OWNER, _facts("READ_ONLY", owner=True), POLICY) == {
        Action.PULL, Action.ADMIN}
    assert allowed_actions(ROBOT, _facts("READ_ONLY", mirror_robot=True,
                                         role=RepositoryRole.WRITE), POLICY) == {Action.PULL}


def test_mirror_state_only_the_mirror_robot_pushes() -> None:
    assert Action.PUSH not in allowed_actions(OWNER, _facts("MIRROR", owner=True), POLICY)
    assert Action.PUSH not in allowed_actions(
        ROBOT, _facts("MIRROR", role=RepositoryRole.WRITE), POLICY)
    # The mirror's robot pushes even without a role on the repository.
    assert allowed_actions(ROBOT, _facts("MIRROR", mirror_robot=True), POLICY) == {
        Action.PULL, Action.PUSH}
    # Outside MIRROR the flag grants nothing.
    assert allowed_actions(ROBOT, _facts("NORMAL", mirror_robot=True), POLICY) == frozenset()
    # Anonymous callers never profit from it; token scopes still cap the robot.
    assert allowed_actions(Subject(), _facts("MIRROR", mirror_robot=True), POLICY) == frozenset()
    scoped = Subject(user_id=7, username="alice+mirror", scopes=frozenset({"repo:read"}))
    assert allowed_actions(scoped, _facts("MIRROR", mirror_robot=True), POLICY) == {
        Action.PULL}
