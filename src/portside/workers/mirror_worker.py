"""The repository mirror worker: every ``REPO_MIRROR_INTERVAL`` seconds it claims due
mirrors (:mod:`portside.services.mirror_scheduler`) up to ``REPO_MIRROR_CONCURRENCY``
running at once in this process, and syncs them in parallel
(:class:`~portside.services.mirror_sync.MirrorSyncer`). Any number of processes run
one; the database claim shares the work between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import anyio.to_thread

from portside.db.engine import Database
from portside.services.mirror_scheduler import Claim, claim_due, release
from portside.services.mirror_sync import MirrorSyncer

if TYPE_CHECKING:
    from portside.app import Services

log = logging.getLogger(__name__)

#: Bounds of a claim's lease (renewed every third of it while the sync runs).
MIN_LEASE_S = 10.0
MAX_LEASE_S = 300.0


def lease_for(interval_s: float) -> float:
    """The lease of a claim: ten worker intervals, within bounds. A crashed worker's
    mirror is taken over by another process that long after its last heartbeat."""
    return min(MAX_LEASE_S, max(MIN_LEASE_S, 10 * interval_s))


class MirrorWorker:
    """Claims and runs mirror syncs until cancelled."""

    def __init__(self, db: Database, syncer: MirrorSyncer, interval_s: float,
                 concurrency: int) -> None:
        self.db = db
        self.syncer = syncer
        self.interval_s = interval_s
        self.concurrency = concurrency
        self._running: dict[asyncio.Task[object], Claim] = {}

    async def run(self) -> None:
        """Poll for due mirrors until cancelled; failures are logged, never fatal."""
        try:
            while True:
                try:
                    await self.run_once()
                except Exception:
                    log.exception("mirror worker: could not claim due mirrors")
                await asyncio.sleep(self.interval_s)
        finally:
            await self._shutdown()

    async def run_once(self) -> int:
        """Claim what fits and start syncing it; returns how many were claimed."""
        free = self.concurrency - len(self._running)
        if free <= 0:
            return 0
        claims = await anyio.to_thread.run_sync(claim_due, self.db, free,
                                                self.syncer.lease_s)
        for claim in claims:
            task: asyncio.Task[object] = asyncio.create_task(self.syncer.run(claim))
            self._running[task] = claim
            task.add_done_callback(self._done)
        return len(claims)

    def _done(self, task: asyncio.Task[object]) -> None:
        self._running.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("mirror sync task failed: %r", task.exception())

    async def _shutdown(self) -> None:
        """Stop running syncs and hand their claims back (another process resumes)."""
        running = dict(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        for claim in running.values():
            with contextlib.suppress(Exception):
                await anyio.to_thread.run_sync(release, self.db, claim)


def mirror_worker_for(services: Services) -> MirrorWorker:
    """The worker of the app's services and config."""
    config = services.config
    registry = services.registry
    syncer = MirrorSyncer(services.db, registry.uploads, registry.manifests,
                          services.outbound, services.secret_box,
                          rollback=config.REPO_MIRROR_ROLLBACK,
                          lease_s=lease_for(config.REPO_MIRROR_INTERVAL))
    return MirrorWorker(services.db, syncer, config.REPO_MIRROR_INTERVAL,
                        config.REPO_MIRROR_CONCURRENCY)
