"""environment_broker_platforms, brokered_environments, environment_bindings: the Environment Broker

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "environment_broker_platforms",
        sa.Column("name", sa.String(length=63), primary_key=True),
        sa.Column("password_hash", sa.String(length=64), nullable=False),
        sa.Column("region", sa.String(length=63), nullable=True),
        _when("created_at"),
    )
    op.create_table(
        "brokered_environments",
        sa.Column(
            "environment_id",
            sa.String(length=36),
            sa.ForeignKey("environments.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("platform", sa.String(length=63), nullable=False),
        sa.Column("service_id", sa.String(length=255), nullable=False),
        sa.Column("plan_id", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("context", sa.JSON(), nullable=False),
        _when("created_at"),
        _when("expired_at", nullable=True),
    )
    op.create_index("ix_brokered_environments_platform", "brokered_environments", ["platform"])
    op.create_table(
        "environment_bindings",
        sa.Column(
            "environment_id",
            sa.String(length=36),
            sa.ForeignKey("brokered_environments.environment_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("binding_id", sa.String(length=255), primary_key=True),
        sa.Column("service_account", sa.String(length=63), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        _when("expires_at"),
        _when("created_at"),
    )


def downgrade() -> None:
    op.drop_table("environment_bindings")
    op.drop_index("ix_brokered_environments_platform", table_name="brokered_environments")
    op.drop_table("brokered_environments")
    op.drop_table("environment_broker_platforms")
