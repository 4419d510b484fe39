"""Conversions (revenue credited to messages) and the support audit trail.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from stripe_lifecycle.storage.models import BigIntPK, JSONType, UTCDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "conversions",
        sa.Column("id", BigIntPK, nullable=False),
        sa.Column("stripe_event_id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("lifecycle", sa.String(length=32), nullable=False),
        sa.Column("workflow_id", sa.String(length=255), nullable=False),
        sa.Column("automation", sa.String(length=255), nullable=False),
        sa.Column("invoice_id", sa.String(length=255), nullable=True),
        sa.Column("subscription_id", sa.String(length=255), nullable=True),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("mrr_delta_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=True),
        sa.Column("attribution", sa.String(length=16), nullable=True),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("stripe_event_id"),
    )
    op.create_index("ix_conversions_customer_id", "conversions", ["customer_id"])
    op.create_table(
        "support_actions",
        sa.Column("id", BigIntPK, nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("workflow_ids", JSONType, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_support_actions_customer_id", "support_actions", ["customer_id"])


def downgrade() -> None:
    op.drop_index("ix_support_actions_customer_id", table_name="support_actions")
    op.drop_table("support_actions")
    op.drop_index("ix_conversions_customer_id", table_name="conversions")
    op.drop_table("conversions")
