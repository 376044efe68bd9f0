"""The migrations build exactly the models' schema, on SQLite and PostgreSQL, and
SQLite write transactions queue instead of failing under concurrency."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from portside.auth.permissions import Subject
from portside.db.engine import Database, create_db_engine
from portside.db.migrate import upgrade
from portside.db.models import Base
from portside.services.repositories import RepositoryService
from portside.services.users import UserService
from support.server import postgres_available, postgres_database


def _schema_diff(db_uri: str) -> list[object]:
    engine = create_db_engine(db_uri)
    try:
        upgrade(engine)
        with engine.connect() as connection:
            return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))
    finally:
        engine.dispose()


def test_sqlite_migrations_match_models(tmp_path: Path) -> None:
    assert _schema_diff(f"sqlite:///{tmp_path / 'schema.db'}") == []


def test_postgres_migrations_match_models() -> None:
    if not postgres_available():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    with postgres_database() as uri:
        assert _schema_diff(uri) == []


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    db = Database(create_db_engine(f"sqlite:///{tmp_path / 'concurrency.db'}"))
    upgrade(db.engine)
    yield db
    db.dispose()


def test_concurrent_sqlite_writers_wait_for_each_other(sqlite_db: Database) -> None:
    owner: Subject = UserService(sqlite_db, []).create_user("alice", "password1")
    repositories = RepositoryService(sqlite_db, create_private_on_push=True)
    errors: list[str] = []

    def push_many(worker: int) -> None:
        try:
            for n in range(15):
                repositories.ensure_for_push(owner, "alice", f"repo-{worker}-{n}")
        except Exception as exc:  # collected and asserted below
            errors.append(repr(exc))

    threads = [threading.Thread(target=push_many, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert repositories.lookup("alice", "repo-11-14").repository is not None
