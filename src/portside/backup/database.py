"""Copying the database in and out of a backup with the tools made for it: SQLite's
online backup API and PostgreSQL's ``pg_dump``/``pg_restore`` (both consistent
snapshots taken while the registry keeps writing).

Credentials reach the PostgreSQL tools through ``PG*`` environment variables, never
their command lines, so they do not show in process lists.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy.engine import make_url

__all__ = ["BackupError", "database_kind", "dump_database", "restore_database",
           "sqlite_file"]


class BackupError(Exception):
    """A backup or restore step failed; the message says which and why."""


def database_kind(db_uri: str) -> str:
    """``sqlite`` or ``postgresql``."""
    backend = make_url(db_uri).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise BackupError(f"cannot back up a {backend} database")
    return backend


def sqlite_file(db_uri: str) -> Path:
    """The database file of a ``sqlite:///PATH`` URI."""
    database = make_url(db_uri).database
    if not database or database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up")
    return Path(database)


def _pg_env(db_uri: str) -> dict[str, str]:
    url = make_url(db_uri)
    env = dict(os.environ)
    for name, value in (("PGHOST", url.host), ("PGPORT", url.port),
                        ("PGUSER", url.username), ("PGPASSWORD", url.password),
                        ("PGDATABASE", url.database)):
        if value is not None:
            env[name] = str(value)
    return env


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(f"{name} is not installed (apt-get install postgresql-client)")
    return path


def _run(argv: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise BackupError(f"{Path(argv[0]).name} failed: {lines[-1] if lines else '?'}")


def dump_database(db_uri: str, target: Path) -> str:
    """Write a consistent copy of the database to ``target``; returns the kind."""
    kind = database_kind(db_uri)
    if kind == "sqlite":
        source_path = sqlite_file(db_uri)
        if not source_path.exists():
            raise BackupError(f"the SQLite database {source_path} does not exist")
        source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)
        try:
            destination = sqlite3.connect(target)
            try:
                source.backup(destination)  # page by page, consistent, writers go on
            finally:
                destination.close()
        finally:
            source.close()
    else:
        _run([_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges",
              "--file", str(target)], _pg_env(db_uri))
    return kind


def restore_database(kind: str, dump: Path, db_uri: str) -> None:
    """Load a dump made by :func:`dump_database` into the database ``db_uri`` names
    (a new SQLite file, or an empty PostgreSQL database)."""
    if database_kind(db_uri) != kind:
        raise BackupError(f"the backup holds a {kind} database; restore it into {kind} "
                          "(converting between databases is not supported)")
    if kind == "sqlite":
        target = sqlite_file(db_uri)
        if target.exists():
            raise BackupError(f"{target} already exists")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(dump, target)
        return
    env = _pg_env(db_uri)
    check = subprocess.run(
        [_tool("psql"), "--no-psqlrc", "--tuples-only", "--no-align", "--command",
         "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"],
        env=env, capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise BackupError(f"cannot connect to the target database: "
                          f"{check.stderr.strip().splitlines()[-1:]}")
    if check.stdout.strip() not in ("", "0"):
        raise BackupError("the target PostgreSQL database is not empty")
    _run([_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
          "--single-transaction",
          "--dbname", env.get("PGDATABASE", ""), str(dump)], env)
