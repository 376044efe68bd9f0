"""``/api/v1/repository/{repo}/notification/...`` and ``/api/v1/user/notifications``:
creating, reading and deleting notifications, their validation (events, methods,
configs, the SSRF policy), who may manage them, the audit trail, and in-app
notifications (``quay_notification``) listed and dismissed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from functional.client import RegistryClient
from functional.conftest import Deployment, unique_repo
from functional.test_api_organizations import (  # noqa: F401 (autouse cleanup fixture)
    CREATED,
    api,
    delete_created_organizations,
    unique_org,
)
from portside.db.engine import Database, create_db_engine
from portside.db.models import RepositoryNotification

#: Every scope these tests need (Quay's UI-issued token for a script).
SCOPES = "repo:read repo:write repo:admin repo:create user:read user:admin org:admin"


def client_for(registry: Deployment, username: str | None,
               scopes: str = SCOPES) -> httpx.Client:
    """An ``/api/v1`` client for ``username`` (anonymous: ``None``)."""
    return api(registry, username, scopes)


def webhook(url: str = "http://127.0.0.1:9/hook", **config: Any) -> dict[str, Any]:
    """A webhook notification body on ``repo_push``."""
    return {"event": "repo_push", "method": "webhook", "config": {"url": url, **config},
            "eventConfig": {}, "title": "CI"}


def notifications_path(repo: str) -> str:
    return f"/repository/{repo}/notification/"


@pytest.fixture
def pushed(alice: RegistryClient) -> str:
    """A repository of alice with one tag."""
    repo = unique_repo("alice", "notify")
    alice.push_image(repo, "v1")
    return repo


def test_create_list_get_delete_and_audit(registry: Deployment, pushed: str) -> None:
    with client_for(registry, "alice") as client:
        created = client.post(notifications_path(pushed), json=webhook())
        assert created.status_code == 201, created.text
        view = created.json()
        assert view.keys() == {"id", "uuid", "title", "event", "method", "config",
                               "event_config", "number_of_failures"}
        assert view["event"] == "repo_push" and view["method"] == "webhook"
        assert view["config"] == {"url": "http://127.0.0.1:9/hook"}
        assert view["event_config"] == {} and view["number_of_failures"] == 0
        assert view["title"] == "CI"
        # The URL (a secret for Slack and many webhooks) is encrypted at rest.
        db = Database(create_db_engine(registry.registry.config["DB_URI"]))
        try:
            with db.session() as session:
                stored = session.scalar(select(RepositoryNotification.config).where(
                    RepositoryNotification.uuid == view["uuid"]))
        finally:
            db.dispose()
        assert stored is not None and "url" not in stored
        assert "127.0.0.1:9" not in json.dumps(stored)
        listed = client.get(notifications_path(pushed))
        assert listed.status_code == 200
        assert listed.json() == {"notifications": [view]}
        one = client.get(f"{notifications_path(pushed)}{view['uuid']}")
        assert one.status_code == 200 and one.json() == view
        deleted = client.delete(f"{notifications_path(pushed)}{view['uuid']}")
        assert deleted.status_code == 204
        assert client.get(f"{notifications_path(pushed)}{view['uuid']}").status_code == 404
        assert client.delete(f"{notifications_path(pushed)}{view['uuid']}").status_code == 404
        assert client.get(notifications_path(pushed)).json() == {"notifications": []}
        logs = client.get(f"/repository/{pushed}/logs").json()["logs"]
    kinds = [(entry["kind"], entry["metadata"]) for entry in logs
             if "notification" in entry["kind"]]
    assert [kind for kind, _ in kinds] == ["delete_repo_notification", "add_repo_notification"]
    for _kind, metadata in kinds:
        assert metadata["notification_id"] == view["uuid"]
        assert metadata["event"] == "repo_push" and metadata["method"] == "webhook"
        assert metadata["repo"] == pushed.split("/", 1)[1] and metadata["namespace"] == "alice"


@pytest.mark.parametrize(("body", "reason"), [
    ({**webhook(), "event": "repo_pushed"}, "Unknown notification event"),
    ({**webhook(), "method": "carrier_pigeon"}, "Unknown notification method"),
    ({**webhook(), "config": {}}, "Missing webhook URL"),
    (webhook("ftp://127.0.0.1/x"), "http or https"),
    (webhook("http://169.254.169.254/latest/meta-data"), "169.254.169.254"),
    (webhook("http://10.1.2.3/hook"), "SSRF_ALLOWED_HOSTS"),
    (webhook("http://user:pw@127.0.0.1/hook"), "credentials"),
    (webhook(template='{"a": "${}"}'), "empty placeholder"),
    (webhook(template="{not json"), "Could not parse template"),
    ({**webhook(), "method": "slack", "config": {"url": "http://192.168.1.1/x"}},
     "Invalid Slack URL"),
    ({**webhook(), "method": "email", "config": {"email": "ops@example.com"}},
     "mailing is disabled"),
    ({**webhook(), "method": "quay_notification", "config": {}}, "Missing target"),
    ({**webhook(), "method": "quay_notification",
      "config": {"target": {"kind": "user", "name": "nobody-here"}}}, "Unknown user"),
    ({**webhook(), "method": "quay_notification",
      "config": {"target": {"kind": "team", "name": "owners"}}}, "Unknown team"),
    ({**webhook(), "event": "repo_image_expiry"}, "days"),
    ({**webhook(), "event": "vulnerability_found", "eventConfig": {"level": "x"}}, "level"),
    ({"event": "repo_push", "method": "webhook"}, "config"),
    (webhook(padding="x" * 200_000), "config must be at most"),
    ({**webhook(), "eventConfig": {"padding": "x" * 5000}}, "eventConfig must be at most"),
    ({**webhook(), "config": "http://127.0.0.1/x"}, "config"),
])
def test_bad_notifications_are_refused(registry: Deployment, pushed: str,
                                       body: dict[str, Any], reason: str) -> None:
    with client_for(registry, "alice") as client:
        response = client.post(notifications_path(pushed), json=body)
        assert response.status_code == 400, response.text
        assert reason in response.json()["error_message"], response.text
        assert client.get(notifications_path(pushed)).json() == {"notifications": []}


def test_who_may_manage_notifications(registry: Deployment, pushed: str) -> None:
    with client_for(registry, "alice") as alice:
        uuid = alice.post(notifications_path(pushed), json=webhook()).json()["uuid"]
        # bob may read and write, but not administer.
        granted = alice.put(f"/repository/{pushed}/permissions/user/bob",
                            json={"role": "write"})
        assert granted.status_code == 200, granted.text
        missing = alice.get(notifications_path(unique_repo("alice", "missing")))
        assert missing.status_code == 404
        unknown = alice.get(f"{notifications_path(pushed)}0c9cbd2f-0000-0000-0000-000000000000")
        assert unknown.status_code == 404
    one = f"{notifications_path(pushed)}{uuid}"
    with client_for(registry, None) as anonymous:
        assert anonymous.get(notifications_path(pushed)).status_code == 401
        assert anonymous.post(notifications_path(pushed), json=webhook()).status_code == 401
    with client_for(registry, "bob") as bob:
        for response in (bob.get(notifications_path(pushed)),
                         bob.post(notifications_path(pushed), json=webhook()),
                         bob.get(one), bob.delete(one), bob.post(one),
                         bob.post(f"{one}/test")):
            assert response.status_code == 403, response.text
    with client_for(registry, "carol") as carol:
        # Not even allowed to know whether the repository exists.
        assert carol.get(notifications_path(pushed)).status_code == 403
        assert carol.get(notifications_path(unique_repo("alice", "nope"))).status_code == 403
    with client_for(registry, "alice", "repo:read repo:write") as weak_token:
        assert weak_token.get(notifications_path(pushed)).status_code == 403
    with client_for(registry, "alice") as alice:
        assert alice.get(one).status_code == 200


def wait_for_user_notifications(client: httpx.Client, count: int,
                                timeout_s: float = 20.0) -> list[dict[str, Any]]:
    """Poll ``/user/notifications`` until it lists ``count`` notifications."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get("/user/notifications", params={"limit": 50})
        assert response.status_code == 200, response.text
        notes: list[dict[str, Any]] = response.json()["notifications"]
        if len(notes) >= count:
            return notes
        assert time.monotonic() < deadline, f"only {len(notes)} in-app notifications"
        time.sleep(0.3)


