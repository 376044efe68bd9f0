"""Tags and manifests as the repository API (``/api/v1``) shows and changes them.

Tags are versioned rows (see :mod:`portside.db.models`): the tag list shows every
lifetime, newest first, so a moved or deleted tag keeps its history. Creating or moving
a tag here goes through :func:`portside.services.manifests.point_tag` and deleting one
through :meth:`ManifestService.delete`, exactly as a ``/v2`` push and delete do.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from portside.auth.permissions import Action, Policy, Subject
from portside.db.engine import Database
from portside.db.models import Manifest, Tag
from portside.oci import manifest as oci_manifest
from portside.oci import mediatypes as mt
from portside.oci.names import is_valid_tag
from portside.services.audit import AuditContext, record_for_repository
from portside.services.errors import ManifestUnknown
from portside.services.immutability import immutable_tags
from portside.services.labels import check_manifest_digest, read_small_config
from portside.services.manifests import ManifestService, lock_repository, now_ms, point_tag
from portside.services.repository_access import authorize_repository
from portside.services.repository_admin import InvalidInput, NotFound
from portside.services.tag_history import active_clause, shown_end_ms
from portside.storage.placements import Placements

#: Quay's page size bounds for the tag list.
DEFAULT_TAGS_PER_PAGE = 50
MAX_TAGS_PER_PAGE = 100
_MAX_OFFSET = 2**31 - 1
#: Characters tag names are made of (what a ``like:`` filter can match).
_TAG_TEXT_RE = re.compile(r"[A-Za-z0-9._-]+")

TAG_NAME_ERROR = ('Invalid tag: must match [A-Za-z0-9_.-], not start with "." or "-", '
                  "and have 1 to 128 characters")
FILTER_ERROR = ("Unsupported syntax for filter_tag_name: expected <operation>:<tag name> "
                "where <operation> is 'like' or 'eq'")


@dataclass(frozen=True)
class TagEntry:
    """One lifetime of a tag."""

    name: str
    manifest_digest: str
    is_manifest_list: bool
    #: Sum of the layer sizes (``None`` for indexes and manifest lists).
    size: int | None
    lifetime_start_ms: int
    #: When the lifetime ended or will end (an expiring tag's expiry; an expired tag
    #: not yet ended by garbage collection ends at its expiry).
    lifetime_end_ms: int | None
    #: The lifetime was started by a restore.
    reversion: bool = False
    #: The tag is immutable now (its flag or a policy); only for the active lifetime.
    immutable: bool = False


@dataclass(frozen=True)
class LayerView:
    """A layer of an image manifest, with what the image config says about it."""

    index: int
    compressed_size: int
    is_remote: bool
    urls: list[str] | None
    blob_digest: str
    command: list[str] | None = None
    comment: str | None = None
    author: str | None = None
    created: datetime | None = None


@dataclass(frozen=True)
class ManifestView:
    """A manifest as Quay's ``getRepoManifest`` shows it."""

    digest: str
    is_manifest_list: bool
    manifest_data: str
    config_media_type: str | None
    layers: list[LayerView] | None = field(default=None)


def parse_tag_filter(value: str | None) -> tuple[str, str] | None:
    """``(operation, name)`` from Quay's ``filter_tag_name`` (``like:x`` or ``eq:x``)."""
    if not value:
        return None
    operation, separator, name = value.partition(":")
    if not separator or operation not in ("like", "eq"):
        raise InvalidInput(FILTER_ERROR)
    return operation, name


def layers_size(document: Any) -> int | None:
    """The sum of an image manifest's layer sizes (what Quay shows as a tag's size)."""
    if not isinstance(document, dict) or "manifests" in document:
        return None
    layers = document.get("layers")
    if not isinstance(layers, list):
        return 0
    return sum(layer["size"] for layer in layers
               if isinstance(layer, dict) and isinstance(layer.get("size"), int))


