"""Run blocking housekeeping jobs at fixed intervals inside the server's event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import anyio.to_thread

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeriodicJob:
    """A named job and how often to run it."""

    name: str
    interval_s: float
    run: Callable[[], object]


async def run_forever(job: PeriodicJob) -> None:
    """Run ``job`` every ``interval_s`` seconds in a thread; failures are logged, not fatal."""
    while True:
        await asyncio.sleep(job.interval_s)
        try:
            result = await anyio.to_thread.run_sync(job.run)
            log.debug("%s finished: %s", job.name, result)
        except Exception:
            log.exception("background job %s failed", job.name)