def test_in_app_notifications_listed_and_dismissed(registry: Deployment, pushed: str,
                                                   alice: RegistryClient) -> None:
    with client_for(registry, "carol") as carol:
        before = len(wait_for_user_notifications(carol, 0))
    with client_for(registry, "alice") as client:
        created = client.post(notifications_path(pushed), json={
            "event": "repo_push", "method": "quay_notification", "eventConfig": {},
            "config": {"target": {"kind": "user", "name": "carol"}}})
        assert created.status_code == 201, created.text
    alice.push_image(pushed, "v2")
    with client_for(registry, "carol") as carol:
        notes = wait_for_user_notifications(carol, before + 1)
        note = notes[0]  # newest first
        assert note.keys() == {"id", "organization", "kind", "created", "metadata",
                               "dismissed"}
        assert note["kind"] == "repo_push" and note["dismissed"] is False
        assert note["organization"] is None and note["created"].endswith("-0000")
        assert note["metadata"]["repository"] == pushed
        assert note["metadata"]["updated_tags"] == ["v2"]
        assert note["metadata"]["docker_url"].endswith(f"/{pushed}")
        page = carol.get("/user/notifications", params={"limit": 1, "page": 0}).json()
        assert len(page["notifications"]) == 1
        assert page["additional"] is (before + 1 > 1)
        path = f"/user/notifications/{note['id']}"
        assert carol.get(path).json() == note
        dismissed = carol.put(path, json={"dismissed": True})
        assert dismissed.status_code == 200, dismissed.text
        assert dismissed.json()["dismissed"] is True
        assert carol.get(path).json()["dismissed"] is True
        # Dismissed notifications leave the list.
        listed = carol.get("/user/notifications", params={"limit": 50}).json()
        assert note["id"] not in [n["id"] for n in listed["notifications"]]
        assert len(listed["notifications"]) == before
        assert carol.put(path, json={"dismissed": "yes"}).status_code == 400
        assert carol.get("/user/notifications/not-a-notification").status_code == 404
    with client_for(registry, "alice") as other:
        # Someone else's notification does not exist for alice.
        assert other.get(path).status_code == 404
        assert other.put(path, json={"dismissed": False}).status_code == 404
    with client_for(registry, None) as anonymous:
        assert anonymous.get("/user/notifications").status_code == 401
    with client_for(registry, "carol", "user:read") as weak_token:
        assert weak_token.get("/user/notifications").status_code == 403


