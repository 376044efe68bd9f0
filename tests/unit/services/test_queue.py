"""The database work queue on SQLite and PostgreSQL: claims are exclusive (also across
processes), leases expire, failures back off and end ``dead``, producers enqueue inside
their own transaction."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from portside.db.engine import Database, create_db_engine
from portside.db.migrate import upgrade
from portside.db.models import QueueItem, utcnow
from portside.services.queue import QueueJob, WorkQueue, enqueue
from support.server import postgres_available, postgres_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_uri(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database of each kind."""
    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path / 'queue.db'}"
        engine = create_db_engine(uri)
        upgrade(engine)
        engine.dispose()
        yield uri
        return
    if not postgres_available():
        if os.environ.get("PORTSIDE_TEST_POSTGRES") == "1":
            pytest.fail("PostgreSQL unreachable (PORTSIDE_TEST_POSTGRES=1 requires it)")
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    with postgres_database() as uri:
        engine = create_db_engine(uri)
        upgrade(engine)
        engine.dispose()
        yield uri


@pytest.fixture
def db(db_uri: str) -> Iterator[Database]:
    database = Database(create_db_engine(db_uri))
    yield database
    database.dispose()


def expire_lease(db: Database, job: QueueJob) -> None:
    """Pretend the lease ran out (instead of sleeping through it)."""
    with db.session() as session:
        session.execute(update(QueueItem).where(QueueItem.id == job.id)
                        .values(processing_expires=utcnow() - timedelta(seconds=1)))


def test_put_claim_complete(db: Database) -> None:
    queue = WorkQueue(db)
    first = queue.put("work", {"n": 1})
    queue.put("work", {"n": 2})
    queue.put("other", {"n": 3})
    job = queue.claim("work", lease_s=60)
    assert job is not None and job.id == first and job.body == {"n": 1}
    assert job.retries_remaining == 4  # the claim was an attempt
    assert queue.counts("work") == {"queued": 1, "processing": 1, "dead": 0}
    assert queue.complete(job) is True
    assert queue.complete(job) is False  # already gone
    second = queue.claim("work", lease_s=60)
    assert second is not None and second.body == {"n": 2}
    assert queue.claim("work", lease_s=60) is None  # the other one is leased
    assert queue.counts() == {"queued": 1, "processing": 1, "dead": 0}


def test_delayed_items_wait(db: Database) -> None:
    queue = WorkQueue(db)
    queue.put("work", {"later": True}, delay_s=3600)
    assert queue.claim("work", lease_s=60) is None
    assert queue.counts("work")["queued"] == 1


def test_failures_back_off_then_die(db: Database) -> None:
    queue = WorkQueue(db, backoff_base_s=30)
    item_id = queue.put("work", {}, retries=2)
    job = queue.claim("work", lease_s=60)
    assert job is not None and job.retries_remaining == 1
    before = utcnow()
    assert queue.fail(job, "boom") is True
    assert queue.claim("work", lease_s=60) is None  # backing off
    with db.session() as session:
        item = session.get(QueueItem, item_id)
        assert item is not None and item.last_error == "boom" and item.state == "queued"
        available = item.available_after
    assert available.replace(tzinfo=before.tzinfo) >= before + timedelta(seconds=25)
    with db.session() as session:  # skip the wait
        session.execute(update(QueueItem).where(QueueItem.id == item_id)
                        .values(available_after=utcnow() - timedelta(seconds=1)))
    last = queue.claim("work", lease_s=60)
    assert last is not None and last.retries_remaining == 0
    assert queue.fail(last, "boom again") is True
    assert queue.claim("work", lease_s=60) is None
    assert queue.counts("work") == {"queued": 0, "processing": 0, "dead": 1}
    dead = queue.dead_items("work")
    assert [(d.id, d.last_error) for d in dead] == [(item_id, "boom again")]


def test_backoff_doubles_and_is_capped(db: Database) -> None:
    queue = WorkQueue(db, backoff_base_s=10, backoff_max_s=50)
    lease = utcnow()
    delays = [queue.backoff_s(QueueJob(1, "q", {}, left, lease)) for left in (4, 3, 2, 1, 0)]
    assert delays == [10, 20, 40, 50, 50]


def test_expired_lease_makes_the_item_claimable_again(db: Database) -> None:
    queue = WorkQueue(db)
    queue.put("work", {"n": 1})
    stale = queue.claim("work", lease_s=60)
    assert stale is not None and queue.claim("work", lease_s=60) is None
    expire_lease(db, stale)
    fresh = queue.claim("work", lease_s=60)
    assert fresh is not None and fresh.id == stale.id
    # The worker that lost its lease can no longer touch the item.
    assert queue.complete(stale) is False
    assert queue.fail(stale, "late") is False
    assert queue.extend(stale, 60) is None
    extended = queue.extend(fresh, 600)
    assert extended is not None and extended.lease_expires > fresh.lease_expires
    assert queue.complete(fresh) is False  # the old lease is not the fence any more
    assert queue.complete(extended) is True
    assert queue.counts("work") == {"queued": 0, "processing": 0, "dead": 0}


def test_a_lease_expiring_on_the_last_attempt_kills_the_item(db: Database) -> None:
    queue = WorkQueue(db)
    queue.put("work", {}, retries=1)
    job = queue.claim("work", lease_s=60)
    assert job is not None and job.retries_remaining == 0
    expire_lease(db, job)
    assert queue.claim("work", lease_s=60) is None
    dead = queue.dead_items("work")
    assert len(dead) == 1 and "lease expired" in (dead[0].last_error or "")


def test_enqueue_rolls_back_with_the_callers_transaction(db: Database) -> None:
    with pytest.raises(RuntimeError), db.session() as session:
        enqueue(session, "work", {"n": 1})
        raise RuntimeError("the change failed")
    assert WorkQueue(db).claim("work", lease_s=60) is None
    with pytest.raises(ValueError), db.session() as session:
        enqueue(session, "work", {}, retries=0)


def test_concurrent_claimers_never_share_an_item(db: Database) -> None:
    queue = WorkQueue(db)
    for n in range(40):
        queue.put("work", {"n": n})
    claimed: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            while (job := queue.claim("work", lease_s=60)) is not None:
                with lock:
                    claimed.append(job.body["n"])
                assert queue.complete(job)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(claimed) == list(range(40))  # each exactly once


def _claim_in_process(db_uri: str, results: multiprocessing.Queue[list[int]]) -> None:
    database = Database(create_db_engine(db_uri))
    queue = WorkQueue(database)
    mine: list[int] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (job := queue.claim("work", 60)) is not None:
        mine.append(job.body["n"])
        queue.complete(job)
    database.dispose()
    results.put(mine)


def test_claimers_in_separate_processes_never_share_an_item(db_uri: str,
                                                            db: Database) -> None:
    queue = WorkQueue(db)
    for n in range(30):
        queue.put("work", {"n": n})
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[list[int]] = context.Queue()
    processes = [context.Process(target=_claim_in_process, args=(db_uri, results))
                 for _ in range(2)]
    for process in processes:
        process.start()
    collected = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    everything = [n for part in collected for n in part]
    assert sorted(everything) == list(range(30))
    with db.session() as session:
        assert session.scalars(select(QueueItem)).first() is None
