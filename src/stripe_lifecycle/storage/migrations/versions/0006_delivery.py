"""Delivery: the suppression list, mail preferences (unsubscribe), Postmark's webhook
events, and an index to find a message by Postmark's MessageID.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

from stripe_lifecycle.storage.models import BigIntPK, JSONType, UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index("ix_messages_provider_message_id", "messages", ["provider_message_id"])
    op.create_table(
        "suppressions",
        sa.Column("id", BigIntPK, nullable=False),
        sa.Column("email", sa.String(length=512), nullable=False),
        sa.Column("stream", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email", "stream"),
    )
    op.create_table(
        "mail_preferences",
        sa.Column("id", BigIntPK, nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("category", sa.String(length=16), nullable=False),
        sa.Column("subscribed", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("customer_id", "category"),
    )
    op.create_table(
        "message_events",
        sa.Column("id", BigIntPK, nullable=False),
        sa.Column("event_key", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=True),
        sa.Column("record_type", sa.String(length=32), nullable=False),
        sa.Column("email", sa.String(length=512), nullable=True),
        sa.Column("occurred_at", UTCDateTime(), nullable=True),
        sa.Column("payload", JSONType, nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_key"),
    )
    op.create_index("ix_message_events_message_id", "message_events", ["message_id"])


def downgrade() -> None:
    op.drop_index("ix_message_events_message_id", table_name="message_events")
    op.drop_table("message_events")
    op.drop_table("mail_preferences")
    op.drop_table("suppressions")
    op.drop_index("ix_messages_provider_message_id", table_name="messages")
