"""The pull-through proxy cache (``FEATURE_PROXY_CACHE``): what a pull from a
proxy-cache organization does. See docs/proxy-cache.md for the behaviour.

- Manifests by tag: the upstream is asked (``HEAD``) on every pull; the cached copy is
  served when the upstream still has the same digest, refreshed when it moved, and
  served as is when the upstream cannot be reached or refuses us. Each pull renews the
  tag's expiry (now + ``expiration_s``).
- Manifests by digest are immutable: served from the cache once there.
- Blobs not cached yet are streamed to the client *while* being stored through
  :class:`~portside.services.uploads.UploadService` (which verifies the digest); a
  client that goes away ends the download and the partial upload is discarded.

Organization names map to upstream repositories as ``<org>/<path>`` →
``<prefix>/<path>`` (``prefix`` from ``upstream_registry``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import anyio
import anyio.to_thread

from portside.auth.permissions import Subject
from portside.auth.secrets import SecretBox
from portside.db.engine import Database
from portside.oci import manifest as oci_manifest
from portside.oci.digest import is_digest
from portside.services.blobs import BlobService
from portside.services.errors import (
    BlobUnknown,
    BlobUploadUnknown,
    ManifestUnknown,
    RegistryError,
)
from portside.services.manifests import ManifestService, StoredManifest
from portside.services.outbound import OutboundPolicy
from portside.services.proxy_cache_config import ProxyCacheSettings, load_all
from portside.services.proxy_cache_store import (
    CachedRepository,
    ensure_repository,
    link_fetched_blob,
    renew_tag,
    store_manifest,
)
from portside.services.uploads import UploadService
from portside.services.upstream import (
    BlobStream,
    UpstreamClient,
    UpstreamError,
    UpstreamNotFound,
    UpstreamUnavailable,
)

log = logging.getLogger(__name__)

#: Seconds a process trusts its copy of the configurations (changes made through the
#: API on another node take at most this long to apply).
SETTINGS_TTL_S = 5.0
#: Chunks buffered between the client's stream and the store (back-pressure beyond).
TEE_QUEUE_CHUNKS = 8


@dataclass(frozen=True)
class PullContext:
    """Who pulls what: the organization's settings and the repository as looked up."""

    settings: ProxyCacheSettings
    #: The repository name inside the organization (``library/alpine``).
    name: str
    #: The cached repository's id, ``None`` when it does not exist yet.
    repository_id: int | None
    subject: Subject
    ip: str | None

    @property
    def upstream_repository(self) -> str:
        return self.settings.upstream_repository(self.name)


