"""OrganizationService on a SQLite file: the rules, without HTTP in the way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from portside.auth.permissions import Subject
from portside.db.engine import Database, create_db_engine
from portside.db.migrate import upgrade
from portside.services.organizations import (
    Forbidden,
    Invalid,
    NotFound,
    OrganizationService,
    is_valid_team_name,
)
from portside.services.users import UserService


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """A migrated SQLite database."""
    database = Database(create_db_engine(f"sqlite:///{tmp_path / 'portside.db'}"))
    upgrade(database.engine)
    yield database
    database.dispose()


@pytest.fixture
def people(db: Database) -> dict[str, Subject]:
    """Two users, as password (unscoped) subjects."""
    users = UserService(db, [])
    return {name: users.create_user(name, f"{name}-secret-pw") for name in ("ann", "ben")}


@pytest.mark.parametrize(("name", "valid"), [
    ("devs", True), ("a.b_c-d", True), ("x1", True), ("a", False), ("Devs", False),
    ("dev--ops", False), ("-devs", False), ("devs\n", False), ("x" * 256, False),
])
def test_team_name_grammar(name: str, valid: bool) -> None:
    assert is_valid_team_name(name) is valid


def test_roles_and_rights(db: Database, people: dict[str, Subject]) -> None:
    service = OrganizationService(db)
    ann, ben = people["ann"], people["ben"]
    service.create(ann, "acme")
    with pytest.raises(Invalid):
        service.create(ben, "acme")
    # A non-member sees the organization's name only (Quay's reduced view).
    outside_view = service.get(ben, "acme")
    assert (outside_view.name, outside_view.is_member, outside_view.teams) == ("acme", False, None)
    with pytest.raises(NotFound):
        service.get(ann, "ann")  # a user namespace is not an organization
    team, created = service.put_team(ann, "acme", "devs", "creator", None)
    assert created and team.role == "creator" and team.description == ""
    with pytest.raises(Invalid):
        service.put_team(ann, "acme", "devs", "owner", None)
    service.add_member(ann, "acme", "devs", "ben")
    info = service.get(ben, "acme")
    assert info.is_member and not info.is_admin
    assert [(t.name, t.can_view) for t in info.teams or []] == [
        ("owners", False), ("devs", True)]
    with pytest.raises(Forbidden):
        service.put_team(ben, "acme", "devs", "admin", None)
    with pytest.raises(Invalid):
        service.remove_member(ann, "acme", "owners", "ann")
    service.remove_member(ann, "acme", "devs", "ben")
    # A non-member sees the organization's name only (Quay's reduced view).
    outside_view = service.get(ben, "acme")
    assert (outside_view.name, outside_view.is_member, outside_view.teams) == ("acme", False, None)


def test_token_scopes_cap_administration(db: Database, people: dict[str, Subject]) -> None:
    service = OrganizationService(db)
    service.create(people["ann"], "acme")
    reader = Subject(people["ann"].user_id, "ann", scopes=frozenset({"user:read"}))
    assert service.get(reader, "acme").is_admin is False
    with pytest.raises(Forbidden):
        service.put_team(reader, "acme", "devs", "member", None)
    admin = Subject(people["ann"].user_id, "ann", scopes=frozenset({"org:admin"}))
    assert service.put_team(admin, "acme", "devs", "member", None)[1] is True
