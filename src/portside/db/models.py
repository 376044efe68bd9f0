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
