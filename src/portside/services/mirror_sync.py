"""One sync of a claimed mirror: list the upstream's tags, copy those matching the
rules, remove the tags that no longer match or no longer exist upstream, and record
the outcome.

- **Checkpoints.** Before every tag, manifest and blob the sync checks its claim: a
  ``CANCEL`` asked through the API, or the claim taken over by another worker (its
  lease lapsed), stops it there. A background heartbeat renews the lease meanwhile.
- **Timeout.** The whole sync runs under ``sync_timeout_s``.
- **Failure.** A tag that cannot be copied (bad manifest, missing blob upstream, an
  immutable tag) does not stop the others, but fails the sync; an unreachable upstream
  stops it at once. Stale tags are removed only by a sync whose copies all succeeded.
  A failed or cancelled sync puts back every tag it changed when
  ``REPO_MIRROR_ROLLBACK`` is on, otherwise what was copied stays (best effort).
- **Secrets.** Credentials are decrypted only to build the upstream client; messages
  (``last_error``, logs, events) are built from the upstream client's scrubbed errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from sqlalchemy import select

from portside.auth.permissions import Subject
from portside.auth.secrets import SecretBox, SecretError
from portside.db.engine import Database
from portside.db.models import Namespace, RepoMirrorConfig, Repository, User
from portside.services.audit import AuditContext, record_for_repository
from portside.services.errors import RegistryError
from portside.services.manifests import ManifestService
from portside.services.mirror_copy import (
    ContentCopier,
    TagChanges,
    current_tags,
    rollback_tags,
)
from portside.services.mirror_rules import matching_tags
from portside.services.mirror_scheduler import Claim, finish, heartbeat, state_of
from portside.services.notification_events import emit_event
from portside.services.outbound import OutboundPolicy
from portside.services.uploads import UploadService
from portside.services.upstream import (
    UpstreamClient,
    UpstreamError,
    UpstreamSettings,
    UpstreamUnavailable,
    parse_upstream_reference,
)

__all__ = ["MirrorJob", "MirrorSyncer", "SyncResult"]

log = logging.getLogger(__name__)

#: Most per-tag errors kept in ``last_error``.
MAX_REPORTED_ERRORS = 5


class SyncStopped(Exception):
    """The sync must stop at a checkpoint: ``reason`` is ``cancel`` or ``lost``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SyncFailed(Exception):
    """The sync ran but some tags could not be copied (message lists them)."""


@dataclass(frozen=True)
class MirrorJob:
    """What one sync needs, read when it starts."""

    repository_id: int
    repository: str
    registry: str
    upstream_repository: str
    username: str | None
    password: str | None = field(repr=False)
    verify_tls: bool
    proxy: dict[str, Any]
    patterns: list[str]
    architectures: list[str]
    robot_id: int | None
    robot_name: str | None
    timeout_s: int


@dataclass
class SyncResult:
    """How a sync ended."""

    status: str  # SUCCESS, FAIL, CANCEL or LOST
    error: str | None = None
    tags: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)


def _proxy_for(proxy: dict[str, Any], registry: str, plain_http: bool) -> str | None:
    """The proxy URL for ``registry`` (``no_proxy``: comma-separated hosts/suffixes)."""
    host = registry.rsplit(":", 1)[0] if not registry.startswith("[") else registry
    for entry in str(proxy.get("no_proxy") or "").split(","):
        entry = entry.strip().lstrip(".")
        if entry and (entry == "*" or host == entry or host.endswith("." + entry)):
            return None
    value = proxy.get("http_proxy") if plain_http else proxy.get("https_proxy")
    return str(value) if value else None


