"""compass and system broker: applications, scenarios, label definitions, broker credentials and records

Revision ID: 0004
Revises: 0003
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "applications",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("uid", sa.String(length=36), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("scenarios", sa.JSON(), nullable=False),
        sa.Column("credentials", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
        sa.UniqueConstraint("uid"),
    )
    op.create_table(
        "label_definitions",
        sa.Column("key", sa.String(length=317), nullable=False),
        sa.Column("schema", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "scenarios",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "broker_bindings",
        sa.Column("runtime_id", sa.String(length=36), nullable=False),
        sa.Column("instance_id", sa.String(length=255), nullable=False),
        sa.Column("binding_id", sa.String(length=255), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["runtime_id"], ["runtimes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("runtime_id", "instance_id", "binding_id"),
    )
    op.create_table(
        "broker_credentials",
        sa.Column("runtime_id", sa.String(length=36), nullable=False),
        sa.Column("username", sa.String(length=63), nullable=False),
        sa.Column("password_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["runtime_id"], ["runtimes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("runtime_id"),
        sa.UniqueConstraint("username"),
    )
    op.create_table(
        "broker_instances",
        sa.Column("runtime_id", sa.String(length=36), nullable=False),
        sa.Column("instance_id", sa.String(length=255), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["runtime_id"], ["runtimes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("runtime_id", "instance_id"),
    )
    op.create_table(
        "runtime_scenarios",
        sa.Column("runtime_id", sa.String(length=36), nullable=False),
        sa.Column("scenario", sa.String(length=63), nullable=False),
        sa.ForeignKeyConstraint(["runtime_id"], ["runtimes.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["scenario"],
            ["scenarios.name"],
        ),
        sa.PrimaryKeyConstraint("runtime_id", "scenario"),
    )
    op.create_table(
        "scenario_assignments",
        sa.Column("scenario", sa.String(length=63), nullable=False),
        sa.Column("selector", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["scenario"],
            ["scenarios.name"],
        ),
        sa.PrimaryKeyConstraint("scenario"),
    )
    # The scenario every new application is in; it cannot be deleted.
    op.bulk_insert(
        sa.table(
            "scenarios", sa.column("name", sa.String()), sa.column("created_at", sa.DateTime(timezone=True))
        ),
        [{"name": "DEFAULT", "created_at": datetime.now(UTC)}],
    )


def downgrade() -> None:
    op.drop_table("scenario_assignments")
    op.drop_table("runtime_scenarios")
    op.drop_table("broker_instances")
    op.drop_table("broker_credentials")
    op.drop_table("broker_bindings")
    op.drop_table("scenarios")
    op.drop_table("label_definitions")
    op.drop_table("applications")
