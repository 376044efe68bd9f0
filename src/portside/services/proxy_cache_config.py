"""Proxy-cache configurations of organizations (Quay's ``ProxyCacheConfig``).

An organization with a configuration is a pull-through cache of one upstream registry:
``upstream_registry`` is ``host[:port]`` with an optional path prefix
(``registry.local:5000/library``). Credentials are stored encrypted with the
:class:`~portside.auth.secrets.SecretBox` and never shown again. Only organization
administrators (and superusers) create and delete configurations; members read them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portside.auth.permissions import (
    NamespaceAction,
    NamespaceRole,
    Subject,
    acts_as_superuser,
    namespace_actions,
    strongest_namespace_role,
)
from portside.auth.secrets import SecretBox, SecretError
from portside.db.engine import Database
from portside.db.models import Namespace, ProxyCacheConfig, Repository, Team, TeamMember
from portside.oci.names import NAME_RE
from portside.services.audit import record
from portside.services.outbound import OutboundPolicy, OutboundRefused
from portside.services.refusals import Forbidden, Invalid, NotFound
from portside.services.upstream import UpstreamSettings

T = TypeVar("T")

#: Quay's default: cached tags live a day after their last pull.
DEFAULT_EXPIRATION_S = 86400
MIN_EXPIRATION_S = 60
MAX_EXPIRATION_S = 10 * 365 * 86400

_HOST_RE = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
                      r"(?::[0-9]{1,5})?$")

#: Docker Hub's API lives elsewhere than its name; single names are ``library/`` images.
DOCKER_HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DOCKER_HUB_API = "registry-1.docker.io"


def split_upstream_registry(value: str) -> tuple[str, str]:
    """``(host[:port], path prefix)`` of an ``upstream_registry``; raises
    :class:`Invalid` for anything else (schemes, credentials, bad names)."""
    text = value.strip().rstrip("/")
    if "://" in text:
        raise Invalid("upstream_registry is host[:port][/path], without a scheme")
    host, _, prefix = text.partition("/")
    if not host or not _HOST_RE.fullmatch(host) or "@" in text:
        raise Invalid(f"Invalid upstream registry {value[:200]!r}")
    port = host.rsplit(":", 1)[1] if ":" in host and not host.endswith("]") else None
    if port is not None and not 0 < int(port) < 65536:
        raise Invalid(f"Invalid port in upstream registry {value[:200]!r}")
    if prefix and not NAME_RE.fullmatch(prefix):
        raise Invalid(f"Invalid repository path in upstream registry {value[:200]!r}")
    return host.lower(), prefix


@dataclass(frozen=True)
class ProxyCacheInfo:
    """A configuration as the API shows it (never the credentials)."""

    upstream_registry: str
    expiration_s: int
    insecure: bool


@dataclass(frozen=True)
class ProxyCacheSettings:
    """A configuration as the cache uses it: credentials decrypted."""

    namespace_id: int
    namespace: str
    upstream_registry: str
    host: str
    prefix: str
    username: str | None
    password: str | None
    expiration_s: int
    insecure: bool

    def __repr__(self) -> str:  # never print the password
        return (f"ProxyCacheSettings(namespace={self.namespace!r}, "
                f"upstream_registry={self.upstream_registry!r})")

    def upstream_repository(self, name: str) -> str:
        """The upstream repository for ``name`` (the part after the organization)."""
        path = f"{self.prefix}/{name}" if self.prefix else name
        if self.host in DOCKER_HUB_NAMES and "/" not in path:
            path = f"library/{path}"
        return path

    def upstream_settings(self, plain_http: bool = False) -> UpstreamSettings:
        """How to reach the upstream; ``insecure``: no TLS verification, or plain HTTP."""
        host = DOCKER_HUB_API if self.host in DOCKER_HUB_NAMES else self.host
        return UpstreamSettings(host, self.username, self.password,
                                verify_tls=not self.insecure, plain_http=plain_http)


def settings_from_row(row: ProxyCacheConfig, namespace: str,
                      box: SecretBox) -> ProxyCacheSettings:
    """Decrypt a row's credentials (a row the key cannot decrypt has none)."""
    try:
        username = box.decrypt(row.username_encrypted) if row.username_encrypted else None
        password = box.decrypt(row.password_encrypted) if row.password_encrypted else None
    except SecretError:
        username = password = None
    host, prefix = split_upstream_registry(row.upstream_registry)
    return ProxyCacheSettings(row.namespace_id, namespace, row.upstream_registry, host,
                              prefix, username, password, row.expiration_s, row.insecure)


def load_all(db: Database, box: SecretBox) -> dict[str, ProxyCacheSettings]:
    """Every configuration, by organization name."""
    with db.session() as session:
        rows = session.execute(
            select(ProxyCacheConfig, Namespace.name)
            .join(Namespace, Namespace.id == ProxyCacheConfig.namespace_id)
        ).all()
        result = {}
        for config, name in rows:
            try:
                result[name] = settings_from_row(config, name, box)
            except Invalid:
                continue  # stored before a stricter check: ignored, not fatal
        return result


