"""Repository events (Quay's names) and raising them: :func:`emit_event`.

An event is raised inside the transaction of the change it reports (a push, a mirror
sync, a quota refusal in a transaction of its own since the push rolls back): for
every enabled notification of the repository on that event whose ``event_config``
accepts the event's data, one item goes to the ``notification`` work queue. The queue
handler (:mod:`portside.services.notification_delivery`) then delivers it with the
notification's method.

A queue item's body is Quay's ``notification_data``::

    {"notification_uuid": ..., "event": "repo_push",
     "event_data": {"repository": "ns/name", "namespace": "ns", "name": "name",
                    "updated_tags": [...]},
     "performer_data": {}}

``docker_url`` and ``homepage`` are added at delivery, from the configured host name.
A notification is *disabled* while its ``number_of_failures`` is at or over
``NOTIFICATION_FAILURE_LIMIT``; :func:`emit_event` skips it until the failures are
reset (``POST .../notification/{uuid}``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from portside.db.models import Namespace, Repository, RepositoryNotification
from portside.services.queue import enqueue

__all__ = [
    "EVENTS",
    "NOTIFICATION_QUEUE",
    "NOTIFICATION_RETRIES",
    "EventKind",
    "emit_event",
    "enqueue_delivery",
    "event_data_for",
    "failure_limit",
    "set_failure_limit",
]

#: The work queue of deliveries.
NOTIFICATION_QUEUE = "notification"
#: Attempts per delivery (with the queue's backoff: 10 s, then 20 s) before it counts
#: as one failure of the notification.
NOTIFICATION_RETRIES = 3

#: Quay's vulnerability priorities and their indexes (lower is more severe); a
#: ``vulnerability_found`` notification's ``level`` is an index: it fires for
#: vulnerabilities at that priority or worse.
PRIORITY_LEVELS: dict[str, int] = {
    "Defcon1": 0, "Critical": 1, "High": 2, "Medium": 3, "Low": 4, "Negligible": 5,
    "Unknown": 6,
}


#: The message of sample events sent by ``POST .../notification/{uuid}/test``.
SAMPLE_MESSAGE = "Sample event sent to test this notification"


def _always(_data: Mapping[str, Any], _config: Mapping[str, Any]) -> bool:
    return True


def _vulnerability_matches(data: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    """Quay's filter: without ``level`` every report fires; otherwise the
    vulnerability's priority index must be at or below the configured one."""
    if "level" not in config:
        return True
    vulnerability = data.get("vulnerability")
    if not isinstance(vulnerability, Mapping):
        return False
    actual = PRIORITY_LEVELS.get(str(vulnerability.get("priority", "Unknown")))
    try:
        wanted = int(config["level"])
    except (TypeError, ValueError):
        return False
    return actual is not None and actual <= wanted


def _priority_for(level: Any) -> str:
    try:
        index = int(level)
    except (TypeError, ValueError):
        return "Critical"
    for name, value in PRIORITY_LEVELS.items():
        if value == index:
            return name
    return "Critical"


@dataclass(frozen=True)
class EventKind:
    """What Portside knows about one event."""

    name: str
    #: ``info``, ``warning``, ``error``, ``primary`` or ``success`` (Quay's levels;
    #: Slack colours follow them).
    level: str
    #: One line for e-mail subjects, Slack and in-app notifications.
    summary: Callable[[Mapping[str, Any]], str]
    #: The event's own fields in a test delivery (``POST .../test``).
    sample: Callable[[Mapping[str, Any]], dict[str, Any]]
    #: Whether a notification with this ``event_config`` wants the event.
    matches: Callable[[Mapping[str, Any], Mapping[str, Any]], bool] = field(default=_always)


def _repo(data: Mapping[str, Any]) -> str:
    return str(data.get("repository", ""))


def _quota_summary(word: str) -> Callable[[Mapping[str, Any]], str]:
    def summary(data: Mapping[str, Any]) -> str:
        return f"Quota {word} in namespace {data.get('namespace', '')} ({_repo(data)})"

    return summary


def _quota_sample(data: Mapping[str, Any]) -> dict[str, Any]:
    return {"usage_bytes": 900, "limit_bytes": 1000, "threshold_percent": 90,
            "message": SAMPLE_MESSAGE}


def _vulnerability_summary(data: Mapping[str, Any]) -> str:
    vulnerability = data.get("vulnerability")
    priority = (vulnerability.get("priority", "Unknown") if isinstance(vulnerability, Mapping)
                else "Unknown")
    tags = data.get("tags") or []
    return (f"{priority} vulnerability detected in repository {_repo(data)} "
            f"in {len(tags)} tags")


