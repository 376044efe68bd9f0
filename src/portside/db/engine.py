"""Engine and session factory for SQLite (embedded) and PostgreSQL (production)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def normalise_url(db_uri: str) -> str:
    """Map Quay-style URIs onto SQLAlchemy driver URLs (psycopg 3 for PostgreSQL)."""
    if db_uri.startswith("postgresql://"):
        return "postgresql+psycopg://" + db_uri[len("postgresql://") :]
    if db_uri.startswith("postgres://"):
        return "postgresql+psycopg://" + db_uri[len("postgres://") :]
    return db_uri


#: Connections kept open: at least as many as worker threads that may query at once
#: (anyio's default limiter is 40), so requests never wait for or churn connections.
POOL_SIZE = 48


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # busy_timeout makes concurrent writers wait instead of failing with "database is
    # locked". WAL mode is persistent in the file and set once at engine creation.
    # Transactions are begun by _begin_sqlite, not by the driver.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _begin_sqlite(connection: Connection) -> None:
    # A deferred transaction that reads and then writes fails at once with "database is
    # locked" when another writer got there first (busy_timeout does not apply to lock
    # upgrades). Write sessions therefore take the write lock up front.
    mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
    if mode != "NONE":  # single-statement reads need no transaction
        connection.exec_driver_sql(f"BEGIN {mode}")


def create_db_engine(db_uri: str, connect_args: dict[str, Any] | None = None,
                     pool_size: int = POOL_SIZE) -> Engine:
    """Create an engine; for SQLite, make the file's folder and set WAL mode."""
    url = make_url(normalise_url(db_uri))
    args = dict(connect_args or {})
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(url.database)), exist_ok=True)
        args.setdefault("check_same_thread", False)
        engine = create_engine(url, connect_args=args, pool_size=pool_size, max_overflow=16)
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_sqlite)
        if url.database and url.database != ":memory:":
            # WAL lets readers proceed while a writer commits; it sticks to the file.
            raw = engine.raw_connection()
            try:
                raw.cursor().execute("PRAGMA journal_mode=WAL")
            finally:
                raw.close()
        return engine
    # PostgreSQL connections cost the server a process each: keep the pool modest.
    return create_engine(
        url, connect_args=args, pool_size=min(pool_size, 20), max_overflow=20,
        pool_pre_ping=True,
    )


class Database:
    """Owns the engine and hands out sessions whose transaction commits on success."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        writer = engine.execution_options(sqlite_begin="IMMEDIATE")
        self._factory = sessionmaker(writer, expire_on_commit=False)
        # Hot-path reads are single statements: no BEGIN/ROLLBACK round trips.
        self._reader = (engine.execution_options(sqlite_begin="NONE") if self.is_sqlite
                        else engine.execution_options(isolation_level="AUTOCOMMIT"))

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded SQLite database."""
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for single-statement reads on hot paths (no ORM, no transaction)."""
        with self._reader.connect() as connection:
            yield connection

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on exit, rolled back on error."""
        with self._factory() as session, session.begin():
            yield session

    def dispose(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()
