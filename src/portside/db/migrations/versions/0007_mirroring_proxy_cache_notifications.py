"""mirroring, proxy cache, notifications

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-21 14:24:45.686899
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "proxy_cache_config",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("namespace_id", sa.Integer(), nullable=False),
        sa.Column("upstream_registry", sa.String(length=2048), nullable=False),
        sa.Column("username_encrypted", sa.Text(), nullable=True),
        sa.Column("password_encrypted", sa.Text(), nullable=True),
        sa.Column("expiration_s", sa.Integer(), nullable=False),
        sa.Column("insecure", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["namespace_id"],
            ["namespace.id"],
            name=op.f("fk_proxy_cache_config_namespace_id_namespace"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_proxy_cache_config")),
        sa.UniqueConstraint("namespace_id", name=op.f("uq_proxy_cache_config_namespace_id")),
    )
    op.create_table(
        "repo_mirror_config",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repository_id", sa.Integer(), nullable=False),
        sa.Column("is_enabled", sa.Boolean(), nullable=False),
        sa.Column("external_reference", sa.String(length=2048), nullable=False),
        sa.Column("username_encrypted", sa.Text(), nullable=True),
        sa.Column("password_encrypted", sa.Text(), nullable=True),
        sa.Column("external_registry_config", sa.JSON(), nullable=False),
        sa.Column("root_rule", sa.JSON(), nullable=False),
        sa.Column("architecture_filter", sa.JSON(), nullable=False),
        sa.Column("robot_id", sa.Integer(), nullable=True),
        sa.Column("sync_interval", sa.Integer(), nullable=False),
        sa.Column("sync_start_date", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sync_expiration_date", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sync_status", sa.String(length=16), nullable=False),
        sa.Column("sync_retries_remaining", sa.Integer(), nullable=False),
        sa.Column("sync_transaction_id", sa.String(length=36), nullable=True),
        sa.Column("sync_timeout_s", sa.Integer(), nullable=False),
        sa.Column("last_sync_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["repository.id"],
            name=op.f("fk_repo_mirror_config_repository_id_repository"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["robot_id"],
            ["user.id"],
            name=op.f("fk_repo_mirror_config_robot_id_user"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_repo_mirror_config")),
        sa.UniqueConstraint("repository_id", name=op.f("uq_repo_mirror_config_repository_id")),
    )
    with op.batch_alter_table("repo_mirror_config", schema=None) as batch_op:
        batch_op.create_index(
            "ix_repo_mirror_config_due", ["is_enabled", "sync_start_date"], unique=False
        )

    op.create_table(
        "repository_notification",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("repository_id", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=255), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("event_config", sa.JSON(), nullable=False),
        sa.Column("number_of_failures", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["repository.id"],
            name=op.f("fk_repository_notification_repository_id_repository"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_repository_notification")),
        sa.UniqueConstraint("uuid", name=op.f("uq_repository_notification_uuid")),
    )
    with op.batch_alter_table("repository_notification", schema=None) as batch_op:
        batch_op.create_index(
            "ix_repository_notification_repository_event", ["repository_id", "event"], unique=False
        )

    op.create_table(
        "user_notification",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("dismissed", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user.id"],
            name=op.f("fk_user_notification_user_id_user"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_notification")),
        sa.UniqueConstraint("uuid", name=op.f("uq_user_notification_uuid")),
    )
    with op.batch_alter_table("user_notification", schema=None) as batch_op:
        batch_op.create_index(
            "ix_user_notification_user_id_created_at", ["user_id", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("user_notification", schema=None) as batch_op:
        batch_op.drop_index("ix_user_notification_user_id_created_at")

    op.drop_table("user_notification")
    with op.batch_alter_table("repository_notification", schema=None) as batch_op:
        batch_op.drop_index("ix_repository_notification_repository_event")

    op.drop_table("repository_notification")
    with op.batch_alter_table("repo_mirror_config", schema=None) as batch_op:
        batch_op.drop_index("ix_repo_mirror_config_due")

    op.drop_table("repo_mirror_config")
    op.drop_table("proxy_cache_config")
