"""``exportlogs``: a background export of audit log entries to a JSON file, the callback
that announces it, the download, and who may ask and fetch."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import httpx
import pytest

from functional.client import RegistryClient
from functional.conftest import Deployment, unique_repo
from functional.test_api_organizations import CREATED, api, unique_org
from portside.db.engine import Database, create_db_engine
from portside.db.models import LogExport

TODAY = datetime.now(UTC).strftime("%m/%d/%Y")


class CallbackServer:
    """A tiny HTTP server on loopback that keeps the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                return

        self.received = received
        self._server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/done"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def callback() -> Iterator[CallbackServer]:
    server = CallbackServer()
    yield server
    server.close()


def wait_for_export(client: httpx.Client, export_id: str,
                    timeout_s: float = 20.0) -> dict[str, Any]:
    """Poll ``/exportedlogs/<id>`` until the export is done (the file) or failed."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get(f"/exportedlogs/{export_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if "logs" in body or body.get("status") == "failed":
            return body
        assert body["status"] in ("queued", "running") and body["export_id"] == export_id
        assert time.monotonic() < deadline, f"export still {body['status']}"
        time.sleep(0.3)


def test_repository_export_with_callback(registry: Deployment, alice: RegistryClient,
                                         callback: CallbackServer) -> None:
    repo = unique_repo("alice", "export")
    for tag in ("a", "b", "c"):
        alice.push_image(repo, tag)
    with api(registry, "alice") as client:
        response = client.post(f"/repository/{repo}/exportlogs",
                               params={"starttime": TODAY, "endtime": TODAY},
                               json={"callback_url": callback.url})
        assert response.status_code == 200, response.text
        export_id = response.json()["export_id"]
        exported = wait_for_export(client, export_id)
        shown = client.get(f"/repository/{repo}/logs").json()["logs"]
        status = client.get(f"/exportedlogs/{export_id}")
    assert exported["export_id"] == export_id and exported["terminated"] is True
    assert exported["details"]["namespace"] == "alice"
    assert exported["details"]["repository"] == repo.split("/", 1)[1]
    assert [e["kind"] for e in exported["logs"]] == ["push_repo"] * 3 + ["create_repo"]
    # The same view as the logs endpoint.
    assert exported["logs"] == shown
    assert status.headers["content-type"].startswith("application/json")
    deadline = time.monotonic() + 10
    while not callback.received and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(callback.received) == 1
    notice = callback.received[0]
    assert notice.keys() == {"export_id", "status", "exported_data_url"}
    assert notice["export_id"] == export_id and notice["status"] == "success"
    assert notice["exported_data_url"].endswith(f"/api/v1/exportedlogs/{export_id}")


def test_export_of_many_entries_is_complete(registry: Deployment,
                                            alice: RegistryClient) -> None:
    repo = unique_repo("alice", "export")
    image = alice.push_image(repo, "t0")
    for i in range(1, 30):
        alice.push_manifest(repo, f"t{i}", image.manifest)
    with api(registry, "alice") as client:
        export_id = client.post(f"/repository/{repo}/exportlogs").json()["export_id"]
        exported = wait_for_export(client, export_id)
    tags = [e["metadata"].get("tag") for e in exported["logs"]]
    assert len(tags) == 31 and tags[:30] == [f"t{i}" for i in range(29, -1, -1)]


def test_organization_and_user_exports(registry: Deployment) -> None:
    org = unique_org("export")
    CREATED.add(org)
    with api(registry, "alice") as client:
        assert client.post("/organization/", json={"name": org}).status_code == 201
        assert client.put(f"/organization/{org}/team/devs",
                          json={"role": "member"}).status_code == 200
        org_id = client.post(f"/organization/{org}/exportlogs", json={}).json()["export_id"]
        user = client.post("/user/exportlogs",
                           json={"callback_email": "alice@example.com"})
        assert user.status_code == 200, user.text
        org_export = wait_for_export(client, org_id)
        user_export = wait_for_export(client, user.json()["export_id"])
        # Mailing is not configured: the export is done, the notice is recorded as not sent.
        assert "logs" in user_export
    assert [e["kind"] for e in org_export["logs"]] == ["org_create_team", "org_create"]
    assert all(e["namespace"]["name"] == "alice" for e in user_export["logs"])


def test_mailing_disabled_is_recorded(registry: Deployment, alice: RegistryClient) -> None:
    repo = unique_repo("alice", "export")
    alice.push_image(repo, "v1")
    # An unreachable callback and a mail address: the export still succeeds.
    with api(registry, "alice") as client:
        export_id = client.post(f"/repository/{repo}/exportlogs", json={
            "callback_email": "ops@example.com",
            "callback_url": "http://127.0.0.1:9/nothing-listens-here"}).json()["export_id"]
        wait_for_export(client, export_id)
    # A finished export serves its file, so the recorded problems are read from the row.
    # They are written after the export is marked done (the notices go out once the file
    # can be fetched), so the row is polled until both are there.
    db = Database(create_db_engine(registry.registry.config["DB_URI"]))
    try:
        deadline = time.monotonic() + 20
        while True:
            with db.session() as session:
                row = session.get(LogExport, export_id)
                assert row is not None and row.status == "done" and row.entries == 2
                error = row.error or ""
            if "mailing is disabled" in error or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert "mailing is disabled" in error
        assert "callback to http://127.0.0.1:9/" in error
    finally:
        db.dispose()


def test_export_permissions(registry: Deployment, alice: RegistryClient) -> None:
    repo = unique_repo("alice", "export")
    alice.push_image(repo, "v1")
    with api(registry, "alice") as client, api(registry, "bob") as bob, \
            api(registry) as anonymous:
        assert bob.post(f"/repository/{repo}/exportlogs").status_code == 403
        assert anonymous.post(f"/repository/{repo}/exportlogs").status_code == 401
        assert anonymous.post("/user/exportlogs").status_code == 401
        missing = client.post("/repository/alice/does-not-exist-xyz/exportlogs")
        assert missing.status_code == 404
        export_id = client.post(f"/repository/{repo}/exportlogs").json()["export_id"]
        wait_for_export(client, export_id)
        # Someone else's export is not there at all for bob.
        hidden = bob.get(f"/exportedlogs/{export_id}")
        assert hidden.status_code == 404 and hidden.json()["error_type"] == "not_found"
        assert anonymous.get(f"/exportedlogs/{export_id}").status_code == 401
        assert client.get("/exportedlogs/00000000-0000-0000-0000-000000000000").status_code \
            == 404


def test_export_bad_input(registry: Deployment, alice: RegistryClient) -> None:
    repo = unique_repo("alice", "export")
    alice.push_image(repo, "v1")
    old = (datetime.now(UTC) - timedelta(days=30)).strftime("%m/%d/%Y")
    with api(registry, "alice") as client:
        backwards = client.post(f"/repository/{repo}/exportlogs",
                                params={"starttime": TODAY, "endtime": old})
        bad_url = client.post(f"/repository/{repo}/exportlogs",
                              json={"callback_url": "ftp://example.com/x"})
        bad_mail = client.post("/user/exportlogs", json={"callback_email": "not-an-address"})
        bad_body = client.post("/user/exportlogs", json={"callback_url": 42})
    for response in (backwards, bad_url, bad_mail, bad_body):
        assert response.status_code == 400, response.text
        assert response.json()["error_type"] == "invalid_request"
