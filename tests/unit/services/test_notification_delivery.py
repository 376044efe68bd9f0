"""Raising events (:func:`emit_event`), the delivery handler's failure counting and the
``repo_image_expiry`` announcer, against SQLite and PostgreSQL and a loopback HTTP
server."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from portside.auth.secrets import SecretBox
from portside.db.engine import Database, create_db_engine
from portside.db.migrate import upgrade
from portside.db.models import (
    Manifest,
    Namespace,
    QueueItem,
    Repository,
    RepositoryNotification,
    Tag,
    utcnow,
)
from portside.services.mailer import Mailer
from portside.services.notification_delivery import ImageExpiryAnnouncer, NotificationDelivery
from portside.services.notification_events import NOTIFICATION_QUEUE, emit_event
from portside.services.notification_methods import DeliveryFailed
from portside.services.outbound import OutboundPolicy
from portside.services.queue import QueueJob
from support.server import postgres_available, postgres_database

DAY_MS = 86_400_000


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated database of each kind."""
    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path / 'notifications.db'}"
        with _migrated(uri) as database:
            yield database
        return
    if not postgres_available():
        if os.environ.get("PORTSIDE_TEST_POSTGRES") == "1":
            pytest.fail("PostgreSQL unreachable (PORTSIDE_TEST_POSTGRES=1 requires it)")
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    with postgres_database() as uri, _migrated(uri) as database:
        yield database


class _migrated:
    def __init__(self, uri: str) -> None:
        engine = create_db_engine(uri)
        upgrade(engine)
        self.database = Database(engine)

    def __enter__(self) -> Database:
        return self.database

    def __exit__(self, *_exc: object) -> None:
        self.database.dispose()


class Hook:
    """A loopback HTTP server answering ``status`` and keeping the JSON bodies."""

    def __init__(self) -> None:
        self.status = 200
        self.received: list[Any] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                hook.received.append(json.loads(self.rfile.read(length)))
                self.send_response(hook.status)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                return

        self._server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook?token=s3cret"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    yield server
    server.close()


def make_repository(db: Database) -> int:
    with db.session() as session:
        namespace = Namespace(name=f"ns{uuid.uuid4().hex[:8]}", kind="user")
        session.add(namespace)
        session.flush()
        repository = Repository(namespace_id=namespace.id, name="app")
        session.add(repository)
        session.flush()
        return repository.id


def add_notification(db: Database, repository_id: int, event: str, url: str = "http://x",
                     failures: int = 0, **event_config: Any) -> str:
    with db.session() as session:
        row = RepositoryNotification(uuid=str(uuid.uuid4()), repository_id=repository_id,
                                     event=event, method="webhook", config={"url": url},
                                     event_config=event_config, number_of_failures=failures,
                                     created_at=utcnow())
        session.add(row)
        session.flush()
        return row.uuid


def queued(db: Database) -> list[dict[str, Any]]:
    with db.session() as session:
        items = session.scalars(select(QueueItem).where(QueueItem.queue_name == NOTIFICATION_QUEUE)
                                .order_by(QueueItem.id))
        return [dict(item.body) for item in items]


def failures(db: Database, notification_uuid: str) -> int:
    with db.session() as session:
        return int(session.scalar(select(RepositoryNotification.number_of_failures).where(
            RepositoryNotification.uuid == notification_uuid)) or 0)


def test_emit_event_queues_matching_enabled_notifications(db: Database) -> None:
    repository_id = make_repository(db)
    push = add_notification(db, repository_id, "repo_push")
    add_notification(db, repository_id, "repo_push", failures=3)  # disabled (limit 3)
    add_notification(db, repository_id, "repo_mirror_sync_failed")
    critical = add_notification(db, repository_id, "vulnerability_found", level=1)
    with db.session() as session:
        assert emit_event(session, repository_id, "repo_push", {"updated_tags": ["v1"]}) == 1
        assert emit_event(session, repository_id, "vulnerability_found",
                          {"vulnerability": {"priority": "Low"}}) == 0
        assert emit_event(session, repository_id, "vulnerability_found",
                          {"vulnerability": {"priority": "Critical"}}) == 1
        assert emit_event(session, repository_id + 1000, "repo_push", {}) == 0
    bodies = queued(db)
    assert [b["notification_uuid"] for b in bodies] == [push, critical]
    first = bodies[0]
    assert first["event"] == "repo_push"
    assert first["event_data"]["updated_tags"] == ["v1"]
    assert first["event_data"]["repository"].endswith("/app")
    assert first["event_data"]["name"] == "app"


def test_emit_event_rolls_back_with_the_caller(db: Database) -> None:
    repository_id = make_repository(db)
    add_notification(db, repository_id, "repo_push")
    with pytest.raises(RuntimeError), db.session() as session:
        assert emit_event(session, repository_id, "repo_push", {"updated_tags": ["x"]}) == 1
        raise RuntimeError("the push failed")
    assert queued(db) == []


def test_unknown_event_is_a_programming_error(db: Database) -> None:
    with db.session() as session, pytest.raises(ValueError):
        emit_event(session, 1, "repo_pushed", {})


