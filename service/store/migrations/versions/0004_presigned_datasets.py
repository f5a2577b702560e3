"""Presigned uploads of evaluation sets: each pending upload says what it will become
(``kind``: ``model`` or ``dataset``) and, once completed, the dataset it became.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pending_uploads") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False,
                                   server_default="model"))
        batch.add_column(sa.Column("dataset_id", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pending_uploads") as batch:
        batch.drop_column("dataset_id")
        batch.drop_column("kind")
