"""Health checks behind ``/health/instance`` and ``/health/endtoend``.

Every check is a small blocking function run in a thread of its own pool with a
deadline: a hung database or storage server makes its check fail after ``timeout_s``
instead of holding the request (the thread is abandoned and finishes on its own).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import text

from portside.auth.tokens import TokenService
from portside.db.engine import Database
from portside.services.metrics import HEALTH_CHECK_FAILURES
from portside.storage.base import StorageDriver
from portside.storage.local import LocalStorage
from portside.storage.placements import Placements

log = logging.getLogger(__name__)

#: Seconds each check may take before it counts as failed.
CHECK_TIMEOUT_S = 3.0
_PAYLOAD = b"portside health check"

Check = Callable[[], None]


class HealthChecker:
    """Runs the checks of one server process."""

    def __init__(
        self,
        db: Database,
        placements: Placements,
        tokens: TokenService,
        timeout_s: float = CHECK_TIMEOUT_S,
    ) -> None:
        self._db = db
        self._placements = placements
        self._tokens = tokens
        self._timeout_s = timeout_s
        # A pool of its own: checks stuck on a hung dependency must not take the
        # threads that serve requests.
        self._executor = ThreadPoolExecutor(8, thread_name_prefix="portside-health")

    def close(self) -> None:
        """Stop the check threads (without waiting for hung ones)."""
        self._executor.shutdown(wait=False)

    async def instance(self) -> dict[str, bool]:
        """This process: the database, and the preferred storage location if local."""
        checks: dict[str, Check] = {"database": self._database}
        preferred = self._placements.driver(self._placements.write_location)
        if isinstance(preferred, LocalStorage):
            checks["storage"] = lambda: storage_round_trip(preferred)
        return await self._run(checks)

    async def endtoend(self) -> dict[str, bool]:
        """Every storage location (write, read back, delete), the database, and the
        token signing key."""
        checks: dict[str, Check] = {"database": self._database, "auth": self._auth}
        drivers = self._placements.drivers
        locations = {name: _round_trip_check(driver) for name, driver in drivers.items()}
        results = await self._run({**checks, **{f"storage:{n}": c for n, c in locations.items()}})
        services = {name: results[name] for name in checks}
        services["storage"] = all(results[f"storage:{n}"] for n in locations)
        return services

    async def _run(self, checks: dict[str, Check]) -> dict[str, bool]:
        names = list(checks)
        outcomes = await asyncio.gather(*(self._one(name, checks[name]) for name in names))
        return dict(zip(names, outcomes, strict=True))

    async def _one(self, name: str, check: Check) -> bool:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(self._executor, check), self._timeout_s)
        except TimeoutError:
            log.warning("health check %s timed out after %.1fs", name, self._timeout_s)
            HEALTH_CHECK_FAILURES.labels(name).inc()
            return False
        except Exception as exc:
            log.warning("health check %s failed: %s: %s", name, type(exc).__name__, exc)
            HEALTH_CHECK_FAILURES.labels(name).inc()
            return False
        return True

    def _database(self) -> None:
        with self._db.read() as conn:
            conn.execute(text("SELECT 1")).scalar_one()

    def _auth(self) -> None:
        token, _expires_in, _issued = self._tokens.issue(None, None, [])
        self._tokens.verify(token)


def _round_trip_check(driver: StorageDriver) -> Check:
    return lambda: storage_round_trip(driver)


def storage_round_trip(driver: StorageDriver) -> None:
    """Write, read back and delete a small object under ``health/``."""
    path = f"health/{uuid.uuid4().hex}"
    driver.put_bytes(path, _PAYLOAD)
    try:
        if driver.get_bytes(path) != _PAYLOAD:
            raise OSError("storage returned different bytes")
    finally:
        driver.delete(path)