def delivery(db: Database, limit: int = 2) -> NotificationDelivery:
    mailer = Mailer(False, "", 25, False, False, "", "", "portside@example.com")
    return NotificationDelivery(db, OutboundPolicy(["127.0.0.0/8"]), mailer,
                                SecretBox("unit-test-secret"),
                                server_hostname="registry.example.com", url_scheme="https",
                                limit=limit)


def job(notification_uuid: str, retries_remaining: int, **extra: Any) -> QueueJob:
    body = {"notification_uuid": notification_uuid, "event": "repo_push",
            "event_data": {"repository": "alice/app", "namespace": "alice", "name": "app",
                           "updated_tags": ["v1"]}, "performer_data": {}, **extra}
    return QueueJob(1, NOTIFICATION_QUEUE, body, retries_remaining, utcnow())


def test_failures_count_when_the_queue_gives_up(db: Database, hook: Hook) -> None:
    notification = add_notification(db, make_repository(db), "repo_push", hook.url)
    handler = delivery(db)
    hook.status = 500
    with pytest.raises(DeliveryFailed) as raised:
        handler.run(job(notification, retries_remaining=2))
    assert "answered 500" in str(raised.value)
    assert "s3cret" not in str(raised.value) and "/hook" not in str(raised.value)
    assert failures(db, notification) == 0  # the queue retries: not given up yet
    with pytest.raises(DeliveryFailed):
        handler.run(job(notification, retries_remaining=0))
    assert failures(db, notification) == 1
    with pytest.raises(DeliveryFailed):
        handler.run(job(notification, retries_remaining=0))
    assert failures(db, notification) == 2
    # Disabled: queued deliveries are dropped, except tests.
    hook.status = 200
    handler.run(job(notification, retries_remaining=2))
    assert len(hook.received) == 3
    handler.run(job(notification, retries_remaining=2, test=True))
    assert len(hook.received) == 4
    assert failures(db, notification) == 0  # a success resets the count
    payload = hook.received[-1]
    assert payload["docker_url"] == "registry.example.com/alice/app"
    assert payload["homepage"] == "https://registry.example.com/repository/alice/app"
    assert payload["updated_tags"] == ["v1"]


def test_refused_urls_fail_without_leaking_them(db: Database) -> None:
    notification = add_notification(db, make_repository(db), "repo_push",
                                    "http://169.254.169.254/latest?key=s3cret")
    with pytest.raises(DeliveryFailed) as raised:
        delivery(db).run(job(notification, retries_remaining=1))
    assert "refused" in str(raised.value) and "s3cret" not in str(raised.value)


def test_deleted_notifications_are_dropped(db: Database, hook: Hook) -> None:
    delivery(db).run(job(str(uuid.uuid4()), retries_remaining=0))
    assert hook.received == []


def add_tag(db: Database, repository_id: int, name: str, expiration_ms: int | None) -> None:
    with db.session() as session:
        manifest = Manifest(repository_id=repository_id, digest=f"sha256:{uuid.uuid4().hex}",
                            media_type="application/vnd.oci.image.manifest.v1+json", size=2,
                            content=b"{}")
        session.add(manifest)
        session.flush()
        session.add(Tag(repository_id=repository_id, name=name, manifest_id=manifest.id,
                        lifetime_start_ms=0, expiration_ms=expiration_ms))


def test_expiring_tags_are_announced_once(db: Database) -> None:
    repository_id = make_repository(db)
    notification = add_notification(db, repository_id, "repo_image_expiry", days=2)
    now = int(utcnow().timestamp() * 1000)
    add_tag(db, repository_id, "soon", now + DAY_MS)              # within 2 days
    add_tag(db, repository_id, "later", now + 2 * DAY_MS + 5000)  # enters in 5 s
    add_tag(db, repository_id, "never", None)
    add_tag(db, repository_id, "far", now + 10 * DAY_MS)
    announcer = ImageExpiryAnnouncer(db)
    assert announcer.run_pass(now) == 1
    assert announcer.run_pass(now + 1000) == 0  # nothing new entered the window
    assert announcer.run_pass(now + 10_000) == 1
    assert announcer.run_pass(now + 20_000) == 0
    bodies = queued(db)
    assert [b["event_data"]["tags"] for b in bodies] == [["soon"], ["later"]]
    assert all(b["notification_uuid"] == notification for b in bodies)
    assert bodies[0]["event_data"]["expiring_in"] == "2 days"
    # The bookkeeping stays out of the API's view.
    with db.session() as session:
        row = session.scalar(select(RepositoryNotification)
                             .where(RepositoryNotification.uuid == notification))
        assert row is not None and row.event_config["last_ran_ms"] == now + 20_000


def test_expiry_catches_up_after_downtime(db: Database) -> None:
    repository_id = make_repository(db)
    add_notification(db, repository_id, "repo_image_expiry", days=1)
    announcer = ImageExpiryAnnouncer(db)
    now = int(utcnow().timestamp() * 1000)
    assert announcer.run_pass(now) == 0
    add_tag(db, repository_id, "a", now + DAY_MS + int(timedelta(hours=3).total_seconds() * 1000))
    # Six hours without a pass: the tag entered the window meanwhile and is announced.
    assert announcer.run_pass(now + 6 * 3_600_000) == 1
    assert [b["event_data"]["tags"] for b in queued(db)] == [["a"]]
