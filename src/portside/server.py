"""Serving the app with granian (HTTP/1.1 keep-alive, zero-copy file responses)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from portside.app import PortsideApp


def app_factory() -> PortsideApp | Callable[..., Any]:
    """Entry point for each server worker process: config from ``$PORTSIDE_CONFIG``.

    ``portside serve`` has already validated the config and migrated the database. The
    application is imported here, in the worker, so the server's main process stays small.
    With ``TRUSTED_PROXIES``, requests from those addresses get their client address and
    scheme from ``X-Forwarded-For``/``X-Forwarded-Proto``; anyone else's headers are
    ignored, so a client cannot pick the address the audit log and login limits see.
    """
    from portside.app import create_app
    from portside.config import load_config

    config, _warnings = load_config()
    app = create_app(config, migrate=False)
    if not config.TRUSTED_PROXIES:
        return app
    from granian.utils.proxies import wrap_asgi_with_proxy_headers

    return wrap_asgi_with_proxy_headers(app, list(config.TRUSTED_PROXIES))


def serve(host: str, port: int, workers: int, log_level: str = "info",
          ssl_cert: Path | None = None, ssl_key: Path | None = None) -> None:
    """Run the server in the foreground until interrupted; HTTPS (TLS 1.2 or newer)
    when ``ssl_cert`` and ``ssl_key`` are given."""
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, SSLProtocols

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
            ssl_cert=ssl_cert,
            ssl_key=ssl_key,
            # Granian's default minimum is TLS 1.3; older container clients speak 1.2.
            ssl_protocol_min=SSLProtocols.tls12,
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

