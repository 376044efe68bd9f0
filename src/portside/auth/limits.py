"""Brute-force protection: too many failed logins from one address get HTTP 429."""

from __future__ import annotations

import threading
import time
from collections import deque


class LoginFailureLimiter:
    """Counts failed logins per client address in a sliding window."""

    def __init__(self, limit: int, window_s: int) -> None:
        self.limit = limit
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(address, deque())
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        return failures

    def blocked_for(self, address: str) -> int:
        """Seconds until ``address`` may try again; 0 if it is not blocked."""
        if self.limit <= 0:
            return 0
        now = time.monotonic()
        with self._lock:
            failures = self._recent(address, now)
            if len(failures) < self.limit:
                return 0
            return max(1, int(failures[0] + self.window_s - now) + 1)

    def record_failure(self, address: str) -> None:
        """Remember one failed login from ``address``."""
        if self.limit <= 0:
            return
        now = time.monotonic()
        with self._lock:
            if len(self._failures) > 100_000:
                self._failures.clear()
            self._recent(address, now).append(now)
