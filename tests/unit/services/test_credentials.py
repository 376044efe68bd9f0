"""Registry login credentials in :meth:`UserService.authenticate`: passwords, client keys
(encrypted passwords), ``$app`` tokens, and ``FEATURE_REQUIRE_ENCRYPTED_BASIC_AUTH``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from portside.auth.client_keys import decrypt_client_key, encrypt_client_key
from portside.auth.permissions import Subject
from portside.auth.secrets import SecretBox
from portside.config.durations import parse_duration
from portside.db.engine import Database, create_db_engine
from portside.db.migrate import upgrade
from portside.db.models import AppSpecificToken, LogEntry, utcnow
from portside.services.app_tokens import APP_TOKEN_LENGTH, AppTokenService
from portside.services.organizations import Invalid, NotFound
from portside.services.users import PlainPasswordRefused, UserService

BOX = SecretBox("unit-test-secret")


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    """A migrated SQLite database with users alice and bob."""
    db = Database(create_db_engine(f"sqlite:///{tmp_path / 'portside.db'}"))
    upgrade(db.engine)
    UserService(db, []).create_user("alice", "alice-password")
    UserService(db, []).create_user("bob", "bob-password")
    yield db
    db.dispose()


def subject_of(db: Database, name: str) -> Subject:
    found = UserService(db, []).authenticate_password(name, f"{name}-password")
    assert found is not None
    return found


def test_client_key_round_trip_is_bound_to_user_and_registry() -> None:
    key = encrypt_client_key(BOX, "alice", "pw")
    assert "pw" not in key
    assert decrypt_client_key(BOX, "alice", key) == "pw"
    assert decrypt_client_key(BOX, "bob", key) is None
    assert decrypt_client_key(SecretBox("another-registry"), "alice", key) is None
    # Tamper with a character in the middle (the last ones may be base64 padding bits).
    middle = len(key) // 2
    tampered = key[:middle] + ("A" if key[middle] != "A" else "B") + key[middle + 1:]
    assert decrypt_client_key(BOX, "alice", tampered) is None
    # A robot token's ciphertext (same box, no client-key plaintext) is not a key.
    assert decrypt_client_key(BOX, "alice", "psck1." + BOX.encrypt("pw")) is None
    assert decrypt_client_key(BOX, "alice", "pw") is None


def test_durations() -> None:
    assert parse_duration("90d") == timedelta(days=90)
    assert parse_duration("2w") == timedelta(weeks=2)
    assert parse_duration("15m") == timedelta(minutes=15)
    for bad in ("", "1", "d", "1.5h", "-1d", "1y", " 1d", "1d "):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_client_key_logs_in_and_password_change_revokes_it(database: Database) -> None:
    users = UserService(database, [], BOX)
    alice = subject_of(database, "alice")
    assert users.create_client_key(alice, "wrong-password") is None
    key = users.create_client_key(alice, "alice-password")
    assert key is not None
    assert users.authenticate("alice", key) == alice
    assert users.authenticate("bob", key) is None
    assert users.authenticate("alice", key + "x") is None
    with database.session() as session:
        kinds = session.scalars(select(LogEntry.kind)).all()
    assert "user_generate_client_key" in kinds


def test_required_encryption_refuses_plain_passwords_only(database: Database) -> None:
    users = UserService(database, [], BOX, require_encrypted_passwords=True)
    alice = subject_of(database, "alice")
    key = users.create_client_key(alice, "alice-password")
    assert key is not None
    with pytest.raises(PlainPasswordRefused):
        users.authenticate("alice", "alice-password")
    # Not even checked: a wrong password gets the same answer.
    with pytest.raises(PlainPasswordRefused):
        users.authenticate("alice", "wrong")
    assert users.authenticate("alice", key) == alice
    assert users.authenticate("alice", "psck1.forged") is None
    # Signing in to the API still takes the password.
    assert users.authenticate_password("alice", "alice-password") == alice
    _, token = AppTokenService(database).create(alice, "ci")
    assert users.authenticate("$app", token) == alice


def test_app_token_login_expiry_and_revocation(database: Database) -> None:
    users = UserService(database, [], BOX)
    alice = subject_of(database, "alice")
    service = AppTokenService(database)
    view, token = service.create(alice, "  laptop ")
    assert len(token) == APP_TOKEN_LENGTH and token.isalnum()
    assert view.title == "laptop" and view.expiration is None and view.last_accessed is None
    assert users.authenticate("$app", token) == alice
    # The token is not a password, not alice's password login, not for the API sign-in.
    assert users.authenticate("alice", token) is None
    assert users.authenticate_password("$app", token) is None
    assert users.authenticate("$app", token[:-1] + ("a" if token[-1] != "a" else "b")) is None
    assert users.authenticate("$app", token[:40]) is None
    # Used once: last_accessed is set, and not rewritten within the minute.
    first = service.get(alice, view.uuid).last_accessed
    assert first is not None
    assert users.authenticate("$app", token) == alice
    assert service.get(alice, view.uuid).last_accessed == first
    # Disabled feature: $app is refused.
    assert UserService(database, [], BOX, app_tokens=False).authenticate("$app", token) is None
    # Expired.
    with database.session() as session:
        session.execute(update(AppSpecificToken).values(expires_at=utcnow() - timedelta(1)))
    assert users.authenticate("$app", token) is None
    assert [t.uuid for t in service.list(alice, expiring=True)] == [view.uuid]
    assert service.purge_expired(timedelta(hours=1)) == 1
    assert service.list(alice) == []
    # Revoked: refused on the very next login (no cache).
    view, token = service.create(alice, "ci")
    assert users.authenticate("$app", token) == alice
    service.revoke(alice, view.uuid)
    assert users.authenticate("$app", token) is None


def test_app_tokens_belong_to_their_owner(database: Database) -> None:
    alice, bob = subject_of(database, "alice"), subject_of(database, "bob")
    service = AppTokenService(database, timedelta(days=90))
    view, _ = service.create(alice, "ci")
    assert view.expiration is not None
    assert timedelta(days=89) < view.expiration - utcnow() <= timedelta(days=90)
    assert service.list(bob) == []
    with pytest.raises(NotFound):
        service.get(bob, view.uuid)
    with pytest.raises(NotFound):
        service.revoke(bob, view.uuid)
    with pytest.raises(NotFound):
        service.get(alice, view.uuid + "0")
    with pytest.raises(Invalid):
        service.create(alice, "   ")
    with pytest.raises(Invalid):
        service.create(alice, "x" * 256)
    with pytest.raises(Invalid):
        service.create(Subject(user_id=99, username="acme+ci"), "robot")
