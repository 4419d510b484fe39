"""Messages keep when their send fell in doubt, so a worker that cannot tell whether the
provider took a message asks it for a while, then sends again (`Message.in_doubt_since`).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from stripe_lifecycle.storage.models import UTCDateTime

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("in_doubt_since", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("in_doubt_since")
