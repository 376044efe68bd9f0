"""Webhook body templates, event filters and the safe form of URLs in errors."""

from __future__ import annotations

import pytest

from portside.auth.secrets import SecretBox
from portside.services.notification_events import EVENTS
from portside.services.notification_methods import (
    apply_template,
    open_config,
    parse_template,
    safe_origin,
    seal_config,
)
from portside.services.notifications import check_event_config
from portside.services.refusals import Invalid

PAYLOAD = {"repository": "alice/app", "namespace": "alice", "name": "app",
           "updated_tags": ["v1", "latest"], "vulnerability": {"priority": "High"}}


def test_whole_placeholders_keep_their_json_type() -> None:
    body = apply_template('{"tags": "${updated_tags}", "first": "${updated_tags[0]}",'
                          ' "missing": "${nothing.here}"}', PAYLOAD)
    assert body == {"tags": ["v1", "latest"], "first": "v1", "missing": None}


def test_placeholders_inside_text_are_rendered() -> None:
    body = apply_template({"text": "Pushed ${repository}: ${updated_tags} (${nope})",
                           "${name}": ["${vulnerability.priority}", 3, True]}, PAYLOAD)
    assert body == {"text": "Pushed alice/app: v1,latest ((none))", "app": ["High", 3, True]}


def test_jsonpath_prefix_is_accepted() -> None:
    assert apply_template('["${$.namespace}"]', PAYLOAD) == ["alice"]


@pytest.mark.parametrize("template", ["{not json", '{"a": "${}"}', '{"a": "${a..b}"}', "42",
                                      '{"a": "${a[x]}"}'])
def test_bad_templates_are_refused(template: str) -> None:
    with pytest.raises(Invalid):
        parse_template(template)


def test_safe_origin_drops_path_and_query() -> None:
    assert safe_origin("https://hooks.slack.com/services/T0/B0/secret?token=x") == \
        "https://hooks.slack.com"
    assert safe_origin("http://127.0.0.1:8080/hook?key=secret") == "http://127.0.0.1:8080"


@pytest.mark.parametrize(("level", "priority", "fires"), [
    (None, "Low", True), (1, "Critical", True), (1, "High", False), (3, "High", True),
    (3, "Unknown", False), ("2", "High", True)])
def test_vulnerability_level_filter(level: object, priority: str, fires: bool) -> None:
    config = {} if level is None else {"level": level}
    data = {"vulnerability": {"priority": priority}, "tags": ["latest"]}
    assert EVENTS["vulnerability_found"].matches(data, config) is fires


def test_event_config_checks() -> None:
    assert check_event_config("repo_image_expiry", {"days": "5"}) == {"days": 5}
    assert check_event_config("repo_push", {"last_ran_ms": 1}) == {}
    for bad in ({}, {"days": 0}, {"days": 31}, {"days": "x"}, {"days": True}):
        with pytest.raises(Invalid):
            check_event_config("repo_image_expiry", bad)
    with pytest.raises(Invalid):
        check_event_config("vulnerability_found", {"level": 9})


def test_every_event_has_a_summary_and_sample() -> None:
    for kind in EVENTS.values():
        sample = {"repository": "a/b", **kind.sample({"days": 3, "level": 2})}
        assert kind.summary(sample)
        assert kind.level in ("info", "warning", "error", "primary", "success")


def test_urls_are_sealed_at_rest() -> None:
    box = SecretBox("a-secret")
    sealed = seal_config({"url": "https://hooks.example.com/T/B/secret", "template": "{}"},
                         box)
    assert "url" not in sealed and "secret" not in str(sealed)
    assert sealed["template"] == "{}"
    assert open_config(sealed, box)["url"] == "https://hooks.example.com/T/B/secret"
    # Another key cannot read it: the URL is blank (the delivery then fails clearly).
    assert open_config(sealed, SecretBox("other"))["url"] == ""
    assert open_config({"url": "http://plain"}, box) == {"url": "http://plain"}
