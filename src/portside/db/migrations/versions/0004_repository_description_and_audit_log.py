"""repository description and audit log

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 10:34:06.192335
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "log_entry",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("namespace_id", sa.Integer(), nullable=True),
        sa.Column("performer_id", sa.Integer(), nullable=True),
        sa.Column("repository_id", sa.Integer(), nullable=True),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("metadata_json", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_log_entry")),
    )
    with op.batch_alter_table("log_entry", schema=None) as batch_op:
        batch_op.create_index("ix_log_entry_created_at", ["created_at"], unique=False)
        batch_op.create_index(
            "ix_log_entry_namespace_id_created_at", ["namespace_id", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_log_entry_performer_id_created_at", ["performer_id", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_log_entry_repository_id_created_at", ["repository_id", "created_at"], unique=False
        )

    with op.batch_alter_table("repository", schema=None) as batch_op:
        batch_op.add_column(sa.Column("description", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("repository", schema=None) as batch_op:
        batch_op.drop_column("description")

    with op.batch_alter_table("log_entry", schema=None) as batch_op:
        batch_op.drop_index("ix_log_entry_repository_id_created_at")
        batch_op.drop_index("ix_log_entry_performer_id_created_at")
        batch_op.drop_index("ix_log_entry_namespace_id_created_at")
        batch_op.drop_index("ix_log_entry_created_at")

    op.drop_table("log_entry")
