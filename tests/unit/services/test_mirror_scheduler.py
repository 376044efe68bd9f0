"""Claiming due mirrors in the database, on SQLite and PostgreSQL: what is due, claims
are exclusive (also when many threads race), a lapsed lease is taken over and the old
claim learns it lost, a cancel reaches the heartbeat, and outcomes move the schedule."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from portside.db.engine import Database, create_db_engine
from portside.db.migrate import upgrade
from portside.db.models import Namespace, RepoMirrorConfig, Repository, utcnow
from portside.services.mirror_rules import as_utc
from portside.services.mirror_scheduler import (
    Claim,
    claim_due,
    finish,
    heartbeat,
    release,
    state_of,
)
from support.server import postgres_available, postgres_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated database of each kind."""
    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path / 'mirror.db'}"
        engine = create_db_engine(uri)
        upgrade(engine)
        database = Database(engine)
        yield database
        database.dispose()
        return
    if not postgres_available():
        if os.environ.get("PORTSIDE_TEST_POSTGRES") == "1":
            pytest.fail("PostgreSQL unreachable (PORTSIDE_TEST_POSTGRES=1 requires it)")
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    with postgres_database() as uri:
        engine = create_db_engine(uri)
        upgrade(engine)
        database = Database(engine)
        yield database
        database.dispose()


def add_mirror(db: Database, name: str, *, state: str = "MIRROR", enabled: bool = True,
               due_in_s: float = -1, status: str = "NEVER_RUN", interval: int = 60) -> int:
    """A repository with a mirror configuration; returns the mirror's id."""
    with db.session() as session:
        namespace = session.scalar(select(Namespace).where(Namespace.name == "org"))
        if namespace is None:
            namespace = Namespace(name="org", kind="organization")
            session.add(namespace)
            session.flush()
        repository = Repository(namespace_id=namespace.id, name=name, state=state)
        session.add(repository)
        session.flush()
        mirror = RepoMirrorConfig(
            repository_id=repository.id, is_enabled=enabled,
            external_reference="registry.example.com/up/stream",
            external_registry_config={}, root_rule={"rule_kind": "tag_glob_csv",
                                                    "rule_value": ["*"]},
            architecture_filter=[], sync_interval=interval,
            sync_start_date=utcnow() + timedelta(seconds=due_in_s), sync_status=status,
            sync_retries_remaining=3, sync_timeout_s=60)
        session.add(mirror)
        session.flush()
        return mirror.id


def mirror(db: Database, mirror_id: int) -> RepoMirrorConfig:
    with db.session() as session:
        row = session.get(RepoMirrorConfig, mirror_id)
        assert row is not None
        session.expunge(row)
        return row


def start_of(row: RepoMirrorConfig) -> datetime:
    """The mirror's ``sync_start_date`` (set in every test here), as aware UTC."""
    assert row.sync_start_date is not None
    return as_utc(row.sync_start_date)


def test_what_is_due(db: Database) -> None:
    due = add_mirror(db, "due")
    add_mirror(db, "later", due_in_s=3600)
    add_mirror(db, "normal", state="NORMAL")
    add_mirror(db, "disabled", enabled=False)
    asked = add_mirror(db, "asked", due_in_s=3600, status="SYNC_NOW")
    claims = claim_due(db, 10, lease_s=30)
    assert {c.mirror_id for c in claims} == {due, asked}
    # Claimed: SYNCING with a lease and a transaction id; not due again.
    row = mirror(db, due)
    assert row.sync_status == "SYNCING" and row.sync_transaction_id
    assert row.sync_expiration_date is not None
    assert claim_due(db, 10, lease_s=30) == []


def test_limit_and_oldest_first(db: Database) -> None:
    ids = [add_mirror(db, f"r{n}", due_in_s=-100 + n) for n in range(5)]
    first = claim_due(db, 2, lease_s=30)
    assert [c.mirror_id for c in first] == ids[:2]
    assert claim_due(db, 0, lease_s=30) == []


def test_racing_claimers_never_share_a_mirror(db: Database) -> None:
    ids = {add_mirror(db, f"race{n}") for n in range(6)}
    results: list[list[Claim]] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        results.append(claim_due(db, 6, lease_s=30))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claimed = [c.mirror_id for batch in results for c in batch]
    assert sorted(claimed) == sorted(ids)  # each exactly once


