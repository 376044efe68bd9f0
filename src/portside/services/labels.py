"""Manifest labels: key/value pairs on a manifest, as Quay keeps them.

Labels come from two places. When an image manifest is pushed, the ``Labels`` of its
image config (``LABEL`` lines of a Dockerfile) are stored with source type ``manifest``
(:func:`read_config_labels` before the push transaction, :func:`insert_manifest_labels`
inside it); Quay reads them back later, e.g. ``quay.expires-after``. Users add and remove
labels of source type ``api`` through ``/api/v1`` (:class:`LabelService`). Labels from
the image are immutable: they describe the manifest's content.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy.orm import Session

from portside.auth.permissions import Action, Policy, Subject
from portside.db.engine import Database
from portside.db.models import Blob, Manifest, ManifestLabel, RepositoryBlob
from portside.oci import manifest as oci_manifest
from portside.oci.digest import InvalidDigest, parse_digest
from portside.services.audit import AuditContext, record_for_repository
from portside.services.repository_access import authorize_repository
from portside.services.repository_admin import InvalidInput, NotFound
from portside.storage.layout import blob_path
from portside.storage.placements import Placements

log = logging.getLogger(__name__)

#: Quay's label key grammar: lower-case letters and digits, with single ``.`` or ``-``
#: between them (no leading, trailing or doubled separators); at most 255 characters.
LABEL_KEY_RE = re.compile(r"^[a-z0-9](?:(?:[a-z0-9]|[-.](?![.-]))*[a-z0-9])?$")
MAX_KEY_LENGTH = 255
#: Longest value accepted through the API.
MAX_VALUE_LENGTH = 100_000
#: Label ids are UUIDs.
_LABEL_ID_RE = re.compile(r"[0-9a-f-]{36}")
#: The label media types Quay knows.
LABEL_MEDIA_TYPES = ("text/plain", "application/json")
#: Image configs larger than this are not read for labels (nor for the layer view).
MAX_CONFIG_SIZE = 1 << 20
#: Config media types that carry ``config.Labels``.
IMAGE_CONFIG_TYPES = frozenset({
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
})


@dataclass(frozen=True)
class LabelInfo:
    """A label as the API shows it."""

    id: str
    key: str
    value: str
    source_type: str
    media_type: str


def is_valid_label_key(key: str) -> bool:
    """True if ``key`` may be set through the API (Quay's grammar)."""
    return len(key) <= MAX_KEY_LENGTH and bool(LABEL_KEY_RE.fullmatch(key))


def looks_like_json(value: str) -> bool:
    """True for a value that is a JSON object or array (labels from images get the
    ``application/json`` media type then, as in Quay)."""
    stripped = value.strip()
    if not stripped or (stripped[0], stripped[-1]) not in (("{", "}"), ("[", "]")):
        return False
    try:
        json.loads(stripped)
    except (ValueError, RecursionError):
        return False
    return True


def _storable(text: str) -> bool:
    """True if every database can store ``text`` (PostgreSQL refuses NUL characters and
    JSON may smuggle in lone surrogates that do not encode as UTF-8)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- reading image configs ------------------------------------------------------------


def read_small_config(db: Database, placements: Placements, repository_id: int,
                      config: oci_manifest.Descriptor,
                      connection: Connection | None = None) -> dict[str, Any] | None:
    """The image config named by ``config`` as a JSON object, or ``None``.

    Only image configs of at most :data:`MAX_CONFIG_SIZE` bytes that are stored in the
    repository are read: one query and one read of a small object. Anything unreadable
    (missing, not JSON, not an object) gives ``None``; nothing here raises.
    """
    if config.media_type not in IMAGE_CONFIG_TYPES or config.size > MAX_CONFIG_SIZE:
        return None
    try:
        query = (select(Blob.size, Blob.locations)
                 .join(RepositoryBlob, RepositoryBlob.blob_id == Blob.id)
                 .where(RepositoryBlob.repository_id == repository_id,
                        Blob.digest == config.digest))
        if connection is None:
            with db.read() as reader:
                row = reader.execute(query).first()
        else:
            row = connection.execute(query).first()
        if row is None or row.size != config.size:
            return None  # the push will be refused anyway
        location = placements.read_location(list(row.locations or []))
        raw = placements.driver(location).get_bytes(blob_path(config.digest))
        if len(raw) > MAX_CONFIG_SIZE:
            return None
        document = json.loads(raw)
    except Exception:  # a bad config must never fail a push or a view
        log.debug("could not read image config %s", config.digest, exc_info=True)
        return None
    return document if isinstance(document, dict) else None


def read_config_labels(db: Database, placements: Placements, repository_id: int,
                       parsed: oci_manifest.ParsedManifest) -> dict[str, str]:
    """The ``config.Labels`` of an image manifest's config (empty if none or unreadable).

    Labels that no database could store, or whose key is empty or too long, are
    skipped: Docker lets images carry them, and they must not fail the push.
    """
    if parsed.is_index or parsed.config is None:
        return {}
    document = read_small_config(db, placements, repository_id, parsed.config)
    if document is None:
        return {}
    inner = document.get("config")
    labels = inner.get("Labels") if isinstance(inner, dict) else None
    if not isinstance(labels, dict):
        return {}
    return {
        key: value for key, value in labels.items()
        if isinstance(key, str) and isinstance(value, str)
        and 0 < len(key) <= MAX_KEY_LENGTH and _storable(key) and _storable(value)
    }


def insert_manifest_labels(session: Session, manifest_id: int,
                           labels: Mapping[str, str]) -> None:
    """Store image labels on a new manifest in one multi-row insert (in the caller's
    transaction, so they appear together with the manifest)."""
    if not labels:
        return
    session.execute(insert(ManifestLabel), [
        {"uuid": str(uuid.uuid4()), "manifest_id": manifest_id, "key": key, "value": value,
         "media_type": "application/json" if looks_like_json(value) else "text/plain",
         "source_type": "manifest"}
        for key, value in labels.items()
    ])


# --- the API ---------------------------------------------------------------------------


def check_manifest_digest(digest: str) -> None:
    """:class:`InvalidInput` unless ``digest`` is a well-formed digest."""
    try:
        parse_digest(digest)
    except InvalidDigest as exc:
        raise InvalidInput(f"Invalid manifest digest: {exc}") from None


def _label_info(label: ManifestLabel) -> LabelInfo:
    return LabelInfo(label.uuid, label.key, label.value, label.source_type,
                     label.media_type)


class LabelService:
    """Lists, adds and deletes the labels of a manifest on behalf of a subject.

    Reading needs pull access to the repository, changing needs push access.
    """

    def __init__(self, db: Database, policy: Policy) -> None:
        self._db = db
        self._policy = policy

    def _manifest_id(self, session: Session, subject: Subject, namespace: str, name: str,
                     digest: str, action: Action) -> tuple[int, int]:
        """``(repository id, manifest id)`` once ``subject`` may do ``action``."""
        repository = authorize_repository(session, subject, namespace, name, action,
                                          self._policy)
        manifest_id = session.scalar(select(Manifest.id).where(
            Manifest.repository_id == repository.id, Manifest.digest == digest))
        if manifest_id is None:
            raise NotFound(f"Manifest {digest} not found.")
        return repository.id, manifest_id

    def list(self, subject: Subject, namespace: str, name: str, digest: str,
             prefix: str | None = None) -> list[LabelInfo]:
        """The manifest's labels in the order they were added; ``prefix`` filters keys."""
        check_manifest_digest(digest)
        with self._db.session() as session:
            _, manifest_id = self._manifest_id(session, subject, namespace, name, digest,
                                               Action.PULL)
            query = select(ManifestLabel).where(ManifestLabel.manifest_id == manifest_id)
            if prefix and not _storable(prefix):
                return []  # no stored key holds such characters
            if prefix:
                query = query.where(ManifestLabel.key.startswith(prefix, autoescape=True))
            return [_label_info(label)
                    for label in session.scalars(query.order_by(ManifestLabel.id))]

    def get(self, subject: Subject, namespace: str, name: str, digest: str,
            label_id: str) -> LabelInfo:
        """One label of the manifest (:class:`NotFound` if it has no such label)."""
        check_manifest_digest(digest)
        with self._db.session() as session:
            _, manifest_id = self._manifest_id(session, subject, namespace, name, digest,
                                               Action.PULL)
            label = self._label(session, manifest_id, label_id)
            return _label_info(label)

    def add(self, subject: Subject, namespace: str, name: str, digest: str, key: str,
            value: str, media_type: str | None, ip: str | None = None) -> LabelInfo:
        """Add an ``api`` label; records Quay's ``manifest_label_add``."""
        check_manifest_digest(digest)
        media_type = media_type or "text/plain"
        if not is_valid_label_key(key):
            raise InvalidInput(
                "Label key is invalid: use lower-case letters and digits separated by "
                "single '.' or '-', at most 255 characters")
        if media_type not in LABEL_MEDIA_TYPES:
            raise InvalidInput("Media type is invalid, use one of: "
                               + ", ".join(LABEL_MEDIA_TYPES))
        if len(value) > MAX_VALUE_LENGTH:
            raise InvalidInput(f"Label value longer than {MAX_VALUE_LENGTH} characters")
        if not _storable(value):
            raise InvalidInput("Label value must not contain NUL characters")
        if media_type == "application/json":
            try:
                json.loads(value)
            except (ValueError, RecursionError):
                raise InvalidInput("Label value is not valid JSON") from None
        with self._db.session() as session:
            repository_id, manifest_id = self._manifest_id(session, subject, namespace,
                                                           name, digest, Action.PUSH)
            label = ManifestLabel(uuid=str(uuid.uuid4()), manifest_id=manifest_id, key=key,
                                  value=value, media_type=media_type, source_type="api")
            session.add(label)
            session.flush()
            record_for_repository(session, "manifest_label_add", repository_id,
                                  AuditContext(subject, ip), id=label.uuid, key=key,
                                  value=value, manifest_digest=digest, media_type=media_type)
            return _label_info(label)

    def delete(self, subject: Subject, namespace: str, name: str, digest: str,
               label_id: str, ip: str | None = None) -> None:
        """Delete an ``api`` label; labels from the image cannot be deleted. Records
        Quay's ``manifest_label_delete``."""
        check_manifest_digest(digest)
        with self._db.session() as session:
            repository_id, manifest_id = self._manifest_id(session, subject, namespace,
                                                           name, digest, Action.PUSH)
            label = self._label(session, manifest_id, label_id)
            if label.source_type != "api":
                raise InvalidInput("Cannot delete immutable label")
            session.delete(label)
            record_for_repository(session, "manifest_label_delete", repository_id,
                                  AuditContext(subject, ip), id=label.uuid, key=label.key,
                                  value=label.value, manifest_digest=digest)

    @staticmethod
    def _label(session: Session, manifest_id: int, label_id: str) -> ManifestLabel:
        if not _LABEL_ID_RE.fullmatch(label_id):
            raise NotFound("Label not found.")
        label = session.scalar(select(ManifestLabel).where(
            ManifestLabel.manifest_id == manifest_id, ManifestLabel.uuid == label_id))
        if label is None:
            raise NotFound("Label not found.")
        return label
