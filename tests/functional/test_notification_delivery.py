"""Notification deliveries end to end: a real push through ``/v2`` raises ``repo_push``
and a loopback HTTP server receives the webhook; Slack messages; e-mail received by a
local SMTP server (aiosmtpd); templates; the test endpoint; a failing webhook disabled
after ``NOTIFICATION_FAILURE_LIMIT`` failures and re-enabled by a reset;
``repo_image_expiry`` for a tag given an expiration; ``quota_error`` for a refused push.
"""

from __future__ import annotations

import contextlib
import email
import email.message
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select, update

from functional.client import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    RegistryClient,
    descriptor,
    error_codes,
    random_bytes,
    to_json,
)
from functional.conftest import LOOPBACK, Deployment, create_users, unique_repo
from functional.test_api_notifications import SCOPES, client_for, notifications_path
from functional.test_api_organizations import create_superuser, unique_org
from portside.db.engine import Database, create_db_engine
from portside.db.models import QueueItem, utcnow
from portside.services.notification_delivery import ImageExpiryAnnouncer
from portside.services.notification_events import NOTIFICATION_QUEUE
from support.server import free_port, postgres_database, running_registry

#: The secret part of the hook URLs: it must never reach the server's log.
SECRET = "hook-s3cret-token"
#: ``DEFAULT_SYSTEM_REJECT_QUOTA_BYTES`` of the mail server (a few small images fit).
QUOTA_BYTES = 8192