@pytest.fixture
def org_with_team(registry: Deployment) -> Iterator[str]:
    """An organization of alice whose team ``devs`` has bob as member."""
    org = unique_org("notify")
    CREATED.add(org)
    with client_for(registry, "alice") as client:
        assert client.post("/organization/", json={"name": org}).status_code == 201
        assert client.put(f"/organization/{org}/team/devs",
                          json={"role": "member"}).status_code == 200
        added = client.put(f"/organization/{org}/team/devs/members/bob")
        assert added.status_code == 200, added.text
    yield org


def test_team_and_organization_targets(registry: Deployment, alice: RegistryClient,
                                       org_with_team: str) -> None:
    org = org_with_team
    repo = f"{org}/app"
    alice.push_image(repo, "v1")
    with client_for(registry, "bob") as bob:
        before = len(wait_for_user_notifications(bob, 0))
    with client_for(registry, "alice") as client:
        for target in ({"kind": "team", "name": "devs"}, {"kind": "org", "name": org}):
            created = client.post(notifications_path(repo), json={
                "event": "repo_push", "method": "quay_notification", "eventConfig": {},
                "config": {"target": target}})
            assert created.status_code == 201, created.text
        wrong = client.post(notifications_path(repo), json={
            "event": "repo_push", "method": "quay_notification", "eventConfig": {},
            "config": {"target": {"kind": "org", "name": "alice"}}})
        assert wrong.status_code == 400
        assert "must match repository namespace" in wrong.json()["error_message"]
    alice.push_image(repo, "v2")
    with client_for(registry, "bob") as bob:
        notes = wait_for_user_notifications(bob, before + 2)
    assert [n["metadata"]["repository"] for n in notes[:2]] == [repo, repo]
    with client_for(registry, "alice") as client:
        # alice is in the owners team: the organization target reaches her too.
        mine = client.get("/user/notifications", params={"limit": 50}).json()["notifications"]
        assert any(n["metadata"].get("repository") == repo for n in mine)
