"""Online checks of a configuration: can the registry reach what the file names?

``portside config validate --online`` runs them, and so does ``portside serve`` before it
starts its workers (``IGNORE_VALIDATION=true`` in the environment turns failures into
warnings, as with Quay). Each check has a deadline, so a dead endpoint fails in seconds
instead of hanging: the database (a query), every storage location (write, read back
and delete a small object, as ``/health/endtoend`` does), and the SMTP server when
mailing is on (connect and greet, plus STARTTLS and login when configured).
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from sqlalchemy import text

from portside.config import PortsideConfig
from portside.db.engine import create_db_engine
from portside.services.health import storage_round_trip
from portside.storage.drivers import create_driver

__all__ = ["CheckResult", "run_online_checks"]

#: Seconds each check may take.
CHECK_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class CheckResult:
    """One check: its name, and the problem (``None`` when it passed)."""

    name: str
    problem: str | None


def _database(config: PortsideConfig) -> None:
    engine = create_db_engine(config.DB_URI, config.DB_CONNECTION_ARGS)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1")).scalar_one()
    finally:
        engine.dispose()


def _storage(driver_name: str, params: dict[str, object]) -> Callable[[], None]:
    return lambda: storage_round_trip(create_driver(driver_name, params))


def _smtp(config: PortsideConfig) -> None:
    with smtplib.SMTP(config.MAIL_SERVER, config.MAIL_PORT, timeout=CHECK_TIMEOUT_S) as smtp:
        smtp.ehlo()
        if config.MAIL_USE_TLS:
            smtp.starttls()
        if config.MAIL_USE_AUTH or config.MAIL_USERNAME:
            smtp.login(config.MAIL_USERNAME, config.MAIL_PASSWORD)


def _describe(exc: BaseException) -> str:
    text_ = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text_[0][:300]}" if text_ else type(exc).__name__


def run_online_checks(config: PortsideConfig,
                      timeout_s: float = CHECK_TIMEOUT_S) -> list[CheckResult]:
    """Run every check (in parallel, each bounded by ``timeout_s``)."""
    checks: dict[str, Callable[[], None]] = {"database": lambda: _database(config)}
    for name, (driver_name, params) in config.DISTRIBUTED_STORAGE_CONFIG.items():
        checks[f"storage:{name}"] = _storage(driver_name, dict(params))
    if config.FEATURE_MAILING and config.MAIL_SERVER:
        checks["mail"] = lambda: _smtp(config)
    # Not a context manager: a hung check must not hold up the answer (its thread is
    # left to finish on its own).
    pool = ThreadPoolExecutor(len(checks), thread_name_prefix="portside-config-check")
    futures = {name: pool.submit(check) for name, check in checks.items()}
    results = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
        except FutureTimeout:
            results.append(CheckResult(name, f"no answer within {timeout_s:.0f} s"))
        except Exception as exc:
            results.append(CheckResult(name, _describe(exc)))
        else:
            results.append(CheckResult(name, None))
    pool.shutdown(wait=False, cancel_futures=True)
    return results
