"""``/health/instance``, ``/health/endtoend`` and ``/metrics``, plus the request metrics
of ``/api/v1``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portside.services.health import HealthChecker
from portside.services.metrics import (
    CONTENT_TYPE_LATEST,
    DatabaseCollector,
    RequestMetrics,
    render,
)

if TYPE_CHECKING:
    from portside.app import Services


def _health_response(services: dict[str, bool]) -> Response:
    """Quay's shape: the services' results, 200 when all passed, 503 otherwise."""
    status = 200 if all(services.values()) else 503
    return JSONResponse({"data": {"services": services}, "status_code": status}, status_code=status)


class HealthEndpoints:
    """The health and metrics routes of one application."""

    def __init__(self, services: Services) -> None:
        registry = services.registry
        self.checker = HealthChecker(services.db, registry.placements, registry.tokens)
        self.collector = DatabaseCollector(services.db, services.config.METRICS_DATABASE_CACHE_S,
                                           services.config.SSL_CERTIFICATE_PATH or None)

    def routes(self) -> list[Route]:
        """The routes to mount at the application's root."""
        return [
            Route("/health/instance", self.instance, methods=["GET"]),
            Route("/health/endtoend", self.endtoend, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ]

    def close(self) -> None:
        """Release the check threads."""
        self.checker.close()

    async def instance(self, _request: Request) -> Response:
        """``GET /health/instance``: can this process serve requests?"""
        return _health_response(await self.checker.instance())

    async def endtoend(self, _request: Request) -> Response:
        """``GET /health/endtoend``: every storage location, the database and auth."""
        return _health_response(await self.checker.endtoend())

    async def metrics(self, _request: Request) -> Response:
        """``GET /metrics``: Prometheus text format."""
        body = await anyio.to_thread.run_sync(render, self.collector)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


class ApiRequestMetrics:
    """ASGI wrapper counting and timing ``/api/v1`` requests by route template."""

    def __init__(self, app: ASGIApp, prefix: str = "/api/v1") -> None:
        self._app = app
        self._prefix = prefix
        self._metrics = RequestMetrics("api_v1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        start = time.perf_counter()
        outer_route = scope.get("route")
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, send_status)
        finally:
            # The API's router leaves the matched route in the (shared) scope.
            route = scope.get("route")
            path = getattr(route, "path", None)
            template = (
                self._prefix + path
                if route is not outer_route and path is not None
                else "unmatched"
            )
            self._metrics.observe(template, scope["method"], status, time.perf_counter() - start)
