"""Erasing a customer's personal data from the database (a data-erasure request).

What identifies or describes the person goes: the email address and name on the
snapshot, every message's address, subject and bodies, the raw Stripe payloads kept in
the webhook inbox (once delivered), Postmark's delivery records, free-text survey comments, the
suppression entries for their address, and the facts their segments were evaluated on (their
metadata among them) with every membership reason that quoted their metadata. What stays
is anonymous: ids, statuses, dates and money, so reports and attribution keep adding up.
Every link in the mail sent to them is revoked: an old email no longer opens their billing.
"""

from datetime import UTC, datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from stripe_lifecycle.storage.models import (
    CancellationFeedback,
    Customer,
    CustomerSegmentFacts,
    InboxStatus,
    LinkRevocation,
    Message,
    MessageEvent,
    SegmentEvent,
    SupportAction,
    Suppression,
    WebhookEvent,
)

ERASED = "[erased]"
ACTION = "customer.erase"


async def erase_customer(session: AsyncSession, customer_id: str, actor: str) -> int:
    """Erase in one transaction, recorded with who did it; the number of messages whose
    content went. The caller commits."""
    customer = await session.get(Customer, customer_id)
    addresses = {customer.email.lower()} if customer is not None and customer.email else set()
    sent = (
        await session.execute(
            select(col(Message.id), col(Message.to)).where(col(Message.customer_id) == customer_id)
        )
    ).all()
    message_ids = [message_id for message_id, _ in sent]
    addresses |= {to.lower() for _, to in sent if to and to != ERASED}
    await session.execute(
        update(Customer)
        .where(col(Customer.customer_id) == customer_id)
        .values(email=None, name=None, deleted=True, updated_at=datetime.now(UTC))
    )
    await session.execute(
        update(Message)
        .where(col(Message.customer_id) == customer_id)
        # The error of a suppressed or failed send can name the address.
        .values(to=ERASED, subject="", html="", text="", error=None)
    )
    if message_ids:
        await session.execute(
            update(MessageEvent)
            .where(col(MessageEvent.message_id).in_(message_ids))
            .values(email=None, payload={})
        )
    # Events still waiting for delivery keep theirs until they reach the customer
    # workflow, which keeps only their money now.
    await session.execute(
        update(WebhookEvent)
        .where(col(WebhookEvent.customer_id) == customer_id)
        .where(col(WebhookEvent.status) != InboxStatus.PENDING)
        .values(payload={})
    )
    await session.execute(
        update(CancellationFeedback)
        .where(col(CancellationFeedback.customer_id) == customer_id)
        .values(comment=None)
    )
    await session.execute(
        delete(CustomerSegmentFacts).where(col(CustomerSegmentFacts.customer_id) == customer_id)
    )
    await session.execute(
        update(SegmentEvent)
        .where(col(SegmentEvent.customer_id) == customer_id)
        .where(col(SegmentEvent.reason).contains("metadata."))
        .values(reason=ERASED)
    )
    if addresses:
        await session.execute(delete(Suppression).where(col(Suppression.email).in_(addresses)))
    session.add(LinkRevocation(customer_id=customer_id, reason="data erasure", actor=actor))
    session.add(
        SupportAction(customer_id=customer_id, action=ACTION, actor=actor, reason="data erasure")
    )
    return len(message_ids)
