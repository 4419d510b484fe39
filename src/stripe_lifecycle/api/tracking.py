"""`GET /t/{token}`: a tracked link in an email. Records the click, then redirects to the
destination stored for that message and link; anything else is a 404.

The "fix your card" link of dunning and expiring-card mail leads to a Stripe Customer
Portal session made at click time (portal sessions expire within minutes, so one made
when the email was sent would be dead by the time it is read); if Stripe cannot make
one, the stored destination (the invoice's hosted page) is the fallback.
"""

import logging

import stripe
from fastapi import APIRouter, HTTPException, status
from fastapi.responses import RedirectResponse

from stripe_lifecycle.links import read_token
from stripe_lifecycle.models import Message, MessageClick

from .deps import AppStateDep, SessionDep

log = logging.getLogger(__name__)
router = APIRouter(tags=["tracking"])

PORTAL_LINK = "update_payment"
PORTAL_LIFECYCLES = frozenset({"dunning", "card_expiring"})


@router.get("/t/{token}", response_class=RedirectResponse, status_code=status.HTTP_302_FOUND)
async def follow_link(token: str, state: AppStateDep, session: SessionDep) -> RedirectResponse:
    found = read_token(state.settings.link_secret_bytes(), token)
    message = await session.get(Message, found[0]) if found else None
    destination = message.destinations.get(found[1]) if message and found else None
    if found is None or message is None or destination is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="unknown link")
    try:
        session.add(MessageClick(message_id=message.id, link=found[1]))
        await session.commit()
    except Exception:
        # The reader came to fix a card: a lost click must not stand in their way.
        log.exception("could not record a click on message %s", message.id)
    if found[1] == PORTAL_LINK and message.lifecycle in PORTAL_LIFECYCLES:
        destination = await _portal_session(state.stripe, message.customer_id, destination)
    return RedirectResponse(destination, status_code=status.HTTP_302_FOUND)


async def _portal_session(
    client: stripe.StripeClient | None, customer_id: str, fallback: str
) -> str:
    if client is None:
        return fallback
    try:
        portal = await client.v1.billing_portal.sessions.create_async(
            {"customer": customer_id, "return_url": fallback}
        )
    except stripe.StripeError as exc:
        log.warning("no portal session for %s (%s); using the stored link", customer_id, exc)
        return fallback
    return portal.url
