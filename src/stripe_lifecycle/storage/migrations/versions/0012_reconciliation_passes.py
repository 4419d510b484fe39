"""Finished reconciliation passes (events read back from Stripe that webhooks lost).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from stripe_lifecycle.storage.models import BigIntPK, UTCDateTime

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "reconciliation_passes",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("finished_at", UTCDateTime(), nullable=False),
        sa.Column("lookback_seconds", sa.Integer(), nullable=False),
        sa.Column("events_seen", sa.Integer(), nullable=False),
        sa.Column("events_recovered", sa.Integer(), nullable=False),
    )
    op.create_index(
        "ix_reconciliation_passes_finished_at", "reconciliation_passes", ["finished_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_reconciliation_passes_finished_at", "reconciliation_passes")
    op.drop_table("reconciliation_passes")
