"""Tracked links: each message's link destinations, and the clicks on them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from stripe_lifecycle.storage.models import BigIntPK, JSONType, UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("destinations", JSONType, nullable=False, server_default="{}"))
    with op.batch_alter_table("messages") as batch:
        batch.alter_column("destinations", server_default=None)
    op.create_table(
        "message_clicks",
        sa.Column("id", BigIntPK, nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("link", sa.String(length=64), nullable=False),
        sa.Column("clicked_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_message_clicks_message_id", "message_clicks", ["message_id"])


def downgrade() -> None:
    op.drop_index("ix_message_clicks_message_id", table_name="message_clicks")
    op.drop_table("message_clicks")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("destinations")
