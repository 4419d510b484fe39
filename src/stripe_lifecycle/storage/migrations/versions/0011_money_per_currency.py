"""Customers' money per currency: MRR, LTV net of refunds and the refunds as
`{currency: minor units}`, and whether the MRR is exact.

Snapshots written before this revision hold one MRR and one LTV, counted in the
customer's currency: they become that currency's figures until the customer workflow
writes the snapshot again.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from stripe_lifecycle.storage.models import JSONType

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None

_CUSTOMERS = sa.table(
    "customers",
    sa.column("customer_id", sa.String()),
    sa.column("currency", sa.String()),
    sa.column("mrr_cents", sa.BigInteger()),
    sa.column("ltv_cents", sa.BigInteger()),
    sa.column("mrr", JSONType),
    sa.column("ltv", JSONType),
)


def upgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.add_column(
            sa.Column("mrr_exact", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        for name in ("mrr", "ltv", "refunded"):
            batch.add_column(sa.Column(name, JSONType, nullable=False, server_default="{}"))
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(
            _CUSTOMERS.c.customer_id,
            _CUSTOMERS.c.currency,
            _CUSTOMERS.c.mrr_cents,
            _CUSTOMERS.c.ltv_cents,
        ).where(_CUSTOMERS.c.currency.is_not(None))
    )
    for customer_id, currency, mrr_cents, ltv_cents in rows.all():
        connection.execute(
            _CUSTOMERS.update()
            .where(_CUSTOMERS.c.customer_id == customer_id)
            .values(
                mrr={currency: mrr_cents} if mrr_cents else {},
                ltv={currency: ltv_cents} if ltv_cents else {},
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        for name in ("refunded", "ltv", "mrr", "mrr_exact"):
            batch.drop_column(name)
