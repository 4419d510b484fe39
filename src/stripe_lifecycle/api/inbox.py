"""`/v1/inbox`: the webhook events that cannot be delivered (quarantined), and what an admin
does with them: retry one (after a fix, or to see it fail again) or drop it.

An event is quarantined by the forwarder (`intake/forwarder.py`) when no retry can deliver
it: its reason is in `last_error`. A retry puts it back to pending with its attempts reset,
so the forwarder takes it as it would any stored event; a drop marks it `dropped` and
keeps the row (and its payload) for audit. Both are recorded in `support_actions` with who
did them.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, Field
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from stripe_lifecycle.api.deps import AdminKey, AppStateDep, EventId, SessionDep, SupportKey
from stripe_lifecycle.api.errors import ADMIN_ONLY, UNPARSABLE_BODY, error, not_found
from stripe_lifecycle.storage.models import InboxStatus, SupportAction, WebhookEvent

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/inbox", tags=["inbox"])

_NOT_QUARANTINED = {
    **not_found("stored event"),
    **ADMIN_ONLY,
    409: error("the event is not quarantined"),
}

# How much of a quarantine reason an audit row repeats.
AUDIT_REASON_CHARS = 500


class QuarantinedEvent(BaseModel):
    event_id: str
    type: str
    # None when the event's customer id is longer than any Stripe id (the reason says so).
    customer_id: str | None
    reason: str | None
    attempts: int
    received_at: datetime


class QuarantinedEvents(BaseModel):
    # Every quarantined event, of which `events` lists the oldest first, up to `limit`.
    total: int
    events: list[QuarantinedEvent]


class InboxAction(BaseModel):
    reason: str = Field(default="", max_length=2000, description="why, for the audit trail")


class InboxActionDone(BaseModel):
    event_id: str
    # pending (retried: queued for delivery again) | dropped
    status: str


async def quarantined_events(session: AsyncSession, limit: int) -> QuarantinedEvents:
    """How many events are quarantined, and the oldest `limit` of them."""
    quarantined = col(WebhookEvent.status) == InboxStatus.QUARANTINED
    total = (
        await session.execute(select(func.count()).select_from(WebhookEvent).where(quarantined))
    ).scalar_one()
    rows = (
        await session.execute(
            select(WebhookEvent).where(quarantined).order_by(col(WebhookEvent.id)).limit(limit)
        )
    ).scalars()
    return QuarantinedEvents(
        total=total,
        events=[
            QuarantinedEvent(
                event_id=row.event_id,
                type=row.type,
                customer_id=row.customer_id,
                reason=row.last_error,
                attempts=row.attempts,
                received_at=row.received_at,
            )
            for row in rows
        ],
    )


@router.get("/quarantined", response_model=QuarantinedEvents)
async def list_quarantined(
    session: SessionDep,
    _caller: SupportKey,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> QuarantinedEvents:
    """The events that cannot be delivered, oldest first, each with why."""
    return await quarantined_events(session, limit)


async def _quarantined(session: SessionDep, event_id: str) -> WebhookEvent:
    row = (
        await session.execute(select(WebhookEvent).where(col(WebhookEvent.event_id) == event_id))
    ).scalar_one_or_none()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no stored event {event_id}")
    if row.status != InboxStatus.QUARANTINED:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"event {event_id} is {row.status}, not quarantined",
        )
    return row


async def _leave_quarantine(
    session: SessionDep, row: WebhookEvent, new_status: str, **values: object
) -> None:
    """Move the row out of quarantine; 409 if another call just did."""
    result = await session.execute(
        update(WebhookEvent)
        .where(col(WebhookEvent.id) == row.id)
        .where(col(WebhookEvent.status) == InboxStatus.QUARANTINED)
        .values(status=new_status, **values)
    )
    if getattr(result, "rowcount", 0) != 1:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"event {row.event_id} is no longer quarantined"
        )


def _audit(row: WebhookEvent, action: str, actor: str, note: str) -> SupportAction:
    why = note.strip() or "no reason given"
    quarantined_for = (row.last_error or "")[:AUDIT_REASON_CHARS]
    return SupportAction(
        customer_id=row.customer_id or "",
        action=action,
        actor=actor,
        reason=f"{row.event_id} ({row.type}): {why}; quarantined for: {quarantined_for}",
    )


@router.post(
    "/{event_id}/retry",
    response_model=InboxActionDone,
    status_code=status.HTTP_202_ACCEPTED,
    responses={**_NOT_QUARANTINED, **UNPARSABLE_BODY},
)
async def retry_event(
    event_id: EventId,
    session: SessionDep,
    state: AppStateDep,
    caller: AdminKey,
    body: InboxAction | None = None,
) -> InboxActionDone:
    """Put a quarantined event back to pending (attempts reset) and queue it for delivery:
    delivered if what stopped it is fixed, quarantined again with its reason if not."""
    row = await _quarantined(session, event_id)
    row_id, payload, customer_id = row.id, row.payload, row.customer_id
    await _leave_quarantine(session, row, InboxStatus.PENDING, attempts=0)
    session.add(_audit(row, "inbox.retry", str(caller), body.reason if body else ""))
    await session.commit()
    log.info("quarantined event %s retried by %s", event_id, caller)
    await state.forwarder.submit_stored(row_id, payload, customer_id)
    return InboxActionDone(event_id=event_id, status=InboxStatus.PENDING)


@router.delete(
    "/{event_id}",
    response_model=InboxActionDone,
    responses=_NOT_QUARANTINED,
)
async def drop_event(
    event_id: EventId,
    session: SessionDep,
    caller: AdminKey,
    reason: Annotated[str, Query(max_length=2000, description="why, for the audit trail")] = "",
) -> InboxActionDone:
    """Give up on a quarantined event: it is marked `dropped` and kept for audit, never
    delivered."""
    row = await _quarantined(session, event_id)
    await _leave_quarantine(session, row, InboxStatus.DROPPED)
    session.add(_audit(row, "inbox.drop", str(caller), reason))
    await session.commit()
    log.info("quarantined event %s dropped by %s", event_id, caller)
    return InboxActionDone(event_id=event_id, status=InboxStatus.DROPPED)
