"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-21 09:43:20.962084
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blob",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=200), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("locations", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blob")),
        sa.UniqueConstraint("digest", name=op.f("uq_blob_digest")),
    )
    op.create_table(
        "namespace",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "name",
            sa.String(length=255).with_variant(sa.String(length=255, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_by_user_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_namespace")),
        sa.UniqueConstraint("name", name=op.f("uq_namespace_name")),
    )
    op.create_table(
        "signing_key",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("private_key_pem", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_signing_key")),
    )
    op.create_table(
        "repository",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("namespace_id", sa.Integer(), nullable=False),
        sa.Column(
            "name",
            sa.String(length=255).with_variant(sa.String(length=255, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["namespace_id"],
            ["namespace.id"],
            name=op.f("fk_repository_namespace_id_namespace"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_repository")),
        sa.UniqueConstraint("namespace_id", "name", name=op.f("uq_repository_namespace_id_name")),
    )
    op.create_table(
        "user",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("namespace_id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=255), nullable=True),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("superuser", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["namespace_id"],
            ["namespace.id"],
            name=op.f("fk_user_namespace_id_namespace"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user")),
        sa.UniqueConstraint("email", name=op.f("uq_user_email")),
        sa.UniqueConstraint("namespace_id", name=op.f("uq_user_namespace_id")),
        sa.UniqueConstraint("username", name=op.f("uq_user_username")),
    )
    op.create_table(
        "access_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.String(length=512), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_access_token_user_id_user"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_token")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_access_token_token_hash")),
    )
    with op.batch_alter_table("access_token", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_access_token_user_id"), ["user_id"], unique=False)

    op.create_table(
        "blob_upload",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("repository_id", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256_so_far", sa.String(length=64), nullable=True),
        sa.Column("location", sa.String(length=64), nullable=False),
        sa.Column("storage_state", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["repository.id"],
            name=op.f("fk_blob_upload_repository_id_repository"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blob_upload")),
    )
    op.create_table(
        "manifest",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repository_id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=200), nullable=False),
        sa.Column("media_type", sa.String(length=255), nullable=False),
        sa.Column("artifact_type", sa.String(length=255), nullable=True),
        sa.Column("subject_digest", sa.String(length=200), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["repository.id"],
            name=op.f("fk_manifest_repository_id_repository"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_manifest")),
        sa.UniqueConstraint(
            "repository_id", "digest", name=op.f("uq_manifest_repository_id_digest")
        ),
    )
    with op.batch_alter_table("manifest", schema=None) as batch_op:
        batch_op.create_index(
            "ix_manifest_repository_id_subject_digest",
            ["repository_id", "subject_digest"],
            unique=False,
        )

    op.create_table(
        "repository_blob",
        sa.Column("repository_id", sa.Integer(), nullable=False),
        sa.Column("blob_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["blob_id"], ["blob.id"], name=op.f("fk_repository_blob_blob_id_blob")
        ),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["repository.id"],
            name=op.f("fk_repository_blob_repository_id_repository"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("repository_id", "blob_id", name=op.f("pk_repository_blob")),
    )
    with op.batch_alter_table("repository_blob", schema=None) as batch_op:
        batch_op.create_index("ix_repository_blob_blob_id", ["blob_id"], unique=False)

    op.create_table(
        "manifest_blob",
        sa.Column("manifest_id", sa.Integer(), nullable=False),
        sa.Column("blob_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["blob_id"], ["blob.id"], name=op.f("fk_manifest_blob_blob_id_blob")
        ),
        sa.ForeignKeyConstraint(
            ["manifest_id"],
            ["manifest.id"],
            name=op.f("fk_manifest_blob_manifest_id_manifest"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("manifest_id", "blob_id", name=op.f("pk_manifest_blob")),
    )
    with op.batch_alter_table("manifest_blob", schema=None) as batch_op:
        batch_op.create_index("ix_manifest_blob_blob_id", ["blob_id"], unique=False)

    op.create_table(
        "manifest_child",
        sa.Column("manifest_id", sa.Integer(), nullable=False),
        sa.Column("child_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["child_id"], ["manifest.id"], name=op.f("fk_manifest_child_child_id_manifest")
        ),
        sa.ForeignKeyConstraint(
            ["manifest_id"],
            ["manifest.id"],
            name=op.f("fk_manifest_child_manifest_id_manifest"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("manifest_id", "child_id", name=op.f("pk_manifest_child")),
    )
    with op.batch_alter_table("manifest_child", schema=None) as batch_op:
        batch_op.create_index("ix_manifest_child_child_id", ["child_id"], unique=False)

    op.create_table(
        "tag",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repository_id", sa.Integer(), nullable=False),
        sa.Column(
            "name",
            sa.String(length=128).with_variant(sa.String(length=128, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("manifest_id", sa.Integer(), nullable=False),
        sa.Column("lifetime_start_ms", sa.BigInteger(), nullable=False),
        sa.Column("lifetime_end_ms", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["manifest_id"], ["manifest.id"], name=op.f("fk_tag_manifest_id_manifest")
        ),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["repository.id"],
            name=op.f("fk_tag_repository_id_repository"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tag")),
    )
    with op.batch_alter_table("tag", schema=None) as batch_op:
        batch_op.create_index("ix_tag_manifest_id", ["manifest_id"], unique=False)
        batch_op.create_index("ix_tag_repository_id_name", ["repository_id", "name"], unique=False)
        batch_op.create_index(
            "uq_tag_active_name",
            ["repository_id", "name"],
            unique=True,
            sqlite_where=sa.text("lifetime_end_ms IS NULL"),
            postgresql_where=sa.text("lifetime_end_ms IS NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("tag", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_tag_active_name",
            sqlite_where=sa.text("lifetime_end_ms IS NULL"),
            postgresql_where=sa.text("lifetime_end_ms IS NULL"),
        )
        batch_op.drop_index("ix_tag_repository_id_name")
        batch_op.drop_index("ix_tag_manifest_id")

    op.drop_table("tag")
    with op.batch_alter_table("manifest_child", schema=None) as batch_op:
        batch_op.drop_index("ix_manifest_child_child_id")

    op.drop_table("manifest_child")
    with op.batch_alter_table("manifest_blob", schema=None) as batch_op:
        batch_op.drop_index("ix_manifest_blob_blob_id")

    op.drop_table("manifest_blob")
    with op.batch_alter_table("repository_blob", schema=None) as batch_op:
        batch_op.drop_index("ix_repository_blob_blob_id")

    op.drop_table("repository_blob")
    with op.batch_alter_table("manifest", schema=None) as batch_op:
        batch_op.drop_index("ix_manifest_repository_id_subject_digest")

    op.drop_table("manifest")
    op.drop_table("blob_upload")
    with op.batch_alter_table("access_token", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_access_token_user_id"))

    op.drop_table("access_token")
    op.drop_table("user")
    op.drop_table("repository")
    op.drop_table("signing_key")
    op.drop_table("namespace")
    op.drop_table("blob")
