"""``S3Storage``: blobs in an S3 bucket (AWS S3 or S3-compatible: Ceph RGW, MinIO, NooBaa).

Objects live under the ``storage_path`` key prefix of ``s3_bucket`` with the layout of
:mod:`portside.storage.layout`.

Uploads are stored as *segments*: every :meth:`S3Storage.append_upload` call writes one
new object ``uploads/<id>/<seq:08d>``. S3 objects cannot be appended to, and a segment
per request (rather than per fixed-size chunk) keeps every request independent: an
interrupted request only ever affects its own segment. The upload state lists the
segments in order::

    {"segments": [{"key": "uploads/<id>/00000000", "size": 12582912},
                  {"key": "uploads/<id>/00000001", "size": 1048576}]}

Keys in the state are relative to ``storage_path``; sizes are always > 0 (an append that
received no bytes creates no segment).

The appender never holds a whole segment in memory: it buffers up to one part (8 MiB),
switches to a multipart upload when the buffer fills and uploads part by part.

Commit (see :meth:`S3Storage.commit_upload`) assembles the segments server-side when S3
allows it (every segment but the last >= 5 MiB) and otherwise streams them through this
process into a new multipart upload, one part-sized buffer at a time.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.config
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from portside.storage import layout
from portside.storage.base import ObjectNotFound, StorageError, UploadState

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
GiB = 1024 * MiB

#: Size of the in-memory buffer, and of each multipart part, used when streaming data.
PART_SIZE = 8 * MiB
#: S3's minimum size for every part of a multipart upload except the last one.
MIN_PART_SIZE = 5 * MiB
#: S3's maximum number of parts in a multipart upload.
MAX_PARTS = 10_000
#: S3's maximum size of one ``UploadPartCopy`` source range.
MAX_COPY_PART_SIZE = 5 * GiB
#: Copies of objects below this size use a single, atomic ``CopyObject`` (limit: 5 GB);
#: larger ones are split by the managed transfer into ``UploadPartCopy`` parts.
COPY_MULTIPART_THRESHOLD = 4 * GiB
COPY_PART_SIZE = 512 * MiB

#: How often a broken download stream is resumed (with a ranged GET) before giving up.
READ_RETRIES = 3

_SEGMENT_RE = re.compile(r"^[0-9]{8}$")
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _http_status(exc: ClientError) -> int | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status if isinstance(status, int) else None


@dataclass(frozen=True)
class _Segment:
    """One object of an upload in progress; ``key`` is relative to the storage path."""

    key: str
    size: int

    @property
    def seq(self) -> int:
        return int(self.key.rsplit("/", 1)[1])

    def as_state(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size}


# Inside S3Storage the method ``list`` shadows the builtin in annotations, hence this alias
# and the ``builtins.list`` spelled out there.
_Segments = list[_Segment]


def build_endpoint_url(host: str, port: int | None = None, is_secure: bool = True) -> str:
    """Turn Quay-style ``host``/``port``/``is_secure`` into an endpoint URL.

    ``host`` is a bare host name or IP address (an IPv6 address may be bracketed or not).
    """
    if "://" in host or "/" in host:
        raise ValueError(
            f"host must be a bare host name, got {host!r}; use endpoint_url for a full URL"
        )
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # a bare IPv6 address
    scheme = "https" if is_secure else "http"
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


class S3Storage:
    """Stores objects in an S3 bucket below the ``storage_path`` key prefix.

    :param s3_bucket: the bucket; it must exist.
    :param s3_access_key: access key id; with ``s3_secret_key`` ``None`` the default
        boto3 credential chain (environment, instance profile, ...) is used.
    :param s3_secret_key: secret access key.
    :param host: host name of an S3-compatible server (Quay's parameter); implies
        path-style addressing.
    :param port: port of ``host``.
    :param is_secure: ``https`` (default) or ``http`` for ``host``.
    :param storage_path: key prefix inside the bucket (leading/trailing ``/`` ignored).
    :param s3_region: signing region; defaults to ``us-east-1`` for custom endpoints.
    :param endpoint_url: full endpoint URL (``https://minio.example:9000``), an
        alternative to ``host``/``port``/``is_secure``; implies path-style addressing.
    :param server_side_assembly: whether commits may use ``UploadPartCopy``; disable for
        servers that lack it (old Ceph RGW releases).
    """

    driver_name: str = "S3Storage"

    def __init__(
        self,
        s3_bucket: str,
        s3_access_key: str | None = None,
        s3_secret_key: str | None = None,
        host: str | None = None,
        port: int | None = None,
        is_secure: bool = True,
        storage_path: str = "",
        s3_region: str | None = None,
        endpoint_url: str | None = None,
        *,
        server_side_assembly: bool = True,
    ) -> None:
        if not s3_bucket:
            raise ValueError("S3Storage: s3_bucket must not be empty")
        # Like Quay, treat "" as unset (common in configurations using IAM roles).
        s3_access_key = s3_access_key or None
        s3_secret_key = s3_secret_key or None
        host = host or None
        endpoint_url = endpoint_url or None
        s3_region = s3_region or None
        if (s3_access_key is None) != (s3_secret_key is None):
            raise ValueError("S3Storage: give both s3_access_key and s3_secret_key, or neither")
        if host and endpoint_url:
            raise ValueError("S3Storage: give either host or endpoint_url, not both")
        if port is not None and not host:
            raise ValueError("S3Storage: port needs host")
        if host:
            endpoint_url = build_endpoint_url(host, port, is_secure)
        self.bucket = s3_bucket
        self.endpoint_url = endpoint_url
        self.server_side_assembly = server_side_assembly
        self._prefix = self._normalise_storage_path(storage_path)

        custom_endpoint = endpoint_url is not None
        config_kwargs: dict[str, Any] = {
            "signature_version": "s3v4",
            "connect_timeout": 10,
            # Part uploads of 8 MiB and server-side copies can take a while on a busy
            # server; a generous read timeout avoids spurious retries of big requests.
            "read_timeout": 120,
            "retries": {"max_attempts": 5, "mode": "standard"},
            # The HTTP layer calls drivers from many worker threads at once.
            "max_pool_connections": 50,
            "tcp_keepalive": True,
        }
        if custom_endpoint:
            # Virtual-host addressing needs wildcard DNS that on-premise servers rarely
            # have; every S3-compatible server understands path-style requests.
            config_kwargs["s3"] = {"addressing_style": "path"}
            # botocore >= 1.36 sends CRC checksums (and aws-chunked bodies) by default,
            # which many S3-compatible servers reject. Blob digests are verified by the
            # registry anyway, so only send checksums where the API requires them.
            config_kwargs["request_checksum_calculation"] = "when_required"
            config_kwargs["response_checksum_validation"] = "when_required"
            if s3_region is None:
                s3_region = "us-east-1"  # SigV4 needs a region; most servers ignore it
        session = boto3.session.Session(
            aws_access_key_id=s3_access_key,
            aws_secret_access_key=s3_secret_key,
            region_name=s3_region,
        )
        self._client = session.client(
            "s3",
            endpoint_url=endpoint_url,
            config=botocore.config.Config(**config_kwargs),
        )
        self._copy_config = TransferConfig(
            multipart_threshold=COPY_MULTIPART_THRESHOLD,
            multipart_chunksize=COPY_PART_SIZE,
            max_concurrency=4,
        )

    def __repr__(self) -> str:
        where = self.endpoint_url or "AWS"
        return f"S3Storage(bucket={self.bucket!r}, prefix={self._prefix!r}, endpoint={where})"

    @staticmethod
    def _normalise_storage_path(storage_path: str) -> str:
        """``"/registry/data/"`` -> ``"registry/data/"``; ``""`` or ``"/"`` -> ``""``."""
        stripped = (storage_path or "").strip("/")
        if not stripped:
            return ""
        layout.check_path(stripped)
        return stripped + "/"

    # --- helpers -----------------------------------------------------------------
    def _key(self, path: str) -> str:
        """The bucket key of the object ``path`` (validated)."""
        return self._prefix + layout.check_path(path)

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Translate boto errors raised in the block into Storage errors naming ``what``."""
        try:
            yield
        except ClientError as exc:
            raise self._translate(exc, what) from exc
        except (BotoCoreError, Boto3Error) as exc:
            raise StorageError(f"S3 {what} failed: {exc}") from exc

    def _translate(self, exc: ClientError, what: str) -> StorageError:
        code = _error_code(exc)
        message = exc.response.get("Error", {}).get("Message") or ""
        if code == "NoSuchBucket":
            return StorageError(f"S3 {what} failed: bucket {self.bucket!r} does not exist")
        if code in _NOT_FOUND_CODES or _http_status(exc) == 404:
            return ObjectNotFound(what)
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StorageError(
                f"S3 {what} failed: access denied ({code}); check the credentials and the "
                f"bucket policy of {self.bucket!r}"
            )
        return StorageError(f"S3 {what} failed: {code or _http_status(exc)} {message}".rstrip())

    def _head(self, key: str) -> int | None:
        """Size of the object ``key`` (full key) or ``None`` if it does not exist."""
        try:
            response = self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND_CODES or _http_status(exc) == 404:
                if _error_code(exc) == "NoSuchBucket":
                    raise self._translate(exc, f"HEAD {key}") from exc
                return None
            raise self._translate(exc, f"HEAD {key}") from exc
        except (BotoCoreError, Boto3Error) as exc:
            raise StorageError(f"S3 HEAD {key} failed: {exc}") from exc
        return int(response["ContentLength"])

    def _get(self, key: str, start: int, end: int | None,
             if_match: str | None = None) -> dict[str, Any] | None:
        """``GetObject`` of bytes ``[start, end)``; ``None`` if the range is empty."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if start or end is not None:
            kwargs["Range"] = f"bytes={start}-" + ("" if end is None else str(end - 1))
        if if_match:
            kwargs["IfMatch"] = if_match
        try:
            response: dict[str, Any] = self._client.get_object(**kwargs)
        except ClientError as exc:
            if _error_code(exc) == "InvalidRange" or _http_status(exc) == 416:
                return None  # start is at or beyond the end of the object
            raise self._translate(exc, f"GET {key}") from exc
        except (BotoCoreError, Boto3Error) as exc:
            raise StorageError(f"S3 GET {key} failed: {exc}") from exc
        return response

    def _stream(self, key: str, response: dict[str, Any] | None, start: int,
                end: int | None, chunk_size: int) -> Iterator[bytes]:
        """Yield the body of ``response`` (bytes ``[start, end)`` of ``key``) in chunks.

        A connection that breaks mid-body is resumed with a ranged GET pinned to the
        object's ETag, so that a long download survives a transient network failure.
        """
        position = start
        failures = 0
        while response is not None:
            etag = response.get("ETag")
            body = response["Body"]
            try:
                for chunk in body.iter_chunks(chunk_size):
                    position += len(chunk)
                    yield chunk
                return
            except BotoCoreError as exc:
                failures += 1
                if failures > READ_RETRIES:
                    raise StorageError(f"S3 GET {key} failed: {exc}") from exc
                logger.warning("resuming broken download of %s at byte %d: %s",
                               key, position, exc)
            finally:
                body.close()
            if end is not None and position >= end:
                return
            response = self._get(key, position, end, if_match=etag)

    def _delete_keys(self, keys: builtins.list[str]) -> None:
        """Delete full ``keys`` in batches of 1000 (missing keys are fine)."""
        for i in range(0, len(keys), 1000):
            batch = keys[i:i + 1000]
            with self._errors(f"DELETE {len(batch)} objects"):
                response = self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                )
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise StorageError(
                    f"S3 DELETE {first.get('Key')} failed: {first.get('Code')} "
                    f"{first.get('Message', '')}".rstrip()
                )

    def _list_keys(self, full_prefix: str) -> Iterator[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        with self._errors(f"LIST {full_prefix}"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                for item in page.get("Contents") or []:
                    yield item["Key"]

    # --- committed objects -------------------------------------------------------
    def stat(self, path: str) -> int | None:
        """Return the size of the object at ``path`` or ``None`` if it does not exist."""
        return self._head(self._key(path))

    def read(self, path: str, offset: int = 0, length: int | None = None,
             chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream ``length`` bytes (all remaining if ``None``) starting at ``offset``.

        The GET request is sent by this call, so :class:`ObjectNotFound` is raised before
        any iteration.
        """
        if offset < 0 or (length is not None and length < 0) or chunk_size <= 0:
            raise ValueError("offset and length must be >= 0 and chunk_size > 0")
        key = self._key(path)
        if length == 0:
            if self._head(key) is None:
                raise ObjectNotFound(path)
            return iter(())
        end = None if length is None else offset + length
        try:
            response = self._get(key, offset, end)
        except ObjectNotFound as exc:
            raise ObjectNotFound(path) from exc
        if response is None and self._head(key) is None:
            raise ObjectNotFound(path)  # a 416 for a missing object: not expected, but safe
        return self._stream(key, response, offset, end, chunk_size)

    def local_path(self, path: str) -> str | None:
        """Objects in S3 have no local path: always ``None``."""
        layout.check_path(path)
        return None

    def download_url(self, path: str, expires_in: int = 600) -> str | None:
        """A pre-signed GET URL valid for ``expires_in`` seconds (max. 7 days).

        No request is made: the object is not checked for existence.
        """
        if not 1 <= expires_in <= 7 * 24 * 3600:
            raise ValueError("expires_in must be between 1 second and 7 days")
        with self._errors(f"presign {path}"):
            url: str = self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self._key(path)},
                ExpiresIn=expires_in,
            )
        return url

    def put_bytes(self, path: str, data: bytes) -> None:
        """Write a small object with one ``PutObject`` (atomic on S3)."""
        key = self._key(path)
        with self._errors(f"PUT {key}"):
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def get_bytes(self, path: str) -> bytes:
        """Read a small object whole. Raises :class:`ObjectNotFound`."""
        return b"".join(self.read(path))

    def delete(self, path: str) -> None:
        """Delete one object; deleting a missing object is not an error."""
        key = self._key(path)
        with self._errors(f"DELETE {key}"):
            self._client.delete_object(Bucket=self.bucket, Key=key)

    def list(self, prefix: str) -> Iterator[str]:
        """Yield the paths of all objects whose path starts with ``prefix`` (sorted)."""
        layout.check_prefix(prefix)
        skip = len(self._prefix)
        return (key[skip:] for key in self._list_keys(self._prefix + prefix))

    # --- resumable uploads -------------------------------------------------------
    def _segments(self, upload_id: str, state: UploadState) -> _Segments:
        """Parse and validate the segment list of ``state``.

        The state comes back from the database; validating it ensures that a corrupted
        state can never make the driver read or delete objects outside the upload.
        """
        directory = layout.upload_dir(upload_id) + "/"
        raw = state.get("segments", []) if isinstance(state, dict) else None
        if not isinstance(raw, list):
            raise StorageError(f"invalid state for upload {upload_id!r}: {state!r}")
        segments: _Segments = []
        for item in raw:
            key = item.get("key") if isinstance(item, dict) else None
            size = item.get("size") if isinstance(item, dict) else None
            if (not isinstance(key, str) or not key.startswith(directory)
                    or not _SEGMENT_RE.fullmatch(key[len(directory):])
                    or not isinstance(size, int) or isinstance(size, bool) or size <= 0):
                raise StorageError(f"invalid segment {item!r} in state of upload {upload_id!r}")
            segments.append(_Segment(key, size))
        return segments

    @staticmethod
    def _segment_key(upload_id: str, seq: int) -> str:
        return f"{layout.upload_dir(upload_id)}/{seq:08d}"

    def start_upload(self, upload_id: str) -> UploadState:
        """Nothing is stored until the first append: returns ``{"segments": []}``."""
        layout.check_upload_id(upload_id)
        return {"segments": []}

    def append_upload(self, upload_id: str, state: UploadState, offset: int) -> S3Appender:
        """Open an appender that writes a new segment continuing the upload at ``offset``.

        Segments of ``state`` that end beyond ``offset`` are dropped from the new state
        (and deleted once the appender is closed successfully, so that the old state stays
        valid if it is aborted). If ``offset`` falls *inside* a segment -- possible only
        when the caller recorded an offset that does not match its state -- the segment's
        first bytes up to ``offset`` are rewritten (streamed) into a new segment, i.e. the
        upload is truncated to ``offset``. An ``offset`` beyond the stored bytes raises
        :class:`StorageError`.

        Unlike ``LocalStorage``, this does not detect a cancelled upload: S3 has no
        per-upload object to check without an extra request.
        """
        if offset < 0:
            raise ValueError("offset must be >= 0")
        segments = self._segments(upload_id, state)
        kept: _Segments = []
        position = 0
        for segment in segments:
            if position + segment.size > offset:
                break
            kept.append(segment)
            position += segment.size
        dropped = segments[len(kept):]
        # New keys are numbered after every key the state knows, so they never collide
        # with a segment that is still referenced. They may overwrite garbage left by an
        # interrupted request, which is what we want.
        next_seq = max((s.seq for s in segments), default=-1) + 1
        created: _Segments = []
        if position < offset:
            if not dropped:
                raise StorageError(
                    f"upload {upload_id!r} has only {position} bytes stored, "
                    f"cannot continue at offset {offset}"
                )
            head = self._copy_head(upload_id, dropped[0], offset - position, next_seq)
            next_seq += 1
            kept.append(head)
            created.append(head)
        return S3Appender(
            self,
            upload_id,
            kept=kept,
            new_key=self._segment_key(upload_id, next_seq),
            created=created,
            obsolete=dropped,
        )

    def _copy_head(self, upload_id: str, source: _Segment, length: int, seq: int) -> _Segment:
        """Stream the first ``length`` bytes of ``source`` into a new segment ``seq``."""
        target = _Segment(self._segment_key(upload_id, seq), length)
        writer = _ObjectWriter(self, self._prefix + target.key, allow_empty=False)
        try:
            copied = 0
            key = self._prefix + source.key
            for chunk in self._stream(key, self._get(key, 0, length), 0, length, PART_SIZE):
                writer.write(chunk)
                copied += len(chunk)
            if copied != length:
                raise StorageError(f"segment {source.key!r} is shorter than its state says")
            writer.close()
        except BaseException:
            writer.abort()
            raise
        return target

    def read_upload(self, upload_id: str, state: UploadState,
                    chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream the segments of ``state`` in order."""
        segments = self._segments(upload_id, state)
        return self._read_segments(segments, chunk_size)

    def _read_segments(self, segments: _Segments, chunk_size: int) -> Iterator[bytes]:
        for segment in segments:
            key = self._prefix + segment.key
            received = 0
            for chunk in self._stream(key, self._get(key, 0, segment.size), 0, segment.size,
                                      chunk_size):
                received += len(chunk)
                yield chunk
            if received != segment.size:
                raise StorageError(
                    f"segment {segment.key!r} has {received} bytes, its state says "
                    f"{segment.size}"
                )

    def commit_upload(self, upload_id: str, state: UploadState, path: str) -> None:
        """Turn the segments into the object at ``path``, then delete them.

        * no segment: an empty object is written;
        * one segment: server-side copy (managed transfer, so segments > 5 GB work);
        * several segments, all but the last >= 5 MiB: a multipart upload assembled
          server-side with ``UploadPartCopy``;
        * otherwise: the segments are streamed through this process into a multipart
          upload in part-sized pieces.

        The object appears atomically (``CopyObject``/``CompleteMultipartUpload``). If it
        already exists, the upload is only discarded.
        """
        destination = self._key(path)
        segments = self._segments(upload_id, state)
        if self._head(destination) is not None:
            self._cleanup_upload(upload_id, segments)
            return
        if not segments:
            with self._errors(f"PUT {destination}"):
                self._client.put_object(Bucket=self.bucket, Key=destination, Body=b"")
        elif len(segments) == 1:
            self._copy_segment(segments[0], destination)
        elif self._can_assemble_server_side(segments):
            self._assemble_server_side(segments, destination)
        else:
            self._concatenate(segments, destination)
        self._cleanup_upload(upload_id, segments)

    def _copy_segment(self, segment: _Segment, destination: str) -> None:
        source = self._prefix + segment.key
        size = self._head(source)
        if size is None:
            raise ObjectNotFound(f"segment {segment.key!r} is missing")
        if size != segment.size:
            raise StorageError(
                f"segment {segment.key!r} has {size} bytes, its state says {segment.size}"
            )
        with self._errors(f"COPY {source} to {destination}"):
            self._client.copy(
                CopySource={"Bucket": self.bucket, "Key": source},
                Bucket=self.bucket,
                Key=destination,
                Config=self._copy_config,
            )

    def _can_assemble_server_side(self, segments: _Segments) -> bool:
        if not self.server_side_assembly:
            return False
        if any(segment.size < MIN_PART_SIZE for segment in segments[:-1]):
            return False
        parts = sum(len(_copy_ranges(segment.size)) for segment in segments)
        return parts <= MAX_PARTS

    def _assemble_server_side(self, segments: _Segments, destination: str) -> None:
        with self._errors(f"multipart upload of {destination}"):
            upload = self._client.create_multipart_upload(Bucket=self.bucket, Key=destination)
        upload_id = upload["UploadId"]
        try:
            parts: builtins.list[dict[str, Any]] = []
            for segment in segments:
                source = self._prefix + segment.key
                # An explicit range copies exactly the recorded size and makes S3 fail
                # (InvalidRange) if the segment is shorter than the state says.
                for start, end in _copy_ranges(segment.size):
                    number = len(parts) + 1
                    with self._errors(f"copy part {number} from {source} to {destination}"):
                        response = self._client.upload_part_copy(
                            Bucket=self.bucket,
                            Key=destination,
                            UploadId=upload_id,
                            PartNumber=number,
                            CopySource={"Bucket": self.bucket, "Key": source},
                            CopySourceRange=f"bytes={start}-{end - 1}",
                        )
                    parts.append({"ETag": response["CopyPartResult"]["ETag"],
                                  "PartNumber": number})
            with self._errors(f"complete multipart upload of {destination}"):
                self._client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=destination,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException:
            self._abort_multipart(destination, upload_id)
            raise

    def _concatenate(self, segments: _Segments, destination: str) -> None:
        writer = _ObjectWriter(self, destination, allow_empty=True)
        try:
            for chunk in self._read_segments(segments, PART_SIZE):
                writer.write(chunk)
            writer.close()
        except BaseException:
            writer.abort()
            raise

    def _abort_multipart(self, key: str, multipart_id: str) -> None:
        """Abort a multipart upload, best effort (called while handling another error)."""
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=key,
                                                UploadId=multipart_id)
        except (ClientError, BotoCoreError) as exc:
            logger.warning("could not abort multipart upload %s of %s: %s",
                           multipart_id, key, exc)

    def _cleanup_upload(self, upload_id: str, segments: _Segments) -> None:
        """Delete everything of a committed upload; failures only leave garbage."""
        try:
            self._remove_upload(upload_id, segments)
        except StorageError as exc:
            logger.warning("upload %s committed, but cleaning it up failed: %s", upload_id, exc)

    def _remove_upload(self, upload_id: str, segments: _Segments) -> None:
        directory = self._prefix + layout.upload_dir(upload_id) + "/"
        keys = {self._prefix + segment.key for segment in segments}
        # Listing also finds segments of interrupted requests that no state knows about.
        keys.update(self._list_keys(directory))
        self._delete_keys(sorted(keys))
        paginator = self._client.get_paginator("list_multipart_uploads")
        with self._errors(f"LIST multipart uploads {directory}"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=directory):
                for upload in page.get("Uploads") or []:
                    self._abort_multipart(upload["Key"], upload["UploadId"])

    def cancel_upload(self, upload_id: str, state: UploadState) -> None:
        """Delete every segment and abort dangling multipart uploads of the upload."""
        self._remove_upload(upload_id, self._segments(upload_id, state))

    def list_uploads(self) -> Iterator[str]:
        """Yield the ids of uploads with segments or unfinished multipart uploads."""
        uploads = self._prefix + layout.UPLOADS_DIR + "/"
        found: set[str] = set()
        with self._errors(f"LIST {uploads}"):
            objects = self._client.get_paginator("list_objects_v2")
            for page in objects.paginate(Bucket=self.bucket, Prefix=uploads, Delimiter="/"):
                for common in page.get("CommonPrefixes") or []:
                    found.add(common["Prefix"][len(uploads):].rstrip("/"))
            multiparts = self._client.get_paginator("list_multipart_uploads")
            for page in multiparts.paginate(Bucket=self.bucket, Prefix=uploads):
                for upload in page.get("Uploads") or []:
                    found.add(upload["Key"][len(uploads):].split("/", 1)[0])
        return iter(sorted(i for i in found if layout.UPLOAD_ID_RE.fullmatch(i)))


def _copy_ranges(size: int) -> list[tuple[int, int]]:
    """Split ``[0, size)`` into as few equal ranges as ``UploadPartCopy`` allows."""
    count = max(1, math.ceil(size / MAX_COPY_PART_SIZE))
    step = math.ceil(size / count)
    return [(start, min(start + step, size)) for start in range(0, size, step)]


class _ObjectWriter:
    """Streams bytes into one S3 object with at most one part in memory.

    Up to :data:`PART_SIZE` bytes are buffered; once more arrive, a multipart upload is
    started and the full buffer becomes a part. A full buffer is only uploaded when more
    data follows, so the last part is never empty. An object that fits into the buffer is
    written with a single ``PutObject``.
    """

    def __init__(self, storage: S3Storage, key: str, *, allow_empty: bool) -> None:
        self._storage = storage
        self._client = storage._client
        self._bucket = storage.bucket
        self.key = key
        self._allow_empty = allow_empty
        self._buffer = bytearray()
        self._multipart_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self.size = 0

    def _part_size(self) -> int:
        # Grow the part size every 1000 parts so that the 10000-part limit allows
        # objects of ~440 GB at the cost of a larger buffer only for huge objects.
        return PART_SIZE * (1 + len(self._parts) // 1000)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if len(self._buffer) >= self._part_size():
                self._upload_part()
            take = self._part_size() - len(self._buffer)
            self._buffer += view[:take]
            view = view[take:]
        self.size += len(data)

    def _upload_part(self) -> None:
        if self._multipart_id is None:
            with self._storage._errors(f"multipart upload of {self.key}"):
                response = self._client.create_multipart_upload(Bucket=self._bucket,
                                                                 Key=self.key)
            self._multipart_id = response["UploadId"]
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            raise StorageError(f"object {self.key} exceeds {MAX_PARTS} parts")
        with self._storage._errors(f"upload part {number} of {self.key}"):
            response = self._client.upload_part(
                Bucket=self._bucket, Key=self.key, UploadId=self._multipart_id,
                PartNumber=number, Body=bytes(self._buffer),
            )
        self._parts.append({"ETag": response["ETag"], "PartNumber": number})
        self._buffer.clear()

    def close(self) -> bool:
        """Finish the object; return whether one was written (not for empty segments)."""
        if self._multipart_id is None:
            if not self._buffer and not self._allow_empty:
                return False
            with self._storage._errors(f"PUT {self.key}"):
                self._client.put_object(Bucket=self._bucket, Key=self.key,
                                        Body=bytes(self._buffer))
            self._buffer.clear()
            return True
        self._upload_part()
        with self._storage._errors(f"complete multipart upload of {self.key}"):
            self._client.complete_multipart_upload(
                Bucket=self._bucket, Key=self.key, UploadId=self._multipart_id,
                MultipartUpload={"Parts": self._parts},
            )
        self._multipart_id = None
        return True

    def abort(self) -> None:
        """Discard buffered data and abort the multipart upload, if any (best effort)."""
        self._buffer = bytearray()
        if self._multipart_id is not None:
            self._storage._abort_multipart(self.key, self._multipart_id)
            self._multipart_id = None


class S3Appender:
    """Writes one new segment; see :meth:`S3Storage.append_upload`."""

    def __init__(self, storage: S3Storage, upload_id: str, *, kept: list[_Segment],
                 new_key: str, created: list[_Segment], obsolete: list[_Segment]) -> None:
        self._storage = storage
        self._upload_id = upload_id
        self._kept = kept
        self._new_key = new_key
        self._created = created
        self._obsolete = obsolete
        self._writer = _ObjectWriter(storage, storage._prefix + new_key, allow_empty=False)
        self._result: UploadState | None = None
        self._finished = False

    def write(self, data: bytes) -> None:
        """Buffer ``data``; full 8 MiB parts are uploaded as they fill."""
        if self._finished:
            raise StorageError(f"appender for upload {self._upload_id!r} is closed")
        self._writer.write(data)

    def close(self) -> UploadState:
        """Finish the segment and return the new state. Idempotent.

        If nothing was written no segment is created. Segments dropped because of a
        lower ``offset`` are deleted now (failures there only leave garbage that
        ``commit_upload``/``cancel_upload`` remove later).
        """
        if self._result is not None:
            return self._result
        if self._finished:
            raise StorageError(f"appender for upload {self._upload_id!r} was aborted")
        try:
            created = self._writer.close()
        except BaseException:
            self.abort()
            raise
        segments = list(self._kept)
        if created:
            segments.append(_Segment(self._new_key, self._writer.size))
        self._finished = True
        self._result = {"segments": [segment.as_state() for segment in segments]}
        if self._obsolete:
            try:
                self._storage._delete_keys(
                    [self._storage._prefix + segment.key for segment in self._obsolete]
                )
            except StorageError as exc:
                logger.warning("could not delete dropped segments of upload %s: %s",
                               self._upload_id, exc)
        return self._result

    def abort(self) -> None:
        """Discard the new segment (and a rewritten head segment); the old state stays valid.

        A no-op after a successful :meth:`close`.
        """
        if self._finished:
            return
        self._finished = True
        self._writer.abort()
        keys = [self._storage._prefix + segment.key for segment in self._created]
        if self._writer.size:
            # A PutObject/CompleteMultipartUpload may have succeeded before the failure.
            keys.append(self._writer.key)
        if not keys:
            return
        try:
            self._storage._delete_keys(keys)
        except StorageError as exc:
            logger.warning("could not delete aborted segment of upload %s: %s",
                           self._upload_id, exc)
