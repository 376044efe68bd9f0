"""organizations teams robots permissions

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 10:13:53.479394
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "team",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("namespace_id", sa.Integer(), nullable=False),
        sa.Column(
            "name",
            sa.String(length=255).with_variant(sa.String(length=255, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["namespace_id"],
            ["namespace.id"],
            name=op.f("fk_team_namespace_id_namespace"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_team")),
        sa.UniqueConstraint("namespace_id", "name", name=op.f("uq_team_namespace_id_name")),
    )
    op.create_table(
        "repository_permission",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repository_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("team_id", sa.Integer(), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["repository.id"],
            name=op.f("fk_repository_permission_repository_id_repository"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["team.id"],
            name=op.f("fk_repository_permission_team_id_team"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user.id"],
            name=op.f("fk_repository_permission_user_id_user"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_repository_permission")),
        sa.UniqueConstraint(
            "repository_id", "team_id", name=op.f("uq_repository_permission_repository_id_team_id")
        ),
        sa.UniqueConstraint(
            "repository_id", "user_id", name=op.f("uq_repository_permission_repository_id_user_id")
        ),
    )
    with op.batch_alter_table("repository_permission", schema=None) as batch_op:
        batch_op.create_index("ix_repository_permission_team_id", ["team_id"], unique=False)
        batch_op.create_index("ix_repository_permission_user_id", ["user_id"], unique=False)

    op.create_table(
        "team_member",
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["team_id"], ["team.id"], name=op.f("fk_team_member_team_id_team"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_team_member_user_id_user"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("team_id", "user_id", name=op.f("pk_team_member")),
    )
    with op.batch_alter_table("team_member", schema=None) as batch_op:
        batch_op.create_index("ix_team_member_user_id", ["user_id"], unique=False)

    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.add_column(sa.Column("robot_owner_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("robot_token_encrypted", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("description", sa.Text(), nullable=True))
        batch_op.alter_column("namespace_id", existing_type=sa.INTEGER(), nullable=True)
        batch_op.create_index(
            batch_op.f("ix_user_robot_owner_id"), ["robot_owner_id"], unique=False
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_user_robot_owner_id_namespace"),
            "namespace",
            ["robot_owner_id"],
            ["id"],
            ondelete="CASCADE",
        )


def downgrade() -> None:
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_user_robot_owner_id_namespace"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_user_robot_owner_id"))
        batch_op.alter_column("namespace_id", existing_type=sa.INTEGER(), nullable=False)
        batch_op.drop_column("description")
        batch_op.drop_column("robot_token_encrypted")
        batch_op.drop_column("robot_owner_id")

    with op.batch_alter_table("team_member", schema=None) as batch_op:
        batch_op.drop_index("ix_team_member_user_id")

    op.drop_table("team_member")
    with op.batch_alter_table("repository_permission", schema=None) as batch_op:
        batch_op.drop_index("ix_repository_permission_user_id")
        batch_op.drop_index("ix_repository_permission_team_id")

    op.drop_table("repository_permission")
    op.drop_table("team")
