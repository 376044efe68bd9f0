"""Serving the app with granian (HTTP/1.1 keep-alive, zero-copy file responses)."""

from __future__ import annotations

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

    Granian(
        "portside.server:app_factory",
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        http=HTTPModes.http1,
        log_level=log_level,  # type: ignore[arg-type]
        # Blob streaming and database calls run in the ASGI app's own thread pool; keep
        # granian's blocking pool small.
        blocking_threads=1,
        backlog=2048,
        working_dir=Path.cwd(),
    ).serve()