def _created(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class TagService:
    """The tag list, tag changes and the manifest view, on behalf of a subject."""

    def __init__(self, db: Database, policy: Policy, manifests: ManifestService,
                 placements: Placements) -> None:
        self._db = db
        self._policy = policy
        self._manifests = manifests
        self._placements = placements

    # --- reading ---------------------------------------------------------------------
    def list_tags(self, subject: Subject, namespace: str, name: str, *, page: int = 1,
                  limit: int = DEFAULT_TAGS_PER_PAGE, active_only: bool = False,
                  specific_tag: str | None = None, name_filter: str | None = None,
                  ) -> tuple[list[TagEntry], bool]:
        """One page of tag lifetimes, newest first, and whether more follow.

        ``page`` counts from 1; ``limit`` is clamped to 1..100 as in Quay.
        """
        page = max(1, page)
        limit = min(MAX_TAGS_PER_PAGE, max(1, limit))
        parsed_filter = parse_tag_filter(name_filter)
        query = (
            select(Tag.name, Tag.lifetime_start_ms, Tag.lifetime_end_ms, Tag.expiration_ms,
                   Tag.reversion, Manifest.digest, Manifest.media_type, Manifest.content)
            .join(Manifest, Manifest.id == Tag.manifest_id)
        )
        if active_only:
            query = query.where(active_clause(now_ms()))
        # A name or part of one outside the tag alphabet matches nothing (and must not
        # reach the database: PostgreSQL refuses NUL characters in queries).
        matches_nothing = bool(specific_tag and not is_valid_tag(specific_tag)) or bool(
            parsed_filter and parsed_filter[1] and not _TAG_TEXT_RE.fullmatch(parsed_filter[1]))
        if specific_tag:
            query = query.where(Tag.name == specific_tag)
        if parsed_filter is not None:
            operation, value = parsed_filter
            query = query.where(Tag.name.icontains(value, autoescape=True)
                                if operation == "like" else Tag.name == value)
        with self._db.read() as connection:
            repository = authorize_repository(connection, subject, namespace, name,
                                              Action.PULL, self._policy)
            offset = (page - 1) * limit
            # One row more than asked tells whether another page follows. No repository
            # has 2**31 tag rows; larger offsets would overflow the databases' integers.
            rows = [] if offset > _MAX_OFFSET or matches_nothing else connection.execute(
                query.where(Tag.repository_id == repository.id)
                .order_by(Tag.lifetime_start_ms.desc(), Tag.id.desc())
                .offset(offset).limit(limit + 1)
            ).all()
            now = now_ms()

            def is_active(row: Any) -> bool:
                return row.lifetime_end_ms is None and (
                    row.expiration_ms is None or row.expiration_ms > now)

            immutable = immutable_tags(connection, repository.id,
                                       [row.name for row in rows[:limit] if is_active(row)])
        sizes: dict[str, int | None] = {}
        entries = []
        for row in rows[:limit]:
            if row.digest not in sizes:
                try:
                    sizes[row.digest] = layers_size(json.loads(row.content))
                except ValueError:
                    sizes[row.digest] = None
            entries.append(TagEntry(
                name=row.name, manifest_digest=row.digest,
                is_manifest_list=row.media_type in mt.INDEX_TYPES, size=sizes[row.digest],
                lifetime_start_ms=row.lifetime_start_ms,
                lifetime_end_ms=shown_end_ms(row.lifetime_end_ms, row.expiration_ms),
                reversion=bool(row.reversion),
                immutable=is_active(row) and row.name in immutable,
            ))
        return entries, len(rows) > limit

    def manifest(self, subject: Subject, namespace: str, name: str,
                 digest: str) -> ManifestView:
        """A manifest of the repository with its layers (image manifests only); the
        layers' commands, authors and dates come from the image config's history."""
        check_manifest_digest(digest)
        with self._db.read() as connection:
            repository = authorize_repository(connection, subject, namespace, name,
                                              Action.PULL, self._policy)
            row = connection.execute(select(Manifest.media_type, Manifest.content).where(
                Manifest.repository_id == repository.id, Manifest.digest == digest)).first()
            if row is None:
                raise NotFound(f"Manifest {digest} not found.")
            try:
                parsed = oci_manifest.parse_manifest(row.content, row.media_type)
            except (oci_manifest.ManifestInvalid, oci_manifest.ManifestUnsupported):
                # Validated on push; should a stored one not parse, show it without layers.
                text = row.content.decode("utf-8", errors="replace")
                return ManifestView(digest, row.media_type in mt.INDEX_TYPES, text, None)
            config = None
            if parsed.config is not None:
                config = read_small_config(self._db, self._placements, repository.id,
                                           parsed.config, connection)
        text = row.content.decode("utf-8", errors="replace")
        if parsed.is_index:
            return ManifestView(digest, True, text, None, None)
        return ManifestView(digest, False, text,
                            parsed.config.media_type if parsed.config else None,
                            _layers(parsed, config))

    # --- changing --------------------------------------------------------------------
    def set_tag(self, subject: Subject, namespace: str, name: str, tag: str,
                manifest_digest: str, ip: str | None = None) -> str | None:
        """Create tag ``tag`` or move it to a manifest of the repository.

        Records Quay's ``create_tag`` or ``move_tag``; returns the digest the tag pointed
        at before (``None`` if it was created).
        """
        if not is_valid_tag(tag):
            raise InvalidInput(TAG_NAME_ERROR)
        check_manifest_digest(manifest_digest)
        for _attempt in range(3):
            try:
                return self._set_tag(subject, namespace, name, tag, manifest_digest, ip)
            except IntegrityError:
                continue  # a concurrent push of the same tag; try again
        raise RuntimeError("could not move the tag after concurrent updates")

    def _set_tag(self, subject: Subject, namespace: str, name: str, tag: str,
                 manifest_digest: str, ip: str | None) -> str | None:
        with self._db.session() as session:
            repository = authorize_repository(session, subject, namespace, name,
                                              Action.PUSH, self._policy)
            manifest_id = session.scalar(select(Manifest.id).where(
                Manifest.repository_id == repository.id, Manifest.digest == manifest_digest))
            if manifest_id is None:
                raise NotFound(f"Manifest {manifest_digest} not found.")
            lock_repository(session, repository.id)
            previous_id = point_tag(session, repository.id, tag, manifest_id)
            if previous_id == manifest_id:
                return manifest_digest  # already there: nothing changed, nothing to log
            audit = AuditContext(subject, ip)
            if previous_id is None:
                record_for_repository(session, "create_tag", repository.id, audit, tag=tag,
                                      manifest_digest=manifest_digest)
                return None
            previous = session.scalar(select(Manifest.digest).where(
                Manifest.id == previous_id))
            record_for_repository(session, "move_tag", repository.id, audit, tag=tag,
                                  manifest_digest=manifest_digest,
                                  original_manifest_digest=previous)
            return previous

    def delete_tag(self, subject: Subject, namespace: str, name: str, tag: str,
                   ip: str | None = None) -> None:
        """End the tag's active lifetime (its history stays); records ``delete_tag``.

        The same operation as ``DELETE /v2/<name>/manifests/<tag>``.
        """
        if not is_valid_tag(tag):
            raise InvalidInput(TAG_NAME_ERROR)
        with self._db.read() as connection:
            repository = authorize_repository(connection, subject, namespace, name,
                                              Action.DELETE, self._policy)
        try:
            self._manifests.delete(repository.id, tag, audit=AuditContext(subject, ip))
        except ManifestUnknown:
            raise NotFound(f"Tag {tag} not found.") from None


def _layers(parsed: oci_manifest.ParsedManifest,
            config: dict[str, Any] | None) -> list[LayerView]:
    """The manifest's layers, matched in order with the config's history entries that
    are not ``empty_layer`` (the image spec's rule)."""
    history = config.get("history") if config is not None else None
    entries = [h for h in history if isinstance(h, dict) and not h.get("empty_layer")] \
        if isinstance(history, list) else []
    views = []
    for index, layer in enumerate(parsed.layers):
        entry = entries[index] if index < len(entries) else {}
        created_by = _text(entry.get("created_by"))
        views.append(LayerView(
            index=index, compressed_size=layer.size, is_remote=bool(layer.urls),
            urls=list(layer.urls) or None, blob_digest=layer.digest,
            command=[created_by] if created_by else None,
            comment=_text(entry.get("comment")), author=_text(entry.get("author")),
            created=_created(entry.get("created")),
        ))
    return views
