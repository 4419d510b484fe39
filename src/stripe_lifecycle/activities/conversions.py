"""Record conversions once per Stripe event, lifecycle and kind, credited to the messages
that earned them."""

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col
from temporalio import activity

from stripe_lifecycle.activities.interface import ConversionInput, Conversions
from stripe_lifecycle.domain.attribution import (
    NOT_TOUCHES,
    Policy,
    Touch,
    attribute,
    split_amount,
    touch_range,
)
from stripe_lifecycle.storage.db import SessionMaker, insert_for
from stripe_lifecycle.storage.models import (
    CONVERSION_KEY,
    CREDITABLE_STATUSES,
    Conversion,
    ConversionCredit,
    Message,
    MessageClick,
    sent_time,
)


class ConversionActivities(Conversions):
    def __init__(self, sessionmaker: SessionMaker, policy: Policy) -> None:
        self._sessionmaker = sessionmaker
        self._policy = policy

    @activity.defn(name="record_conversion")
    async def record_conversion(self, conversion: ConversionInput) -> str | None:
        """Insert once (unique Stripe event, lifecycle and kind) with its credits; returns
        the message with the largest credit, if any.

        The attribution model and window (per lifecycle) come from the policy; unattributed
        conversions are recorded too. One with an `uncredited_reason` (an invoice paid out
        of band) is recorded with that reason and no credits, whatever emails touched the
        customer. A retried activity finds the conversion recorded and writes nothing: the
        credits were written with it, in one transaction.
        """
        occurred = datetime.fromtimestamp(conversion.occurred_at, UTC)
        window = self._policy.window_for(conversion.lifecycle)
        async with self._sessionmaker() as session:
            if conversion.uncredited_reason is None:
                since, before = touch_range(occurred, window)
                touches = await _touches(session, conversion, since, before)
                credits = attribute(touches, occurred, window, self._policy.model)
            else:
                credits = []
            top = credits[0] if credits else None
            dialect = session.get_bind().dialect.name
            insert = insert_for(dialect)
            conversion_id = (
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
                        message_id=top.message_id if top else None,
                        attribution=top.rule if top else None,
                        uncredited_reason=conversion.uncredited_reason,
                        recorded_at=datetime.now(UTC),
                    )
                    .on_conflict_do_nothing(index_elements=list(CONVERSION_KEY))
                    .returning(col(Conversion.id))
                )
            ).scalar_one_or_none()
            if conversion_id is None:
                # Recorded by an earlier attempt (or a concurrent one): its credits stand.
                recorded: str | None = (
                    await session.execute(
                        select(col(Conversion.message_id)).where(
                            col(Conversion.stripe_event_id) == conversion.stripe_event_id,
                            col(Conversion.lifecycle) == conversion.lifecycle,
                            col(Conversion.kind) == conversion.kind,
                        )
                    )
                ).scalar_one_or_none()
                return recorded
            mrr_parts = split_amount(conversion.mrr_delta_cents, credits)
            amount_parts = split_amount(conversion.amount_cents, credits)
            session.add_all(
                ConversionCredit(
                    conversion_id=conversion_id,
                    message_id=credit.message_id,
                    rule=credit.rule,
                    share_bp=credit.share_bp,
                    mrr_delta_cents=mrr,
                    amount_cents=amount,
                )
                for credit, mrr, amount in zip(credits, mrr_parts, amount_parts, strict=True)
            )
            await session.commit()
        return top.message_id if top else None


async def _touches(
    session: AsyncSession, conversion: ConversionInput, since: datetime, before: datetime
) -> list[Touch]:
    """The customer's messages of the lifecycle sent, or clicked, in [since, before)."""
    of_this_lifecycle = (
        col(Message.customer_id) == conversion.customer_id,
        col(Message.lifecycle) == conversion.lifecycle,
        col(Message.template).not_in(NOT_TOUCHES),
    )
    sent = await session.execute(
        select(col(Message.id), sent_time())
        .where(*of_this_lifecycle)
        .where(col(Message.status).in_(CREDITABLE_STATUSES))
        .where(sent_time() >= since, sent_time() < before)
    )
    sent_at: dict[str, datetime | None] = {row[0]: row[1] for row in sent}
    clicks: dict[str, list[datetime]] = {}
    clicked = await session.execute(
        select(col(MessageClick.message_id), col(MessageClick.clicked_at))
        .join(Message, col(MessageClick.message_id) == col(Message.id))
        .where(*of_this_lifecycle)
        .where(col(MessageClick.clicked_at) >= since, col(MessageClick.clicked_at) < before)
    )
    for message_id, clicked_at in clicked:
        clicks.setdefault(message_id, []).append(clicked_at)
    return [
        Touch(message_id, sent_at.get(message_id), tuple(clicks.get(message_id, ())))
        for message_id in sent_at.keys() | clicks.keys()
    ]