class MirrorSyncer:
    """Runs syncs of claimed mirrors (one :meth:`run` per claim; any number at once,
    never two of one mirror: the claim guarantees it)."""

    def __init__(self, db: Database, uploads: UploadService, manifests: ManifestService,
                 outbound: OutboundPolicy, box: SecretBox, *, rollback: bool,
                 lease_s: float) -> None:
        self._db = db
        self._uploads = uploads
        self._manifests = manifests
        self._outbound = outbound
        self._box = box
        self._rollback = rollback
        self.lease_s = lease_s

    # --- the job ----------------------------------------------------------------------
    def load_job(self, claim: Claim) -> MirrorJob | None:
        """The mirror's settings with decrypted credentials (``None``: it is gone)."""
        with self._db.read() as connection:
            mirror = connection.execute(
                select(RepoMirrorConfig.external_reference,
                       RepoMirrorConfig.username_encrypted,
                       RepoMirrorConfig.password_encrypted,
                       RepoMirrorConfig.external_registry_config,
                       RepoMirrorConfig.root_rule, RepoMirrorConfig.architecture_filter,
                       RepoMirrorConfig.robot_id, RepoMirrorConfig.sync_timeout_s,
                       Namespace.name.label("namespace"), Repository.name.label("name"))
                .join(Repository, Repository.id == RepoMirrorConfig.repository_id)
                .join(Namespace, Namespace.id == Repository.namespace_id)
                .where(RepoMirrorConfig.id == claim.mirror_id)
            ).first()
            if mirror is None:
                return None
            robot_name = (connection.execute(select(User.username)
                                             .where(User.id == mirror.robot_id)).scalar()
                          if mirror.robot_id is not None else None)
        registry, upstream_repository = parse_upstream_reference(mirror.external_reference)
        config = dict(mirror.external_registry_config or {})
        rule = dict(mirror.root_rule or {})
        return MirrorJob(
            repository_id=claim.repository_id,
            repository=f"{mirror.namespace}/{mirror.name}",
            registry=registry,
            upstream_repository=upstream_repository,
            username=self._decrypt(mirror.username_encrypted),
            password=self._decrypt(mirror.password_encrypted),
            verify_tls=bool(config.get("verify_tls", True)),
            proxy=dict(config.get("proxy") or {}),
            patterns=[str(p) for p in rule.get("rule_value") or []],
            architectures=[str(a) for a in mirror.architecture_filter or []],
            robot_id=mirror.robot_id,
            robot_name=robot_name,
            timeout_s=mirror.sync_timeout_s,
        )

    def _decrypt(self, value: str | None) -> str | None:
        if not value:
            return None
        try:
            return self._box.decrypt(value)
        except SecretError:
            raise UpstreamError("the stored upstream credentials cannot be decrypted "
                                "(was DATABASE_SECRET_KEY changed?)") from None

    # --- running ----------------------------------------------------------------------
    async def run(self, claim: Claim) -> SyncResult:
        """Sync the claimed mirror and record the outcome (never raises but for
        cancellation of the calling task)."""
        try:
            job = await anyio.to_thread.run_sync(self.load_job, claim)
        except (UpstreamError, ValueError) as exc:
            result = SyncResult("FAIL", f"Invalid mirror configuration: {exc}")
            await anyio.to_thread.run_sync(self._record_end, claim, None, result)
            return result
        if job is None:
            return SyncResult("LOST")
        audit = AuditContext(Subject(user_id=job.robot_id, username=job.robot_name)
                             if job.robot_id is not None else None)
        await anyio.to_thread.run_sync(self._announce, job.repository_id,
                                       "repo_mirror_sync_started", audit,
                                       {"message": f"Sync of {job.repository} from "
                                                   f"{job.registry}/{job.upstream_repository} "
                                                   "started"})
        stop: dict[str, str] = {}
        beat = asyncio.create_task(self._heartbeat(claim, stop))
        changes: TagChanges = {}
        copier: ContentCopier | None = None
        try:
            async with asyncio.timeout(job.timeout_s):
                copier, tags = await self._sync(claim, job, audit, changes, stop)
            result = SyncResult("SUCCESS", tags=tags)
        except SyncStopped as exc:
            result = SyncResult("CANCEL" if exc.reason == "cancel" else "LOST",
                                "Sync cancelled." if exc.reason == "cancel" else None)
        except TimeoutError:
            result = SyncResult("FAIL", f"The sync took longer than its timeout "
                                        f"({job.timeout_s} s).")
        except (UpstreamError, SyncFailed, RegistryError) as exc:
            result = SyncResult("FAIL", _message(exc))
        except Exception as exc:  # a bug: keep the traceback in the log, fail the sync
            log.exception("mirror sync of %s failed unexpectedly", job.repository)
            result = SyncResult("FAIL", f"Internal error: {type(exc).__name__}")
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        if result.status in ("FAIL", "CANCEL") and self._rollback and changes:
            failed = await anyio.to_thread.run_sync(rollback_tags, self._db,
                                                    job.repository_id, changes, audit)
            result.rolled_back = sorted(set(changes) - set(failed))
            if failed:
                result.error = (f"{result.error} Could not roll back: "
                                f"{', '.join(sorted(failed)[:10])}.")
        if result.status != "LOST":
            await anyio.to_thread.run_sync(self._record_end, claim, job, result)
        log.info("mirror sync of %s: %s%s%s", job.repository, result.status,
                 f" ({result.error})" if result.error else "",
                 f", {copier.blobs_fetched} blobs fetched ({copier.blob_bytes} bytes), "
                 f"{copier.blobs_linked} linked" if copier is not None else "")
        return result

    async def _heartbeat(self, claim: Claim, stop: dict[str, str]) -> None:
        """Renew the lease every third of it; note a cancel or a lost claim."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                outcome = await anyio.to_thread.run_sync(heartbeat, self._db, claim,
                                                         self.lease_s)
            except Exception as exc:  # the database blinked: try again next beat
                log.warning("mirror heartbeat failed: %s", type(exc).__name__)
                continue
            if outcome != "ok":
                stop["reason"] = outcome
                return

    async def _connect(self, job: MirrorJob) -> UpstreamClient:
        """A client that answered ``/v2/``: HTTPS first; with ``verify_tls`` false, plain
        HTTP when HTTPS cannot be spoken (as container tools treat insecure registries)."""
        attempts = [False, True] if not job.verify_tls else [False]
        last: UpstreamError | None = None
        for plain_http in attempts:
            settings = UpstreamSettings(
                registry=job.registry, username=job.username, password=job.password,
                verify_tls=job.verify_tls, plain_http=plain_http,
                proxy=_proxy_for(job.proxy, job.registry, plain_http))
            client = UpstreamClient(settings, self._outbound)
            try:
                await client.ping()
                return client
            except UpstreamUnavailable as exc:
                await client.aclose()
                last = exc
            except BaseException:
                await client.aclose()
                raise
        assert last is not None
        raise last

    async def _sync(self, claim: Claim, job: MirrorJob, audit: AuditContext,
                    changes: TagChanges, stop: dict[str, str],
                    ) -> tuple[ContentCopier, list[str]]:
        async def checkpoint() -> None:
            if stop:
                raise SyncStopped(stop["reason"])

        async def tag_checkpoint() -> None:
            await checkpoint()
            outcome = await anyio.to_thread.run_sync(state_of, self._db, claim)
            if outcome != "ok":
                raise SyncStopped(outcome)

        client = await self._connect(job)
        try:
            copier = ContentCopier(self._db, self._uploads, self._manifests, client,
                                   job.upstream_repository, job.repository_id, audit,
                                   job.architectures, checkpoint)
            upstream_tags = await client.list_tags(job.upstream_repository)
            wanted = matching_tags(upstream_tags, job.patterns)
            current = await anyio.to_thread.run_sync(current_tags, self._db,
                                                      job.repository_id)
            errors: list[str] = []
            synced: list[str] = []
            for tag in wanted:
                await tag_checkpoint()
                try:
                    if await copier.sync_tag(tag, current.get(tag), changes):
                        synced.append(tag)
                except UpstreamUnavailable as exc:
                    # The upstream is gone (or broke the connection): the other tags
                    # would fail alike.
                    raise UpstreamUnavailable(f"tag {tag}: {_message(exc)}",
                                              exc.status) from None
                except (UpstreamError, RegistryError) as exc:
                    errors.append(f"{tag}: {_message(exc)}")
            if errors:
                shown = "; ".join(errors[:MAX_REPORTED_ERRORS])
                more = len(errors) - MAX_REPORTED_ERRORS
                raise SyncFailed(f"{len(errors)} tag(s) failed: {shown}"
                                 + (f" (and {more} more)" if more > 0 else ""))
            # Tags the rules no longer select, or the upstream no longer has.
            for tag in sorted(set(current) - set(synced)):
                await tag_checkpoint()
                await anyio.to_thread.run_sync(copier.remove_tag, tag, current[tag], changes)
            return copier, synced
        finally:
            await client.aclose()

    # --- records ----------------------------------------------------------------------
    def _announce(self, repository_id: int, event: str, audit: AuditContext | None,
                  data: dict[str, Any]) -> None:
        """Audit log entry and notification event, in one transaction."""
        with self._db.session() as session:
            record_for_repository(session, event, repository_id, audit, **data)
            emit_event(session, repository_id, event, data)

    def _record_end(self, claim: Claim, job: MirrorJob | None, result: SyncResult) -> None:
        if not finish(self._db, claim, status=result.status, error=result.error):
            return  # another worker owns the mirror now: it reports
        if job is None:
            return
        audit = AuditContext(Subject(user_id=job.robot_id, username=job.robot_name)
                             if job.robot_id is not None else None)
        if result.status == "SUCCESS":
            self._announce(job.repository_id, "repo_mirror_sync_success", audit,
                           {"message": f"Synced {len(result.tags)} tag(s)",
                            "tags": result.tags})
        else:
            data: dict[str, Any] = {"message": result.error or result.status}
            if result.rolled_back:
                data["rolled_back"] = result.rolled_back
            self._announce(job.repository_id, "repo_mirror_sync_failed", audit, data)


def _message(exc: BaseException) -> str:
    """A one-line message for ``last_error`` (never the credentials: the upstream
    client's messages are scrubbed, registry errors carry no secrets)."""
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:1000]