#: Every event a notification can be created for, by name.
EVENTS: dict[str, EventKind] = {
    kind.name: kind
    for kind in (
        EventKind("repo_push", "primary", lambda d: f"Repository {_repo(d)} updated",
                  lambda _c: {"updated_tags": ["sample-tag"]}),
        EventKind("repo_mirror_sync_started", "info",
                  lambda d: f"Repository Mirror started for {_repo(d)}",
                  lambda _c: {"message": SAMPLE_MESSAGE}),
        EventKind("repo_mirror_sync_success", "success",
                  lambda d: f"Repository Mirror success for {_repo(d)}",
                  lambda _c: {"message": SAMPLE_MESSAGE}),
        EventKind("repo_mirror_sync_failed", "error",
                  lambda d: f"Repository Mirror failed for {_repo(d)}",
                  lambda _c: {"message": SAMPLE_MESSAGE}),
        EventKind("repo_image_expiry", "info",
                  lambda d: f"Repository {_repo(d)} image(s) expiring",
                  lambda c: {"tags": ["sample-tag"],
                             "expiring_in": f"{c.get('days')} days"}),
        EventKind("vulnerability_found", "warning", _vulnerability_summary,
                  lambda c: {"tags": ["sample-tag"], "image": "sha256:" + "0" * 64,
                             "vulnerability": {
                                 "id": "SAMPLE-0000",
                                 "description": "Sample vulnerability sent by a "
                                                "notification test; nothing was found.",
                                 "link": "",
                                 "priority": _priority_for(c.get("level", 1))}},
                  _vulnerability_matches),
        EventKind("quota_warning", "warning", _quota_summary("warning"), _quota_sample),
        EventKind("quota_error", "error", _quota_summary("exceeded"), _quota_sample),
    )
}


def event_data_for(session: Session, repository_id: int,
                   data: Mapping[str, Any]) -> dict[str, Any] | None:
    """Quay's ``event_data``: the repository's names, then ``data``; ``None`` if the
    repository does not exist (any more)."""
    row = session.execute(
        select(Namespace.name, Repository.name)
        .join(Namespace, Namespace.id == Repository.namespace_id)
        .where(Repository.id == repository_id)
    ).first()
    if row is None:
        return None
    namespace, name = row
    return {"repository": f"{namespace}/{name}", "namespace": namespace, "name": name,
            **data}


# The failure limit is configuration; emit_event's signature is fixed, so the app sets
# it once at start-up (every process reads the same config).
_failure_limit = {"value": 3}


def set_failure_limit(limit: int) -> None:
    """Set ``NOTIFICATION_FAILURE_LIMIT`` for :func:`emit_event` (called by the app)."""
    _failure_limit["value"] = max(int(limit), 1)


def failure_limit() -> int:
    """The current ``NOTIFICATION_FAILURE_LIMIT``."""
    return _failure_limit["value"]


def emit_event(session: Session, repository_id: int, event: str, data: dict[str, Any]) -> int:
    """Queue a delivery for every enabled notification of ``repository_id`` on ``event``
    whose ``event_config`` matches ``data``, in the caller's transaction (the event and
    the change it reports commit together). Returns how many deliveries were queued.

    ``data`` holds the event's own fields (e.g. ``updated_tags`` for ``repo_push``);
    the repository's names and URLs are added when the payload is built.
    """
    kind = EVENTS.get(event)
    if kind is None:
        raise ValueError(f"unknown notification event {event!r}")
    notifications = session.execute(
        select(RepositoryNotification.uuid, RepositoryNotification.event_config)
        .where(RepositoryNotification.repository_id == repository_id,
               RepositoryNotification.event == event,
               RepositoryNotification.number_of_failures < failure_limit())
        .order_by(RepositoryNotification.id)
    ).all()
    if not notifications:
        return 0  # the common case: one indexed query, nothing else
    event_data = event_data_for(session, repository_id, data)
    if event_data is None:
        return 0
    queued = 0
    for uuid, event_config in notifications:
        if kind.matches(event_data, event_config or {}):
            enqueue_delivery(session, uuid, event, event_data)
            queued += 1
    return queued


def enqueue_delivery(session: Session, notification_uuid: str, event: str,
                     event_data: dict[str, Any], *, test: bool = False) -> None:
    """Queue one delivery of ``event_data`` for one notification (``test``: a sample
    from ``POST .../test``, delivered even while the notification is disabled)."""
    body: dict[str, Any] = {"notification_uuid": notification_uuid, "event": event,
                            "event_data": event_data, "performer_data": {}}
    if test:
        body["test"] = True
    enqueue(session, NOTIFICATION_QUEUE, body, retries=NOTIFICATION_RETRIES)
