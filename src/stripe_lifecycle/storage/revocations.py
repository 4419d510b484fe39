"""Revoking a customer's or a message's email links, and asking whether a link is revoked.

A message revocation ends every tracked link of that email. A customer revocation ends the
links of every email issued to the customer up to that moment; mail sent afterwards
carries new links that work. Unsubscribe links are never revoked (an opt-out must keep
working), so only the tracked links (`/t/`) and the survey page consult this.
"""

from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from stripe_lifecycle.storage.models import LinkRevocation, Message, SupportAction

ACTION = "links.revoke"


async def revoke_customer_links(
    session: AsyncSession, customer_id: str, reason: str, actor: str
) -> LinkRevocation:
    """Revoke every link issued to the customer so far, audited; the caller commits."""
    revocation = LinkRevocation(customer_id=customer_id, reason=reason, actor=actor)
    session.add(revocation)
    session.add(SupportAction(customer_id=customer_id, action=ACTION, actor=actor, reason=reason))
    return revocation


async def revoke_message_links(
    session: AsyncSession, message: Message, reason: str, actor: str
) -> LinkRevocation:
    """Revoke every tracked link of one message, audited; the caller commits."""
    revocation = LinkRevocation(
        customer_id=message.customer_id, message_id=message.id, reason=reason, actor=actor
    )
    session.add(revocation)
    session.add(
        SupportAction(
            customer_id=message.customer_id,
            action=ACTION,
            actor=actor,
            reason=f"message {message.id}: {reason}",
        )
    )
    return revocation


async def link_revoked(session: AsyncSession, message: Message, issued_at: datetime) -> bool:
    """Whether the links of `message`, issued at `issued_at`, have been revoked."""
    found = await session.execute(
        select(func.count())
        .select_from(LinkRevocation)
        .where(col(LinkRevocation.customer_id) == message.customer_id)
        .where(
            or_(
                col(LinkRevocation.message_id) == message.id,
                (col(LinkRevocation.message_id).is_(None))
                & (col(LinkRevocation.revoked_at) >= issued_at),
            )
        )
    )
    return bool(found.scalar_one())
