"""One behavioural suite for every storage driver (see the ``storage`` fixture).

The S3 variant talks HTTP to a real moto server; nothing is mocked.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import pytest

from portside.storage import (
    LocalStorage,
    ObjectNotFound,
    StorageDriver,
    StorageError,
    UploadState,
    blob_path,
)
from portside.storage.s3 import S3Storage
from support.s3server import S3Endpoint

MiB = 1024 * 1024


class MakeS3(Protocol):
    """The ``make_s3`` fixture: a fresh S3Storage on the test server."""

    def __call__(self, bucket: str | None = None, **kwargs: object) -> S3Storage: ...


@contextlib.contextmanager
def s3_operations(storage: StorageDriver) -> Iterator[list[str]]:
    """Record the names of the S3 API operations ``storage`` calls (nothing for local).

    Lets the shared tests check that S3 took the intended path (multipart upload,
    server-side copy, ...) using botocore's own event hooks, not a mock.
    """
    operations: list[str] = []
    if not isinstance(storage, S3Storage):
        yield operations
        return

    def record(model: Any, **kwargs: Any) -> None:
        operations.append(model.name)

    events = storage._client.meta.events
    events.register("before-call.s3", record)
    try:
        yield operations
    finally:
        events.unregister("before-call.s3", record)


def new_id() -> str:
    return str(uuid.uuid4())


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def append(storage: StorageDriver, upload_id: str, state: UploadState, offset: int,
           *chunks: bytes) -> UploadState:
    """One append request writing ``chunks``; returns the new state."""
    appender = storage.append_upload(upload_id, state, offset)
    for chunk in chunks:
        appender.write(chunk)
    return appender.close()


def upload(storage: StorageDriver, upload_id: str, requests: Iterable[bytes]) -> UploadState:
    """Start an upload and send each item of ``requests`` as its own append request."""
    state = storage.start_upload(upload_id)
    offset = 0
    for body in requests:
        state = append(storage, upload_id, state, offset, body)
        offset += len(body)
    return state


def read_all(storage: StorageDriver, upload_id: str, state: UploadState) -> bytes:
    return b"".join(storage.read_upload(upload_id, state))


def commit_and_check(storage: StorageDriver, upload_id: str, state: UploadState,
                     expected: bytes) -> None:
    """Commit to the blob path of ``expected`` and verify the bytes and the cleanup."""
    path = blob_path(digest_of(expected))
    storage.commit_upload(upload_id, state, path)
    assert storage.stat(path) == len(expected)
    stored = hashlib.sha256()
    for chunk in storage.read(path, chunk_size=MiB):
        stored.update(chunk)
    assert "sha256:" + stored.hexdigest() == digest_of(expected)
    assert upload_id not in set(storage.list_uploads())
    assert list(storage.list("uploads/")) == []


# --- committed objects -------------------------------------------------------------


def test_implements_protocol(storage: StorageDriver) -> None:
    assert isinstance(storage, StorageDriver)
    assert storage.driver_name in ("LocalStorage", "S3Storage")


def test_put_get_stat_delete(storage: StorageDriver) -> None:
    assert storage.stat("a/b/c") is None
    storage.put_bytes("a/b/c", b"hello")
    assert storage.stat("a/b/c") == 5
    assert storage.get_bytes("a/b/c") == b"hello"

    storage.put_bytes("a/b/c", b"replaced")
    assert storage.get_bytes("a/b/c") == b"replaced"

    storage.put_bytes("empty", b"")
    assert storage.stat("empty") == 0
    assert storage.get_bytes("empty") == b""

    storage.delete("a/b/c")
    assert storage.stat("a/b/c") is None
    storage.delete("a/b/c")  # deleting a missing object is fine
    # A "directory" is not an object.
    storage.put_bytes("dir/file", b"x")
    assert storage.stat("dir") is None


def test_list(storage: StorageDriver) -> None:
    paths = ["sha256/ab/ab01", "sha256/ab/ab02", "sha256/cd/cd01", "sha512/ab/ab03", "other"]
    for path in paths:
        storage.put_bytes(path, path.encode())
    assert sorted(storage.list("")) == sorted(paths)
    assert sorted(storage.list("sha256/")) == paths[:3]
    assert sorted(storage.list("sha256/ab/")) == paths[:2]
    assert sorted(storage.list("sha256/a")) == paths[:2]
    assert sorted(storage.list("sha")) == sorted(paths[:4])
    assert list(storage.list("nothing/")) == []


def test_read_ranges_and_chunks(storage: StorageDriver) -> None:
    data = os.urandom(1000)
    storage.put_bytes("blob", data)

    chunks = list(storage.read("blob", chunk_size=64))
    assert b"".join(chunks) == data
    assert all(0 < len(chunk) <= 64 for chunk in chunks)
    assert len(chunks) == 16

    assert b"".join(storage.read("blob", offset=100, length=50)) == data[100:150]
    assert b"".join(storage.read("blob", offset=990)) == data[990:]
    assert b"".join(storage.read("blob", offset=990, length=100)) == data[990:]
    assert b"".join(storage.read("blob", offset=1000)) == b""
    assert b"".join(storage.read("blob", offset=5000)) == b""
    assert b"".join(storage.read("blob", offset=10, length=0)) == b""
    assert b"".join(storage.read("blob", offset=1, length=7, chunk_size=3)) == data[1:8]
    with pytest.raises(ValueError):
        storage.read("blob", offset=-1)


def test_missing_object(storage: StorageDriver) -> None:
    # read() raises on the call itself, before anything is iterated.
    with pytest.raises(ObjectNotFound):
        storage.read("no/such/object")
    with pytest.raises(ObjectNotFound):
        storage.read("no/such/object", offset=3, length=0)
    with pytest.raises(ObjectNotFound):
        storage.get_bytes("no/such/object")
    assert storage.stat("no/such/object") is None
    assert storage.local_path("no/such/object") is None


@pytest.mark.parametrize(
    "path", ["", "/etc/passwd", "../escape", "a/../../escape", "a/./b", "a//b", "a/", "a\\b"]
)
def test_unsafe_paths_are_refused(storage: StorageDriver, path: str) -> None:
    with pytest.raises(ValueError):
        storage.put_bytes(path, b"x")
    with pytest.raises(ValueError):
        storage.stat(path)
    with pytest.raises(ValueError):
        storage.read(path)
    with pytest.raises(ValueError):
        storage.delete(path)


@pytest.mark.parametrize("upload_id", ["", "..", "../x", "a/b", "a.b", "x" * 65])
def test_unsafe_upload_ids_are_refused(storage: StorageDriver, upload_id: str) -> None:
    with pytest.raises(ValueError):
        storage.start_upload(upload_id)
    with pytest.raises(ValueError):
        storage.cancel_upload(upload_id, {})


def test_local_path_and_download_url(storage: StorageDriver) -> None:
    data = os.urandom(3000)
    storage.put_bytes("sha256/ab/x", data)
    if isinstance(storage, LocalStorage):
        path = storage.local_path("sha256/ab/x")
        assert path is not None and os.path.isabs(path)
        with open(path, "rb") as fh:
            assert fh.read() == data
        assert storage.download_url("sha256/ab/x") is None
    else:
        assert storage.local_path("sha256/ab/x") is None
        url = storage.download_url("sha256/ab/x", expires_in=60)
        assert url is not None and url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.read() == data


# --- uploads -------------------------------------------------------------------------


def test_upload_in_several_appends(storage: StorageDriver) -> None:
    upload_id = new_id()
    state = storage.start_upload(upload_id)
    parts = [b"first-", b"", b"second-", os.urandom(10_000), b"last"]
    offset = 0
    for body in parts:
        # Several writes per request, as the HTTP layer streams the body in chunks.
        state = append(storage, upload_id, state, offset, body[:3], body[3:])
        offset += len(body)
        assert read_all(storage, upload_id, state) == b"".join(parts)[:offset]
    assert upload_id in set(storage.list_uploads())
    commit_and_check(storage, upload_id, state, b"".join(parts))


def test_empty_upload(storage: StorageDriver) -> None:
    upload_id = new_id()
    state = storage.start_upload(upload_id)
    state = append(storage, upload_id, state, 0)  # a request without body
    assert read_all(storage, upload_id, state) == b""
    if isinstance(storage, S3Storage):
        assert state == {"segments": []}  # no segment for an empty append
    commit_and_check(storage, upload_id, state, b"")
    assert storage.get_bytes(blob_path(digest_of(b""))) == b""


def test_close_is_idempotent_and_final(storage: StorageDriver) -> None:
    upload_id = new_id()
    state = storage.start_upload(upload_id)
    appender = storage.append_upload(upload_id, state, 0)
    appender.write(b"abc")
    state = appender.close()
    assert appender.close() == state
    appender.abort()  # after a successful close: no effect
    with pytest.raises(StorageError):
        appender.write(b"more")
    assert read_all(storage, upload_id, state) == b"abc"


def test_abort_keeps_previous_state(storage: StorageDriver) -> None:
    upload_id = new_id()
    state = upload(storage, upload_id, [b"hello "])
    appender = storage.append_upload(upload_id, state, 6)
    appender.write(b"garbage that must disappear")
    appender.abort()
    assert read_all(storage, upload_id, state) == b"hello "
    state = append(storage, upload_id, state, 6, b"world")
    commit_and_check(storage, upload_id, state, b"hello world")


def test_disconnect_mid_body_is_resumable(storage: StorageDriver) -> None:
    """A client that goes away mid-body: close() keeps what arrived, upload resumes."""
    upload_id = new_id()
    data = os.urandom(50_000)
    state = upload(storage, upload_id, [data[:10_000]])
    appender = storage.append_upload(upload_id, state, 10_000)
    appender.write(data[10_000:12_345])
    state = appender.close()  # what the HTTP layer does on disconnect
    assert read_all(storage, upload_id, state) == data[:12_345]
    state = append(storage, upload_id, state, 12_345, data[12_345:])
    commit_and_check(storage, upload_id, state, data)


def test_unrecorded_append_is_discarded(storage: StorageDriver) -> None:
    """A request that wrote and closed but whose new state never got recorded."""
    upload_id = new_id()
    state = upload(storage, upload_id, [b"kept-"])
    lost_state = append(storage, upload_id, state, 5, b"lost bytes")
    assert read_all(storage, upload_id, lost_state) == b"kept-lost bytes"
    # The caller still has the old state and offset: the lost bytes are discarded.
    state = append(storage, upload_id, state, 5, b"real")
    assert read_all(storage, upload_id, state) == b"kept-real"
    commit_and_check(storage, upload_id, state, b"kept-real")


def test_lower_offset_discards_tail(storage: StorageDriver) -> None:
    upload_id = new_id()
    state = upload(storage, upload_id, [b"abcdef", b"ghij"])
    # At a request boundary.
    rewound = append(storage, upload_id, state, 6, b"XY")
    assert read_all(storage, upload_id, rewound) == b"abcdefXY"
    # Inside what one request wrote.
    rewound = append(storage, upload_id, rewound, 3, b"Z")
    assert read_all(storage, upload_id, rewound) == b"abcZ"
    # Back to zero, writing nothing.
    rewound = append(storage, upload_id, rewound, 0)
    assert read_all(storage, upload_id, rewound) == b""
    rewound = append(storage, upload_id, rewound, 0, b"fresh")
    commit_and_check(storage, upload_id, rewound, b"fresh")


def test_offset_beyond_stored_bytes_is_refused(storage: StorageDriver) -> None:
    upload_id = new_id()
    state = upload(storage, upload_id, [b"abc"])
    with pytest.raises(StorageError):
        storage.append_upload(upload_id, state, 4)


def test_commit_small_segments(storage: StorageDriver) -> None:
    upload_id = new_id()
    requests = [b"a", os.urandom(1000), b"bc", os.urandom(70_000)]
    state = upload(storage, upload_id, requests)
    with s3_operations(storage) as operations:
        commit_and_check(storage, upload_id, state, b"".join(requests))
    if isinstance(storage, S3Storage):
        assert "PutObject" in operations  # fits into one buffer: a single PutObject
        assert "CreateMultipartUpload" not in operations


def test_commit_big_segments(storage: StorageDriver) -> None:
    """Two segments >= 5 MiB: S3 assembles them server-side with UploadPartCopy."""
    upload_id = new_id()
    requests = [os.urandom(6 * MiB), os.urandom(6 * MiB + 123)]
    state = upload(storage, upload_id, requests)
    with s3_operations(storage) as operations:
        commit_and_check(storage, upload_id, state, b"".join(requests))
    if isinstance(storage, S3Storage):
        assert operations.count("UploadPartCopy") == 2
        assert "UploadPart" not in operations


def test_commit_mixed_segments(storage: StorageDriver) -> None:
    """A small segment in the middle: S3 streams everything into a new multipart upload."""
    upload_id = new_id()
    requests = [os.urandom(6 * MiB), os.urandom(MiB), os.urandom(5 * MiB)]
    state = upload(storage, upload_id, requests)
    with s3_operations(storage) as operations:
        commit_and_check(storage, upload_id, state, b"".join(requests))
    if isinstance(storage, S3Storage):
        assert operations.count("UploadPart") == 2  # 8 MiB + 4 MiB
        assert "UploadPartCopy" not in operations


def test_commit_one_large_append(storage: StorageDriver) -> None:
    """One request bigger than a part: S3 writes the segment as a multipart upload."""
    upload_id = new_id()
    data = os.urandom(12 * MiB + 5)
    state = storage.start_upload(upload_id)
    with s3_operations(storage) as operations:
        appender = storage.append_upload(upload_id, state, 0)
        view = memoryview(data)
        for start in range(0, len(data), 1_000_003):  # odd chunk sizes across part borders
            appender.write(bytes(view[start:start + 1_000_003]))
        state = appender.close()
    if isinstance(storage, S3Storage):
        assert state["segments"][0]["size"] == len(data)
        assert operations == ["CreateMultipartUpload", "UploadPart", "UploadPart",
                              "CompleteMultipartUpload"]
    with s3_operations(storage) as operations:
        commit_and_check(storage, upload_id, state, data)
    if isinstance(storage, S3Storage):
        assert "CopyObject" in operations  # one segment: a server-side copy


def test_commit_when_destination_exists(storage: StorageDriver) -> None:
    data = b"same content"
    path = blob_path(digest_of(data))
    storage.put_bytes(path, data)
    upload_id = new_id()
    state = upload(storage, upload_id, [data])
    storage.commit_upload(upload_id, state, path)
    assert storage.get_bytes(path) == data
    assert upload_id not in set(storage.list_uploads())
    assert list(storage.list("uploads/")) == []


def test_cancel(storage: StorageDriver) -> None:
    upload_id = new_id()
    state = upload(storage, upload_id, [b"one", b"two"])
    other = new_id()
    other_state = upload(storage, other, [b"other"])
    storage.cancel_upload(upload_id, state)
    assert set(storage.list_uploads()) == {other}
    with pytest.raises(ObjectNotFound):
        read_all(storage, upload_id, state)
    storage.cancel_upload(upload_id, state)  # cancelling twice is fine
    storage.cancel_upload(new_id(), {})  # so is cancelling an unknown upload
    assert read_all(storage, other, other_state) == b"other"


def test_list_uploads(storage: StorageDriver) -> None:
    assert list(storage.list_uploads()) == []
    ids = {new_id() for _ in range(3)}
    for upload_id in ids:
        upload(storage, upload_id, [b"data"])
    storage.put_bytes(blob_path(digest_of(b"x")), b"x")  # blobs are not uploads
    assert set(storage.list_uploads()) == ids


# --- driver specifics -----------------------------------------------------------------


def test_local_objects_live_below_root(tmp_path: os.PathLike[str]) -> None:
    root = os.path.join(tmp_path, "root")
    storage = LocalStorage(root)
    digest = digest_of(b"blob")
    storage.put_bytes(blob_path(digest), b"blob")
    hex_digest = digest.split(":")[1]
    expected = os.path.join(root, "sha256", hex_digest[:2], hex_digest)
    assert storage.local_path(blob_path(digest)) == expected
    # No temporary files are left behind.
    assert os.listdir(os.path.dirname(expected)) == [hex_digest]

    upload_id = new_id()
    state = storage.start_upload(upload_id)
    assert state == {"size": 0}
    assert os.path.isfile(os.path.join(root, "uploads", upload_id, "data"))
    state = append(storage, upload_id, state, 0, b"12345")
    assert state == {"size": 5}


def test_local_append_to_missing_upload(tmp_path: os.PathLike[str]) -> None:
    storage = LocalStorage(os.path.join(tmp_path, "root"))
    with pytest.raises(ObjectNotFound):
        storage.append_upload(new_id(), {"size": 0}, 0)


def test_s3_segments_state(make_s3: MakeS3, s3_endpoint: S3Endpoint,
                           s3_bucket: str) -> None:
    storage = make_s3()
    upload_id = new_id()
    state = upload(storage, upload_id, [b"abc", b"de"])
    assert state == {"segments": [
        {"key": f"uploads/{upload_id}/00000000", "size": 3},
        {"key": f"uploads/{upload_id}/00000001", "size": 2},
    ]}
    # Rewinding into the first segment: the head is rewritten, the rest deleted on close.
    state = append(storage, upload_id, state, 2, b"X")
    assert state == {"segments": [
        {"key": f"uploads/{upload_id}/00000002", "size": 2},
        {"key": f"uploads/{upload_id}/00000003", "size": 1},
    ]}
    assert sorted(storage.list(f"uploads/{upload_id}/")) == [
        f"uploads/{upload_id}/00000002", f"uploads/{upload_id}/00000003"]
    assert read_all(storage, upload_id, state) == b"abX"
    # A state pointing outside the upload is refused rather than followed.
    with pytest.raises(StorageError):
        storage.read_upload(upload_id, {"segments": [{"key": "sha256/ab/x", "size": 1}]})
    with pytest.raises(StorageError):
        storage.cancel_upload(upload_id, {"segments": [{"key": "uploads/other/0", "size": 1}]})


def test_s3_crashed_multipart_is_cleaned_up(make_s3: MakeS3, s3_endpoint: S3Endpoint,
                                            s3_bucket: str) -> None:
    """An appender that died mid-part leaves a multipart upload; cancel aborts it."""
    storage = make_s3()
    upload_id = new_id()
    state = upload(storage, upload_id, [b"abc"])
    appender = storage.append_upload(upload_id, state, 3)
    appender.write(os.urandom(9 * MiB))  # uploads a first part; then the process "dies"
    client = s3_endpoint.client()

    def dangling() -> list[str]:
        response = client.list_multipart_uploads(Bucket=s3_bucket, Prefix=storage._prefix)
        return [item["Key"] for item in response.get("Uploads", [])]

    assert dangling() == [f"{storage._prefix}uploads/{upload_id}/00000001"]
    assert upload_id in set(storage.list_uploads())
    storage.cancel_upload(upload_id, state)
    assert dangling() == []
    assert list(storage.list_uploads()) == []


def test_s3_client_side_assembly(make_s3: MakeS3) -> None:
    """With server_side_assembly disabled (old Ceph RGW) big segments are streamed."""
    storage = make_s3(server_side_assembly=False)
    upload_id = new_id()
    requests = [os.urandom(5 * MiB), os.urandom(4 * MiB)]
    state = upload(storage, upload_id, requests)
    with s3_operations(storage) as operations:
        commit_and_check(storage, upload_id, state, b"".join(requests))
    assert "UploadPartCopy" not in operations
    assert operations.count("UploadPart") == 2


def test_s3_missing_bucket_is_a_clear_error(make_s3: MakeS3) -> None:
    storage = make_s3(bucket="no-such-bucket-" + uuid.uuid4().hex[:8])
    with pytest.raises(StorageError, match="does not exist") as excinfo:
        storage.put_bytes("x", b"x")
    assert not isinstance(excinfo.value, ObjectNotFound)
