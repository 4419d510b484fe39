"""Messages keep the subscription they are about, so readers (the cancellation survey)
never parse it out of a workflow id.

Win-back messages recorded before this revision are backfilled once from their workflow
id, `winback-{cus_id}-{sub_id}`: the only lifecycle whose id named its subscription when
they were sent.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("subscription_id", sa.String(length=255), nullable=True))
    prefix = "'winback-' || customer_id || '-'"
    op.execute(
        f"UPDATE messages SET subscription_id = SUBSTR(workflow_id, LENGTH({prefix}) + 1)"
        f" WHERE SUBSTR(workflow_id, 1, LENGTH({prefix})) = {prefix}"
        f" AND SUBSTR(workflow_id, LENGTH({prefix}) + 1, 4) = 'sub_'"
    )


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("subscription_id")