class Hook:
    """A loopback HTTP server that answers ``status`` and keeps what was POSTed."""

    def __init__(self) -> None:
        self.status = 200
        self.received: list[tuple[str, dict[str, str], Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                hook.received.append((self.path, dict(self.headers), body))
                self.send_response(hook.status)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                return

        self._server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook?token={SECRET}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def bodies(self) -> list[Any]:
        """The JSON bodies received so far."""
        return [body for _path, _headers, body in self.received]

    def wait(self, count: int, timeout_s: float = 20.0) -> list[Any]:
        """The bodies, once at least ``count`` arrived."""
        deadline = time.monotonic() + timeout_s
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"{len(self.received)} of {count} received"
            time.sleep(0.1)
        return self.bodies

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    yield server
    server.close()


def create(client: httpx.Client, repo: str, method: str, config: dict[str, Any],
           event: str = "repo_push", **event_config: Any) -> str:
    """Create a notification (which must succeed); returns its uuid."""
    response = client.post(notifications_path(repo), json={
        "event": event, "method": method, "config": config, "eventConfig": event_config})
    assert response.status_code == 201, response.text
    return str(response.json()["uuid"])


@contextlib.contextmanager
def database_of(deployment: Deployment) -> Iterator[Database]:
    db = Database(create_db_engine(deployment.registry.config["DB_URI"]))
    try:
        yield db
    finally:
        db.dispose()


def queued_for(deployment: Deployment, notification_uuid: str) -> int:
    """Deliveries of the notification waiting in the queue."""
    with database_of(deployment) as db, db.session() as session:
        bodies = session.scalars(select(QueueItem.body).where(
            QueueItem.queue_name == NOTIFICATION_QUEUE, QueueItem.state == "queued"))
        return sum(1 for body in bodies if body.get("notification_uuid") == notification_uuid)


def skip_backoff(deployment: Deployment) -> None:
    """Make waiting deliveries claimable now instead of after the queue's backoff
    (10 s, then 20 s): the retries themselves are real."""
    with database_of(deployment) as db, db.session() as session:
        session.execute(update(QueueItem).where(
            QueueItem.queue_name == NOTIFICATION_QUEUE, QueueItem.state == "queued",
            QueueItem.processing_expires.is_(None)).values(available_after=utcnow()))


def wait_until(condition: Callable[[], bool], timeout_s: float = 30.0,
               step: Callable[[], None] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        if step is not None:
            step()
        time.sleep(0.3)


# --- webhooks and Slack on the main server ---------------------------------------------
def test_push_delivers_the_webhook_payload(registry: Deployment, alice: RegistryClient,
                                           hook: Hook) -> None:
    repo = unique_repo("alice", "hooked")
    alice.push_image(repo, "v1")
    with client_for(registry, "alice") as client:
        create(client, repo, "webhook", {"url": hook.url})
    image = alice.push_image(repo, "v2")
    alice.push_manifest(repo, image.digest, image.manifest)  # by digest: no tag, no event
    path, headers, payload = hook.received[0] if hook.wait(1) else ("", {}, None)
    namespace, name = repo.split("/", 1)
    assert payload == {
        "repository": repo, "namespace": namespace, "name": name,
        "docker_url": f"{registry.registry.host}/{repo}",
        "homepage": f"{registry.url}/repository/{repo}",
        "updated_tags": ["v2"],
    }
    assert path == f"/hook?token={SECRET}"
    assert headers["Content-Type"] == "application/json"
    time.sleep(1.5)
    assert len(hook.received) == 1


def test_template_shapes_the_webhook_body(registry: Deployment, alice: RegistryClient,
                                          hook: Hook) -> None:
    repo = unique_repo("alice", "templated")
    alice.push_image(repo, "v1")
    template = json.dumps({"msg": "${repository} got ${updated_tags}",
                           "tags": "${updated_tags}", "missing": "${nothing}",
                           "nested": {"first": "${updated_tags[0]}"}})
    with client_for(registry, "alice") as client:
        create(client, repo, "webhook", {"url": hook.url, "template": template})
    alice.push_image(repo, "latest")
    assert hook.wait(1)[0] == {"msg": f"{repo} got latest", "tags": ["latest"],
                               "missing": None, "nested": {"first": "latest"}}


def test_slack_message_from_the_test_endpoint(registry: Deployment, alice: RegistryClient,
                                              hook: Hook) -> None:
    repo = unique_repo("alice", "slack")
    alice.push_image(repo, "v1")
    with client_for(registry, "alice") as client:
        uuid = create(client, repo, "slack", {"url": hook.url})
        tested = client.post(f"{notifications_path(repo)}{uuid}/test")
        assert tested.status_code == 200 and tested.json() == {}
        unknown = client.post(f"{notifications_path(repo)}nope/test")
        assert unknown.status_code == 404
    message = hook.wait(1)[0]
    summary = f"Repository {repo} updated"
    assert message["text"] == summary
    assert message["username"] == "portside"
    attachment = message["attachments"][0]
    assert attachment["fallback"] == summary and attachment["color"] == "good"
    assert attachment["mrkdwn_in"] == ["text"]
    assert f"/repository/{repo}|{repo}>" in attachment["text"]
    assert "Tags: sample-tag" in attachment["text"]  # the sample data


def test_failing_webhook_is_disabled_then_reset(registry: Deployment, alice: RegistryClient,
                                                hook: Hook) -> None:
    log_offset = registry.log_size()
    repo = unique_repo("alice", "failing")
    alice.push_image(repo, "v1")
    hook.status = 500
    with client_for(registry, "alice") as client:
        uuid = create(client, repo, "webhook", {"url": hook.url})
        one = f"{notifications_path(repo)}{uuid}"
        limit = 3  # NOTIFICATION_FAILURE_LIMIT's default
        for _ in range(limit):
            assert client.post(f"{one}/test").status_code == 200

        def failures() -> int:
            return int(client.get(one).json()["number_of_failures"])

        wait_until(lambda: failures() >= limit, timeout_s=60,
                   step=lambda: skip_backoff(registry))
        assert failures() == limit
        # Each delivery was attempted 3 times before it counted as one failure.
        assert len(hook.received) == 3 * limit
        # Disabled: a push queues nothing for it.
        alice.push_image(repo, "v2")
        assert queued_for(registry, uuid) == 0
        time.sleep(1.5)
        assert len(hook.received) == 3 * limit
        # Reset (Quay's "reset number of failures"), and the hook works again.
        reset = client.post(one)
        assert reset.status_code == 204, reset.text
        assert failures() == 0
        hook.status = 200
        alice.push_image(repo, "v3")
        bodies = hook.wait(3 * limit + 1)
        assert bodies[-1]["updated_tags"] == ["v3"]
        assert failures() == 0
        logs = client.get(f"/repository/{repo}/logs").json()["logs"]
        assert "reset_repo_notification" in [entry["kind"] for entry in logs]
    with registry.registry.log_path.open("rb") as server_log:
        server_log.seek(log_offset)
        text = server_log.read().decode(errors="replace")
    assert "answered 500" in text  # the failures were logged...
    assert SECRET not in text and "/hook" not in text  # ...without the URL's secrets


def test_tag_expiry_is_announced(registry: Deployment, alice: RegistryClient,
                                 hook: Hook) -> None:
    repo = unique_repo("alice", "expiring")
    alice.push_image(repo, "v1")
    alice.push_image(repo, "stays")
    with client_for(registry, "alice") as client:
        create(client, repo, "webhook", {"url": hook.url}, event="repo_image_expiry", days=1)
        expiration = time.time() + 86_400 - 600  # within the next day
        changed = client.put(f"/repository/{repo}/tag/v1", json={"expiration": expiration})
        assert changed.status_code in (200, 201), changed.text
    # The periodic pass runs every few minutes in the server; run one now, in-process,
    # on the server's database (its own passes are idempotent with this one).
    with database_of(registry) as db:
        announcer = ImageExpiryAnnouncer(db)
        announcer.run_pass()
        announcer.run_pass()  # the same tags are not announced twice
    payload = hook.wait(1)[0]
    assert payload["repository"] == repo
    assert payload["tags"] == ["v1"] and payload["expiring_in"] == "1 days"
    time.sleep(1.5)
    assert len(hook.received) == 1


# --- e-mail and quotas on a server of their own -----------------------------------------
class Inbox:
    """aiosmtpd handler keeping every message."""

    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"

    def wait(self, count: int, timeout_s: float = 20.0) -> list[email.message.Message]:
        deadline = time.monotonic() + timeout_s
        while len(self.messages) < count:
            assert time.monotonic() < deadline, f"{len(self.messages)} of {count} mails"
            time.sleep(0.1)
        return self.messages


@pytest.fixture(scope="module")
def mail_server(backend: str, tmp_path_factory: pytest.TempPathFactory,
                ) -> Iterator[tuple[Deployment, Inbox]]:
    """An SMTP server on loopback, then a registry that mails through it (and refuses
    pushes over a small default quota)."""
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        with contextlib.ExitStack() as stack:
            db_uri = stack.enter_context(postgres_database()) if backend == "postgres" else None
            registry = stack.enter_context(running_registry(
                tmp_path_factory.mktemp(f"notify-mail-{backend}"), db_uri=db_uri,
                LOGIN_FAILURE_LIMIT=0, SSRF_ALLOWED_HOSTS=LOOPBACK, FEATURE_MAILING=True,
                MAIL_SERVER="127.0.0.1", MAIL_PORT=controller.port, MAIL_USE_TLS=False,
                MAIL_DEFAULT_SENDER="registry@example.com", FEATURE_QUOTA_MANAGEMENT=True,
                DEFAULT_SYSTEM_REJECT_QUOTA_BYTES=QUOTA_BYTES))
            create_users(registry, ("alice", "bob"))
            deployment = Deployment(registry, backend, "notify-mail")
            yield deployment, inbox
            deployment.close_clients()
            assert not deployment.unhandled_errors()
    finally:
        controller.stop()


def test_email_delivery(mail_server: tuple[Deployment, Inbox]) -> None:
    deployment, inbox = mail_server
    alice = deployment.client("alice")
    repo = unique_repo("alice", "mailed")
    alice.push_image(repo, "v1")
    with client_for(deployment, "alice") as client:
        bad = client.post(notifications_path(repo), json={
            "event": "repo_push", "method": "email", "config": {"email": "not an address"},
            "eventConfig": {}})
        assert bad.status_code == 400
        uuid = create(client, repo, "email", {"email": "ops@example.com"})
        assert client.post(f"{notifications_path(repo)}{uuid}/test").status_code == 200
        first = inbox.wait(1)[0]
        alice.push_image(repo, "v2")
        second = inbox.wait(2)[1]
    for message in (first, second):
        assert message["To"] == "ops@example.com"
        assert message["From"] == "registry@example.com"
        assert message["Subject"] == f"Repository {repo} updated"
    body = second.get_payload(decode=True)
    assert isinstance(body, bytes)
    text = body.decode()
    assert f"{deployment.registry.host}/{repo}" in text and '"v2"' in text


def test_refused_push_raises_quota_error(mail_server: tuple[Deployment, Inbox],
                                         hook: Hook) -> None:
    deployment, _inbox = mail_server
    bob = deployment.client("bob")
    repo = unique_repo("bob", "full")
    bob.push_image(repo, "v1")
    with client_for(deployment, "bob", SCOPES) as client:
        create(client, repo, "webhook", {"url": hook.url}, event="quota_error")
    config = to_json({"architecture": "amd64", "os": "linux"})
    layers = [random_bytes(256) for _ in range(40)]  # 10 KiB: over the quota
    for blob in (config, *layers):
        bob.push_blob(repo, blob)
    manifest = to_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                        "config": descriptor(OCI_CONFIG, config),
                        "layers": [descriptor(OCI_LAYER, blob) for blob in layers]})
    refused = bob.put_manifest(repo, "big", manifest)
    assert refused.status_code == 403 and error_codes(refused) == ["DENIED"]
    # The push rolled back; the event did not.
    payload = hook.wait(1)[0]
    assert payload["repository"] == repo
    assert payload["limit_bytes"] == QUOTA_BYTES
    assert "Quota has been exceeded" in payload["message"]
    assert payload["usage_bytes"] < QUOTA_BYTES < payload["usage_bytes"] + 10240


def test_crossing_a_warning_limit_raises_quota_warning(
        mail_server: tuple[Deployment, Inbox], hook: Hook) -> None:
    deployment, _inbox = mail_server
    alice = deployment.client("alice")
    org = unique_org("quota")
    repo = f"{org}/app"
    with client_for(deployment, "alice") as client:
        assert client.post("/organization/", json={"name": org}).status_code == 201
    root = create_superuser(deployment)
    with client_for(deployment, root, "super:user org:admin") as superuser:
        created = superuser.post(f"/organization/{org}/quota", json={"limit_bytes": 1000})
        assert created.status_code == 201, created.text
        quota_id = superuser.get(f"/organization/{org}/quota").json()[0]["id"]
        limit = superuser.post(f"/organization/{org}/quota/{quota_id}/limit",
                               json={"type": "Warning", "threshold_percent": 50})
        assert limit.status_code == 201, limit.text
    alice.push_image(repo, "v1")  # about 340 bytes: under the warning's 500
    with client_for(deployment, "alice") as client:
        create(client, repo, "webhook", {"url": hook.url}, event="quota_warning")
    alice.push_image(repo, "v2")  # crosses 500 bytes
    payload = hook.wait(1)[0]
    assert payload["repository"] == repo and payload["namespace"] == org
    assert payload["limit_bytes"] == 500 and payload["threshold_percent"] == 50
    assert payload["quota_limit_bytes"] == 1000 and payload["usage_bytes"] > 500
    alice.push_image(repo, "v3")  # already over: no second warning
    time.sleep(1.5)
    assert len(hook.received) == 1
