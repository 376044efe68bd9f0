"""Token scopes and signed registry tokens."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from portside.auth.scopes import Scope, parse_scope, parse_scopes
from portside.auth.tokens import InvalidToken, TokenService
from portside.db.engine import Database, create_db_engine
from portside.db.migrate import upgrade


def test_parse_scope() -> None:
    assert parse_scope("repository:alice/app:pull,push") == Scope(
        "repository", "alice/app", ("pull", "push"))
    assert parse_scope("repository(plugin):a/b:pull") == Scope("repository", "a/b", ("pull",))
    assert parse_scope("registry:catalog:*") == Scope("registry", "catalog", ("*",))
    assert parse_scope("nonsense") is None
    assert parse_scope(":x:pull") is None


def test_parse_scopes_splits_spaces_and_drops_junk() -> None:
    scopes = parse_scopes(["repository:a/b:pull repository:a/c:push", "garbage"])
    assert [s.name for s in scopes] == ["a/b", "a/c"]


@pytest.fixture
def tokens(tmp_path: Path) -> TokenService:
    db = Database(create_db_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    upgrade(db.engine)
    service = TokenService(db, audience="registry.test:443", lifetime_s=300)
    service.load_keys()
    return service


def test_issue_and_verify(tokens: TokenService) -> None:
    token, expires_in, _ = tokens.issue("alice", 7, [Scope("repository", "alice/app",
                                                           ("pull", "push"))])
    grant = tokens.verify(token)
    assert expires_in == 300
    assert grant.username == "alice" and grant.user_id == 7
    assert grant.actions_for("alice/app") == {"pull", "push"}
    assert grant.actions_for("alice/other") == frozenset()


def test_keys_persist_across_instances(tokens: TokenService) -> None:
    token, _, _ = tokens.issue("alice", 7, [])
    again = TokenService(tokens._db, audience=tokens.audience, lifetime_s=300)
    again.load_keys()
    assert again.verify(token).username == "alice"


def test_rejects_tampered_foreign_and_expired_tokens(tokens: TokenService) -> None:
    token, _, _ = tokens.issue("alice", 7, [])
    header, payload, signature = token.split(".")
    with pytest.raises(InvalidToken):
        tokens.verify(f"{header}.{payload}.{signature[:-4]}AAAA")
    with pytest.raises(InvalidToken):
        tokens.verify("not-a-token")
    other_audience = TokenService(tokens._db, audience="elsewhere", lifetime_s=300)
    other_audience.load_keys()
    with pytest.raises(InvalidToken):
        other_audience.verify(token)
    assert tokens._private is not None
    kid, key = tokens._private
    expired = jwt.encode({"iss": "portside", "aud": tokens.audience, "sub": "alice",
                          "iat": int(time.time()) - 100, "exp": int(time.time()) - 50},
                         key, algorithm="RS256", headers={"kid": kid})
    with pytest.raises(InvalidToken):
        tokens.verify(expired)
    unsigned = jwt.encode({"iss": "portside", "aud": tokens.audience, "sub": "root",
                           "iat": int(time.time()), "exp": int(time.time()) + 60},
                          "s" * 64, algorithm="HS256", headers={"kid": kid})
    with pytest.raises(InvalidToken):
        tokens.verify(unsigned)


def test_unknown_key_ids_reload_keys_at_most_once_per_interval(tokens: TokenService) -> None:
    assert tokens._private is not None
    _kid, key = tokens._private
    reloads = []
    original = tokens.load_keys

    def counting_reload() -> None:
        reloads.append(1)
        original()

    tokens.load_keys = counting_reload  # type: ignore[method-assign]
    for n in range(5):
        forged = jwt.encode({"iss": "portside", "aud": tokens.audience, "sub": "x",
                             "iat": int(time.time()), "exp": int(time.time()) + 60},
                            key, algorithm="RS256", headers={"kid": f"unknown-{n}"})
        with pytest.raises(InvalidToken):
            tokens.verify(forged)
    assert len(reloads) == 1
