"""Scheduling of repository mirrors in the database (Quay's model: workers read
``repo_mirror_config`` and claim what is due).

A mirror is *due* when it is enabled, its repository exists and is in state ``MIRROR``,
and either a sync was asked for (``SYNC_NOW``), or its ``sync_start_date`` has passed
and no sync runs (not ``SYNCING``, nor ``CANCEL`` asked of a sync still holding its
lease), or the running sync's lease (``sync_expiration_date``) lapsed (its worker
died). A worker claims a due mirror with
one conditional ``UPDATE`` (status ``SYNCING``, a lease, a fresh
``sync_transaction_id``) that matches only the row as it read it: of several processes
claiming the same mirror exactly one wins, so one repository is never synced twice at
once. While it syncs, the worker renews the lease and learns of a cancel or of a lost
claim (another transaction id) through :func:`heartbeat`; every later write is
conditional on its transaction id.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, or_, select, update

from portside.db.engine import Database
from portside.db.models import RepoMirrorConfig, Repository, utcnow
from portside.services.mirror_config import DEFAULT_RETRIES
from portside.services.mirror_rules import as_utc, next_start_date

__all__ = ["Claim", "Outcome", "claim_due", "finish", "heartbeat", "release", "state_of"]

#: What a running sync learns at a checkpoint.
Outcome = Literal["ok", "cancel", "lost"]


@dataclass(frozen=True)
class Claim:
    """A mirror this worker syncs now."""

    mirror_id: int
    repository_id: int
    transaction_id: str


def _due(now: datetime) -> ColumnElement[bool]:
    """The SQL condition of a due mirror (see the module docstring)."""
    no_live_lease = or_(RepoMirrorConfig.sync_expiration_date.is_(None),
                        RepoMirrorConfig.sync_expiration_date < now)
    slot_passed = and_(RepoMirrorConfig.sync_start_date.is_not(None),
                       RepoMirrorConfig.sync_start_date <= now)
    return and_(
        RepoMirrorConfig.is_enabled.is_(True),
        Repository.state == "MIRROR",
        Repository.deleted_at.is_(None),
        or_(
            RepoMirrorConfig.sync_status == "SYNC_NOW",
            and_(RepoMirrorConfig.sync_status.not_in(("SYNCING", "CANCEL")), slot_passed),
            # A cancel asked of a running sync: not due until that sync stopped (it
            # clears the lease) or its worker died; else a new claim would overtake it.
            and_(RepoMirrorConfig.sync_status == "CANCEL", no_live_lease, slot_passed),
            and_(RepoMirrorConfig.sync_status == "SYNCING", no_live_lease),
        ),
    )


def claim_due(db: Database, limit: int, lease_s: float) -> list[Claim]:
    """Claim up to ``limit`` due mirrors, oldest due first."""
    if limit <= 0:
        return []
    now = utcnow()
    with db.read() as connection:
        candidates = connection.execute(
            select(RepoMirrorConfig.id, RepoMirrorConfig.repository_id,
                   RepoMirrorConfig.sync_transaction_id, RepoMirrorConfig.sync_status)
            .join(Repository, Repository.id == RepoMirrorConfig.repository_id)
            .where(_due(now))
            .order_by(RepoMirrorConfig.sync_start_date)
            .limit(limit * 2)
        ).all()
    claims: list[Claim] = []
    for row in candidates:
        if len(claims) >= limit:
            break
        transaction_id = str(uuid.uuid4())
        previous = row.sync_transaction_id
        with db.session() as session:
            # Matches only the row as read: a concurrent claim changed the id first.
            result = session.execute(
                update(RepoMirrorConfig)
                .where(RepoMirrorConfig.id == row.id,
                       RepoMirrorConfig.sync_status == row.sync_status,
                       (RepoMirrorConfig.sync_transaction_id.is_(None) if previous is None
                        else RepoMirrorConfig.sync_transaction_id == previous),
                       RepoMirrorConfig.is_enabled.is_(True))
                .values(sync_status="SYNCING", sync_transaction_id=transaction_id,
                        sync_expiration_date=now + timedelta(seconds=lease_s))
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                claims.append(Claim(row.id, row.repository_id, transaction_id))
    return claims


_CLAIM_STATE = (
    select(RepoMirrorConfig.sync_status, RepoMirrorConfig.sync_transaction_id,
           RepoMirrorConfig.is_enabled, Repository.state)
    .join(Repository, Repository.id == RepoMirrorConfig.repository_id)
)


def _outcome(row: Any, claim: Claim) -> Outcome:
    if row is None or row.sync_transaction_id != claim.transaction_id:
        return "lost"
    # A cancel, or the mirror switched off meanwhile (disabled, state no longer MIRROR).
    if row.sync_status == "CANCEL" or not row.is_enabled or row.state != "MIRROR":
        return "cancel"
    return "ok"


def heartbeat(db: Database, claim: Claim, lease_s: float) -> Outcome:
    """Renew the lease; ``cancel`` when a cancel was asked for (or the mirror was
    disabled or its repository left state ``MIRROR``), ``lost`` when another worker took
    the mirror over (or it was deleted)."""
    with db.session() as session:
        outcome = _outcome(session.execute(
            _CLAIM_STATE.where(RepoMirrorConfig.id == claim.mirror_id)).first(), claim)
        if outcome != "ok":
            return outcome
        session.execute(
            update(RepoMirrorConfig)
            .where(RepoMirrorConfig.id == claim.mirror_id,
                   RepoMirrorConfig.sync_transaction_id == claim.transaction_id)
            .values(sync_expiration_date=utcnow() + timedelta(seconds=lease_s))
        )
        return "ok"


def state_of(db: Database, claim: Claim) -> Outcome:
    """:func:`heartbeat` without renewing (a cheap read at each checkpoint)."""
    with db.read() as connection:
        row = connection.execute(
            _CLAIM_STATE.where(RepoMirrorConfig.id == claim.mirror_id)).first()
    return _outcome(row, claim)


def finish(db: Database, claim: Claim, *, status: str, error: str | None) -> bool:
    """Record a sync's end: ``SUCCESS``, ``FAIL`` or ``CANCEL``. Success and cancel move
    ``sync_start_date`` to the next slot and reset the retries; a failure uses one retry
    (the mirror stays due, so the next pass tries again) and moves to the next slot only
    when none is left. ``False`` when the claim was lost (nothing written)."""
    now = utcnow()
    with db.session() as session:
        mirror = session.scalar(
            select(RepoMirrorConfig).where(RepoMirrorConfig.id == claim.mirror_id,
                                           RepoMirrorConfig.sync_transaction_id
                                           == claim.transaction_id)
        )
        if mirror is None:
            return False
        start = as_utc(mirror.sync_start_date) if mirror.sync_start_date else None
        retries = mirror.sync_retries_remaining
        if status == "FAIL":
            retries = max(0, retries - 1)
            if retries == 0:
                start = next_start_date(start, mirror.sync_interval, now)
                retries = DEFAULT_RETRIES
        else:
            start = next_start_date(start, mirror.sync_interval, now)
            retries = DEFAULT_RETRIES
        mirror.sync_status = status
        mirror.sync_start_date = start
        mirror.sync_retries_remaining = retries
        mirror.sync_expiration_date = None
        mirror.last_sync_at = now
        mirror.last_error = error
        return True


def release(db: Database, claim: Claim) -> None:
    """Give a claim back at shutdown: the lease lapses now, so another process takes
    the mirror over at its next pass."""
    with db.session() as session:
        session.execute(
            update(RepoMirrorConfig)
            .where(RepoMirrorConfig.id == claim.mirror_id,
                   RepoMirrorConfig.sync_transaction_id == claim.transaction_id,
                   RepoMirrorConfig.sync_status.in_(("SYNCING", "CANCEL")))
            .values(sync_expiration_date=utcnow() - timedelta(seconds=1))
        )
