"""Objects read by the historical Stripe sync, and their delivery to the customer workflows.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from stripe_lifecycle.storage.models import BigIntPK, JSONType, UTCDateTime

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "stripe_sync_objects",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("account", sa.String(255), nullable=False),
        sa.Column("object_id", sa.String(255), nullable=False),
        sa.Column("resource", sa.String(32), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("event", JSONType, nullable=True),
        sa.Column("delivered", sa.Boolean(), nullable=False),
        sa.Column("synced_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("account", "object_id", name="uq_stripe_sync_objects_object"),
    )
    op.create_index(
        "ix_stripe_sync_objects_undelivered",
        "stripe_sync_objects",
        ["account", "delivered", "customer_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_stripe_sync_objects_undelivered", "stripe_sync_objects")
    op.drop_table("stripe_sync_objects")
