"""Repository notifications (create, list, show, delete, test, reset failures) and the
in-app notifications of users, in Quay's terms.

Managing a repository's notifications needs administration of the repository (tokens:
``repo:admin``); the order of checks follows :mod:`portside.services.repository_access`
(rights before existence). Creation and deletion are audited with Quay's kinds
``add_repo_notification`` and ``delete_repo_notification``; a reset with
``reset_repo_notification``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from portside.auth.permissions import Policy, Subject
from portside.auth.secrets import SecretBox
from portside.db.engine import Database
from portside.db.models import (
    Namespace,
    Repository,
    RepositoryNotification,
    UserNotification,
    utcnow,
)
from portside.services.audit import AuditContext, record_for_repository
from portside.services.immutability import administered_repository
from portside.services.notification_events import EVENTS, enqueue_delivery, event_data_for
from portside.services.notification_methods import open_config, seal_config, validate_config
from portside.services.outbound import OutboundPolicy
from portside.services.refusals import Invalid, NotFound
from portside.services.repositories import RepositoryRef

__all__ = ["NotificationInfo", "NotificationService", "UserNotificationInfo",
           "UserNotificationService", "check_event_config"]

#: Largest accepted ``eventConfig`` (as JSON).
MAX_EVENT_CONFIG_LENGTH = 4096
#: Longest accepted title.
MAX_TITLE_LENGTH = 255
#: ``repo_image_expiry``'s ``days``: Quay accepts 1 to 30.
MAX_EXPIRY_DAYS = 30
#: Keys of ``event_config`` that Portside keeps for itself (not shown).
INTERNAL_EVENT_CONFIG = ("last_ran_ms",)


@dataclass(frozen=True)
class NotificationInfo:
    """A repository notification as Quay shows it."""

    id: int
    uuid: str
    title: str | None
    event: str
    method: str
    config: dict[str, Any]
    event_config: dict[str, Any]
    number_of_failures: int


def _info(row: RepositoryNotification, box: SecretBox) -> NotificationInfo:
    event_config = {key: value for key, value in (row.event_config or {}).items()
                    if key not in INTERNAL_EVENT_CONFIG}
    return NotificationInfo(row.id, row.uuid, row.title, row.event, row.method,
                            open_config(row.config or {}, box), event_config,
                            row.number_of_failures)


def check_event_config(event: str, event_config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``event_config`` to store for ``event``; raises :class:`Invalid`."""
    if len(json.dumps(event_config, default=str)) > MAX_EVENT_CONFIG_LENGTH:
        raise Invalid(f"eventConfig must be at most {MAX_EVENT_CONFIG_LENGTH} characters "
                      "of JSON")
    stored = {key: value for key, value in event_config.items()
              if key not in INTERNAL_EVENT_CONFIG}
    if event == "repo_image_expiry":
        days = event_config.get("days")
        try:
            number = int(days) if not isinstance(days, bool) else None  # type: ignore[arg-type]
        except (TypeError, ValueError):
            number = None
        if number is None or not 1 <= number <= MAX_EXPIRY_DAYS:
            raise Invalid(f"eventConfig.days must be a number of days from 1 to "
                          f"{MAX_EXPIRY_DAYS}")
        stored["days"] = number
    elif event == "vulnerability_found" and "level" in event_config:
        level = event_config["level"]
        try:
            valid = not isinstance(level, bool) and 0 <= int(level) <= 6
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise Invalid("eventConfig.level must be a priority index from 0 (Defcon1) "
                          "to 6 (Unknown)")
    return stored


