"""Serving the app with granian (HTTP/1.1 keep-alive, zero-copy file responses)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from portside.app import PortsideApp


def app_factory() -> PortsideApp:
    """Entry point for each server worker process: config from ``$PORTSIDE_CONFIG``.

    ``portside serve`` has already validated the config and migrated the database. The
    application is imported here, in the worker, so the server's main process stays small.
    """
    from portside.app import create_app
    from portside.config import load_config

    config, _warnings = load_config()
    return create_app(config, migrate=False)


def serve(host: str, port: int, workers: int, log_level: str = "info") -> None:
    """Run the server in the foreground until interrupted."""
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces

    metrics_dir = _multiprocess_metrics_dir()
    try:
        Granian(
            "portside.server:app_factory",
            factory=True,
            address=host,
            port=port,
            interface=Interfaces.ASGI,
            workers=workers,
            http=HTTPModes.http1,
            log_level=log_level,  # type: ignore[arg-type]
            # Blob streaming and database calls run in the ASGI app's own thread pool;
            # keep granian's blocking pool small.
            blocking_threads=1,
            backlog=2048,
            working_dir=Path.cwd(),
        ).serve()
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _multiprocess_metrics_dir() -> str | None:
    """Give the workers a fresh ``PROMETHEUS_MULTIPROC_DIR`` so that any of them can
    answer ``/metrics`` for all; ``None`` if the operator set one (theirs is kept) or
    the metrics library is already loaded here (too late to switch its mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") or "prometheus_client" in sys.modules:
        return None
    path = tempfile.mkdtemp(prefix="portside-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path

