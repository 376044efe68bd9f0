"""Robot login through :meth:`UserService.authenticate` and the robot service's rules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from portside.auth.secrets import SecretBox
from portside.db.engine import Database, create_db_engine
from portside.db.migrate import upgrade
from portside.services.repositories import create_organization
from portside.services.robots import OwnerNamespace, RobotError, RobotNotFound, RobotService
from portside.services.users import UserService

BOX = SecretBox("unit-test-secret")


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    """A migrated SQLite database with user alice and organization acme."""
    db = Database(create_db_engine(f"sqlite:///{tmp_path / 'portside.db'}"))
    upgrade(db.engine)
    alice = UserService(db, []).create_user("alice", "alice-password")
    with db.session() as session:
        create_organization(session, "acme", alice.user_id)
    yield db
    db.dispose()


@pytest.fixture
def acme(database: Database) -> OwnerNamespace:
    """The organization owning the robots."""
    owner = RobotService(database, BOX).namespace("acme")
    assert owner is not None and owner.is_organization
    return owner


def test_robot_logs_in_with_its_token_only(database: Database, acme: OwnerNamespace) -> None:
    robots = RobotService(database, BOX)
    robot = robots.create(acme, "ci", "pushes")
    assert robot.token is not None
    # Listed as a superuser name or not, a robot never becomes a superuser.
    users = UserService(database, ["acme+ci"], BOX)
    subject = users.authenticate("acme+ci", robot.token)
    assert subject is not None
    assert subject.username == "acme+ci" and subject.user_id is not None
    assert not subject.superuser and subject.scopes is None
    assert users.authenticate("acme+ci", robot.token.lower()) is None
    assert users.authenticate("acme+ci", "") is None
    assert users.authenticate("acme+other", robot.token) is None
    assert users.authenticate("acme+ci", "alice-password") is None

    # A new token works at once and the old one stops at once (no login cache).
    new = robots.regenerate(acme, "ci")
    assert new.token is not None and new.token != robot.token
    assert users.authenticate("acme+ci", robot.token) is None
    assert users.authenticate("acme+ci", new.token) is not None
    robots.delete(acme, "ci")
    assert users.authenticate("acme+ci", new.token) is None


def test_robots_cannot_log_in_without_the_key(database: Database, acme: OwnerNamespace) -> None:
    token = RobotService(database, BOX).create(acme, "ci", None).token
    assert token is not None
    assert UserService(database, []).authenticate("acme+ci", token) is None
    # A changed DATABASE_SECRET_KEY makes stored tokens unusable, without errors.
    other = SecretBox("another-secret")
    assert UserService(database, [], other).authenticate("acme+ci", token) is None
    assert RobotService(database, other).get(acme, "ci").token is None


def test_names_and_duplicates(database: Database, acme: OwnerNamespace) -> None:
    robots = RobotService(database, BOX)
    robots.create(acme, "ab", None)
    with pytest.raises(RobotError, match="Existing robot with name: acme\\+ab"):
        robots.create(acme, "ab", None)
    for bad in ("a", "A1", "1a", "a-b", "a+b", "a" * 256):
        with pytest.raises(RobotError):
            robots.create(acme, bad, None)
    with pytest.raises(RobotNotFound):
        robots.get(acme, "missing")
    assert [r.name for r in robots.list_robots(acme, False, False)] == ["acme+ab"]
    assert robots.list_robots(acme, False, False)[0].token is None
