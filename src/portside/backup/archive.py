"""Writing a backup archive while the registry keeps serving.

The archive is an uncompressed tar (blobs are compressed already)::

    backup.json                  what is inside (format version, database kind, locations)
    config/config.yaml           the config file the registry runs with
    config/database-secret-key   the generated secret, when DATABASE_SECRET_KEY is unset
    database/portside.db         SQLite: an online-backup copy
    database/portside.pgdump     PostgreSQL: pg_dump --format=custom
    storage/<location>/...       every object of each LocalStorage location but uploads
                                 in progress

**Consistency.** The database is copied first, as one snapshot; then the blobs. Every
blob the snapshot references was durable before its row was committed, and garbage
collection, the only thing that deletes blobs, is held off for the whole backup by
taking its pass lock (passes that find it taken skip). Blobs pushed after the snapshot
may be included too; they are unreferenced in the restored database and collected there.
Object-storage locations (S3, ...) are not copied: back the bucket up with its own tools
(the archive records which locations it leaves out).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from portside.auth.secrets import secret_file_path
from portside.backup.database import BackupError, dump_database
from portside.config import PortsideConfig
from portside.db.engine import Database, create_db_engine
from portside.services.gc_locks import try_gc_lock
from portside.storage.layout import UPLOADS_DIR

__all__ = ["FORMAT_VERSION", "BackupSummary", "create_backup"]

#: Version of the archive layout; restore refuses versions it does not know.
FORMAT_VERSION = 1
#: How long a backup waits for a running garbage-collection pass to finish.
GC_LOCK_WAIT_S = 600.0


@dataclass(frozen=True)
class BackupSummary:
    """What went into an archive."""

    path: Path
    database: str
    blobs: int
    bytes: int
    skipped_locations: list[str]


def _local_locations(config: PortsideConfig) -> tuple[dict[str, Path], list[str]]:
    local: dict[str, Path] = {}
    skipped: list[str] = []
    for name, (driver, params) in config.DISTRIBUTED_STORAGE_CONFIG.items():
        if driver == "LocalStorage":
            local[name] = Path(str(params["storage_path"]))
        else:
            skipped.append(name)
    return local, skipped


def _add_location(tar: tarfile.TarFile, name: str, root: Path) -> tuple[int, int]:
    """Add every object of a local location but uploads; returns (files, bytes)."""
    files = size = 0
    if not root.is_dir():
        return files, size
    for directory, subdirs, filenames in os.walk(root):
        relative = Path(directory).relative_to(root)
        if relative == Path("."):
            subdirs[:] = sorted(d for d in subdirs if d != UPLOADS_DIR)
        else:
            subdirs.sort()
        for filename in sorted(filenames):
            path = Path(directory) / filename
            try:
                info = tar.gettarinfo(str(path), f"storage/{name}/{relative / filename}")
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
            except FileNotFoundError:
                continue  # a temporary file renamed or removed meanwhile
            files += 1
            size += info.size
    return files, size


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o600) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def create_backup(config: PortsideConfig, config_path: Path | None, output: Path,
                  progress: Callable[[str], None] = lambda _line: None) -> BackupSummary:
    """Write the archive to ``output`` (via a temporary name, renamed when complete)."""
    local, skipped = _local_locations(config)
    partial = output.with_name(output.name + ".partial")
    db = Database(create_db_engine(config.DB_URI, config.DB_CONNECTION_ARGS))
    try:
        with _gc_held_off(db, progress), tempfile.TemporaryDirectory() as scratch, \
                tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            progress("copying the database")
            dump = Path(scratch) / "database"
            kind = dump_database(config.DB_URI, dump)
            tar.add(str(dump), "database/portside.db" if kind == "sqlite"
                    else "database/portside.pgdump")
            dump.unlink()
            # No file: the registry runs on the built-in defaults, and so will the restore.
            _add_bytes(tar, "config/config.yaml",
                       config_path.read_bytes() if config_path is not None else b"{}\n")
            if not config.DATABASE_SECRET_KEY:
                # Without it robot tokens, upstream credentials and OAuth secrets in the
                # database could not be read after a restore: refuse rather than lose them.
                secret = secret_file_path(config.DB_URI)
                if not secret.exists():
                    raise BackupError(
                        f"DATABASE_SECRET_KEY is not set and the generated secret {secret} "
                        f"is not there (relative paths are taken from {Path.cwd()}); run "
                        "the backup in the registry's working directory or set "
                        "DATABASE_SECRET_KEY")
                _add_bytes(tar, "config/database-secret-key", secret.read_bytes())
            files = size = 0
            for name, root in local.items():
                progress(f"copying the blobs of storage location {name}")
                added, added_bytes = _add_location(tar, name, root)
                files, size = files + added, size + added_bytes
            manifest = {
                "format": FORMAT_VERSION,
                "created": datetime.now(UTC).isoformat(),
                "database": kind,
                "locations": sorted(local),
                "skipped_locations": sorted(skipped),
                "files": files,
                "bytes": size,
            }
            _add_bytes(tar, "backup.json", json.dumps(manifest, indent=2).encode(), 0o644)
        os.replace(partial, output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        db.dispose()
    return BackupSummary(output, kind, files, size, sorted(skipped))


@contextlib.contextmanager
def _gc_held_off(db: Database, progress: Callable[[str], None]) -> Iterator[None]:
    """Hold garbage collection's pass lock, waiting for a running pass to end."""
    deadline = time.monotonic() + GC_LOCK_WAIT_S
    told = False
    while True:
        with try_gc_lock(db) as acquired:
            if acquired:
                yield
                return
        if time.monotonic() > deadline:
            raise BackupError("a garbage-collection pass has run for more than "
                              f"{GC_LOCK_WAIT_S:.0f} s; try again later")
        if not told:
            progress("waiting for a garbage-collection pass to finish")
            told = True
        time.sleep(1)
