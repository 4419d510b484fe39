"""`GET /t/{token}`: a tracked link in an email. Records the click, then redirects to the
destination stored for that message and link; anything else is a 404.

Some destinations are resolved at click time. The "fix your card" link of dunning mail,
and every link stored as the `portal:` marker (trial, renewal, expiring card, save
offers), lead to a Stripe Customer Portal session made then: portal sessions expire
within minutes, so one made when the email was sent would be dead by the time it is
read. If Stripe cannot make one, the fallback is the invoice's hosted page (dunning) or
`LIFECYCLE_BILLING_URL`. The `hosted:survey` marker leads to the cancellation survey
page, `/survey/{token}`.

A link opens only within its kind's lifetime and while not revoked (`link_access.py`):
otherwise a 410 page says it expired. Each API process limits `/t/` per client address
(with the survey and unsubscribe pages) and per link (`rate_limit.py`): past the limit,
429 with `Retry-After`.
"""

import logging

import stripe
from fastapi import APIRouter, HTTPException, status
from fastapi.responses import HTMLResponse, RedirectResponse
from stripe.params.billing_portal import SessionCreateParams

from stripe_lifecycle.api.deps import (
    LINK_CLIENT_LIMIT,
    RATE_LIMITED,
    AppStateDep,
    NowDep,
    SessionDep,
)
from stripe_lifecycle.api.errors import error, not_found
from stripe_lifecycle.api.link_access import check_link, opens_portal
from stripe_lifecycle.api.rate_limit import refuse_if_limited
from stripe_lifecycle.domain.links import HOSTED_SURVEY, PORTAL, read_token
from stripe_lifecycle.storage.models import Message, MessageClick

log = logging.getLogger(__name__)
router = APIRouter(tags=["tracking"])


@router.get(
    "/t/{token}",
    response_class=RedirectResponse,
    response_model=None,
    status_code=status.HTTP_302_FOUND,
    responses={
        status.HTTP_410_GONE: {
            "description": "The link expired or was revoked: a page that says so",
            "content": {"text/html": {}},
        },
        **not_found("link (a token this installation did not sign)"),
        **RATE_LIMITED,
        status.HTTP_503_SERVICE_UNAVAILABLE: error(
            "a billing link while Stripe cannot open a portal session and no stored link exists"
        ),
    },
    dependencies=[LINK_CLIENT_LIMIT],
)
async def follow_link(
    token: str, state: AppStateDep, session: SessionDep, now: NowDep
) -> RedirectResponse | HTMLResponse:
    found = read_token(state.settings.link_secret_bytes(), token)
    message = await session.get(Message, found.first) if found else None
    destination = message.destinations.get(found.second) if message and found else None
    if found is None or message is None or destination is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="unknown link")
    # Per link, not per token string: only genuine links get a bucket.
    refuse_if_limited(state.link_limits.per_link.take(f"{message.id}:{found.second}"))
    access = await check_link(session, state.settings, message, found, destination, now)
    if access.refused is not None:
        return access.refused
    try:
        session.add(MessageClick(message_id=message.id, link=found.second))
        await session.commit()
    except Exception:
        # The reader came to fix a card: a lost click must not stand in their way.
        log.exception("could not record a click on message %s", message.id)
    if destination == HOSTED_SURVEY:
        destination = f"{state.settings.public_url}/survey/{token}"
    elif destination == PORTAL:
        fallback = state.settings.billing_url
        destination = await _portal_session(state.stripe, message, fallback)
    elif opens_portal(message, found.second):
        destination = await _portal_session(state.stripe, message, destination)
    return RedirectResponse(destination, status_code=status.HTTP_302_FOUND)


async def _portal_session(
    client: stripe.StripeClient | None, message: Message, fallback: str | None
) -> str:
    if client is None:
        return _or_unavailable(fallback)
    customer_id = message.customer_id
    params: SessionCreateParams = (
        # A customer kept as an Accounts v2 account is named as one.
        {"customer_account": customer_id}
        if customer_id.startswith("acct_")
        else {"customer": customer_id}
    )
    if fallback is not None:
        # Without a return URL the portal goes back to the default set in Stripe's dashboard.
        params["return_url"] = fallback
    # A connected account's customer has its portal on that account.
    options: stripe.RequestOptions = (
        {"stripe_account": message.stripe_account} if message.stripe_account else {}
    )
    try:
        portal = await client.v1.billing_portal.sessions.create_async(params, options=options)
    except stripe.StripeError as exc:
        log.warning("no portal session for %s (%s); using the stored link", customer_id, exc)
        return _or_unavailable(fallback)
    return portal.url


def _or_unavailable(fallback: str | None) -> str:
    if fallback is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="billing is unavailable right now; please try again or contact support",
        )
    return fallback
