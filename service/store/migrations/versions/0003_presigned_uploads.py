"""Presigned uploads: one row per upload a caller PUTs straight to S3, until it is completed
into a model or its time to complete runs out.

Revision ID: 0003
Revises: 0002b
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002b"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pending_uploads",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("team_id", sa.String(64), sa.ForeignKey("teams.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("filename", sa.String(300), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("storage_key", sa.String(300), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("complete_by", sa.DateTime(), nullable=False),
        sa.Column("model_id", sa.String(64), nullable=True),
        sa.Column("refused", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_pending_uploads_complete_by", "pending_uploads", ["complete_by"])


def downgrade() -> None:
    op.drop_index("ix_pending_uploads_complete_by", table_name="pending_uploads")
    op.drop_table("pending_uploads")