class ProxyCache:
    """Serves pulls of proxy-cache organizations from the cache and the upstream."""

    def __init__(self, db: Database, box: SecretBox, outbound: OutboundPolicy,
                 manifests: ManifestService, blobs: BlobService, uploads: UploadService, *,
                 create_public: bool) -> None:
        self._db = db
        self._box = box
        self._outbound = outbound
        self._manifests = manifests
        self._blobs = blobs
        self._uploads = uploads
        #: Repositories created by a pull are public (``CREATE_PRIVATE_REPO_ON_PUSH``).
        self.create_public = create_public
        self._settings: dict[str, ProxyCacheSettings] = {}
        self._loaded_at = float("-inf")
        self._load_lock = asyncio.Lock()
        self._clients: dict[tuple[object, ...], UpstreamClient] = {}

    # --- configuration ----------------------------------------------------------------
    async def settings_for(self, namespace: str) -> ProxyCacheSettings | None:
        """The organization's configuration (``None``: not a proxy cache)."""
        if time.monotonic() - self._loaded_at > SETTINGS_TTL_S:
            async with self._load_lock:
                if time.monotonic() - self._loaded_at > SETTINGS_TTL_S:
                    self._settings = await anyio.to_thread.run_sync(load_all, self._db,
                                                                    self._box)
                    self._loaded_at = time.monotonic()
        return self._settings.get(namespace)

    def invalidate(self) -> None:
        """Forget the configurations (this process changed one): reload on next use."""
        self._loaded_at = float("-inf")

    async def client_for(self, settings: ProxyCacheSettings) -> UpstreamClient:
        """A shared client for the upstream (connections and tokens are reused).

        ``insecure``: HTTPS without certificate checks, or plain HTTP when the upstream
        does not speak TLS (decided by a first ``/v2/`` request, as docker does).
        """
        key = (settings.namespace_id, settings.upstream_registry, settings.username,
               settings.password, settings.insecure)
        client = self._clients.get(key)
        if client is not None:
            return client
        client = UpstreamClient(settings.upstream_settings(), self._outbound)
        if settings.insecure:
            try:
                await client.ping()
            except UpstreamUnavailable:
                plain = UpstreamClient(settings.upstream_settings(plain_http=True),
                                       self._outbound)
                try:
                    await plain.ping()
                except UpstreamUnavailable:
                    await plain.aclose()
                    return client  # down either way: decide on a later pull
                except UpstreamError:
                    pass
                await client.aclose()
                client = plain
            except UpstreamError:
                pass  # it answered over HTTPS (perhaps 401): HTTPS it is
        for stale in [k for k in self._clients if k[0] == settings.namespace_id]:
            old = self._clients.pop(stale)
            with contextlib.suppress(Exception):
                await old.aclose()
        self._clients[key] = client
        return client

    # --- manifests ----------------------------------------------------------------------
    async def manifest(self, pull: PullContext, reference: str,
                       ) -> tuple[StoredManifest, int]:
        """The manifest to serve for ``reference`` (fetched and cached as needed), and
        the cached repository's id.

        Raises :class:`ManifestUnknown` when neither the cache nor the upstream has it.
        """
        cached = await self._cached_manifest(pull.repository_id, reference)
        if is_digest(reference):
            if cached is not None:
                assert pull.repository_id is not None
                return cached, pull.repository_id
            return await self._fetch_and_store(pull, reference, None, None)
        try:
            client = await self.client_for(pull.settings)
            head = await client.head_manifest(pull.upstream_repository, reference)
        except UpstreamError as exc:
            if cached is None:
                raise ManifestUnknown(
                    f"manifest not cached and the upstream could not be asked: {exc}",
                    {"reference": reference}) from None
            log.warning("proxy cache %s: serving cached %s:%s, upstream failed: %s",
                        pull.settings.namespace, pull.name, reference, exc)
            return await self._renewed(pull, reference, cached)
        if head is None:
            # Gone upstream: not served any more (the cached tag expires on its own).
            raise ManifestUnknown("manifest unknown to the upstream registry",
                                  {"reference": reference})
        if cached is not None and cached.digest == head[0]:
            return await self._renewed(pull, reference, cached)
        return await self._fetch_and_store(pull, head[0], reference, cached)

    async def _renewed(self, pull: PullContext, tag: str,
                       cached: StoredManifest) -> tuple[StoredManifest, int]:
        """Serve a cached tag: its expiry starts anew."""
        assert pull.repository_id is not None
        await anyio.to_thread.run_sync(renew_tag, self._db, pull.repository_id, tag,
                                       pull.settings.expiration_s)
        return cached, pull.repository_id

    async def _cached_manifest(self, repository_id: int | None,
                               reference: str) -> StoredManifest | None:
        if repository_id is None:
            return None
        try:
            return await anyio.to_thread.run_sync(self._manifests.get, repository_id,
                                                  reference)
        except ManifestUnknown:
            return None

    async def _fetch_and_store(self, pull: PullContext, digest: str, tag: str | None,
                               fallback: StoredManifest | None,
                               ) -> tuple[StoredManifest, int]:
        """Fetch ``digest`` from the upstream and store it (tagged ``tag``)."""
        try:
            client = await self.client_for(pull.settings)
            fetched = await client.get_manifest(pull.upstream_repository, digest)
        except UpstreamError as exc:
            if fallback is not None and tag is not None:
                log.warning("proxy cache %s: serving cached %s:%s, fetch failed: %s",
                            pull.settings.namespace, pull.name, tag, exc)
                return await self._renewed(pull, tag, fallback)
            reason = ("unknown to the upstream registry" if isinstance(exc, UpstreamNotFound)
                      else f"not cached and the upstream failed: {exc}")
            raise ManifestUnknown(f"manifest {reason}", {"reference": tag or digest}
                                  ) from None
        if len(fetched.content) > self._manifests.max_manifest_size:
            raise ManifestUnknown("the upstream's manifest exceeds the maximum manifest size",
                                  {"reference": tag or digest})
        try:
            parsed = oci_manifest.parse_manifest(fetched.content, fetched.media_type)
        except (oci_manifest.ManifestInvalid, oci_manifest.ManifestUnsupported) as exc:
            raise ManifestUnknown(f"the upstream's manifest cannot be cached: {exc}",
                                  {"reference": tag or digest}) from None
        repository = await self._repository(pull)
        stored = await anyio.to_thread.run_sync(
            store_manifest, self._db, repository.id, fetched.digest, fetched.content,
            parsed, tag, pull.settings.expiration_s)
        return stored, repository.id

    async def _repository(self, pull: PullContext) -> CachedRepository:
        settings = pull.settings
        return await anyio.to_thread.run_sync(lambda: ensure_repository(
            self._db, settings.namespace_id, settings.namespace, pull.name,
            public=self.create_public, subject=pull.subject, ip=pull.ip))

    # --- blobs --------------------------------------------------------------------------
    async def blob_size(self, pull: PullContext, digest: str) -> int:
        """The size of a blob not cached yet, as the upstream reports it."""
        try:
            client = await self.client_for(pull.settings)
            size = await client.head_blob(pull.upstream_repository, digest)
        except UpstreamError as exc:
            raise BlobUnknown(_blob_reason(exc), {"digest": digest}) from None
        if size is None:
            raise BlobUnknown("blob unknown to the upstream registry", {"digest": digest})
        return size

    async def stream_blob(self, pull: PullContext, digest: str,
                          ) -> tuple[int, AsyncGenerator[bytes, None]]:
        """Start a download of a blob not cached yet: ``(size, chunks)``; the chunks
        are stored as they pass. Raises :class:`BlobUnknown` before anything is sent."""
        try:
            client = await self.client_for(pull.settings)
            stream = await client.open_blob(pull.upstream_repository, digest)
        except UpstreamError as exc:
            raise BlobUnknown(_blob_reason(exc), {"digest": digest}) from None
        try:
            repository = await self._repository(pull)
            upload = await anyio.to_thread.run_sync(self._uploads.start, repository.id)
        except BaseException:
            await _close(stream)
            raise
        return stream.size, self._tee(repository.id, upload.id, stream)

    async def _tee(self, repository_id: int, upload_id: str,
                   stream: BlobStream) -> AsyncGenerator[bytes, None]:
        """Yield the upstream's chunks to the client and feed them to the upload; commit
        the blob (digest verified) when the download completed, discard it otherwise."""
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(TEE_QUEUE_CHUNKS)

        async def body() -> AsyncGenerator[bytes, None]:
            while (chunk := await queue.get()) is not None:
                yield chunk

        store = asyncio.create_task(self._uploads.append(repository_id, upload_id, body()))
        completed = False
        try:
            async for chunk in stream.chunks:
                if not store.done():
                    await _put(queue, chunk, store)
                yield chunk
            completed = True
        except UpstreamError as exc:
            # The client gets a short body and fails on its own; nothing is stored.
            log.warning("proxy cache: upstream failed during blob %s: %s", stream.digest, exc)
        finally:
            with anyio.CancelScope(shield=True):
                if completed:
                    await self._commit(repository_id, upload_id, stream.digest, queue,
                                       store)
                else:
                    store.cancel()
                    with contextlib.suppress(BaseException):
                        await store
                    await self._discard(repository_id, upload_id)
                await _close(stream)

    async def _commit(self, repository_id: int, upload_id: str, digest: str,
                      queue: asyncio.Queue[bytes | None], store: asyncio.Task[object]) -> None:
        if not store.done():
            await _put(queue, None, store)
        try:
            await store
            info = await self._uploads.finish(repository_id, upload_id, digest)
            await anyio.to_thread.run_sync(link_fetched_blob, self._db, repository_id,
                                           info.id, digest)
        except (RegistryError, OSError) as exc:
            # Too large for MAXIMUM_LAYER_SIZE, wrong digest, storage trouble: the client
            # got its bytes, the cache stays without them (finish discards bad bytes).
            log.warning("proxy cache: blob %s not cached: %s", digest, exc)
            await self._discard(repository_id, upload_id)

    async def _discard(self, repository_id: int, upload_id: str) -> None:
        try:
            await anyio.to_thread.run_sync(self._uploads.cancel, repository_id, upload_id)
        except BlobUploadUnknown:
            pass  # finished or cancelled already
        except Exception:
            # The periodic upload cleanup removes it later.
            log.exception("proxy cache: could not discard upload %s", upload_id)

    async def aclose(self) -> None:
        """Close every upstream client."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):
                await client.aclose()


async def _put(queue: asyncio.Queue[bytes | None], item: bytes | None,
               store: asyncio.Task[object]) -> None:
    """Queue ``item`` for the store unless the store ended (then it is dropped)."""
    put = asyncio.ensure_future(queue.put(item))
    await asyncio.wait({put, store}, return_when=asyncio.FIRST_COMPLETED)
    if not put.done():
        put.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await put


async def _close(stream: BlobStream) -> None:
    closer = getattr(stream.chunks, "aclose", None)
    if closer is not None:
        with contextlib.suppress(Exception):
            await closer()


def _blob_reason(exc: UpstreamError) -> str:
    if isinstance(exc, UpstreamNotFound):
        return "blob unknown to the upstream registry"
    return f"blob not cached and the upstream failed: {exc}"
