"""Consume named work queues (:mod:`portside.services.queue`) inside the server.

A :class:`QueueWorker` polls each handler's queue about once a second, runs a claimed
item's handler in a worker thread, keeps the item's lease alive while the handler runs,
and then completes the item, or fails it (the queue retries it with a backoff) when
the handler raised. Several processes may run workers on the same database: claims
are exclusive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import anyio.to_thread

from portside.services.queue import QueueJob, WorkQueue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueueHandler:
    """What to run for the items of one queue."""

    queue_name: str
    #: Does the work of one item (in a thread); raising fails the attempt.
    run: Callable[[QueueJob], object]
    #: Lease per claim; renewed every third of it while ``run`` is busy.
    lease_s: float = 300.0


class QueueWorker:
    """Runs :class:`QueueHandler`\\ s one item at a time (see the module docstring)."""

    def __init__(self, queue: WorkQueue, handlers: list[QueueHandler],
                 poll_interval_s: float = 1.0) -> None:
        self.queue = queue
        self.handlers = list(handlers)
        self.poll_interval_s = poll_interval_s

    async def run(self) -> None:
        """Poll until cancelled; failures are logged, never fatal."""
        while True:
            worked = False
            for handler in self.handlers:
                try:
                    worked = await self.run_once(handler) or worked
                except Exception:
                    log.exception("queue %s: could not claim or finish an item",
                                  handler.queue_name)
            if not worked:
                await asyncio.sleep(self.poll_interval_s)

    async def run_once(self, handler: QueueHandler) -> bool:
        """Claim and process one item of ``handler``'s queue; ``False`` if none."""
        job = await anyio.to_thread.run_sync(self.queue.claim, handler.queue_name,
                                             handler.lease_s)
        if job is None:
            return False
        work = asyncio.ensure_future(anyio.to_thread.run_sync(handler.run, job))
        lease = job
        while True:
            done, _ = await asyncio.wait({work}, timeout=handler.lease_s / 3)
            if done:
                break
            renewed = await anyio.to_thread.run_sync(self.queue.extend, lease,
                                                     handler.lease_s)
            if renewed is None:
                log.warning("queue %s: lost the lease of item %d", handler.queue_name, job.id)
            else:
                lease = renewed
        error = work.exception()
        if error is None:
            await anyio.to_thread.run_sync(self.queue.complete, lease)
        else:
            log.warning("queue %s: item %d failed: %s", handler.queue_name, job.id, error)
            await anyio.to_thread.run_sync(self.queue.fail, lease,
                                           f"{type(error).__name__}: {error}")
        return True