class ProxyCacheConfigService:
    """Create, read and delete an organization's configuration."""

    def __init__(self, db: Database, box: SecretBox, outbound: OutboundPolicy) -> None:
        self._db = db
        self._box = box
        self._outbound = outbound

    def get(self, subject: Subject, org: str) -> ProxyCacheInfo | None:
        """The configuration (``None``: there is none); organization members only."""
        with self._db.session() as session:
            namespace = self._organization(session, subject, org, NamespaceAction.VIEW)
            row = session.scalar(select(ProxyCacheConfig).where(
                ProxyCacheConfig.namespace_id == namespace.id))
            if row is None:
                return None
            return ProxyCacheInfo(row.upstream_registry, row.expiration_s, row.insecure)

    def check(self, subject: Subject, org: str, upstream_registry: str, username: str | None,
              password: str | None, expiration_s: int | None,
              insecure: bool) -> ProxyCacheSettings:
        """Validate a would-be configuration (admins only); the upstream host must pass
        the outbound policy. Returns it, not stored."""
        with self._db.session() as session:
            namespace = self._organization(session, subject, org, NamespaceAction.ADMINISTER)
            namespace_id = namespace.id
        host, prefix = split_upstream_registry(upstream_registry)
        expiration = DEFAULT_EXPIRATION_S if expiration_s is None else expiration_s
        if not MIN_EXPIRATION_S <= expiration <= MAX_EXPIRATION_S:
            raise Invalid(f"expiration_s must be between {MIN_EXPIRATION_S} and "
                          f"{MAX_EXPIRATION_S} seconds")
        if bool(username) != bool(password):
            raise Invalid("Give both upstream_registry_username and "
                          "upstream_registry_password, or neither")
        try:
            self._outbound.check_url(f"https://{host}/v2/")
        except OutboundRefused as exc:
            raise Invalid(f"Upstream registry refused by the outbound policy: {exc.message}"
                          ) from None
        return ProxyCacheSettings(namespace_id, org, upstream_registry.strip().rstrip("/"),
                                  host, prefix, username or None, password or None,
                                  expiration, insecure)

    def create(self, subject: Subject, org: str, settings: ProxyCacheSettings,
               ip: str | None = None) -> None:
        """Store ``settings`` (from :meth:`check`); one configuration per organization,
        and only while the organization holds no repositories."""
        def work(session: Session) -> None:
            namespace = self._organization(session, subject, org, NamespaceAction.ADMINISTER,
                                           lock=True)
            existing = session.scalar(select(ProxyCacheConfig.id).where(
                ProxyCacheConfig.namespace_id == namespace.id))
            if existing is not None:
                raise Invalid("Proxy Cache Configuration already exists")
            repositories = session.scalar(select(func.count()).select_from(Repository).where(
                Repository.namespace_id == namespace.id, Repository.deleted_at.is_(None)))
            if repositories:
                # Their tags were pushed; a cache would mix them with upstream content.
                raise Invalid("Only an organization without repositories can become a "
                              "proxy cache")
            session.add(ProxyCacheConfig(
                namespace_id=namespace.id,
                upstream_registry=settings.upstream_registry,
                username_encrypted=(self._box.encrypt(settings.username)
                                    if settings.username else None),
                password_encrypted=(self._box.encrypt(settings.password)
                                    if settings.password else None),
                expiration_s=settings.expiration_s,
                insecure=settings.insecure,
            ))
            record(session, "create_proxy_cache_config", performer=subject,
                   namespace_id=namespace.id, ip=ip,
                   metadata={"upstream_registry": settings.upstream_registry})

        self._write(work)

    def delete(self, subject: Subject, org: str, ip: str | None = None) -> None:
        """Remove the configuration; cached repositories stay as ordinary ones."""
        def work(session: Session) -> None:
            namespace = self._organization(session, subject, org, NamespaceAction.ADMINISTER,
                                           lock=True)
            result = session.execute(delete(ProxyCacheConfig).where(
                ProxyCacheConfig.namespace_id == namespace.id))
            if not result.rowcount:  # type: ignore[attr-defined]
                raise NotFound("No proxy cache configuration for this organization")
            record(session, "delete_proxy_cache_config", performer=subject,
                   namespace_id=namespace.id, ip=ip, metadata={})

        self._write(work)

    # --- helpers ------------------------------------------------------------------------
    def _write(self, work: Callable[[Session], T]) -> T:
        for attempt in range(3):
            try:
                with self._db.session() as session:
                    return work(session)
            except IntegrityError:
                if attempt == 2:
                    raise Invalid("Proxy Cache Configuration already exists") from None
        raise AssertionError("unreachable")

    @staticmethod
    def _organization(session: Session, subject: Subject, org: str, action: NamespaceAction,
                      lock: bool = False) -> Namespace:
        query = select(Namespace).where(Namespace.name == org, Namespace.kind == "organization")
        if lock:
            query = query.with_for_update()
        namespace = session.scalar(query)
        if namespace is None:
            raise NotFound(f"Unknown organization {org[:100]!r}")
        role = None
        if subject.user_id is not None:
            role = strongest_namespace_role(session.scalars(
                select(Team.role).join(TeamMember, TeamMember.team_id == Team.id)
                .where(Team.namespace_id == namespace.id,
                       TeamMember.user_id == subject.user_id)))
        effective = NamespaceRole.ADMIN if acts_as_superuser(subject) else role
        if action not in namespace_actions(subject, effective, is_organization=True):
            raise Forbidden("Unauthorized")
        return namespace
