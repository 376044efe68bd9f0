"""Restoring a backup archive onto a fresh root directory.

The restored ``config.yaml`` is the backed-up one with what belongs to the new root
rewritten: a SQLite ``DB_URI`` points at ``<root>/data/portside.db`` (a PostgreSQL backup
goes into the empty database ``--db-uri`` names, or the one it came from), every
``LocalStorage`` location that the archive holds gets ``<root>/data/storage/<location>``,
and a generated database secret becomes an explicit ``DATABASE_SECRET_KEY`` (robot
tokens, upstream credentials and OAuth secrets stay readable). Object-storage locations
are left pointing where they pointed.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from portside.backup.archive import FORMAT_VERSION
from portside.backup.database import BackupError, restore_database

__all__ = ["RestoreSummary", "restore_backup"]


@dataclass(frozen=True)
class RestoreSummary:
    """Where the restored registry's config is, and what needs the operator."""

    config_path: Path
    database: str
    skipped_locations: list[str]


def _member(tar: tarfile.TarFile, name: str) -> bytes | None:
    try:
        handle = tar.extractfile(name)
    except KeyError:
        return None
    return handle.read() if handle is not None else None


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def restore_backup(archive: Path, root: Path, db_uri: str | None = None,
                   progress: Callable[[str], None] = lambda _line: None) -> RestoreSummary:
    """Restore ``archive`` into ``root`` (new or empty); see the module docstring. A
    failed restore leaves ``root`` empty again (PostgreSQL: one transaction)."""
    root = root.resolve()
    if root.exists() and any(root.iterdir()):
        raise BackupError(f"{root} is not empty; restore onto a new or empty directory")
    try:
        return _restore(archive, root, db_uri, progress)
    except BaseException:
        if root.exists():
            for child in root.iterdir():
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise


def _restore(archive: Path, root: Path, db_uri: str | None,
             progress: Callable[[str], None]) -> RestoreSummary:
    try:
        tar = tarfile.open(archive, "r:")  # noqa: SIM115 - closed by the with below
    except (OSError, tarfile.TarError) as exc:
        raise BackupError(f"{archive} is not a Portside backup: {exc}") from None
    with tar:
        manifest_bytes = _member(tar, "backup.json")
        config_bytes = _member(tar, "config/config.yaml")
        if manifest_bytes is None or config_bytes is None:
            raise BackupError(f"{archive} is not a complete Portside backup")
        manifest: dict[str, Any] = json.loads(manifest_bytes)
        if manifest.get("format") != FORMAT_VERSION:
            raise BackupError(f"unsupported backup format {manifest.get('format')!r}")
        config: dict[str, Any] = yaml.safe_load(config_bytes) or {}
        kind = str(manifest["database"])
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o700)
        data = root / "data"
        data.mkdir(exist_ok=True)

        if kind == "sqlite":
            target_uri = db_uri or f"sqlite:///{data / 'portside.db'}"
        else:
            target_uri = db_uri or str(config.get("DB_URI", ""))
        progress("restoring the database")
        with tempfile.TemporaryDirectory() as scratch:
            name = "database/portside.db" if kind == "sqlite" else "database/portside.pgdump"
            try:
                source = tar.extractfile(name)
            except KeyError:
                source = None
            if source is None:
                raise BackupError(f"{archive} has no {name}")
            dump_path = Path(scratch) / "dump"
            with dump_path.open("wb") as handle:
                shutil.copyfileobj(source, handle, 1 << 20)  # never whole in memory
            restore_database(kind, dump_path, target_uri)
        config["DB_URI"] = target_uri

        secret = _member(tar, "config/database-secret-key")
        if not config.get("DATABASE_SECRET_KEY") and secret is not None:
            config["DATABASE_SECRET_KEY"] = secret.decode().strip()

        storage = dict(config.get("DISTRIBUTED_STORAGE_CONFIG") or {})
        for location in manifest.get("locations", []):
            progress(f"restoring the blobs of storage location {location}")
            target = data / "storage" / location
            prefix = f"storage/{location}/"
            members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile()]
            for member in members:
                member.name = member.name[len(prefix):]
            target.mkdir(parents=True, exist_ok=True)
            # The "data" filter refuses absolute paths, "..", links out of the target
            # and special files: an archive cannot write outside the new root.
            tar.extractall(target, members=members, filter="data")
            driver, params = storage.get(location, ["LocalStorage", {}])
            storage[location] = [driver, {**dict(params), "storage_path": str(target)}]
        config["DISTRIBUTED_STORAGE_CONFIG"] = storage

    config_path = root / "config.yaml"
    _write_private(config_path, yaml.safe_dump(config, sort_keys=True))
    return RestoreSummary(config_path, kind, list(manifest.get("skipped_locations", [])))


