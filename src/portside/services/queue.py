"""A general work queue in the database (``queue_item``), safe with many processes.

Producers :func:`enqueue` an item (a JSON ``body`` under a queue name) inside their own
transaction, so the work exists exactly when the change that asked for it committed.
Consumers (see :mod:`portside.workers.queue_worker`) use :class:`WorkQueue`:

* :meth:`~WorkQueue.claim` takes the oldest available item and leases it for
  ``lease_s`` seconds (``processing_expires``). On PostgreSQL the candidate row is
  locked with ``SELECT ... FOR UPDATE SKIP LOCKED``, so concurrent claimers pick
  different items without waiting for each other; on SQLite the claim runs in a write
  transaction (``BEGIN IMMEDIATE``), which serialises claimers across processes.
* :meth:`~WorkQueue.complete` deletes a finished item; :meth:`~WorkQueue.fail` puts it
  back after an exponential backoff, or marks it ``dead`` (kept for operators, with
  ``last_error``) once its attempts are used up; :meth:`~WorkQueue.extend` renews the
  lease of long work.
* A claim counts as an attempt (``retries_remaining`` is decremented when the item is
  claimed). A worker that dies mid-item simply lets its lease expire: the item becomes
  claimable again, and an item whose lease expired on its last attempt is marked
  ``dead`` instead of being retried forever.

Every call that changes a claimed item is *fenced* by the lease it was claimed with: a
worker whose lease expired (and whose item another worker claimed since) cannot
complete, fail or extend it any more; those calls return ``False``/``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, delete, func, or_, select, update
from sqlalchemy.orm import Session

from portside.db.engine import Database
from portside.db.models import QueueItem, utcnow

#: Attempts an item gets unless the producer asks otherwise.
DEFAULT_RETRIES = 5
#: ``last_error`` is kept to this many characters.
MAX_ERROR_LENGTH = 2000
#: Expired last attempts turned ``dead`` per claim, at most (bounds one transaction).
_MAX_REAPED_PER_CLAIM = 20


@dataclass(frozen=True)
class QueueJob:
    """A claimed item: what to do, and the lease that proves the claim."""

    id: int
    queue_name: str
    body: dict[str, Any]
    #: Attempts left *after* this one (0: this is the last attempt).
    retries_remaining: int
    #: The lease; also the fencing token for :meth:`WorkQueue.complete` and friends.
    lease_expires: datetime


def enqueue(session: Session, queue_name: str, body: dict[str, Any], *,
            delay_s: float = 0.0, retries: int = DEFAULT_RETRIES) -> QueueItem:
    """Add an item to ``queue_name`` in the caller's transaction (it commits or rolls
    back with the caller's change). It becomes claimable ``delay_s`` seconds from now."""
    if retries < 1:
        raise ValueError("an item needs at least one attempt")
    item = QueueItem(queue_name=queue_name, body=body, state="queued",
                     available_after=utcnow() + timedelta(seconds=max(delay_s, 0.0)),
                     processing_expires=None, retries_remaining=retries,
                     created_at=utcnow())
    session.add(item)
    session.flush()
    return item


def _claimable(queue_name: str, now: datetime) -> Any:
    return and_(
        QueueItem.queue_name == queue_name,
        QueueItem.state == "queued",
        QueueItem.available_after <= now,
        or_(QueueItem.processing_expires.is_(None), QueueItem.processing_expires < now),
    )


