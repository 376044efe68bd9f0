"""Repository mirror configuration and repository state (Quay's ``RepoMirrorResource``,
``RepoMirrorSyncNowResource``, ``RepoMirrorSyncCancelResource`` and
``RepositoryStateResource``).

Every operation needs administration of the repository (tokens: ``repo:admin``); the
permission check comes before any lookup of the configuration, so outsiders learn
nothing. Values are validated here with messages meant for API clients; upstream
credentials are encrypted with the database secret key, never returned and never put
in the audit log.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portside.auth.permissions import Action, Policy, Subject
from portside.auth.secrets import SecretBox, SecretError
from portside.db.engine import Database
from portside.db.models import RepoMirrorConfig, Repository, User, utcnow
from portside.oci.names import InvalidName, validate_repository_name
from portside.services.audit import AuditContext, record_for_repository
from portside.services.immutability import administered_repository
from portside.services.mirror_rules import (
    MirrorRuleError,
    as_utc,
    format_date,
    parse_architectures,
    parse_date,
    parse_globs,
)
from portside.services.outbound import OutboundPolicy
from portside.services.refusals import Invalid, NotFound
from portside.services.repository_access import authorize_repository
from portside.services.upstream import parse_upstream_reference

__all__ = [
    "DEFAULT_RETRIES",
    "REPOSITORY_STATES",
    "MirrorConfigService",
    "MirrorSettings",
    "upstream_urls",
]

REPOSITORY_STATES = ("NORMAL", "READ_ONLY", "MIRROR")
#: Attempts of a failing sync before its slot is given up (Quay's ``MAX_SYNC_RETRIES``).
DEFAULT_RETRIES = 3
#: Longest sync interval and timeout accepted (ten years; a week).
MAX_INTERVAL_S = 10 * 365 * 86400
MAX_TIMEOUT_S = 7 * 86400
DEFAULT_TIMEOUT_S = 3600
MAX_CREDENTIAL_LENGTH = 4096
RULE_KIND = "tag_glob_csv"
_PROXY_KEYS = ("http_proxy", "https_proxy", "no_proxy")


@dataclass(frozen=True)
class MirrorSettings:
    """A validated mirror body; ``None`` fields were absent (a PUT keeps the value)."""

    is_enabled: bool | None = None
    external_reference: str | None = None
    username: str | None = None
    username_given: bool = False
    password: str | None = None
    password_given: bool = False
    registry_config: dict[str, Any] | None = None
    sync_interval: int | None = None
    sync_start_date: datetime | None = None
    root_rule: dict[str, Any] | None = None
    robot_username: str | None = None
    sync_timeout_s: int | None = None
    architecture_filter: list[str] | None = None


def upstream_urls(registry: str) -> list[str]:
    """The URLs the sync may call first for a registry (both schemes: with
    ``verify_tls`` false, plain HTTP is tried after HTTPS)."""
    return [f"https://{registry}/v2/", f"http://{registry}/v2/"]


def _int(body: Mapping[str, Any], key: str, low: int, high: int) -> int | None:
    if key not in body or body[key] is None:
        return None
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"{key} must be an integer number of seconds.")
    if not low <= value <= high:
        raise Invalid(f"{key} must be between {low} and {high} seconds.")
    return value


def _bool(body: Mapping[str, Any], key: str) -> bool | None:
    if key not in body or body[key] is None:
        return None
    if not isinstance(body[key], bool):
        raise Invalid(f"{key} must be true or false.")
    return bool(body[key])


def _credential(body: Mapping[str, Any], key: str) -> tuple[str | None, bool]:
    """``(value, given)``: an explicit ``null`` or ``""`` clears, absence keeps."""
    if key not in body:
        return None, False
    value = body[key]
    if value is None or value == "":
        return None, True
    if not isinstance(value, str) or len(value) > MAX_CREDENTIAL_LENGTH or "\x00" in value:
        # Never echo the value: it may be a password.
        raise Invalid(f"{key} must be a string of at most {MAX_CREDENTIAL_LENGTH} characters.")
    return value, True


def check_reference(value: object) -> str:
    """A valid ``external_reference`` (``host[:port]/path/name``); raises Invalid."""
    if not isinstance(value, str) or not value.strip():
        raise Invalid("external_reference must be an upstream repository such as "
                      "registry.example.com/namespace/name.")
    reference = value.strip()
    shown = reference[:200]
    if "://" in reference:
        raise Invalid(f"external_reference {shown!r} must not contain a scheme "
                      "(write host[:port]/namespace/name).")
    if "@" in reference.rsplit("/", 1)[-1] or ":" in reference.rsplit("/", 1)[-1]:
        raise Invalid(f"external_reference {shown!r} must not contain a tag or digest: "
                      "choose tags with root_rule.")
    try:
        registry, repository = parse_upstream_reference(reference)
        validate_repository_name(repository)
    except (ValueError, InvalidName) as exc:
        raise Invalid(f"Invalid external_reference {shown!r}: {exc}") from None
    return f"{registry}/{repository}"


def _registry_config(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid("external_registry_config must be an object.")
    config: dict[str, Any] = {}
    for key in ("verify_tls", "unsigned_images"):
        if key in value and value[key] is not None:
            if not isinstance(value[key], bool):
                raise Invalid(f"external_registry_config.{key} must be true or false.")
            config[key] = value[key]
    config.setdefault("verify_tls", True)
    config.setdefault("unsigned_images", False)
    proxy = value.get("proxy")
    if proxy is None:
        proxy = {}
    if not isinstance(proxy, dict):
        raise Invalid("external_registry_config.proxy must be an object.")
    clean: dict[str, str | None] = {}
    for key in _PROXY_KEYS:
        item = proxy.get(key)
        if item is None or item == "":
            clean[key] = None
            continue
        if not isinstance(item, str) or len(item) > 2048 or "\x00" in item:
            raise Invalid(f"external_registry_config.proxy.{key} must be a string.")
        clean[key] = item.strip()
    config["proxy"] = clean
    return config


def _root_rule(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid('root_rule must be {"rule_kind": "tag_glob_csv", "rule_value": [...]}.')
    kind = value.get("rule_kind", RULE_KIND)
    if kind != RULE_KIND:
        raise Invalid(f"root_rule.rule_kind must be {RULE_KIND!r}.")
    try:
        patterns = parse_globs(value.get("rule_value"))
    except MirrorRuleError as exc:
        raise Invalid(str(exc)) from None
    return {"rule_kind": RULE_KIND, "rule_value": patterns}


def parse_settings(body: Mapping[str, Any]) -> MirrorSettings:
    """Validate a mirror body (every field optional here; POST checks what it needs)."""
    if not isinstance(body, Mapping):
        raise Invalid("The request body must be a JSON object.")
    reference = (check_reference(body["external_reference"])
                 if body.get("external_reference") is not None else None)
    username, username_given = _credential(body, "external_registry_username")
    password, password_given = _credential(body, "external_registry_password")
    start = None
    if body.get("sync_start_date") is not None:
        try:
            start = parse_date(body["sync_start_date"])
        except MirrorRuleError as exc:
            raise Invalid(str(exc)) from None
    architectures = None
    if "architecture_filter" in body:
        try:
            architectures = parse_architectures(body["architecture_filter"])
        except MirrorRuleError as exc:
            raise Invalid(str(exc)) from None
    robot = body.get("robot_username")
    if robot is not None and (not isinstance(robot, str) or not robot or len(robot) > 255):
        raise Invalid("robot_username must be the name of a robot account (namespace+name).")
    return MirrorSettings(
        is_enabled=_bool(body, "is_enabled"),
        external_reference=reference,
        username=username, username_given=username_given,
        password=password, password_given=password_given,
        registry_config=(_registry_config(body["external_registry_config"])
                         if body.get("external_registry_config") is not None else None),
        sync_interval=_int(body, "sync_interval", 1, MAX_INTERVAL_S),
        sync_start_date=start,
        root_rule=_root_rule(body["root_rule"]) if body.get("root_rule") is not None else None,
        robot_username=robot,
        sync_timeout_s=_int(body, "sync_timeout_s", 1, MAX_TIMEOUT_S),
        architecture_filter=architectures,
    )


class MirrorConfigService:
    """The mirror API's operations on behalf of a :class:`Subject`."""

    def __init__(self, db: Database, policy: Policy, box: SecretBox,
                 outbound: OutboundPolicy) -> None:
        self._db = db
        self._policy = policy
        self._box = box
        self._outbound = outbound

    # --- reads ------------------------------------------------------------------------
    def get(self, subject: Subject, namespace: str, name: str) -> dict[str, Any]:
        """Quay's mirror view of the repository (no password, ever)."""
        with self._db.session() as session:
            repo = administered_repository(session, subject, namespace, name, self._policy)
            mirror = self._mirror(session, repo.id)
            return self._view(session, mirror)

    def _view(self, session: Session, mirror: RepoMirrorConfig) -> dict[str, Any]:
        robot = (session.scalar(select(User.username).where(User.id == mirror.robot_id))
                 if mirror.robot_id is not None else None)
        username = None
        if mirror.username_encrypted:
            try:
                username = self._box.decrypt(mirror.username_encrypted)
            except SecretError:
                username = None
        config = dict(mirror.external_registry_config or {})
        config.setdefault("verify_tls", True)
        config.setdefault("unsigned_images", False)
        config.setdefault("proxy", {key: None for key in _PROXY_KEYS})
        return {
            "is_enabled": mirror.is_enabled,
            "mirror_type": "PULL",
            "external_reference": mirror.external_reference,
            "external_registry_username": username,
            "external_registry_config": config,
            "sync_interval": mirror.sync_interval,
            "sync_start_date": format_date(mirror.sync_start_date),
            "sync_expiration_date": format_date(mirror.sync_expiration_date),
            "sync_retries_remaining": mirror.sync_retries_remaining,
            "sync_status": mirror.sync_status,
            "root_rule": mirror.root_rule,
            "robot_username": robot,
            "sync_timeout_s": mirror.sync_timeout_s,
            "architecture_filter": list(mirror.architecture_filter or []),
            "last_sync": format_date(mirror.last_sync_at),
            "last_error": mirror.last_error,
        }

    # --- writes -----------------------------------------------------------------------
    def create(self, subject: Subject, namespace: str, name: str,
               body: Mapping[str, Any], audit: AuditContext) -> None:
        """Quay's ``createRepoMirrorConfig``: 409 semantics are the caller's
        (:class:`MirrorExists`)."""
        settings = parse_settings(body)
        missing = [key for key, value in (
            ("external_reference", settings.external_reference),
            ("sync_interval", settings.sync_interval),
            ("sync_start_date", settings.sync_start_date),
            ("root_rule", settings.root_rule),
            ("robot_username", settings.robot_username),
        ) if value is None]
        if missing:
            raise Invalid(f"Missing required field(s): {', '.join(missing)}.")
        assert settings.external_reference is not None  # for mypy: checked above
        self._check_outbound(settings.external_reference, settings.registry_config)
        try:
            with self._db.session() as session:
                repo = administered_repository(session, subject, namespace, name,
                                               self._policy)
                if self._find(session, repo.id) is not None:
                    raise MirrorExists("A mirror configuration already exists for this "
                                       "repository; change it with PUT.")
                robot_id = self._robot(session, namespace, settings.robot_username)
                mirror = RepoMirrorConfig(
                    repository_id=repo.id,
                    is_enabled=True if settings.is_enabled is None else settings.is_enabled,
                    external_reference=settings.external_reference,
                    username_encrypted=self._encrypt(settings.username),
                    password_encrypted=self._encrypt(settings.password),
                    external_registry_config=(settings.registry_config
                                              or _registry_config({})),
                    root_rule=settings.root_rule,
                    architecture_filter=settings.architecture_filter or [],
                    robot_id=robot_id,
                    sync_interval=settings.sync_interval,
                    sync_start_date=settings.sync_start_date,
                    sync_status="NEVER_RUN",
                    sync_retries_remaining=DEFAULT_RETRIES,
                    sync_timeout_s=settings.sync_timeout_s or DEFAULT_TIMEOUT_S,
                    created_at=utcnow(),
                )
                session.add(mirror)
                session.flush()
                record_for_repository(session, "repo_mirror_enabled", repo.id, audit,
                                      external_reference=settings.external_reference)
        except IntegrityError:
            raise MirrorExists("A mirror configuration already exists for this "
                               "repository; change it with PUT.") from None

    def update(self, subject: Subject, namespace: str, name: str,
               body: Mapping[str, Any], audit: AuditContext) -> None:
        """Quay's ``changeRepoMirrorConfig``: change the fields given, keep the others
        (an omitted password is kept; ``null`` clears it)."""
        settings = parse_settings(body)
        if settings.external_reference is not None or settings.registry_config is not None:
            # Resolve names outside the write transaction (SQLite: the only writer).
            with self._db.read() as connection:
                repo = authorize_repository(connection, subject, namespace, name,
                                            Action.ADMIN, self._policy)
                current = connection.execute(
                    select(RepoMirrorConfig.external_reference,
                           RepoMirrorConfig.external_registry_config)
                    .where(RepoMirrorConfig.repository_id == repo.id)).first()
            if current is not None:
                self._check_outbound(settings.external_reference or current[0],
                                     settings.registry_config or current[1])
        with self._db.session() as session:
            repo = administered_repository(session, subject, namespace, name, self._policy)
            mirror = self._mirror(session, repo.id)
            changes: list[tuple[str, Any]] = []

            def change(field: str, value: Any, shown: Any = None) -> None:
                changes.append((field, value if shown is None else shown))

            if settings.is_enabled is not None and settings.is_enabled != mirror.is_enabled:
                mirror.is_enabled = settings.is_enabled
                record_for_repository(
                    session, "repo_mirror_enabled" if settings.is_enabled
                    else "repo_mirror_disabled", repo.id, audit)
            if settings.external_reference is not None:
                mirror.external_reference = settings.external_reference
                change("external_reference", settings.external_reference)
            if settings.username_given:
                mirror.username_encrypted = self._encrypt(settings.username)
                change("external_registry_username", settings.username or "")
            if settings.password_given:
                mirror.password_encrypted = self._encrypt(settings.password)
                change("external_registry_password", None, "********")
            if settings.registry_config is not None:
                mirror.external_registry_config = settings.registry_config
                change("external_registry_config", settings.registry_config)
            if settings.sync_interval is not None:
                mirror.sync_interval = settings.sync_interval
                change("sync_interval", settings.sync_interval)
            if settings.sync_start_date is not None:
                mirror.sync_start_date = settings.sync_start_date
                change("sync_start_date", format_date(settings.sync_start_date))
            if settings.root_rule is not None:
                mirror.root_rule = settings.root_rule
                change("root_rule", settings.root_rule)
            if settings.robot_username is not None:
                mirror.robot_id = self._robot(session, namespace, settings.robot_username)
                change("robot_username", settings.robot_username)
            if settings.sync_timeout_s is not None:
                mirror.sync_timeout_s = settings.sync_timeout_s
                change("sync_timeout_s", settings.sync_timeout_s)
            if settings.architecture_filter is not None:
                mirror.architecture_filter = settings.architecture_filter
                change("architecture_filter", settings.architecture_filter)
            for field, value in changes:
                record_for_repository(session, "repo_mirror_config_changed", repo.id, audit,
                                      changed=field, to=value)

    def sync_now(self, subject: Subject, namespace: str, name: str,
                 audit: AuditContext) -> None:
        """Ask for a sync at the next worker pass (not while one runs)."""
        self._set_status(subject, namespace, name, audit, "SYNC_NOW",
                         refused_from=("SYNCING",),
                         refusal="A sync is running already; cancel it first.")

    def sync_cancel(self, subject: Subject, namespace: str, name: str,
                    audit: AuditContext) -> None:
        """Stop a running or requested sync (the sync stops at its next checkpoint)."""
        self._set_status(subject, namespace, name, audit, "CANCEL",
                         allowed_from=("SYNCING", "SYNC_NOW"),
                         refusal="No sync is running or requested.")

    def _set_status(self, subject: Subject, namespace: str, name: str, audit: AuditContext,
                    status: str, *, allowed_from: tuple[str, ...] | None = None,
                    refused_from: tuple[str, ...] = (), refusal: str) -> None:
        with self._db.session() as session:
            repo = administered_repository(session, subject, namespace, name, self._policy)
            mirror = self._mirror(session, repo.id)
            current = mirror.sync_status
            lapsed = (current == "SYNCING" and mirror.sync_expiration_date is not None
                      and as_utc(mirror.sync_expiration_date) < as_utc(utcnow()))
            if (current in refused_from and not lapsed) or (
                    allowed_from is not None and current not in allowed_from):
                raise Invalid(refusal)
            # Conditional on the status read: a worker finishing meanwhile wins.
            result = session.execute(
                update(RepoMirrorConfig)
                .where(RepoMirrorConfig.id == mirror.id,
                       RepoMirrorConfig.sync_status == current)
                .values(sync_status=status)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise Invalid("The mirror's status changed meanwhile; try again.")
            record_for_repository(session, "repo_mirror_config_changed", repo.id, audit,
                                  changed="sync_status", to=status)

    def change_state(self, subject: Subject, namespace: str, name: str, state: object,
                     audit: AuditContext, *, mirror_feature: bool) -> None:
        """Quay's ``changeRepoState``: ``NORMAL``, ``READ_ONLY`` or ``MIRROR`` (the last
        only with ``FEATURE_REPO_MIRROR``)."""
        if not isinstance(state, str) or state not in REPOSITORY_STATES or (
                state == "MIRROR" and not mirror_feature):
            shown = state[:40] if isinstance(state, str) else state
            raise Invalid(f"{shown!r} is not a valid repository state: use NORMAL, "
                          f"READ_ONLY{' or MIRROR' if mirror_feature else ''}.")
        with self._db.session() as session:
            repo = administered_repository(session, subject, namespace, name, self._policy)
            session.execute(update(Repository).where(Repository.id == repo.id)
                            .values(state=state))
            record_for_repository(session, "change_repo_state", repo.id, audit,
                                  state_changed=state)

    # --- helpers ----------------------------------------------------------------------
    @staticmethod
    def _find(session: Session, repository_id: int) -> RepoMirrorConfig | None:
        return session.scalar(select(RepoMirrorConfig)
                              .where(RepoMirrorConfig.repository_id == repository_id))

    def _mirror(self, session: Session, repository_id: int) -> RepoMirrorConfig:
        mirror = self._find(session, repository_id)
        if mirror is None:
            raise NotFound("No mirror configuration found for this repository.")
        return mirror

    @staticmethod
    def _robot(session: Session, namespace: str, username: str | None) -> int | None:
        """The id of robot ``username``, which must belong to the repository's namespace."""
        if username is None:
            return None
        owner, plus, _short = username.partition("+")
        robot_id = session.scalar(select(User.id).where(
            User.username == username, User.robot_owner_id.is_not(None)))
        if not plus or owner != namespace or robot_id is None:
            raise Invalid(f"Robot {username[:200]!r} does not exist in namespace "
                          f"{namespace!r}; create it first.")
        return robot_id

    def _encrypt(self, value: str | None) -> str | None:
        return self._box.encrypt(value) if value is not None else None

    def _check_outbound(self, reference: str, registry_config: Mapping[str, Any] | None) -> None:
        """The upstream host (and a proxy, if set) must pass the SSRF policy."""
        registry = reference.split("/", 1)[0]
        self._outbound.check_url(f"https://{registry}/v2/")
        proxy = dict((registry_config or {}).get("proxy") or {})
        for key in ("http_proxy", "https_proxy"):
            if proxy.get(key):
                self._outbound.check_url(str(proxy[key]))


class MirrorExists(Invalid):
    """A second ``POST`` for a repository that has a mirror configuration (409)."""
