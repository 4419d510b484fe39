"""Record conversions once per Stripe event, credited to the message that earned them."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col
from temporalio import activity

from stripe_lifecycle.db import SessionMaker
from stripe_lifecycle.models import Conversion, Message, MessageClick, MessageStatus
from stripe_lifecycle.workflows.dunning import ConversionInput

DELIVERED = (MessageStatus.SENT, MessageStatus.RECORDED)


class ConversionActivities:
    def __init__(self, sessionmaker: SessionMaker, window: timedelta) -> None:
        self._sessionmaker = sessionmaker
        self._window = window

    @activity.defn(name="record_conversion")
    async def record_conversion(self, conversion: ConversionInput) -> str | None:
        """Insert once (unique Stripe event id); returns the credited message id, if any.

        Credit goes to the last clicked message of the lifecycle inside the window, else
        to the last one sent; unattributed conversions are recorded too.
        """
        occurred = datetime.fromtimestamp(conversion.occurred_at, UTC)
        since = occurred - self._window
        async with self._sessionmaker() as session:
            clicked = (
                await session.execute(
                    select(col(Message.id))
                    .join(MessageClick, col(MessageClick.message_id) == col(Message.id))
                    .where(col(Message.customer_id) == conversion.customer_id)
                    .where(col(Message.lifecycle) == conversion.lifecycle)
                    .where(col(MessageClick.clicked_at).between(since, occurred))
                    .order_by(col(MessageClick.clicked_at).desc())
                    .limit(1)
                )
            ).scalar_one_or_none()
            sent = None
            if clicked is None:
                sent = (
                    await session.execute(
                        select(col(Message.id))
                        .where(col(Message.customer_id) == conversion.customer_id)
                        .where(col(Message.lifecycle) == conversion.lifecycle)
                        .where(col(Message.status).in_(DELIVERED))
                        .where(col(Message.created_at).between(since, occurred))
                        .order_by(col(Message.created_at).desc())
                        .limit(1)
                    )
                ).scalar_one_or_none()
            message_id = clicked or sent
            dialect = session.get_bind().dialect.name
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            await session.execute(
                insert(Conversion)
                .values(
                    stripe_event_id=conversion.stripe_event_id,
                    kind=conversion.kind,
                    customer_id=conversion.customer_id,
                    lifecycle=conversion.lifecycle,
                    workflow_id=conversion.workflow_id,
                    automation=conversion.automation,
                    invoice_id=conversion.invoice_id,
                    subscription_id=conversion.subscription_id,
                    amount_cents=conversion.amount_cents,
                    mrr_delta_cents=conversion.mrr_delta_cents,
                    currency=conversion.currency,
                    occurred_at=occurred,
                    message_id=message_id,
                    attribution="last_click" if clicked else ("last_send" if sent else None),
                    recorded_at=datetime.now(UTC),
                )
                .on_conflict_do_nothing(index_elements=["stripe_event_id"])
            )
            await session.commit()
        return message_id
