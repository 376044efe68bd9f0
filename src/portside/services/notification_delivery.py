"""The background side of notifications: the ``notification`` queue's handler
(:class:`NotificationDelivery`) and the periodic ``repo_image_expiry`` announcer
(:class:`ImageExpiryAnnouncer`).

Failures: a delivery attempt that fails raises, and the work queue retries it with its
backoff (:data:`~portside.services.notification_events.NOTIFICATION_RETRIES` attempts).
When the last attempt fails, the notification's ``number_of_failures`` grows by one; at
``NOTIFICATION_FAILURE_LIMIT`` the notification is disabled: no event queues deliveries
for it until its failures are reset through the API. A successful delivery sets the
count back to 0.

Expiry announcements: every :data:`IMAGE_EXPIRY_INTERVAL_S` seconds, each enabled
``repo_image_expiry`` notification (``event_config.days`` = *d*) announces, in one
delivery, the active tags of its repository whose expiry lies in
``[last pass + d days, now + d days)``; its first pass announces every tag that expires
within *d* days. The time of the pass is kept in the notification's ``event_config``
(``last_ran_ms``, Quay's name, hidden from the API), written in the transaction that
queues the delivery, with the notification row locked: each tag expiry is announced
once, whichever process runs the pass, and passes missed while the registry was down
are caught up. A tag whose expiry is set (or moved) to a time already inside the
announced window is not announced.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from portside.auth.secrets import SecretBox
from portside.db.engine import Database
from portside.db.models import Repository, RepositoryNotification, Tag
from portside.services.mailer import Mailer
from portside.services.notification_events import (
    EVENTS,
    enqueue_delivery,
    event_data_for,
    failure_limit,
    set_failure_limit,
)
from portside.services.notification_methods import (
    Deliverer,
    Delivery,
    DeliveryFailed,
    open_config,
)
from portside.services.outbound import OutboundPolicy
from portside.services.queue import QueueJob

log = logging.getLogger(__name__)

__all__ = ["IMAGE_EXPIRY_INTERVAL_S", "ImageExpiryAnnouncer", "NotificationDelivery"]

#: Seconds between two ``repo_image_expiry`` passes.
IMAGE_EXPIRY_INTERVAL_S = 300
_DAY_MS = 86_400_000


@dataclass(frozen=True)
class _Target:
    method: str
    config: dict[str, Any]
    namespace_id: int
    number_of_failures: int


class NotificationDelivery:
    """The ``notification`` queue's handler (see the module docstring)."""

    def __init__(self, db: Database, outbound: OutboundPolicy, mailer: Mailer,
                 box: SecretBox, *, server_hostname: str, url_scheme: str,
                 limit: int) -> None:
        self._db = db
        self._box = box
        self._deliverer = Deliverer(db, outbound, mailer)
        self._hostname = server_hostname
        self._scheme = url_scheme
        self.limit = limit
        # emit_event (fixed signature) reads the limit the app configured.
        set_failure_limit(limit)

    def payload(self, event_data: dict[str, Any]) -> dict[str, Any]:
        """Quay's event payload: ``event_data`` with ``docker_url`` and ``homepage``."""
        repository = str(event_data.get("repository", ""))
        return {**event_data,
                "docker_url": f"{self._hostname}/{repository}",
                "homepage": f"{self._scheme}://{self._hostname}/repository/{repository}"}

    def _target(self, notification_uuid: str) -> _Target | None:
        with self._db.read() as connection:
            row = connection.execute(
                select(RepositoryNotification.method, RepositoryNotification.config,
                       Repository.namespace_id, RepositoryNotification.number_of_failures)
                .join(Repository, Repository.id == RepositoryNotification.repository_id)
                .where(RepositoryNotification.uuid == notification_uuid)
            ).first()
        if row is None:
            return None
        return _Target(row[0], open_config(row[1] or {}, self._box), row[2], row[3])

    def run(self, job: QueueJob) -> None:
        """Deliver one queued event; raising lets the queue retry it."""
        notification_uuid = str(job.body.get("notification_uuid", ""))[:36]
        kind = EVENTS.get(str(job.body.get("event", "")))
        event_data = job.body.get("event_data")
        target = self._target(notification_uuid)
        if target is None or kind is None or not isinstance(event_data, dict):
            return  # deleted since, or not a delivery we can make: nothing to retry
        if target.number_of_failures >= self.limit and not job.body.get("test"):
            return  # disabled after it was queued
        delivery = Delivery(target.method, target.config, kind, self.payload(event_data),
                            target.namespace_id)
        try:
            self._deliverer.deliver(delivery)
        except Exception as exc:
            if job.retries_remaining <= 0:
                self._count_failure(notification_uuid)
            if isinstance(exc, DeliveryFailed):
                raise
            # Unexpected errors may carry URLs in their text: keep only their kind.
            raise DeliveryFailed(f"{target.method} delivery failed: "
                                 f"{type(exc).__name__}") from None
        if target.number_of_failures:
            self._set_failures(notification_uuid, 0)

    def _count_failure(self, notification_uuid: str) -> None:
        with self._db.session() as session:
            session.execute(
                update(RepositoryNotification)
                .where(RepositoryNotification.uuid == notification_uuid)
                .values(number_of_failures=RepositoryNotification.number_of_failures + 1))
        log.warning("notification %s: delivery given up after its retries",
                    notification_uuid)

    def _set_failures(self, notification_uuid: str, value: int) -> None:
        with self._db.session() as session:
            session.execute(update(RepositoryNotification)
                            .where(RepositoryNotification.uuid == notification_uuid)
                            .values(number_of_failures=value))


class ImageExpiryAnnouncer:
    """Queues ``repo_image_expiry`` deliveries (see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def run_pass(self, now: int | None = None) -> int:
        """One pass over every enabled ``repo_image_expiry`` notification; returns how
        many deliveries were queued."""
        now = int(time.time() * 1000) if now is None else now
        queued = 0
        with self._db.session() as session:
            query = (select(RepositoryNotification)
                     .where(RepositoryNotification.event == "repo_image_expiry",
                            RepositoryNotification.number_of_failures < failure_limit())
                     .order_by(RepositoryNotification.id))
            if not self._db.is_sqlite:  # SQLite's write transaction already serialises
                query = query.with_for_update()
            for notification in session.scalars(query).all():
                queued += self._announce(session, notification, now)
        return queued

    @staticmethod
    def _announce(session: Session, notification: RepositoryNotification, now: int) -> int:
        config = dict(notification.event_config or {})
        try:
            days = int(config.get("days", 0))
        except (TypeError, ValueError):
            return 0
        if days < 1:
            return 0
        last = config.get("last_ran_ms")
        start = int(last) + days * _DAY_MS if isinstance(last, int) else now
        end = now + days * _DAY_MS
        # A new dict: the JSON column sees the change.
        notification.event_config = {**config, "last_ran_ms": now}
        if end <= start:
            return 0
        tags = sorted(session.scalars(
            select(Tag.name).where(Tag.repository_id == notification.repository_id,
                                   Tag.lifetime_end_ms.is_(None),
                                   Tag.expiration_ms >= max(start, now + 1),
                                   Tag.expiration_ms < end)))
        if not tags:
            return 0
        event_data = event_data_for(session, notification.repository_id,
                                    {"tags": tags, "expiring_in": f"{days} days"})
        if event_data is None:
            return 0
        enqueue_delivery(session, notification.uuid, "repo_image_expiry", event_data)
        return 1
