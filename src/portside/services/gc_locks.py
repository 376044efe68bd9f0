"""Locks shared by the push path and garbage collection.

**Per-digest lock.** Every operation that makes a blob reachable or removes it takes
the lock of the blob's digest inside its write transaction:

* upload commit, before it creates or reuses the ``Blob`` row and moves the bytes to
  their content-addressed path (:meth:`UploadService._commit`);
* cross-repository mount, before it links the blob into the target repository;
* manifest ``PUT``, for the blobs it references (all of them, in sorted order, so two
  pushes can never wait for each other in a cycle);
* garbage collection, before it re-checks that nothing references a blob and deletes the
  stored objects and then the row, all while it still holds the lock (a batch of
  digests at once, in the same sorted order, one round trip).

On PostgreSQL the lock is ``pg_advisory_xact_lock`` keyed by the digest: it is released
by the commit or rollback, and a crashed process releases it with its connection. On
SQLite there is one writer at a time: :meth:`Database.session` begins every write
transaction with ``BEGIN IMMEDIATE``, so a write transaction already excludes every
other one and :func:`lock_digests` has nothing to add.

**One pass at a time.** :func:`try_gc_lock` is a non-blocking, session-level advisory
lock on PostgreSQL (held on a dedicated connection for the whole pass) and an exclusive
``flock`` on a file beside the SQLite database: a second process finds it taken and
skips its pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from portside.db.engine import Database

#: Key of the garbage-collection pass lock in PostgreSQL's two-int4 advisory key space,
#: which never overlaps the single-bigint space of the digest locks.
_GC_PASS_KEY = (0x506F7274, 0x00006763)  # "Port", "gc"

_LOCK_SORTED = text(
    "SELECT count(pg_advisory_xact_lock(k)) FROM "
    "(SELECT unnest(CAST(:keys AS bigint[])) AS k ORDER BY k) AS sorted_keys"
)


def digest_key(digest: str) -> int:
    """A signed 64-bit advisory-lock key for ``digest`` (stable across processes)."""
    raw = hashlib.sha256(digest.encode()).digest()[:8]
    return int.from_bytes(raw, "big", signed=True)


def lock_digests(session: Session, digests: Iterable[str]) -> None:
    """Take the per-digest locks of ``digests`` until the transaction ends.

    PostgreSQL: one round trip, keys locked in ascending order. SQLite: nothing to do,
    the write transaction (``BEGIN IMMEDIATE``) already holds the database's only write
    lock, which serialises uploads, mounts, manifest pushes and collection.
    """
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return
    keys = sorted({digest_key(d) for d in digests})
    if not keys:
        return
    if len(keys) == 1:
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": keys[0]})
    else:
        session.execute(_LOCK_SORTED, {"keys": keys})


@contextlib.contextmanager
def try_gc_lock(db: Database) -> Iterator[bool]:
    """Try to become the only garbage-collection pass; yields whether it succeeded."""
    if db.is_sqlite:
        with _sqlite_pass_lock(db) as acquired:
            yield acquired
        return
    with db.engine.connect() as connection:
        acquired = bool(
            connection.execute(
                text("SELECT pg_try_advisory_lock(:a, :b)"),
                {"a": _GC_PASS_KEY[0], "b": _GC_PASS_KEY[1]},
            ).scalar()
        )
        connection.commit()
        try:
            yield acquired
        finally:
            if acquired:
                connection.execute(
                    text("SELECT pg_advisory_unlock(:a, :b)"),
                    {"a": _GC_PASS_KEY[0], "b": _GC_PASS_KEY[1]},
                )
                connection.commit()


@contextlib.contextmanager
def _sqlite_pass_lock(db: Database) -> Iterator[bool]:
    database = make_url(str(db.engine.url)).database
    if not database or database == ":memory:":
        yield True  # a private in-memory database has a single process by definition
        return
    import fcntl  # POSIX only, like SQLite's own file locking in WAL mode

    path = os.path.abspath(database) + ".gc-lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