class NotificationService:
    """A repository's notifications (see the module docstring)."""

    def __init__(self, db: Database, policy: Policy, outbound: OutboundPolicy,
                 mailing_enabled: bool, box: SecretBox) -> None:
        self._db = db
        #: Encrypts the URLs of configs at rest.
        self._box = box
        self._policy = policy
        self._outbound = outbound
        self._mailing_enabled = mailing_enabled

    def _repository(self, session: Session, subject: Subject, namespace: str,
                    name: str) -> RepositoryRef:
        return administered_repository(session, subject, namespace, name, self._policy)

    @staticmethod
    def _row(session: Session, repository: RepositoryRef, notification_uuid: str
             ) -> RepositoryNotification:
        row = session.scalar(select(RepositoryNotification).where(
            RepositoryNotification.repository_id == repository.id,
            RepositoryNotification.uuid == notification_uuid[:36]))
        if row is None:
            raise NotFound(f"No repository notification found for: {repository.full_name}, "
                           f"{notification_uuid[:100]}")
        return row

    # --- reading ----------------------------------------------------------------------
    def list(self, subject: Subject, namespace: str, name: str) -> list[NotificationInfo]:
        """The repository's notifications, oldest first."""
        with self._db.read() as connection, Session(bind=connection) as session:
            repository = self._repository(session, subject, namespace, name)
            rows = session.scalars(select(RepositoryNotification)
                                   .where(RepositoryNotification.repository_id == repository.id)
                                   .order_by(RepositoryNotification.id))
            return [_info(row, self._box) for row in rows]

    def get(self, subject: Subject, namespace: str, name: str,
            notification_uuid: str) -> NotificationInfo:
        """One notification of the repository."""
        with self._db.read() as connection, Session(bind=connection) as session:
            repository = self._repository(session, subject, namespace, name)
            return _info(self._row(session, repository, notification_uuid), self._box)

    # --- changes ----------------------------------------------------------------------
    def create(self, subject: Subject, namespace: str, name: str, *, event: str,
               method: str, config: Mapping[str, Any], event_config: Mapping[str, Any],
               title: str | None, ip: str | None = None) -> NotificationInfo:
        """Add a notification; records ``add_repo_notification``."""
        # Checked on a read connection first: the URL check resolves host names, which
        # must not happen while the write transaction holds SQLite's lock.
        with self._db.read() as connection, Session(bind=connection) as session:
            repository = self._repository(session, subject, namespace, name)
            if event not in EVENTS:
                raise Invalid(f"Unknown notification event {event[:50]!r}: use one of "
                              f"{', '.join(EVENTS)}")
            if title is not None and len(title) > MAX_TITLE_LENGTH:
                raise Invalid(f"The title must be at most {MAX_TITLE_LENGTH} characters")
            stored_event_config = check_event_config(event, event_config)
            owner = session.scalar(select(Namespace).join(
                Repository, Repository.namespace_id == Namespace.id)
                .where(Repository.id == repository.id))
            if owner is None:
                raise NotFound(f"Repository {namespace}/{name} not found.")
            stored_config = validate_config(session, owner, method, config,
                                            outbound=self._outbound,
                                            mailing_enabled=self._mailing_enabled)
        with self._db.session() as session:
            repository = self._repository(session, subject, namespace, name)
            row = RepositoryNotification(
                uuid=str(uuid.uuid4()), repository_id=repository.id, event=event,
                method=method, title=title or None,
                config=seal_config(stored_config, self._box),
                event_config=stored_event_config, number_of_failures=0, created_at=utcnow())
            session.add(row)
            session.flush()
            record_for_repository(session, "add_repo_notification", repository.id,
                                  AuditContext(subject, ip), notification_id=row.uuid,
                                  event=event, method=method)
            return _info(row, self._box)

    def delete(self, subject: Subject, namespace: str, name: str, notification_uuid: str,
               ip: str | None = None) -> None:
        """Remove a notification; records ``delete_repo_notification``."""
        with self._db.session() as session:
            repository = self._repository(session, subject, namespace, name)
            row = self._row(session, repository, notification_uuid)
            record_for_repository(session, "delete_repo_notification", repository.id,
                                  AuditContext(subject, ip), notification_id=row.uuid,
                                  event=row.event, method=row.method)
            session.delete(row)

    def reset_failures(self, subject: Subject, namespace: str, name: str,
                       notification_uuid: str, ip: str | None = None) -> NotificationInfo:
        """Set ``number_of_failures`` back to 0 (re-enables a disabled notification);
        records ``reset_repo_notification``."""
        with self._db.session() as session:
            repository = self._repository(session, subject, namespace, name)
            row = self._row(session, repository, notification_uuid)
            row.number_of_failures = 0
            session.flush()
            record_for_repository(session, "reset_repo_notification", repository.id,
                                  AuditContext(subject, ip), notification_id=row.uuid,
                                  event=row.event, method=row.method)
            return _info(row, self._box)

    def queue_test(self, subject: Subject, namespace: str, name: str,
                   notification_uuid: str) -> None:
        """Queue a delivery of the event's sample data (also for a disabled
        notification: testing is how one checks a fix before resetting)."""
        with self._db.session() as session:
            repository = self._repository(session, subject, namespace, name)
            row = self._row(session, repository, notification_uuid)
            kind = EVENTS.get(row.event)
            if kind is None:
                raise Invalid(f"Unknown notification event {row.event!r}")
            event_data = event_data_for(session, repository.id,
                                        kind.sample(row.event_config or {}))
            if event_data is None:
                raise NotFound(f"Repository {namespace}/{name} not found.")
            enqueue_delivery(session, row.uuid, row.event, event_data, test=True)


# --- in-app notifications ---------------------------------------------------------------
@dataclass(frozen=True)
class UserNotificationInfo:
    """An in-app notification as Quay shows it."""

    uuid: str
    kind: str
    created_at: datetime
    metadata: dict[str, Any]
    dismissed: bool


def _user_info(row: UserNotification) -> UserNotificationInfo:
    return UserNotificationInfo(row.uuid, row.kind, row.created_at,
                                dict(row.metadata_json or {}), bool(row.dismissed))


class UserNotificationService:
    """A signed-in user's in-app notifications."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def list(self, user_id: int, page: int, limit: int
             ) -> tuple[list[UserNotificationInfo], bool]:
        """A page of the user's notifications that are not dismissed, newest first, and
        whether more follow (dismissed ones stay readable one by one, as in Quay)."""
        page, limit = max(page, 0), min(max(limit, 1), 100)
        with self._db.read() as connection, Session(bind=connection) as session:
            rows = session.scalars(
                select(UserNotification).where(UserNotification.user_id == user_id,
                                               UserNotification.dismissed.is_(False))
                .order_by(UserNotification.created_at.desc(), UserNotification.id.desc())
                .offset(page * limit).limit(limit + 1)).all()
            return [_user_info(row) for row in rows[:limit]], len(rows) > limit

    def _row(self, session: Session, user_id: int, notification_uuid: str
             ) -> UserNotification:
        row = session.scalar(select(UserNotification).where(
            UserNotification.user_id == user_id,
            UserNotification.uuid == notification_uuid[:36]))
        if row is None:
            raise NotFound("Notification not found")
        return row

    def get(self, user_id: int, notification_uuid: str) -> UserNotificationInfo:
        """One of the user's notifications."""
        with self._db.read() as connection, Session(bind=connection) as session:
            return _user_info(self._row(session, user_id, notification_uuid))

    def set_dismissed(self, user_id: int, notification_uuid: str,
                      dismissed: bool) -> UserNotificationInfo:
        """Dismiss (or bring back) one of the user's notifications."""
        with self._db.session() as session:
            row = self._row(session, user_id, notification_uuid)
            row.dismissed = dismissed
            session.flush()
            return _user_info(row)
