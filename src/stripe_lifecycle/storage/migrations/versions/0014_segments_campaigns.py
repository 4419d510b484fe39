"""Segments (usage, facts, members, history), and lifecycle instances with their holdout
group.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from stripe_lifecycle.storage.models import BigIntPK, JSONType, UTCDateTime

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "customer_usage",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("reported_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("customer_id", "metric", name="uq_customer_usage_metric"),
    )
    op.create_index("ix_customer_usage_customer_id", "customer_usage", ["customer_id"])
    op.create_table(
        "customer_segment_facts",
        sa.Column("customer_id", sa.String(255), primary_key=True),
        sa.Column("facts", JSONType, nullable=False),
        sa.Column("segments", JSONType, nullable=False),
        sa.Column("evaluated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "segment_members",
        sa.Column("segment", sa.String(128), primary_key=True),
        sa.Column("customer_id", sa.String(255), primary_key=True),
        sa.Column("entered_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_segment_members_customer_id", "segment_members", ["customer_id"])
    op.create_table(
        "segment_events",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("segment", sa.String(128), nullable=False),
        sa.Column("change", sa.String(8), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("reason", sa.String(2000), nullable=False),
        sa.Column("initial", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_segment_events_customer_id", "segment_events", ["customer_id"])
    op.create_index("ix_segment_events_segment_at", "segment_events", ["segment", "at"])
    op.create_table(
        "lifecycle_instances",
        sa.Column("workflow_id", sa.String(255), primary_key=True),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("lifecycle", sa.String(32), nullable=False),
        sa.Column("automation", sa.String(255), nullable=False),
        sa.Column("held_out", sa.Boolean(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("mrr_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=True),
    )
    op.create_index("ix_lifecycle_instances_customer_id", "lifecycle_instances", ["customer_id"])
    op.create_index(
        "ix_lifecycle_instances_automation_started",
        "lifecycle_instances",
        ["automation", "started_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_lifecycle_instances_automation_started", "lifecycle_instances")
    op.drop_index("ix_lifecycle_instances_customer_id", "lifecycle_instances")
    op.drop_table("lifecycle_instances")
    op.drop_index("ix_segment_events_segment_at", "segment_events")
    op.drop_index("ix_segment_events_customer_id", "segment_events")
    op.drop_table("segment_events")
    op.drop_index("ix_segment_members_customer_id", "segment_members")
    op.drop_table("segment_members")
    op.drop_table("customer_segment_facts")
    op.drop_index("ix_customer_usage_customer_id", "customer_usage")
    op.drop_table("customer_usage")
