"""Durability: a running job's heartbeat (when its worker last said it was alive, and which
process it is), read by the reaper to take back the jobs of dead workers; and ``leases``, the
named leases (the reaper's) that let one process at a time do a job across workers.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("heartbeat_owner", sa.String(200), nullable=True))
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("leases")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("heartbeat_owner")
        batch.drop_column("heartbeat_at")
