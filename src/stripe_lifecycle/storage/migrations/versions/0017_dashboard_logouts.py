"""Dashboard sign-outs, so a signed-out session cookie no longer opens the dashboard.

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from stripe_lifecycle.storage.models import BigIntPK, UTCDateTime

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "dashboard_logouts",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_dashboard_logouts_key_id", "dashboard_logouts", ["key_id"])


def downgrade() -> None:
    op.drop_index("ix_dashboard_logouts_key_id", "dashboard_logouts")
    op.drop_table("dashboard_logouts")
