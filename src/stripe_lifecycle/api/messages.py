"""The email log support reads: a customer's messages, and one message as it was sent."""

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel
from sqlalchemy import select
from sqlmodel import col

from stripe_lifecycle.api.deps import CustomerId, MessageId, SessionDep, SupportKey
from stripe_lifecycle.api.errors import not_found
from stripe_lifecycle.storage.models import Customer, Message, MessageDetail, MessagePublic

router = APIRouter(prefix="/v1", tags=["messages"])


class MessageList(BaseModel):
    messages: list[MessagePublic]


@router.get("/customers/{customer_id}/messages", responses=not_found("customer"))
async def customer_messages(
    customer_id: CustomerId, session: SessionDep, _role: SupportKey
) -> MessageList:
    """The customer's email log, oldest first."""
    if await session.get(Customer, customer_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no customer {customer_id}")
    rows = await session.execute(
        select(Message)
        .where(col(Message.customer_id) == customer_id)
        .order_by(col(Message.created_at), col(Message.id))
    )
    return MessageList(
        messages=[MessagePublic.model_validate(m, from_attributes=True) for m in rows.scalars()]
    )


@router.get("/messages/{message_id}", responses=not_found("message"))
async def get_message(
    message_id: MessageId, session: SessionDep, _role: SupportKey
) -> MessageDetail:
    """One message exactly as the customer received it: both parts and its links."""
    message = await session.get(Message, message_id)
    if message is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no message {message_id}")
    return MessageDetail.model_validate(message, from_attributes=True)
