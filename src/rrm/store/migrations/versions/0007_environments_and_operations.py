"""environments, operations, operation_stages: durable provisioning operations

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "environments",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("plan", sa.String(length=63), nullable=False),
        sa.Column("region", sa.String(length=63), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=True),
        sa.Column("global_account", sa.String(length=255), nullable=True),
        sa.Column("subaccount", sa.String(length=255), nullable=True),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("runtime_id", sa.String(length=36), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        _when("created_at", False),
        _when("updated_at", False),
        _when("archived_at"),
    )
    for column in ("name", "global_account", "state"):
        op.create_index(f"ix_environments_{column}", "environments", [column])
    op.create_table(
        "operations",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column(
            "environment_id",
            sa.String(length=36),
            sa.ForeignKey("environments.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("left_behind", sa.JSON(), nullable=False),
        _when("created_at", False),
        _when("updated_at", False),
        _when("deadline_at", False),
        _when("next_run_at"),
        _when("finished_at"),
    )
    op.create_index("ix_operations_environment_id", "operations", ["environment_id"])
    op.create_index("ix_operations_state", "operations", ["state"])
    op.create_table(
        "operation_stages",
        sa.Column(
            "operation_id",
            sa.String(length=36),
            sa.ForeignKey("operations.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("position", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("best_effort", sa.Boolean(), nullable=False),
        sa.Column("deadline_seconds", sa.Float(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _when("started_at"),
        _when("deadline_at"),
        _when("next_attempt_at"),
        _when("finished_at"),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("operation_stages")
    op.drop_index("ix_operations_state", table_name="operations")
    op.drop_index("ix_operations_environment_id", table_name="operations")
    op.drop_table("operations")
    for column in ("name", "global_account", "state"):
        op.drop_index(f"ix_environments_{column}", table_name="environments")
    op.drop_table("environments")
