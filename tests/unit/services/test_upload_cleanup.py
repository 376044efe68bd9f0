"""``UploadService.cleanup_expired``: abandoned uploads go, live ones stay (fake clock).

``BLOB_UPLOAD_EXPIRATION_S`` is at least 60 s, too slow for a functional test, so the
service is driven directly on a SQLite database and local storage, with its clock moved
forward by hand.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from portside.auth.permissions import Subject
from portside.db.engine import Database, create_db_engine
from portside.db.migrate import upgrade
from portside.db.models import utcnow
from portside.services import uploads as uploads_module
from portside.services.errors import BlobUploadUnknown
from portside.services.repositories import RepositoryService
from portside.services.uploads import UploadService
from portside.services.users import UserService
from portside.storage.local import LocalStorage
from portside.storage.placements import Placements

EXPIRATION_S = 60


class FakeClock:
    """Stands in for ``utcnow`` in the upload service; moved by the test."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The upload service's clock (progress timestamps and the expiry cutoff)."""
    fake = FakeClock()
    monkeypatch.setattr(uploads_module, "utcnow", fake)
    return fake


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    """A local storage folder."""
    return LocalStorage(str(tmp_path / "storage"))


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    """A migrated SQLite database."""
    db = Database(create_db_engine(f"sqlite:///{tmp_path / 'portside.db'}"))
    upgrade(db.engine)
    yield db
    db.dispose()


@pytest.fixture
def service(database: Database, storage: LocalStorage) -> UploadService:
    """The upload service under test."""
    return UploadService(database, Placements({"default": storage}, ["default"]), 1 << 20)


@pytest.fixture
def repository_id(database: Database) -> int:
    """A repository to upload into."""
    owner: Subject = UserService(database, []).create_user("alice", "password1")
    repositories = RepositoryService(database, create_private_on_push=True)
    return repositories.ensure_for_push(owner, "alice", "app").id


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


def append(service: UploadService, repository_id: int, upload_id: str, data: bytes,
           start: int) -> None:
    """Append one chunk (the service's data path is async)."""
    asyncio.run(service.append(repository_id, upload_id, _body(data), start))


def test_cleanup_removes_only_abandoned_uploads(clock: FakeClock, service: UploadService,
                                                storage: LocalStorage,
                                                repository_id: int) -> None:
    abandoned = service.start(repository_id)
    append(service, repository_id, abandoned.id, b"old bytes", 0)
    live = service.start(repository_id)
    append(service, repository_id, live.id, b"first", 0)

    clock.advance(EXPIRATION_S - 10)
    assert service.cleanup_expired(EXPIRATION_S) == 0
    append(service, repository_id, live.id, b" second", 5)  # activity renews the upload

    clock.advance(20)  # abandoned: idle 70 s; live: idle 20 s
    assert service.cleanup_expired(EXPIRATION_S) == 1
    with pytest.raises(BlobUploadUnknown):
        service.status(repository_id, abandoned.id)
    assert set(storage.list_uploads()) == {live.id}

    assert service.status(repository_id, live.id).size == 12
    data = b"first second"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blob = asyncio.run(service.finish(repository_id, live.id, digest))
    assert blob.digest == digest
    assert blob.size == len(data)


def test_cleanup_of_untouched_upload(clock: FakeClock, service: UploadService,
                                     storage: LocalStorage, repository_id: int) -> None:
    started = service.start(repository_id)  # never received a byte
    clock.advance(EXPIRATION_S + 1)
    assert service.cleanup_expired(EXPIRATION_S) == 1
    with pytest.raises(BlobUploadUnknown):
        service.status(repository_id, started.id)
    assert list(storage.list_uploads()) == []


def test_cleanup_removes_storage_data_without_a_row(clock: FakeClock, service: UploadService,
                                                    storage: LocalStorage,
                                                    repository_id: int) -> None:
    live = service.start(repository_id)
    orphan = "0b5e7c1a-6f7d-4f2e-9a59-3f0b8a2c1d4e"
    storage.start_upload(orphan)
    assert set(storage.list_uploads()) == {live.id, orphan}
    assert service.cleanup_expired(EXPIRATION_S) == 1
    assert set(storage.list_uploads()) == {live.id}
    assert service.status(repository_id, live.id).size == 0


def test_cleanup_with_nothing_to_do(clock: FakeClock, service: UploadService) -> None:
    assert service.cleanup_expired(EXPIRATION_S) == 0
