"""`POST /webhooks/stripe`: verify, store, acknowledge; delivery happens after the commit."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated

import stripe
from fastapi import APIRouter, Header, HTTPException, Request, status
from pydantic import BaseModel

from stripe_lifecycle.api.deps import AppStateDep
from stripe_lifecycle.api.errors import error
from stripe_lifecycle.intake.body import NotAStripeEvent, read_body
from stripe_lifecycle.intake.inbox import read_row
from stripe_lifecycle.storage.models import InboxStatus

log = logging.getLogger(__name__)
router = APIRouter(tags=["webhooks"])


class WebhookAck(BaseModel):
    received: bool = True
    event_id: str
    duplicate: bool
    # "pending": queued for the customer workflow (once its customer is read from Stripe,
    # for an event naming only a charge); "ignored": recorded only; "unreadable": recorded
    # with the reason, never delivered (a field of the wrong type or out of range).
    status: str


@router.post(
    "/webhooks/stripe",
    responses={
        400: error("bad signature, or not a Stripe event; nothing stored"),
        503: error(
            "LIFECYCLE_STRIPE_WEBHOOK_SECRET is not set, or the database is unavailable "
            "(with Retry-After); nothing stored, and Stripe retries"
        ),
    },
)
async def stripe_webhook(
    request: Request,
    state: AppStateDep,
    stripe_signature: Annotated[str | None, Header()] = None,
) -> WebhookAck:
    settings = state.settings
    secret = settings.stripe_webhook_secret
    if secret is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="LIFECYCLE_STRIPE_WEBHOOK_SECRET is not set; no event can be verified",
        )
    body = await request.body()
    if not stripe_signature:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="missing Stripe-Signature header")
    try:
        stripe.WebhookSignature.verify_header(
            body.decode("utf-8"),
            stripe_signature,
            secret.get_secret_value(),
            settings.stripe_webhook_tolerance_seconds,
        )
    except (stripe.SignatureVerificationError, UnicodeDecodeError) as exc:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, detail=f"signature verification failed: {exc}"
        ) from exc
    try:
        received = read_body(body)
    except NotAStripeEvent as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(exc)) from exc
    payload = received.payload
    row, event = read_row(payload, datetime.now(UTC), received.problem)
    # The unique event id is the dedup truth: a redelivery inserts nothing.
    row_id = await state.inbox.store(row)

    if row_id is None:
        return WebhookAck(event_id=row["event_id"], duplicate=True, status="duplicate")
    if event is not None:
        state.forwarder.submit(row_id, event)
    elif row["status"] == InboxStatus.PENDING:
        # A dispute names its charge, not the customer: the forwarder reads it, not us.
        state.forwarder.submit_unresolved(row_id, payload)
    elif row["status"] == InboxStatus.IGNORED:
        log.info("recorded %s %s (no customer to deliver to)", row["type"], row["event_id"])
    return WebhookAck(event_id=row["event_id"], duplicate=False, status=row["status"])
