"""Revoked email links, per message or per customer.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from stripe_lifecycle.storage.models import BigIntPK, UTCDateTime

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "link_revocations",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=True),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_link_revocations_customer_id", "link_revocations", ["customer_id"])
    op.create_index("ix_link_revocations_message_id", "link_revocations", ["message_id"])


def downgrade() -> None:
    op.drop_index("ix_link_revocations_message_id", "link_revocations")
    op.drop_index("ix_link_revocations_customer_id", "link_revocations")
    op.drop_table("link_revocations")
