"""Whether a tracked link (`/t/{token}`, and the survey page it leads to) still opens, and
the page that answers when it does not.

A link opens while it is within its kind's lifetime (`links.LINK_LIFETIMES`, counted from
the issue time in the token; a token from before issue times were kept counts from when
its message was sent) and neither its message nor, for links issued before then, its
customer has been revoked. An expired or revoked link answers 410 with a page that says
so; a billing link's page offers the app's billing page (`LIFECYCLE_BILLING_URL`), the only
place it sends anyone, so nothing in the request chooses where the reader goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from fastapi import status
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncSession

from stripe_lifecycle.api.token_pages import TokenPage
from stripe_lifecycle.domain.lifecycles import Lifecycle
from stripe_lifecycle.domain.links import LinkKind, TokenContents, expired, link_kind
from stripe_lifecycle.mail.templates import Brand
from stripe_lifecycle.settings import Settings
from stripe_lifecycle.storage.models import Message
from stripe_lifecycle.storage.revocations import link_revoked

# The dunning email's "fix your card" link makes a portal session when clicked (the
# stored destination, the invoice's hosted page, is its fallback).
PORTAL_LINK = "update_payment"
PORTAL_LIFECYCLES = frozenset({Lifecycle.DUNNING})

_EXPIRED = TokenPage(
    "link_expired.html",
    """{% extends "token_page.html" %}
{% block title %}link expired{% endblock %}
{% block style %}
a.button { display: block; box-sizing: border-box; width: 100%; padding: 12px 16px;
  border-radius: 6px; background: {{ brand.primary_color }}; color: {{ brand.on_primary_color }};
  font-weight: 600; text-align: center; text-decoration: none; }
{% endblock %}
{% block card %}
<h1>This link has expired</h1>
<p>Links in our emails work for a limited time, so an old or forwarded email cannot be
used to open your account.</p>
{% if billing_url %}
<p>To see your invoices or update how you pay, sign in to your account.</p>
<p><a class="button" href="{{ billing_url }}" rel="noreferrer">Go to billing</a></p>
{% elif billing %}
<p>To update how you pay, sign in to your account.</p>
{% endif %}
{% endblock %}
""",
)


def opens_portal(message: Message, link: str) -> bool:
    """Whether following this link makes a Customer Portal session (beyond `portal:`)."""
    return link == PORTAL_LINK and message.lifecycle in PORTAL_LIFECYCLES


@dataclass(frozen=True)
class LinkAccess:
    kind: str
    # None while the link opens.
    refused: HTMLResponse | None


async def check_link(
    session: AsyncSession,
    settings: Settings,
    message: Message,
    found: TokenContents,
    destination: str,
    now: datetime,
) -> LinkAccess:
    """The link's kind, and the expired page if it no longer opens."""
    kind = link_kind(found.second, destination, opens_portal(message, found.second))
    issued_at = found.issued_at or message.sent_at or message.created_at
    if expired(kind, issued_at, now) or await link_revoked(session, message, issued_at):
        return LinkAccess(kind, expired_page(settings, kind))
    return LinkAccess(kind, None)


def expired_page(settings: Settings, kind: str) -> HTMLResponse:
    billing = kind == LinkKind.BILLING
    return _EXPIRED.respond(
        status.HTTP_410_GONE,
        brand=Brand.from_settings(settings),
        billing=billing,
        billing_url=settings.billing_url if billing else None,
    )