class WorkQueue:
    """Claims, completes and retries items of any queue (see the module docstring)."""

    def __init__(self, db: Database, *, backoff_base_s: float = 10.0,
                 backoff_max_s: float = 3600.0) -> None:
        self._db = db
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s

    def put(self, queue_name: str, body: dict[str, Any], delay_s: float = 0.0,
            retries: int = DEFAULT_RETRIES) -> int:
        """:func:`enqueue` in a transaction of its own; returns the item's id."""
        with self._db.session() as session:
            return enqueue(session, queue_name, body, delay_s=delay_s, retries=retries).id

    def claim(self, queue_name: str, lease_s: float) -> QueueJob | None:
        """Lease the oldest available item of ``queue_name`` for ``lease_s`` seconds, or
        return ``None`` when there is none."""
        now = utcnow()
        if self._db.is_sqlite and not self._has_candidate(queue_name, now):
            # Idle polls on SQLite skip the write lock that a claim takes.
            return None
        with self._db.session() as session:
            for _ in range(_MAX_REAPED_PER_CLAIM + 1):
                query = (select(QueueItem).where(_claimable(queue_name, now))
                         .order_by(QueueItem.available_after, QueueItem.id).limit(1))
                if not self._db.is_sqlite:
                    query = query.with_for_update(skip_locked=True)
                item = session.scalar(query)
                if item is None:
                    return None
                if item.retries_remaining <= 0:
                    # Its last attempt died without a word (the lease ran out).
                    item.state = "dead"
                    item.processing_expires = None
                    item.last_error = item.last_error or "the last attempt's lease expired"
                    session.flush()
                    continue
                lease = now + timedelta(seconds=lease_s)
                item.retries_remaining -= 1
                item.processing_expires = lease
                return QueueJob(item.id, item.queue_name, dict(item.body or {}),
                                item.retries_remaining, lease)
        return None

    def _has_candidate(self, queue_name: str, now: datetime) -> bool:
        with self._db.read() as connection:
            return connection.execute(
                select(QueueItem.id).where(_claimable(queue_name, now)).limit(1)
            ).first() is not None

    def complete(self, job: QueueJob) -> bool:
        """Delete a finished item; ``False`` if the lease was lost meanwhile."""
        with self._db.session() as session:
            result = session.execute(
                delete(QueueItem).where(QueueItem.id == job.id,
                                        QueueItem.processing_expires == job.lease_expires)
            )
        return bool(getattr(result, "rowcount", 0))

    def backoff_s(self, job: QueueJob) -> float:
        """How long a failed item waits: doubling with every attempt, capped.

        Attempts made so far are counted from ``DEFAULT_RETRIES``; items enqueued with
        more retries start from the base delay.
        """
        attempts = max(DEFAULT_RETRIES - job.retries_remaining, 1)
        return float(min(self.backoff_base_s * 2 ** (attempts - 1), self.backoff_max_s))

    def fail(self, job: QueueJob, error: str) -> bool:
        """Record a failed attempt: retry after :meth:`backoff_s`, or mark the item
        ``dead`` if it has no attempt left. ``False`` if the lease was lost meanwhile."""
        values: dict[str, Any] = {"processing_expires": None,
                                  "last_error": error[:MAX_ERROR_LENGTH]}
        if job.retries_remaining <= 0:
            values["state"] = "dead"
        else:
            values["available_after"] = utcnow() + timedelta(seconds=self.backoff_s(job))
        with self._db.session() as session:
            result = session.execute(
                update(QueueItem)
                .where(QueueItem.id == job.id, QueueItem.processing_expires == job.lease_expires)
                .values(**values)
            )
        return bool(getattr(result, "rowcount", 0))

    def extend(self, job: QueueJob, lease_s: float) -> QueueJob | None:
        """Renew the lease to ``lease_s`` seconds from now; ``None`` if it was lost."""
        lease = utcnow() + timedelta(seconds=lease_s)
        with self._db.session() as session:
            result = session.execute(
                update(QueueItem)
                .where(QueueItem.id == job.id, QueueItem.processing_expires == job.lease_expires)
                .values(processing_expires=lease)
            )
        if not getattr(result, "rowcount", 0):
            return None
        return QueueJob(job.id, job.queue_name, job.body, job.retries_remaining, lease)

    def counts(self, queue_name: str | None = None) -> dict[str, int]:
        """Items by state: ``queued`` (waiting, including backoff), ``processing``
        (leased now) and ``dead``; for one queue or all of them (for metrics)."""
        now = utcnow()
        state = case(
            (and_(QueueItem.state == "queued", QueueItem.processing_expires.is_not(None),
                  QueueItem.processing_expires >= now), "processing"),
            else_=QueueItem.state,
        )
        query = select(state, func.count(QueueItem.id)).group_by(state)
        if queue_name is not None:
            query = query.where(QueueItem.queue_name == queue_name)
        result = {"queued": 0, "processing": 0, "dead": 0}
        with self._db.session() as session:
            for name, count in session.execute(query):
                result[str(name)] = int(count)
        return result

    def dead_items(self, queue_name: str, limit: int = 100) -> list[QueueItem]:
        """The ``dead`` items of a queue, oldest first (for operators)."""
        with self._db.session() as session:
            return list(session.scalars(
                select(QueueItem).where(QueueItem.queue_name == queue_name,
                                        QueueItem.state == "dead")
                .order_by(QueueItem.id).limit(limit)
            ))
