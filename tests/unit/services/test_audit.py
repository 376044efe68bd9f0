"""The audit log's pieces without HTTP: the pull buffer (batched, bounded, retried) and
entries that share the transaction of the change they describe."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from portside.auth.permissions import Subject
from portside.db.engine import Database, create_db_engine
from portside.db.migrate import upgrade
from portside.db.models import LogEntry, Namespace, Repository
from portside.services.audit import InvalidInput as LogInvalidInput
from portside.services.audit import PullLogBuffer, decode_page, encode_page, record


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """A migrated SQLite database."""
    database = Database(create_db_engine(f"sqlite:///{tmp_path / 'portside.db'}"))
    upgrade(database.engine)
    yield database
    database.dispose()


@pytest.fixture
def repository_id(db: Database) -> int:
    """A repository ``acme/app`` to pull from."""
    with db.session() as session:
        namespace = Namespace(name="acme", kind="organization")
        session.add(namespace)
        session.flush()
        repo = Repository(namespace_id=namespace.id, name="app", public=True)
        session.add(repo)
        session.flush()
        return repo.id


def count(db: Database) -> int:
    """Entries in the log."""
    with db.session() as session:
        return session.scalar(select(func.count(LogEntry.id))) or 0


def test_flush_writes_the_batch_with_namespaces(db: Database, repository_id: int) -> None:
    buffer = PullLogBuffer(db)
    for _ in range(3):
        buffer.add(repository_id, Subject(user_id=7, username="ann"), "10.0.0.1",
                   {"repo": "app", "namespace": "acme", "tag": "latest"})
    buffer.add(repository_id, None, None, {"repo": "app", "namespace": "acme"})
    assert count(db) == 0 and len(buffer) == 4  # nothing written until the flush
    assert buffer.flush() == 4
    assert len(buffer) == 0 and buffer.flush() == 0
    with db.session() as session:
        entries = list(session.scalars(select(LogEntry).order_by(LogEntry.id)))
        namespace_id = session.scalar(select(Repository.namespace_id))
    assert [e.kind for e in entries] == ["pull_repo"] * 4
    assert {e.namespace_id for e in entries} == {namespace_id}
    assert [e.performer_id for e in entries] == [7, 7, 7, None]
    assert entries[0].ip == "10.0.0.1" and entries[0].metadata_json["tag"] == "latest"


def test_buffer_is_bounded_and_drops_the_oldest(db: Database, repository_id: int) -> None:
    buffer = PullLogBuffer(db, max_size=5)
    for i in range(8):
        buffer.add(repository_id, None, None, {"n": i})
    assert len(buffer) == 5 and buffer.dropped == 3
    assert buffer.flush() == 5
    with db.session() as session:
        kept = [e.metadata_json["n"] for e in session.scalars(select(LogEntry))]
    assert sorted(kept) == [3, 4, 5, 6, 7]


def test_failed_flush_keeps_the_batch_for_the_next_try(db: Database, repository_id: int,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = PullLogBuffer(db)
    buffer.add(repository_id, None, None, {"n": 1})

    def broken() -> None:
        raise RuntimeError("database down")

    monkeypatch.setattr(db, "session", broken)
    assert buffer.flush() == 0 and len(buffer) == 1
    monkeypatch.undo()
    assert buffer.flush() == 1 and count(db) == 1


def test_run_flushes_periodically_and_on_cancel(db: Database, repository_id: int) -> None:
    buffer = PullLogBuffer(db, interval_s=0.05)

    async def scenario() -> tuple[int, int]:
        task = asyncio.create_task(buffer.run())
        buffer.add(repository_id, None, None, {"n": 1})
        await asyncio.sleep(0.3)
        flushed = count(db)
        buffer.add(repository_id, None, None, {"n": 2})
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return flushed, count(db)

    assert asyncio.run(scenario()) == (1, 2)


def test_record_rolls_back_with_the_change(db: Database) -> None:
    with pytest.raises(RuntimeError), db.session() as session:
        record(session, "create_repo", performer=None, namespace_id=1,
               metadata={"repo": "x"})
        raise RuntimeError("the change failed")
    assert count(db) == 0
    with db.session() as session:
        record(session, "create_repo", performer=Subject(user_id=3), namespace_id=1,
               metadata={"repo": "x"})
    assert count(db) == 1


def test_page_tokens_round_trip_and_reject_garbage() -> None:
    assert decode_page(encode_page(42)) == 42
    for garbage in ("", "zz!", encode_page(1)[:-2] + "@@", "bG9nOng"):
        with pytest.raises(LogInvalidInput):
            decode_page(garbage)
