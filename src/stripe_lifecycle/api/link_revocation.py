"""Revoking email links: every link of one message, or every link sent to a customer so
far (a forwarded email, a leaked inbox, an account handed over). Admin only, with a
reason, audited in `support_actions`; a revoked link answers like an expired one.
Unsubscribe links are never revoked."""

from datetime import datetime

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field

from stripe_lifecycle.api.deps import AdminKey, CustomerId, MessageId, SessionDep
from stripe_lifecycle.api.errors import ADMIN_ONLY, UNPARSABLE_BODY, not_found
from stripe_lifecycle.storage.models import Customer, LinkRevocation, Message
from stripe_lifecycle.storage.revocations import revoke_customer_links, revoke_message_links

router = APIRouter(prefix="/v1", tags=["links"])


class RevokeLinks(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)


class RevokedLinks(BaseModel):
    customer_id: str
    # None when every link of the customer issued up to `revoked_at` was revoked.
    message_id: str | None
    revoked_at: datetime


def _answer(revocation: LinkRevocation) -> RevokedLinks:
    return RevokedLinks(
        customer_id=revocation.customer_id,
        message_id=revocation.message_id,
        revoked_at=revocation.revoked_at,
    )


@router.post(
    "/customers/{customer_id}/links/revoke",
    responses={**not_found("customer"), **ADMIN_ONLY, **UNPARSABLE_BODY},
)
async def revoke_customer(
    customer_id: CustomerId, body: RevokeLinks, session: SessionDep, caller: AdminKey
) -> RevokedLinks:
    """Revoke every tracked link in the mail sent to this customer so far; mail sent
    later carries links that work."""
    if await session.get(Customer, customer_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no customer {customer_id}")
    revocation = await revoke_customer_links(session, customer_id, body.reason, str(caller))
    answer = _answer(revocation)
    await session.commit()
    return answer


@router.post(
    "/messages/{message_id}/links/revoke",
    responses={**not_found("message"), **ADMIN_ONLY, **UNPARSABLE_BODY},
)
async def revoke_message(
    message_id: MessageId, body: RevokeLinks, session: SessionDep, caller: AdminKey
) -> RevokedLinks:
    """Revoke every tracked link of one message."""
    message = await session.get(Message, message_id)
    if message is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no message {message_id}")
    revocation = await revoke_message_links(session, message, body.reason, str(caller))
    answer = _answer(revocation)
    await session.commit()
    return answer
