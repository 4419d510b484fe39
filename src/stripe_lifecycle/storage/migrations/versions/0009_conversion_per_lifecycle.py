"""One conversion per Stripe event, lifecycle and kind, and why a conversion went uncredited.

One `invoice.paid` can recover a trial's failed first charge and convert the trial; one
`customer.subscription.updated` can save a scheduled cancellation and be an upgrade. Unique
on the event id alone, the second conversion was dropped. Conversions recorded before this
revision keep their rows (at most one per event, so the new key holds for them).

`uncredited_reason` keeps why a conversion was recorded without crediting any email (an
invoice paid out of band); it is empty for every conversion recorded before.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None

NEW_KEY = "uq_conversions_event_lifecycle_kind"
# SQLite reflects 0004's unnamed constraint without a name: batch mode names it by this
# convention so it can be dropped; PostgreSQL named it itself.
SQLITE_CONVENTION = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _event_key() -> str:
    if op.get_bind().dialect.name == "postgresql":
        return "conversions_stripe_event_id_key"
    return "uq_conversions_stripe_event_id"


def _rebuild_conversions(change: Callable[[BatchOperations], None]) -> None:
    """Applies `change` to `conversions`, which SQLite does by rebuilding the table.

    Dropping the old table would break `conversion_credits`' references to its rows, and
    SQLite would refuse the commit even once the copy is in place: so the credits step
    aside while it is rebuilt and come back after. (`foreign_keys=OFF` would be ignored:
    this runs inside the migration's transaction.)
    """
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute("CREATE TEMP TABLE credits_0009 AS SELECT * FROM conversion_credits")
        op.execute("DELETE FROM conversion_credits")
    with op.batch_alter_table("conversions", naming_convention=SQLITE_CONVENTION) as batch:
        change(batch)
    if sqlite:
        op.execute("INSERT INTO conversion_credits SELECT * FROM credits_0009")
        op.execute("DROP TABLE credits_0009")


def upgrade() -> None:
    def change(batch: BatchOperations) -> None:
        batch.drop_constraint(_event_key(), type_="unique")
        batch.create_unique_constraint(NEW_KEY, ["stripe_event_id", "lifecycle", "kind"])
        batch.add_column(sa.Column("uncredited_reason", sa.String(length=255), nullable=True))

    _rebuild_conversions(change)


def downgrade() -> None:
    shared = op.get_bind().execute(
        sa.text(
            "SELECT COUNT(*) FROM (SELECT stripe_event_id FROM conversions"
            " GROUP BY stripe_event_id HAVING COUNT(*) > 1) AS shared"
        )
    )
    events: int = shared.scalar_one()
    if events:
        # Going back would have to delete conversions: leave that choice to a person.
        raise RuntimeError(
            "cannot downgrade below 0009: revision 0008 holds one conversion per Stripe "
            f"event, and {events} event(s) have more"
        )

    def change(batch: BatchOperations) -> None:
        batch.drop_column("uncredited_reason")
        batch.drop_constraint(NEW_KEY, type_="unique")
        batch.create_unique_constraint(_event_key(), ["stripe_event_id"])

    _rebuild_conversions(change)
