"""prototypes, app tokens, stars, labels, oauth applications, work queue, log exports

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21 11:17:17.201250
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "log_export",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("namespace_id", sa.Integer(), nullable=True),
        sa.Column("repository_id", sa.Integer(), nullable=True),
        sa.Column("requested_by_id", sa.Integer(), nullable=True),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("callback_url", sa.Text(), nullable=True),
        sa.Column("callback_email", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("storage_path", sa.String(length=255), nullable=True),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_log_export")),
    )
    op.create_table(
        "queue_item",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("queue_name", sa.String(length=64), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("available_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processing_expires", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retries_remaining", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_item")),
    )
    with op.batch_alter_table("queue_item", schema=None) as batch_op:
        batch_op.create_index(
            "ix_queue_item_queue_name_state_available_after",
            ["queue_name", "state", "available_after"],
            unique=False,
        )

    op.create_table(
        "oauth_application",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("namespace_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("client_secret_encrypted", sa.Text(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("application_uri", sa.String(length=1024), nullable=False),
        sa.Column("redirect_uri", sa.String(length=1024), nullable=False),
        sa.Column("avatar_email", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["namespace_id"],
            ["namespace.id"],
            name=op.f("fk_oauth_application_namespace_id_namespace"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_application")),
        sa.UniqueConstraint("client_id", name=op.f("uq_oauth_application_client_id")),
    )
    with op.batch_alter_table("oauth_application", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_oauth_application_namespace_id"), ["namespace_id"], unique=False
        )

    op.create_table(
        "app_specific_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("token_prefix", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_accessed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user.id"],
            name=op.f("fk_app_specific_token_user_id_user"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_app_specific_token")),
        sa.UniqueConstraint("token_prefix", name=op.f("uq_app_specific_token_token_prefix")),
        sa.UniqueConstraint("uuid", name=op.f("uq_app_specific_token_uuid")),
    )
    with op.batch_alter_table("app_specific_token", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_app_specific_token_user_id"), ["user_id"], unique=False
        )

    op.create_table(
        "permission_prototype",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("namespace_id", sa.Integer(), nullable=False),
        sa.Column("activating_user_id", sa.Integer(), nullable=True),
        sa.Column("delegate_user_id", sa.Integer(), nullable=True),
        sa.Column("delegate_team_id", sa.Integer(), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["activating_user_id"],
            ["user.id"],
            name=op.f("fk_permission_prototype_activating_user_id_user"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["delegate_team_id"],
            ["team.id"],
            name=op.f("fk_permission_prototype_delegate_team_id_team"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["delegate_user_id"],
            ["user.id"],
            name=op.f("fk_permission_prototype_delegate_user_id_user"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["namespace_id"],
            ["namespace.id"],
            name=op.f("fk_permission_prototype_namespace_id_namespace"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_permission_prototype")),
        sa.UniqueConstraint("uuid", name=op.f("uq_permission_prototype_uuid")),
    )
    with op.batch_alter_table("permission_prototype", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_permission_prototype_namespace_id"), ["namespace_id"], unique=False
        )

    op.create_table(
        "repository_star",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("repository_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["repository.id"],
            name=op.f("fk_repository_star_repository_id_repository"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user.id"],
            name=op.f("fk_repository_star_user_id_user"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "repository_id", name=op.f("pk_repository_star")),
    )
    with op.batch_alter_table("repository_star", schema=None) as batch_op:
        batch_op.create_index("ix_repository_star_repository_id", ["repository_id"], unique=False)

    op.create_table(
        "manifest_label",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("manifest_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("media_type", sa.String(length=64), nullable=False),
        sa.Column("source_type", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["manifest_id"],
            ["manifest.id"],
            name=op.f("fk_manifest_label_manifest_id_manifest"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_manifest_label")),
        sa.UniqueConstraint("uuid", name=op.f("uq_manifest_label_uuid")),
    )
    with op.batch_alter_table("manifest_label", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_manifest_label_manifest_id"), ["manifest_id"], unique=False
        )

    with op.batch_alter_table("access_token", schema=None) as batch_op:
        batch_op.add_column(sa.Column("application_id", sa.Integer(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_access_token_application_id"), ["application_id"], unique=False
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_access_token_application_id_oauth_application"),
            "oauth_application",
            ["application_id"],
            ["id"],
            ondelete="CASCADE",
        )

    with op.batch_alter_table("namespace", schema=None) as batch_op:
        batch_op.add_column(sa.Column("email", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("tag_expiration_s", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("namespace", schema=None) as batch_op:
        batch_op.drop_column("tag_expiration_s")
        batch_op.drop_column("email")

    with op.batch_alter_table("access_token", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_access_token_application_id_oauth_application"), type_="foreignkey"
        )
        batch_op.drop_index(batch_op.f("ix_access_token_application_id"))
        batch_op.drop_column("application_id")

    with op.batch_alter_table("manifest_label", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_manifest_label_manifest_id"))

    op.drop_table("manifest_label")
    with op.batch_alter_table("repository_star", schema=None) as batch_op:
        batch_op.drop_index("ix_repository_star_repository_id")

    op.drop_table("repository_star")
    with op.batch_alter_table("permission_prototype", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_permission_prototype_namespace_id"))

    op.drop_table("permission_prototype")
    with op.batch_alter_table("app_specific_token", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_app_specific_token_user_id"))

    op.drop_table("app_specific_token")
    with op.batch_alter_table("oauth_application", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oauth_application_namespace_id"))

    op.drop_table("oauth_application")
    with op.batch_alter_table("queue_item", schema=None) as batch_op:
        batch_op.drop_index("ix_queue_item_queue_name_state_available_after")

    op.drop_table("queue_item")
    op.drop_table("log_export")