def test_lapsed_lease_is_taken_over(db: Database) -> None:
    mirror_id = add_mirror(db, "crash")
    [old] = claim_due(db, 1, lease_s=30)
    assert heartbeat(db, old, 30) == "ok"
    with db.session() as session:  # the worker died: its lease runs out
        session.execute(update(RepoMirrorConfig).where(RepoMirrorConfig.id == mirror_id)
                        .values(sync_expiration_date=utcnow() - timedelta(seconds=1)))
    [new] = claim_due(db, 1, lease_s=30)
    assert new.mirror_id == mirror_id and new.transaction_id != old.transaction_id
    # The old worker, if it was only slow, learns it lost and writes nothing.
    assert heartbeat(db, old, 30) == "lost"
    assert state_of(db, old) == "lost"
    assert finish(db, old, status="SUCCESS", error=None) is False
    assert mirror(db, mirror_id).sync_status == "SYNCING"
    assert finish(db, new, status="SUCCESS", error=None) is True


def test_cancel_reaches_the_running_sync(db: Database) -> None:
    mirror_id = add_mirror(db, "cancel")
    [claim] = claim_due(db, 1, lease_s=30)
    with db.session() as session:
        session.execute(update(RepoMirrorConfig).where(RepoMirrorConfig.id == mirror_id)
                        .values(sync_status="CANCEL"))
    assert state_of(db, claim) == "cancel"
    assert heartbeat(db, claim, 30) == "cancel"
    # Not due while the cancelled sync still holds its lease: nobody overtakes it.
    assert claim_due(db, 1, lease_s=30) == []
    assert finish(db, claim, status="CANCEL", error="Sync cancelled.")
    row = mirror(db, mirror_id)
    assert row.sync_status == "CANCEL" and start_of(row) > utcnow()


def test_leaving_mirror_state_stops_the_sync(db: Database) -> None:
    mirror_id = add_mirror(db, "leave")
    [claim] = claim_due(db, 1, lease_s=30)
    assert state_of(db, claim) == "ok"
    with db.session() as session:
        repository_id = session.get(RepoMirrorConfig, mirror_id).repository_id  # type: ignore[union-attr]
        session.execute(update(Repository).where(Repository.id == repository_id)
                        .values(state="NORMAL"))
    assert state_of(db, claim) == "cancel"
    assert heartbeat(db, claim, 30) == "cancel"


def test_outcomes_move_the_schedule(db: Database) -> None:
    mirror_id = add_mirror(db, "sched", due_in_s=-130, interval=60)
    start = start_of(mirror(db, mirror_id))
    # Failures use retries; the mirror stays due until none is left.
    for remaining in (2, 1):
        [claim] = claim_due(db, 1, lease_s=30)
        assert finish(db, claim, status="FAIL", error="upstream down")
        row = mirror(db, mirror_id)
        assert row.sync_status == "FAIL" and row.last_error == "upstream down"
        assert row.sync_retries_remaining == remaining
        assert start_of(row) == start
    [claim] = claim_due(db, 1, lease_s=30)
    assert finish(db, claim, status="FAIL", error="upstream down")
    row = mirror(db, mirror_id)
    assert row.sync_retries_remaining == 3
    assert start_of(row) == start + timedelta(seconds=180)  # missed slots skipped
    assert claim_due(db, 1, lease_s=30) == []
    # Success: the next slot, retries reset, no error, no lease.
    with db.session() as session:
        session.execute(update(RepoMirrorConfig).where(RepoMirrorConfig.id == mirror_id)
                        .values(sync_status="SYNC_NOW"))
    [claim] = claim_due(db, 1, lease_s=30)
    assert finish(db, claim, status="SUCCESS", error=None)
    row = mirror(db, mirror_id)
    assert row.sync_status == "SUCCESS" and row.last_error is None
    assert row.sync_expiration_date is None and row.last_sync_at is not None
    assert start_of(row) == start + timedelta(seconds=180)  # sync-now: kept


def test_release_hands_the_mirror_over(db: Database) -> None:
    mirror_id = add_mirror(db, "release")
    [claim] = claim_due(db, 1, lease_s=300)
    release(db, claim)
    [again] = claim_due(db, 1, lease_s=300)
    assert again.mirror_id == mirror_id
