"""runtime_status.reported_by and an index on last_seen: the leader reads only what other processes wrote

The process that wrote a runtime's last report hands it to its own leader in memory; the leader asks the
database only for rows whose `last_seen` moved lately and whose last report came from another process.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runtime_status", sa.Column("reported_by", sa.String(length=32), nullable=True))
    op.create_index("ix_runtime_status_last_seen", "runtime_status", ["last_seen", "reported_by"])


def downgrade() -> None:
    op.drop_index("ix_runtime_status_last_seen", table_name="runtime_status")
    op.drop_column("runtime_status", "reported_by")
