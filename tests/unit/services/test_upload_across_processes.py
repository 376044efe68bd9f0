"""An upload continued by another process: its hasher is not there, the bytes are.

Two ``UploadService`` instances on one database and storage stand for two server
processes (or nodes) with separate in-memory hasher caches.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from portside.auth.permissions import Subject
from portside.db.engine import Database, create_db_engine
from portside.db.migrate import upgrade
from portside.services.errors import DigestInvalid
from portside.services.repositories import RepositoryService
from portside.services.uploads import UploadService
from portside.services.users import UserService
from portside.storage.local import LocalStorage
from portside.storage.placements import Placements


class CountingStorage(LocalStorage):
    """Local storage that counts how often an upload's bytes are read back."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.read_backs = 0

    def read_upload(self, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        self.read_backs += 1
        return super().read_upload(*args, **kwargs)


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[UploadService, UploadService, CountingStorage, int]]:
    db = Database(create_db_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    upgrade(db.engine)
    owner: Subject = UserService(db, []).create_user("alice", "password1")
    repo = RepositoryService(db, True).ensure_for_push(owner, "alice", "app")
    storage = CountingStorage(str(tmp_path / "storage"))
    placements = Placements({"default": storage}, ["default"])
    yield (UploadService(db, placements, 1 << 30), UploadService(db, placements, 1 << 30),
           storage, repo.id)
    db.dispose()


def test_final_put_on_another_process_needs_no_read_back(
        setup: tuple[UploadService, UploadService, CountingStorage, int]) -> None:
    first, second, storage, repo_id = setup
    data = b"layer-bytes" * 10_000
    upload = first.start(repo_id)
    asyncio.run(first.append(repo_id, upload.id, chunks(data[:50_000], data[50_000:])))
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blob = asyncio.run(second.finish(repo_id, upload.id, digest, chunks()))
    assert blob.digest == digest and blob.size == len(data)
    assert storage.read_backs == 0


def test_chunk_on_another_process_rebuilds_the_hash(
        setup: tuple[UploadService, UploadService, CountingStorage, int]) -> None:
    first, second, storage, repo_id = setup
    upload = first.start(repo_id)
    asyncio.run(first.append(repo_id, upload.id, chunks(b"a" * 1000), start=0))
    asyncio.run(second.append(repo_id, upload.id, chunks(b"b" * 1000), start=1000))
    assert storage.read_backs == 1  # the second process had no hasher for the first chunk
    digest = "sha256:" + hashlib.sha256(b"a" * 1000 + b"b" * 1000).hexdigest()
    assert asyncio.run(first.finish(repo_id, upload.id, digest)).size == 2000


def test_wrong_digest_is_refused_on_another_process(
        setup: tuple[UploadService, UploadService, CountingStorage, int]) -> None:
    first, second, _storage, repo_id = setup
    upload = first.start(repo_id)
    asyncio.run(first.append(repo_id, upload.id, chunks(b"payload")))
    with pytest.raises(DigestInvalid):
        asyncio.run(second.finish(repo_id, upload.id, "sha256:" + "0" * 64, chunks()))
