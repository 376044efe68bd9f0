"""Prometheus metrics: request counters and latencies, registry events, and figures read
from the database at scrape time.

Event metrics (requests, pushes, pulls, logins) are process-wide ``prometheus_client``
objects. With ``PROMETHEUS_MULTIPROC_DIR`` set (``portside serve`` sets it to a fresh
directory), every server worker writes them to files there and any worker answers
``/metrics`` for all of them. Database figures (row counts, queue depth, garbage
collection) are computed when scraped and cached briefly, so frequent scrapes stay cheap.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector
from sqlalchemy import distinct, func, select

from portside.db.engine import Database
from portside.db.models import (
    GcRun,
    Namespace,
    QueueItem,
    RepoMirrorConfig,
    Repository,
    User,
)
from portside.services.queue import WorkQueue

__all__ = ["CONTENT_TYPE_LATEST", "HEALTH_CHECK_FAILURES", "DatabaseCollector",
           "RequestMetrics", "render"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"})

REQUESTS = Counter(
    "portside_http_requests_total", "HTTP requests answered", ["api", "route", "method", "status"]
)
LATENCY = Histogram(
    "portside_http_request_duration_seconds",
    "Time to answer an HTTP request (including sending the body)",
    ["api", "route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
MANIFESTS_PUSHED = Counter("portside_manifests_pushed_total", "Manifests pushed")
PULLS = Counter("portside_manifest_pulls_total", "Manifests pulled (GET)")
BLOBS_UPLOADED = Counter("portside_blobs_uploaded_total", "Blob uploads completed")
BLOB_BYTES_UPLOADED = Counter(
    "portside_blob_uploaded_bytes_total", "Bytes in completed blob uploads"
)
HEALTH_CHECK_FAILURES = Counter(
    "portside_health_check_failures_total",
    "Failed health checks by check (database, auth, storage:<location>)",
    ["check"],
)
AUTH_RESULTS = Counter(
    "portside_registry_auth_total",
    "Registry authentication attempts by credential kind and result",
    ["kind", "result"],
)

#: Requests on these (route, method, status) triples are also push/pull events.
_EVENTS: dict[tuple[str, str, int], Counter] = {
    ("/v2/{name}/manifests/{reference}", "PUT", 201): MANIFESTS_PUSHED,
    ("/v2/{name}/manifests/{reference}", "GET", 200): PULLS,
}

_GC_FIGURES = (
    "tags_expired",
    "manifests_deleted",
    "blobs_deleted",
    "bytes_reclaimed",
    "uploads_deleted",
    "repositories_purged",
    "namespaces_purged",
)

_AUTH_CHILDREN = {
    (kind, ok): AUTH_RESULTS.labels(kind, "success" if ok else "failure")
    for kind in ("basic", "bearer", "other")
    for ok in (True, False)
}


def auth_result(kind: str, ok: bool) -> None:
    """Count one authentication attempt (``kind``: basic, bearer or other)."""
    _AUTH_CHILDREN[(kind if kind in ("basic", "bearer") else "other", ok)].inc()


def blob_uploaded(size: int) -> None:
    """Count one completed blob upload of ``size`` bytes."""
    BLOBS_UPLOADED.inc()
    BLOB_BYTES_UPLOADED.inc(size)


class RequestMetrics:
    """Counts and times requests of one API (``v2`` or ``api_v1``).

    The labelled children are looked up once per (route, method, status) and cached, so
    a request costs a dictionary lookup, an increment and a histogram observation.
    """

    def __init__(self, api: str) -> None:
        self._api = api
        self._children: dict[tuple[str, str, int], tuple[Any, Any, Counter | None]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Record one answered request."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._bind(route, method, status)
        counter, histogram, event = children
        counter.inc()
        histogram.observe(seconds)
        if event is not None:
            event.inc()

    def _bind(self, route: str, method: str, status: int) -> tuple[Any, Any, Counter | None]:
        # Unknown methods share one label: clients must not be able to grow the series.
        label_method = method if method in _METHODS else "other"
        labels = (self._api, route, label_method, str(status))
        children = (
            REQUESTS.labels(*labels),
            LATENCY.labels(*labels),
            _EVENTS.get((route, method, status)),
        )
        self._children[(route, method, status)] = children
        return children


class DatabaseCollector(Collector):
    """Quay's row-count gauges, queue depth and garbage-collection figures, read from
    the database when scraped and reused for ``cache_s`` seconds."""

    def __init__(self, db: Database, cache_s: float = 30.0,
                 certificate_path: str | None = None) -> None:
        self._db = db
        self._cache_s = cache_s
        #: The served TLS certificate, whose expiry is exported (``None``: plain HTTP).
        self._certificate_path = certificate_path
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self._cache_s:
                self._cached = (now, list(self._read()))
            metrics = self._cached[1]
        yield from metrics

    def _read(self) -> Iterable[Metric]:
        with self._db.read() as conn:
            users = (
                conn.scalar(select(func.count(User.id)).where(User.robot_owner_id.is_(None))) or 0
            )
            robots = (
                conn.scalar(select(func.count(User.id)).where(User.robot_owner_id.is_not(None)))
                or 0
            )
            orgs = (
                conn.scalar(
                    select(func.count(Namespace.id)).where(
                        Namespace.kind == "organization", Namespace.deleted_at.is_(None)
                    )
                )
                or 0
            )
            repos = (
                conn.scalar(
                    select(func.count(Repository.id)).where(Repository.deleted_at.is_(None))
                )
                or 0
            )
            queues = list(conn.scalars(select(distinct(QueueItem.queue_name))))
            last = (
                conn.execute(
                    select(*(getattr(GcRun, name) for name in ("finished_at", *_GC_FIGURES)))
                    .where(GcRun.dry_run.is_(False), GcRun.finished_at.is_not(None))
                    .order_by(GcRun.id.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )
            mirrors = conn.execute(
                select(RepoMirrorConfig.sync_status, func.count(RepoMirrorConfig.id))
                .group_by(RepoMirrorConfig.sync_status)
            ).all()
            last_mirror_sync = conn.scalar(select(func.max(RepoMirrorConfig.last_sync_at)))
            totals = conn.execute(
                select(
                    func.coalesce(func.sum(GcRun.bytes_reclaimed), 0),
                    func.coalesce(func.sum(GcRun.blobs_deleted), 0),
                    func.coalesce(func.sum(GcRun.manifests_deleted), 0),
                    func.count(GcRun.id),
                ).where(GcRun.dry_run.is_(False), GcRun.finished_at.is_not(None))
            ).one()
        for name, doc, value in (
            ("quay_user_rows", "Users (robots excluded)", users),
            ("quay_robot_rows", "Robot accounts", robots),
            ("quay_org_rows", "Organizations", orgs),
            ("quay_repository_rows", "Repositories (deleted ones excluded)", repos),
        ):
            yield GaugeMetricFamily(name, doc, value=int(value))
        depth = GaugeMetricFamily(
            "portside_queue_items", "Work-queue items by state", labels=["queue", "state"]
        )
        work = WorkQueue(self._db)
        for queue in queues:
            for state, count in work.counts(queue).items():
                depth.add_metric([queue, state], count)
        yield depth
        for name, doc, value in (
            ("portside_gc_bytes_reclaimed", "Bytes reclaimed by garbage collection", totals[0]),
            ("portside_gc_blobs_deleted", "Blobs deleted by garbage collection", totals[1]),
            ("portside_gc_manifests_deleted", "Manifests deleted by garbage collection", totals[2]),
            ("portside_gc_runs", "Completed garbage-collection passes", totals[3]),
        ):
            yield CounterMetricFamily(name, doc, value=int(value))
        by_status = GaugeMetricFamily(
            "portside_repo_mirrors", "Repository mirrors by sync status", labels=["status"]
        )
        for status, count in mirrors:
            by_status.add_metric([str(status)], int(count))
        yield by_status
        if last_mirror_sync is not None:
            yield GaugeMetricFamily(
                "portside_repo_mirror_last_sync_timestamp_seconds",
                "When the latest repository mirror sync ended",
                value=_epoch(last_mirror_sync),
            )
        expiry = _certificate_expiry(self._certificate_path)
        if expiry is not None:
            yield GaugeMetricFamily(
                "portside_tls_certificate_expiry_timestamp_seconds",
                "When the served TLS certificate expires",
                value=expiry,
            )
        if last is not None:
            yield GaugeMetricFamily(
                "portside_gc_last_run_timestamp_seconds",
                "When the latest garbage-collection pass finished",
                value=_epoch(last["finished_at"]),
            )
            gauge = GaugeMetricFamily(
                "portside_gc_last_run",
                "Counts of the latest garbage-collection pass",
                labels=["figure"],
            )
            for figure in _GC_FIGURES:
                gauge.add_metric([figure], int(last[figure] or 0))
            yield gauge


def _certificate_expiry(path: str | None) -> float | None:
    """The ``notAfter`` of the first certificate in a PEM file, as a Unix time."""
    if not path:
        return None
    from cryptography import x509

    try:
        with open(path, "rb") as handle:
            certificate = x509.load_pem_x509_certificate(handle.read())
    except (OSError, ValueError):
        return None
    return certificate.not_valid_after_utc.timestamp()


def _epoch(moment: datetime) -> float:
    # SQLite hands back naive datetimes; they were stored in UTC.
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def render(database: DatabaseCollector) -> bytes:
    """The Prometheus text exposition: this process's (or, in multiprocess mode, every
    worker's) event metrics and the process collector, then the database figures."""
    if os.environ.get(MULTIPROC_ENV):
        events = CollectorRegistry()
        MultiProcessCollector(events)
        # The process collector describes the worker that answers.
        from prometheus_client import PROCESS_COLLECTOR

        events.register(PROCESS_COLLECTOR)
    else:
        events = REGISTRY
    scraped = CollectorRegistry()
    scraped.register(database)
    return generate_latest(events) + generate_latest(scraped)
