"""SQLAlchemy models. Metadata lives here, never in link files on storage.

Tags are versioned rows: a tag move ends the current row (``lifetime_end_ms``) and starts
a new one, which gives tag history, restore and online garbage collection. The active
tag of a name is the row whose ``lifetime_end_ms`` is NULL (unique per repository).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def name_type(length: int) -> String:
    """A name column that sorts and compares by bytes on every database.

    Tag lists and the catalog are ordered and paginated by name; PostgreSQL's locale
    collations would order them differently from SQLite (and from the spec's lexical
    order), so PostgreSQL gets the "C" collation.
    """
    return String(length).with_variant(String(length, collation="C"), "postgresql")


def utcnow() -> datetime:
    """Timezone-aware current time (stored as UTC)."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base with a naming convention so migrations get stable names."""

    from sqlalchemy import MetaData

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Namespace(Base):
    """A user's or organization's namespace: the first component of a repository name."""

    __tablename__ = "namespace"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(name_type(255), unique=True)
    #: ``user`` or ``organization``.
    kind: Mapped[str] = mapped_column(String(16), default="user")
    #: For organizations created on push: the user who created it (administers it).
    created_by_user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: For organizations: the contact e-mail (users keep theirs on the user row).
    email: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: The namespace's time-machine window in seconds (Quay's ``tag_expiration_s``);
    #: ``None`` means the registry's ``DEFAULT_TAG_EXPIRATION``.
    tag_expiration_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: Set when the namespace was deleted: it is renamed out of the way at once and its
    #: content is purged by garbage collection.
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class User(Base):
    """A principal that logs in: a person (owning the namespace of the same name) or a
    robot account ``<namespace>+<name>`` (owned by a user or organization namespace).

    Robots are rows here, as in Quay, so that team membership and repository
    permissions treat people and robots alike.
    """

    __tablename__ = "user"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: The user's own namespace; ``None`` for robots.
    namespace_id: Mapped[int | None] = mapped_column(
        ForeignKey("namespace.id", ondelete="CASCADE"), unique=True, nullable=True
    )
    #: For robots: the namespace that owns the robot.
    robot_owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("namespace.id", ondelete="CASCADE"), nullable=True, index=True
    )
    #: For robots: the robot's token, encrypted with the database secret key.
    robot_token_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    username: Mapped[str] = mapped_column(String(255), unique=True)
    email: Mapped[str | None] = mapped_column(String(255), nullable=True, unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    superuser: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Repository(Base):
    """A repository ``<namespace>/<name>``; ``name`` may contain slashes."""

    __tablename__ = "repository"
    __table_args__ = (UniqueConstraint("namespace_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespace.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(name_type(255))
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Quay's repository state: NORMAL, READ_ONLY or MIRROR.
    state: Mapped[str] = mapped_column(String(16), default="NORMAL")
    #: Free text (Markdown in Quay's UI).
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: Set when the repository was deleted: it is renamed out of the way at once and its
    #: content is purged by garbage collection.
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Blob(Base):
    """A stored blob, deduplicated globally by digest."""

    __tablename__ = "blob"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(200), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    #: Storage location names holding this blob (``DISTRIBUTED_STORAGE_CONFIG`` keys).
    locations: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RepositoryBlob(Base):
    """Makes a blob visible in a repository (uploaded, mounted or referenced there)."""

    __tablename__ = "repository_blob"
    __table_args__ = (Index("ix_repository_blob_blob_id", "blob_id"),)

    repository_id: Mapped[int] = mapped_column(
        ForeignKey("repository.id", ondelete="CASCADE"), primary_key=True
    )
    blob_id: Mapped[int] = mapped_column(ForeignKey("blob.id"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Manifest(Base):
    """A manifest or index, stored byte for byte as received."""

    __tablename__ = "manifest"
    __table_args__ = (
        UniqueConstraint("repository_id", "digest"),
        Index("ix_manifest_repository_id_subject_digest", "repository_id", "subject_digest"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repository.id", ondelete="CASCADE"))
    digest: Mapped[str] = mapped_column(String(200))
    media_type: Mapped[str] = mapped_column(String(255))
    #: ``artifactType`` or, failing that, the config's media type (for referrers).
    artifact_type: Mapped[str | None] = mapped_column(String(255), nullable=True)
    subject_digest: Mapped[str | None] = mapped_column(String(200), nullable=True)
    size: Mapped[int] = mapped_column(Integer)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ManifestBlob(Base):
    """A blob (config or layer) referenced by a manifest."""

    __tablename__ = "manifest_blob"
    __table_args__ = (Index("ix_manifest_blob_blob_id", "blob_id"),)

    manifest_id: Mapped[int] = mapped_column(
        ForeignKey("manifest.id", ondelete="CASCADE"), primary_key=True
    )
    blob_id: Mapped[int] = mapped_column(ForeignKey("blob.id"), primary_key=True)


class ManifestChild(Base):
    """A manifest referenced by an index or manifest list."""

    __tablename__ = "manifest_child"
    __table_args__ = (Index("ix_manifest_child_child_id", "child_id"),)

    manifest_id: Mapped[int] = mapped_column(
        ForeignKey("manifest.id", ondelete="CASCADE"), primary_key=True
    )
    child_id: Mapped[int] = mapped_column(ForeignKey("manifest.id"), primary_key=True)


class Tag(Base):
    """One lifetime of a tag name pointing at a manifest."""

    __tablename__ = "tag"
    __table_args__ = (
        Index("ix_tag_repository_id_name", "repository_id", "name"),
        Index("ix_tag_manifest_id", "manifest_id"),
        Index(
            "uq_tag_active_name",
            "repository_id",
            "name",
            unique=True,
            sqlite_where=text("lifetime_end_ms IS NULL"),
            postgresql_where=text("lifetime_end_ms IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repository.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(name_type(128))
    manifest_id: Mapped[int] = mapped_column(ForeignKey("manifest.id"))
    lifetime_start_ms: Mapped[int] = mapped_column(BigInteger)
    lifetime_end_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: For an active tag: when it expires (ms since the epoch). From then on it is no
    #: longer served, and garbage collection ends the row at that time.
    expiration_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: An immutable tag cannot be moved, deleted, pruned or expired.
    immutable: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: The row was made by restoring an earlier tag (Quay's ``reversion``).
    reversion: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class BlobUpload(Base):
    """A resumable blob upload in progress."""

    __tablename__ = "blob_upload"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repository.id", ondelete="CASCADE"))
    #: Bytes received and made durable so far.
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    #: SHA-256 (hex) of the ``size`` bytes received so far: lets a final, body-less PUT
    #: that lands on another process verify the digest without re-reading the upload.
    sha256_so_far: Mapped[str | None] = mapped_column(String(64), nullable=True)
    location: Mapped[str] = mapped_column(String(64))
    storage_state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Team(Base):
    """A team of an organization; its role applies across the organization."""

    __tablename__ = "team"
    __table_args__ = (UniqueConstraint("namespace_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespace.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(name_type(255))
    #: ``member`` < ``creator`` (may create repositories) < ``admin`` (administers all).
    role: Mapped[str] = mapped_column(String(16), default="member")
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TeamMember(Base):
    """A user or robot in a team."""

    __tablename__ = "team_member"
    __table_args__ = (Index("ix_team_member_user_id", "user_id"),)

    team_id: Mapped[int] = mapped_column(ForeignKey("team.id", ondelete="CASCADE"),
                                         primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"),
                                         primary_key=True)


class RepositoryPermission(Base):
    """A role on one repository for a user/robot or a team (exactly one of them)."""

    __tablename__ = "repository_permission"
    __table_args__ = (
        UniqueConstraint("repository_id", "user_id"),
        UniqueConstraint("repository_id", "team_id"),
        Index("ix_repository_permission_user_id", "user_id"),
        Index("ix_repository_permission_team_id", "team_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repository.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"),
                                                nullable=True)
    team_id: Mapped[int | None] = mapped_column(ForeignKey("team.id", ondelete="CASCADE"),
                                                nullable=True)
    #: ``read`` < ``write`` < ``admin``.
    role: Mapped[str] = mapped_column(String(16))


class SigningKey(Base):
    """A private key that signs registry tokens; every node trusts every stored key."""

    __tablename__ = "signing_key"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    private_key_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AccessToken(Base):
    """An OAuth-style API access token (Quay's ``$oauthtoken``); only its hash is stored."""

    __tablename__ = "access_token"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: Space-separated Quay scopes, e.g. ``repo:read repo:write user:admin``.
    scopes: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: The OAuth application the token was issued through, if any.
    application_id: Mapped[int | None] = mapped_column(
        ForeignKey("oauth_application.id", ondelete="CASCADE"), nullable=True, index=True
    )


class UserSession(Base):
    """A browser session (the UI's cookie). Only a hash of the cookie value is stored.

    A session exists before sign-in too, so that the CSRF token Quay clients fetch from
    ``/csrf_token`` can protect the sign-in request itself.
    """

    __tablename__ = "user_session"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: The signed-in user; ``None`` before sign-in.
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("user.id", ondelete="CASCADE"), nullable=True, index=True
    )
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class LogEntry(Base):
    """One audit log entry (Quay's log kinds: ``push_repo``, ``create_robot``, ...).

    Entries outlive what they describe, so the ids are plain columns without foreign
    keys and the names are repeated in ``metadata_json``.
    """

    __tablename__ = "log_entry"
    __table_args__ = (
        Index("ix_log_entry_namespace_id_created_at", "namespace_id", "created_at"),
        Index("ix_log_entry_repository_id_created_at", "repository_id", "created_at"),
        Index("ix_log_entry_performer_id_created_at", "performer_id", "created_at"),
        Index("ix_log_entry_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    #: The namespace (user or organization) the action happened in.
    namespace_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: Who did it (user or robot); ``None`` for anonymous pulls and the system.
    performer_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    repository_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    metadata_json: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PermissionPrototype(Base):
    """An organization's default permission (Quay's "prototype"): when a repository is
    created in the organization (by ``activating_user``, or by anyone when it is unset),
    the delegate user, robot or team gets ``role`` on it."""

    __tablename__ = "permission_prototype"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: The identifier shown by the API.
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    namespace_id: Mapped[int] = mapped_column(
        ForeignKey("namespace.id", ondelete="CASCADE"), index=True
    )
    activating_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("user.id", ondelete="CASCADE"), nullable=True
    )
    delegate_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("user.id", ondelete="CASCADE"), nullable=True
    )
    delegate_team_id: Mapped[int | None] = mapped_column(
        ForeignKey("team.id", ondelete="CASCADE"), nullable=True
    )
    #: ``read`` < ``write`` < ``admin``.
    role: Mapped[str] = mapped_column(String(16))


class AppSpecificToken(Base):
    """An application-specific password (Quay's ``$app`` token) for CLI logins.

    The token's first characters (``token_prefix``) find the row; only a hash of the
    whole token is stored.
    """

    __tablename__ = "app_specific_token"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(255))
    token_prefix: Mapped[str] = mapped_column(String(32), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_accessed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                              nullable=True)


class RepositoryStar(Base):
    """A user's star on a repository."""

    __tablename__ = "repository_star"
    __table_args__ = (Index("ix_repository_star_repository_id", "repository_id"),)

    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"),
                                         primary_key=True)
    repository_id: Mapped[int] = mapped_column(
        ForeignKey("repository.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ManifestLabel(Base):
    """A key/value label on a manifest: from the image config (``manifest``), set through
    the API (``api``) or by Portside itself (``internal``)."""

    __tablename__ = "manifest_label"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    manifest_id: Mapped[int] = mapped_column(
        ForeignKey("manifest.id", ondelete="CASCADE"), index=True
    )
    key: Mapped[str] = mapped_column(String(255))
    value: Mapped[str] = mapped_column(Text)
    #: ``text/plain`` or ``application/json``.
    media_type: Mapped[str] = mapped_column(String(64), default="text/plain")
    source_type: Mapped[str] = mapped_column(String(16), default="api")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class OAuthApplication(Base):
    """An organization's OAuth application, through which API access tokens are issued."""

    __tablename__ = "oauth_application"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace_id: Mapped[int] = mapped_column(
        ForeignKey("namespace.id", ondelete="CASCADE"), index=True
    )
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    #: Encrypted with the database secret key (the API shows it to org admins).
    client_secret_encrypted: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    application_uri: Mapped[str] = mapped_column(String(1024), default="")
    redirect_uri: Mapped[str] = mapped_column(String(1024), default="")
    avatar_email: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class QueueItem(Base):
    """A unit of background work. Workers claim an item by setting a lease
    (``processing_expires``); a failed item is retried after a backoff until
    ``retries_remaining`` runs out, then kept with state ``dead`` for operators."""

    __tablename__ = "queue_item"
    __table_args__ = (
        Index("ix_queue_item_queue_name_state_available_after",
              "queue_name", "state", "available_after"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True)
    queue_name: Mapped[str] = mapped_column(String(64))
    body: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: ``queued`` or ``dead``; finished items are deleted.
    state: Mapped[str] = mapped_column(String(16), default="queued")
    available_after: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    processing_expires: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                                nullable=True)
    retries_remaining: Mapped[int] = mapped_column(Integer, default=5)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LogExport(Base):
    """A requested export of audit log entries to a JSON file (Quay's ``exportlogs``)."""

    __tablename__ = "log_export"

    #: The ``export_id`` the API returns.
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    namespace_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    repository_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    requested_by_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    start_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    end_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    callback_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    callback_email: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: ``queued``, ``running``, ``done`` or ``failed``.
    status: Mapped[str] = mapped_column(String(16), default="queued")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: Where the finished file is kept (a storage path).
    storage_path: Mapped[str | None] = mapped_column(String(255), nullable=True)
    entries: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                          nullable=True)


class NamespaceQuota(Base):
    """A namespace's storage quota: a byte limit and thresholds (:class:`QuotaLimit`).

    Usage is never stored: it is computed from the unique blobs the namespace's
    manifests reference, so it cannot drift.
    """

    __tablename__ = "namespace_quota"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace_id: Mapped[int] = mapped_column(
        ForeignKey("namespace.id", ondelete="CASCADE"), unique=True
    )
    limit_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class QuotaLimit(Base):
    """A threshold of a quota: ``Warning`` (notify) or ``Reject`` (refuse pushes), as a
    percentage of the quota's byte limit."""

    __tablename__ = "quota_limit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    quota_id: Mapped[int] = mapped_column(
        ForeignKey("namespace_quota.id", ondelete="CASCADE"), index=True
    )
    #: ``Warning`` or ``Reject`` (Quay's limit types).
    kind: Mapped[str] = mapped_column(String(16))
    threshold_percent: Mapped[int] = mapped_column(Integer)


class AutoPrunePolicy(Base):
    """An auto-prune policy of a namespace, or of one repository when ``repository_id``
    is set: keep the newest N tags (``number_of_tags``) or remove tags older than a
    duration (``creation_date``), optionally only tags matching (or not matching) a
    pattern."""

    __tablename__ = "autoprune_policy"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    namespace_id: Mapped[int] = mapped_column(
        ForeignKey("namespace.id", ondelete="CASCADE"), index=True
    )
    repository_id: Mapped[int | None] = mapped_column(
        ForeignKey("repository.id", ondelete="CASCADE"), nullable=True, index=True
    )
    #: ``number_of_tags`` or ``creation_date``.
    method: Mapped[str] = mapped_column(String(32))
    #: A tag count, or a duration such as ``2w``.
    value: Mapped[str] = mapped_column(String(64))
    #: A regular expression on tag names; ``None`` applies to every tag.
    tag_pattern: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: Apply to tags that match the pattern (``True``) or to those that don't.
    tag_pattern_matches: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ImmutabilityPolicy(Base):
    """Makes tags immutable by name pattern, in a namespace or one repository."""

    __tablename__ = "immutability_policy"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    namespace_id: Mapped[int] = mapped_column(
        ForeignKey("namespace.id", ondelete="CASCADE"), index=True
    )
    repository_id: Mapped[int | None] = mapped_column(
        ForeignKey("repository.id", ondelete="CASCADE"), nullable=True, index=True
    )
    #: A regular expression on tag names.
    tag_pattern: Mapped[str] = mapped_column(String(255))
    #: Tags that match the pattern are immutable (``True``), or those that don't.
    tag_pattern_matches: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class GcRun(Base):
    """What one garbage-collection pass did (or, for a dry run, would do)."""

    __tablename__ = "gc_run"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                         nullable=True)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    tags_expired: Mapped[int] = mapped_column(Integer, default=0)
    manifests_deleted: Mapped[int] = mapped_column(Integer, default=0)
    blobs_deleted: Mapped[int] = mapped_column(Integer, default=0)
    bytes_reclaimed: Mapped[int] = mapped_column(BigInteger, default=0)
    uploads_deleted: Mapped[int] = mapped_column(Integer, default=0)
    repositories_purged: Mapped[int] = mapped_column(Integer, default=0)
    namespaces_purged: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class RepoMirrorConfig(Base):
    """How a repository in state ``MIRROR`` follows an upstream repository (Quay's
    ``RepoMirrorConfig``). Scheduling lives here: a worker claims a due mirror by setting
    ``sync_status`` to ``SYNCING`` and a lease (``sync_expiration_date``) in one update,
    so any number of workers share the mirrors and one repository is never synced twice
    at once."""

    __tablename__ = "repo_mirror_config"
    __table_args__ = (Index("ix_repo_mirror_config_due", "is_enabled", "sync_start_date"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository_id: Mapped[int] = mapped_column(
        ForeignKey("repository.id", ondelete="CASCADE"), unique=True
    )
    is_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    #: ``host[:port]/path/name`` of the upstream repository (no tag, no scheme).
    external_reference: Mapped[str] = mapped_column(String(2048))
    #: Upstream credentials, encrypted with the database secret key; never returned.
    username_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    password_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: ``verify_tls``, ``unsigned_images``, ``proxy`` (``http_proxy``, ``https_proxy``,
    #: ``no_proxy``): Quay's ``external_registry_config``.
    external_registry_config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: Quay's ``root_rule``: ``{"rule_kind": "tag_glob_csv", "rule_value": [...]}``.
    root_rule: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: Architectures to keep from multi-arch indexes (empty: all; indexes copied whole).
    architecture_filter: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: The robot account the mirror acts as (audit log, the only pusher allowed).
    robot_id: Mapped[int | None] = mapped_column(
        ForeignKey("user.id", ondelete="SET NULL"), nullable=True
    )
    sync_interval: Mapped[int] = mapped_column(Integer, default=86400)
    #: The next sync is due at this time.
    sync_start_date: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                             nullable=True)
    #: While ``SYNCING``: when the claim lapses (a crashed worker's mirror is re-claimed).
    sync_expiration_date: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                                  nullable=True)
    #: ``NEVER_RUN``, ``SYNCING``, ``SUCCESS``, ``FAIL``, ``SYNC_NOW`` or ``CANCEL``.
    sync_status: Mapped[str] = mapped_column(String(16), default="NEVER_RUN")
    sync_retries_remaining: Mapped[int] = mapped_column(Integer, default=3)
    #: Changes with each claim: a worker whose claim was taken over stops writing.
    sync_transaction_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    #: Seconds one sync may take before it is abandoned.
    sync_timeout_s: Mapped[int] = mapped_column(Integer, default=3600)
    last_sync_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                          nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ProxyCacheConfig(Base):
    """An organization that is a pull-through cache of an upstream registry."""

    __tablename__ = "proxy_cache_config"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace_id: Mapped[int] = mapped_column(
        ForeignKey("namespace.id", ondelete="CASCADE"), unique=True
    )
    #: ``host[:port]`` with an optional path prefix (e.g. ``quay.io`` or
    #: ``registry.local:5000/library``).
    upstream_registry: Mapped[str] = mapped_column(String(2048))
    username_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    password_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: Cached tags expire this long after they were last fetched from upstream.
    expiration_s: Mapped[int] = mapped_column(Integer, default=86400)
    #: Plain HTTP / unverified TLS to the upstream.
    insecure: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RepositoryNotification(Base):
    """A repository's notification: an event, a method and their settings."""

    __tablename__ = "repository_notification"
    __table_args__ = (Index("ix_repository_notification_repository_event",
                            "repository_id", "event"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: The id the API shows (Quay's ``uuid``).
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    repository_id: Mapped[int] = mapped_column(
        ForeignKey("repository.id", ondelete="CASCADE")
    )
    #: ``repo_push``, ``repo_mirror_sync_started``, ... (Quay's event names).
    event: Mapped[str] = mapped_column(String(64))
    #: ``webhook``, ``slack``, ``email`` or ``quay_notification``.
    method: Mapped[str] = mapped_column(String(64))
    title: Mapped[str | None] = mapped_column(String(255), nullable=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    event_config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: Failed deliveries in a row; at the configured limit the notification is disabled.
    number_of_failures: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class UserNotification(Base):
    """An in-app notification shown to a user (``/api/v1/user/notifications``)."""

    __tablename__ = "user_notification"
    __table_args__ = (Index("ix_user_notification_user_id_created_at",
                            "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    #: Quay's notification kind (e.g. ``repo_push``).
    kind: Mapped[str] = mapped_column(String(64))
    metadata_json: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    dismissed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
