"""Conversion credits: each credited message's share of a conversion (attribution models).

Conversions recorded before this revision were credited whole to one message
(`conversions.message_id`); they are carried over as one full credit each, so reports
cover them too.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

from stripe_lifecycle.storage.models import BigIntPK

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "conversion_credits",
        sa.Column("id", BigIntPK, nullable=False),
        sa.Column("conversion_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("rule", sa.String(length=16), nullable=False),
        sa.Column("share_bp", sa.Integer(), nullable=False),
        sa.Column("mrr_delta_cents", sa.BigInteger(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["conversion_id"], ["conversions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("conversion_id", "message_id"),
    )
    op.create_index("ix_conversion_credits_conversion_id", "conversion_credits", ["conversion_id"])
    op.create_index("ix_conversion_credits_message_id", "conversion_credits", ["message_id"])
    op.execute(
        "INSERT INTO conversion_credits"
        " (conversion_id, message_id, rule, share_bp, mrr_delta_cents, amount_cents)"
        " SELECT id, message_id, COALESCE(attribution, 'last_send'), 10000,"
        " mrr_delta_cents, amount_cents"
        " FROM conversions WHERE message_id IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_index("ix_conversion_credits_message_id", table_name="conversion_credits")
    op.drop_index("ix_conversion_credits_conversion_id", table_name="conversion_credits")
    op.drop_table("conversion_credits")
