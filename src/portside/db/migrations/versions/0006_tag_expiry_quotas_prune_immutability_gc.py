"""tag expiry and immutability, deletion marks, quotas, auto-prune, immutability policies, gc runs

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21 11:49:09.831567
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gc_run",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("tags_expired", sa.Integer(), nullable=False),
        sa.Column("manifests_deleted", sa.Integer(), nullable=False),
        sa.Column("blobs_deleted", sa.Integer(), nullable=False),
        sa.Column("bytes_reclaimed", sa.BigInteger(), nullable=False),
        sa.Column("uploads_deleted", sa.Integer(), nullable=False),
        sa.Column("repositories_purged", sa.Integer(), nullable=False),
        sa.Column("namespaces_purged", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gc_run")),
    )
    op.create_table(
        "namespace_quota",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("namespace_id", sa.Integer(), nullable=False),
        sa.Column("limit_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["namespace_id"],
            ["namespace.id"],
            name=op.f("fk_namespace_quota_namespace_id_namespace"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_namespace_quota")),
        sa.UniqueConstraint("namespace_id", name=op.f("uq_namespace_quota_namespace_id")),
    )
    op.create_table(
        "autoprune_policy",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("namespace_id", sa.Integer(), nullable=False),
        sa.Column("repository_id", sa.Integer(), nullable=True),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("value", sa.String(length=64), nullable=False),
        sa.Column("tag_pattern", sa.String(length=255), nullable=True),
        sa.Column("tag_pattern_matches", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["namespace_id"],
            ["namespace.id"],
            name=op.f("fk_autoprune_policy_namespace_id_namespace"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["repository.id"],
            name=op.f("fk_autoprune_policy_repository_id_repository"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_autoprune_policy")),
        sa.UniqueConstraint("uuid", name=op.f("uq_autoprune_policy_uuid")),
    )
    with op.batch_alter_table("autoprune_policy", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_autoprune_policy_namespace_id"), ["namespace_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_autoprune_policy_repository_id"), ["repository_id"], unique=False
        )

    op.create_table(
        "immutability_policy",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("namespace_id", sa.Integer(), nullable=False),
        sa.Column("repository_id", sa.Integer(), nullable=True),
        sa.Column("tag_pattern", sa.String(length=255), nullable=False),
        sa.Column("tag_pattern_matches", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["namespace_id"],
            ["namespace.id"],
            name=op.f("fk_immutability_policy_namespace_id_namespace"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["repository.id"],
            name=op.f("fk_immutability_policy_repository_id_repository"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_immutability_policy")),
        sa.UniqueConstraint("uuid", name=op.f("uq_immutability_policy_uuid")),
    )
    with op.batch_alter_table("immutability_policy", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_immutability_policy_namespace_id"), ["namespace_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_immutability_policy_repository_id"), ["repository_id"], unique=False
        )

    op.create_table(
        "quota_limit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("quota_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("threshold_percent", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["quota_id"],
            ["namespace_quota.id"],
            name=op.f("fk_quota_limit_quota_id_namespace_quota"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quota_limit")),
    )
    with op.batch_alter_table("quota_limit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_quota_limit_quota_id"), ["quota_id"], unique=False)

    with op.batch_alter_table("namespace", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("repository", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("tag", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expiration_ms", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column("immutable", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(
            sa.Column("reversion", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("tag", schema=None) as batch_op:
        batch_op.drop_column("reversion")
        batch_op.drop_column("immutable")
        batch_op.drop_column("expiration_ms")

    with op.batch_alter_table("repository", schema=None) as batch_op:
        batch_op.drop_column("deleted_at")

    with op.batch_alter_table("namespace", schema=None) as batch_op:
        batch_op.drop_column("deleted_at")

    with op.batch_alter_table("quota_limit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quota_limit_quota_id"))

    op.drop_table("quota_limit")
    with op.batch_alter_table("immutability_policy", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_immutability_policy_repository_id"))
        batch_op.drop_index(batch_op.f("ix_immutability_policy_namespace_id"))

    op.drop_table("immutability_policy")
    with op.batch_alter_table("autoprune_policy", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_autoprune_policy_repository_id"))
        batch_op.drop_index(batch_op.f("ix_autoprune_policy_namespace_id"))

    op.drop_table("autoprune_policy")
    op.drop_table("namespace_quota")
    op.drop_table("gc_run")
