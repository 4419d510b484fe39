"""Cancellation feedback: why customers cancelled (the survey and the API).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from stripe_lifecycle.storage.models import BigIntPK, UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "cancellation_feedback",
        sa.Column("id", BigIntPK, nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("subscription_id", sa.String(length=255), nullable=True),
        sa.Column("message_id", sa.String(length=36), nullable=True),
        sa.Column("workflow_id", sa.String(length=255), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("comment", sa.String(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id"),
    )
    op.create_index(
        "ix_cancellation_feedback_customer_id", "cancellation_feedback", ["customer_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_cancellation_feedback_customer_id", table_name="cancellation_feedback")
    op.drop_table("cancellation_feedback")
