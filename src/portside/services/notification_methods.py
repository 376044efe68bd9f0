"""How notifications are delivered: Quay's methods ``webhook``, ``slack``, ``email`` and
``quay_notification``, each with the check of its ``config`` at creation
(:func:`validate_config`) and its delivery (:class:`Deliverer`).

- ``webhook``: ``POST`` of the event's JSON payload (Quay's ``event_data``) to
  ``config.url``; with ``config.template`` (a JSON document, as a string or an object),
  the body is the template with every ``${path}`` placeholder replaced from the payload
  (``${repository}``, ``${updated_tags[0]}``, ``${vulnerability.priority}``; a string
  that is only a placeholder takes the value with its JSON type, a missing value is
  ``null`` there and ``(none)`` inside a longer string).
- ``slack``: ``POST`` of a Slack message (``text`` and one ``attachment`` coloured by
  the event's level) to the incoming-webhook URL ``config.url``.
- ``email``: a plain-text message to ``config.email`` through the configured SMTP server
  (``FEATURE_MAILING``).
- ``quay_notification``: in-app notifications (``/api/v1/user/notifications``) for
  ``config.target``: ``{"kind": "user", "name": ...}``, a team of the repository's
  organization (``"team"``), or every member of that organization (``"org"``).

URLs are checked against the SSRF policy at creation and again at every request
(redirects are not followed). A delivery that fails raises :class:`DeliveryFailed`,
whose message names the target by scheme, host and port only: paths and query strings
of webhook and Slack URLs often carry secrets and never reach logs.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from portside.auth.secrets import SecretBox, SecretError
from portside.db.engine import Database
from portside.db.models import Namespace, Team, TeamMember, User, UserNotification, utcnow
from portside.services.emails import email_problem
from portside.services.mailer import Mailer, MailingDisabled
from portside.services.notification_events import EventKind
from portside.services.outbound import OutboundPolicy, OutboundRefused
from portside.services.refusals import Invalid

__all__ = [
    "METHODS",
    "Deliverer",
    "DeliveryFailed",
    "apply_template",
    "open_config",
    "safe_origin",
    "seal_config",
    "validate_config",
]

#: Every delivery method, by name.
METHODS = ("webhook", "slack", "email", "quay_notification")
#: Longest accepted URL, e-mail address or template.
MAX_URL_LENGTH = 2048
MAX_TEMPLATE_LENGTH = 65536
#: Largest stored ``config`` (as JSON), template included.
MAX_CONFIG_LENGTH = 2 * MAX_TEMPLATE_LENGTH
TARGET_KINDS = ("user", "team", "org")

_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_SLACK_COLORS = {"info": "#ffffff", "warning": "warning", "error": "danger",
                 "success": "good", "primary": "good"}


class DeliveryFailed(Exception):
    """A delivery attempt failed; the queue retries it. The message is safe to log."""


def safe_origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: what logs and errors may show of it."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname or '?'}{port}"
    except ValueError:
        return "(invalid URL)"


# --- templates ------------------------------------------------------------------------
def _lookup(expression: str, data: Any) -> Any:
    """The value at a dotted path like ``a.b[0].c`` (``None`` when absent)."""
    expression = expression.strip()
    if expression.startswith("$."):
        expression = expression[2:]
    if not expression:
        raise Invalid("Invalid template: empty placeholder ${}")
    value = data
    position = 0
    for match in _PATH_PART.finditer(expression):
        if match.start() not in (position, position + 1):
            raise Invalid(f"Invalid template placeholder ${{{expression[:100]}}}")
        position = match.end()
        key, index = match.group(1), match.group(2)
        if key is not None:
            value = value.get(key) if isinstance(value, Mapping) else None
        else:
            items = value if isinstance(value, list) else []
            value = items[int(index)] if int(index) < len(items) else None
    if position != len(expression):
        raise Invalid(f"Invalid template placeholder ${{{expression[:100]}}}")
    return value


def _fill(text: str, data: Any) -> Any:
    whole = _PLACEHOLDER.fullmatch(text)
    if whole is not None:
        return _lookup(whole.group(1), data)

    def one(match: re.Match[str]) -> str:
        value = _lookup(match.group(1), data)
        if value is None:
            return "(none)"
        if isinstance(value, list):
            return ",".join(str(item) for item in value)
        return value if isinstance(value, str) else json.dumps(value)

    return _PLACEHOLDER.sub(one, text)


def _apply(node: Any, data: Any) -> Any:
    if isinstance(node, str):
        return _fill(node, data)
    if isinstance(node, dict):
        return {str(_fill(key, data)): _apply(value, data) for key, value in node.items()}
    if isinstance(node, list):
        return [_apply(item, data) for item in node]
    return node


def parse_template(template: Any) -> Any:
    """The template as a JSON value; raises :class:`Invalid` if it is not one or one of
    its placeholders is malformed."""
    if isinstance(template, str):
        if len(template) > MAX_TEMPLATE_LENGTH:
            raise Invalid(f"The template must be at most {MAX_TEMPLATE_LENGTH} characters")
        try:
            template = json.loads(template)
        except ValueError as exc:
            raise Invalid(f"Could not parse template: {exc}") from None
    if not isinstance(template, dict | list):
        raise Invalid("The template must be a JSON object or array (or such a document "
                      "as a string)")
    _apply(template, {})  # validates every placeholder
    return template


def apply_template(template: Any, payload: Mapping[str, Any]) -> Any:
    """The webhook body for ``payload`` from a template (see the module docstring)."""
    return _apply(parse_template(template), payload)


# --- secrets at rest --------------------------------------------------------------------
#: Where a sealed ``config`` keeps its URL (Slack URLs and many webhook URLs are secrets).
SEALED_URL = "url_encrypted"


def seal_config(config: Mapping[str, Any], box: SecretBox) -> dict[str, Any]:
    """``config`` as stored: its ``url`` encrypted with the database secret key."""
    sealed = dict(config)
    url = sealed.pop("url", None)
    if isinstance(url, str) and url:
        sealed[SEALED_URL] = box.encrypt(url)
    return sealed


def open_config(config: Mapping[str, Any], box: SecretBox) -> dict[str, Any]:
    """A stored ``config`` with its ``url`` in clear (``""`` when it cannot be
    decrypted: the delivery then fails with a clear error)."""
    opened = dict(config)
    sealed = opened.pop(SEALED_URL, None)
    if isinstance(sealed, str):
        try:
            opened["url"] = box.decrypt(sealed)
        except SecretError:
            opened["url"] = ""
    return opened


# --- validation at creation ---------------------------------------------------------------
def _url(config: Mapping[str, Any], what: str, outbound: OutboundPolicy) -> str:
    url = config.get("url")
    if not isinstance(url, str) or not url.strip():
        raise Invalid(f"Missing {what} URL")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise Invalid(f"The {what} URL must be at most {MAX_URL_LENGTH} characters")
    try:
        outbound.check_url(url)
    except OutboundRefused as exc:
        raise Invalid(f"Invalid {what} URL: {exc.message}") from None
    return url


def _target_users(session: Session, namespace: Namespace, target: Any) -> list[int]:
    """The ids of the users a ``quay_notification`` target names; raises
    :class:`Invalid` for a target that is missing or does not exist."""
    if not isinstance(target, Mapping) or not isinstance(target.get("kind"), str):
        raise Invalid("Missing target")
    kind, name = target["kind"], target.get("name")
    if kind not in TARGET_KINDS:
        raise Invalid(f"Unknown target kind {str(kind)[:50]!r}: use user, team or org")
    if not isinstance(name, str) or not name:
        raise Invalid("Missing target name")
    if kind == "user":
        user_id = session.scalar(select(User.id).where(
            User.username == name, User.robot_owner_id.is_(None), User.enabled.is_(True)))
        if user_id is None:
            raise Invalid(f"Unknown user {name[:100]}")
        return [user_id]
    if namespace.kind != "organization":
        raise Invalid(f"Unknown {'team' if kind == 'team' else 'organization'} {name[:100]}")
    members = (select(TeamMember.user_id).join(Team, Team.id == TeamMember.team_id)
               .join(User, User.id == TeamMember.user_id)
               .where(Team.namespace_id == namespace.id, User.robot_owner_id.is_(None)))
    if kind == "org":
        if name != namespace.name:
            raise Invalid("Organization name must match repository namespace")
        return sorted(set(session.scalars(members)))
    team_id = session.scalar(select(Team.id).where(Team.namespace_id == namespace.id,
                                                   Team.name == name))
    if team_id is None:
        raise Invalid(f"Unknown team {name[:100]}")
    return sorted(set(session.scalars(members.where(Team.id == team_id))))


def validate_config(session: Session, namespace: Namespace, method: str,
                    config: Mapping[str, Any], *, outbound: OutboundPolicy,
                    mailing_enabled: bool) -> dict[str, Any]:
    """The ``config`` to store for ``method``, normalised; raises :class:`Invalid` (400)
    with the reason when something is missing or refused."""
    if method not in METHODS:
        raise Invalid(f"Unknown notification method {method[:50]!r}: "
                      f"use one of {', '.join(METHODS)}")
    if len(json.dumps(config, default=str)) > MAX_CONFIG_LENGTH:
        raise Invalid(f"config must be at most {MAX_CONFIG_LENGTH} characters of JSON")
    stored = dict(config)
    if method == "webhook":
        stored["url"] = _url(config, "webhook", outbound)
        if config.get("template") not in (None, ""):
            parse_template(config["template"])
    elif method == "slack":
        stored["url"] = _url(config, "Slack", outbound)
    elif method == "email":
        if not mailing_enabled:
            raise Invalid("E-mail notifications are not available: mailing is disabled on "
                          "this registry (FEATURE_MAILING, MAIL_SERVER)")
        email = config.get("email")
        if not isinstance(email, str) or not email.strip():
            raise Invalid("Missing e-mail address")
        problem = email_problem(email.strip())
        if problem is not None:
            raise Invalid(problem)
        stored["email"] = email.strip()
    else:
        _target_users(session, namespace, config.get("target"))
    return stored


# --- delivery -------------------------------------------------------------------------
@dataclass(frozen=True)
class Delivery:
    """One delivery to make: the notification's settings and the event's payload."""

    method: str
    config: Mapping[str, Any]
    event: EventKind
    #: Quay's ``event_data`` with ``docker_url`` and ``homepage``.
    payload: Mapping[str, Any]
    namespace_id: int


class Deliverer:
    """Performs deliveries (in a queue worker thread)."""

    def __init__(self, db: Database, outbound: OutboundPolicy, mailer: Mailer) -> None:
        self._db = db
        self._outbound = outbound
        self._mailer = mailer

    def deliver(self, delivery: Delivery) -> None:
        """Deliver once; raises :class:`DeliveryFailed` when the attempt failed."""
        if delivery.method == "webhook":
            body: Any = delivery.payload
            template = delivery.config.get("template")
            if template not in (None, ""):
                try:
                    body = apply_template(template, delivery.payload)
                except Invalid as exc:
                    raise DeliveryFailed(exc.message) from None
            self._post(str(delivery.config.get("url", "")), body, "webhook")
        elif delivery.method == "slack":
            self._post(str(delivery.config.get("url", "")), self._slack(delivery), "Slack")
        elif delivery.method == "email":
            self._email(delivery)
        elif delivery.method == "quay_notification":
            self._in_app(delivery)
        else:
            raise DeliveryFailed(f"unknown notification method {delivery.method[:50]!r}")

    @staticmethod
    def _slack(delivery: Delivery) -> dict[str, Any]:
        summary = delivery.event.summary(delivery.payload)
        homepage = delivery.payload.get("homepage")
        text = f"{summary}: <{homepage}|{delivery.payload.get('repository')}>"
        tags = delivery.payload.get("updated_tags") or delivery.payload.get("tags")
        if isinstance(tags, list) and tags:
            text += "\nTags: " + ", ".join(str(tag) for tag in tags)
        return {"text": summary, "username": "portside",
                "attachments": [{"fallback": summary, "text": text,
                                 "color": _SLACK_COLORS.get(delivery.event.level, "#ffffff"),
                                 "mrkdwn_in": ["text"]}]}

    def _post(self, url: str, body: Any, what: str) -> None:
        if not url:
            raise DeliveryFailed(f"the {what} URL cannot be read (was DATABASE_SECRET_KEY "
                                 "changed?)")
        origin = safe_origin(url)
        try:
            # Redirects are not followed: a hook that redirects is misconfigured, and
            # following would let a public URL lead the registry elsewhere.
            with self._outbound.client(follow_redirects=False) as client:
                response = client.post(url, json=body)
        except OutboundRefused as exc:
            raise DeliveryFailed(f"{what} to {origin} refused: {exc.message}") from None
        except httpx.HTTPError as exc:
            # httpx's messages may contain the full URL: only the error's kind is kept.
            raise DeliveryFailed(f"{what} to {origin} failed: {type(exc).__name__}") from None
        if not 200 <= response.status_code < 300:
            raise DeliveryFailed(f"{what} to {origin} answered {response.status_code}")

    def _email(self, delivery: Delivery) -> None:
        payload = delivery.payload
        summary = delivery.event.summary(payload)
        lines = [summary, "", f"Repository: {payload.get('repository')}",
                 f"Pull: {payload.get('docker_url')}", f"Details: {payload.get('homepage')}"]
        extra = {key: value for key, value in payload.items()
                 if key not in ("repository", "namespace", "name", "docker_url", "homepage")}
        if extra:
            lines += ["", json.dumps(extra, indent=2, sort_keys=True, default=str)]
        try:
            self._mailer.send(str(delivery.config.get("email", "")), summary,
                              "\n".join(lines) + "\n")
        except MailingDisabled as exc:
            raise DeliveryFailed(str(exc)) from None
        except OSError as exc:  # smtplib's errors are OSErrors
            raise DeliveryFailed(f"e-mail could not be sent: {type(exc).__name__}: "
                                 f"{str(exc)[:200]}") from None

    def _in_app(self, delivery: Delivery) -> None:
        with self._db.session() as session:
            namespace = session.get(Namespace, delivery.namespace_id)
            if namespace is None:
                return  # deleted since: nobody to tell
            try:
                users = _target_users(session, namespace, delivery.config.get("target"))
            except Invalid as exc:
                raise DeliveryFailed(exc.message) from None
            now = utcnow()
            for user_id in users:
                session.add(UserNotification(uuid=str(uuid.uuid4()), user_id=user_id,
                                             kind=delivery.event.name,
                                             metadata_json=dict(delivery.payload),
                                             dismissed=False, created_at=now))
