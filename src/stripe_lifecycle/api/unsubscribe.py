"""Unsubscribe: the `List-Unsubscribe` one-click endpoint (RFC 8058) and the preferences
page behind the footer's "Unsubscribe" link.

The token (`links.make_unsubscribe_token`) names a customer and the category of the email
it came in: marketing (win-back, upgrade), product (trial, plan change, scheduled
cancellation) or billing (dunning, payment action, expiring card, renewal).

- `POST /u/{token}`: what mail clients send for one click (body
  `List-Unsubscribe=One-Click`, no cookies, no other authentication): the customer is
  unsubscribed from that category. A page answers, for a person who pressed the page's
  own button.
- `GET /u/{token}`: the customer's preferences, one checkbox per category, and a button to
  unsubscribe from the email's category. A GET changes nothing: link scanners fetch them.
- `POST /u/{token}/preferences`: the form: a checked category is subscribed, an unchecked
  one is not.

Billing mail is about money the customer owes: it keeps going out after an unsubscribe
unless `LIFECYCLE_UNSUBSCRIBE_BILLING` is true, and the page says so.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, status
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from stripe_lifecycle.api.deps import LINK_CLIENT_LIMIT, RATE_LIMITED, AppStateDep, SessionDep
from stripe_lifecycle.api.rate_limit import refuse_if_limited
from stripe_lifecycle.api.token_pages import TokenPage
from stripe_lifecycle.domain.links import read_unsubscribe_token
from stripe_lifecycle.mail.templates import Brand
from stripe_lifecycle.settings import Settings
from stripe_lifecycle.storage.db import insert_for
from stripe_lifecycle.storage.models import MailCategory, MailPreference, utcnow

router = APIRouter(tags=["unsubscribe"])

ONE_CLICK = "one-click"
PREFERENCES = "preferences"

# Category -> (name, what it holds), in the order the page lists them.
CATEGORY_LABELS: dict[str, tuple[str, str]] = {
    MailCategory.MARKETING: ("Offers", "win-back offers and upgrade suggestions"),
    MailCategory.PRODUCT: (
        "Product updates",
        "trial reminders, plan change and cancellation follow-ups",
    ),
    MailCategory.BILLING: (
        "Billing",
        "failed payments, payment confirmations, expiring cards and renewal reminders",
    ),
}

# In the frame that every page behind a signed link shares (token_pages.py).
_PREFERENCES = TokenPage(
    "preferences.html",
    """{% extends "token_page.html" %}
{% block title %}email preferences{% endblock %}
{% block style %}
.choice { align-items: flex-start; }
.choice input { margin: 3px 0 0; }
.notice { padding: 12px; border-radius: 6px; background: #e6f4ea; color: #1e5631; }
{% endblock %}
{% block card %}
<h1>Email preferences</h1>
{% if notice %}<p class="notice" role="status">{{ notice }}</p>{% endif %}
{% if offer_one_click %}
<form method="post" action="/u/{{ token }}">
<p>Stop getting {{ labels[category][0] | lower }} emails ({{ labels[category][1] }})?</p>
<button type="submit">Unsubscribe</button>
</form>
{% endif %}
<form method="post" action="/u/{{ token }}/preferences">
<fieldset>
<legend>The emails you get from {{ brand.name }}</legend>
{% for key in choices %}
<label class="choice"><input type="checkbox" name="{{ key }}" value="yes"
{%- if subscribed[key] %} checked{% endif %}>
<span><strong>{{ labels[key][0] }}</strong><br>
<span class="muted">{{ labels[key][1] | capitalize }}</span></span></label>
{% endfor %}
</fieldset>
{% if not billing_choice %}
<p class="muted">{{ labels["billing"][0] }} emails ({{ labels["billing"][1] }}) are always
sent: they are about payments on your account.</p>
{% endif %}
<button type="submit">Save preferences</button>
</form>
{% endblock %}
""",
)


def _choices(settings: Settings) -> tuple[str, ...]:
    """The categories a customer may unsubscribe from."""
    if settings.unsubscribe_billing:
        return MailCategory.ALL
    return tuple(c for c in MailCategory.ALL if c != MailCategory.BILLING)


def _reader(state: AppStateDep, token: str) -> tuple[str, str]:
    """The customer and category of a genuine token (404 otherwise), within the link's
    rate limit (429 past it)."""
    # Never expired nor revoked, whenever it was issued: an opt-out must always work.
    found = read_unsubscribe_token(state.settings.link_secret_bytes(), token)
    if found is None or found.second not in MailCategory.ALL:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="unknown unsubscribe link")
    refuse_if_limited(state.link_limits.per_link.take(f"unsubscribe:{found.first}:{found.second}"))
    return found.first, found.second


async def _subscribed(session: AsyncSession, customer_id: str) -> dict[str, bool]:
    rows = await session.execute(
        select(col(MailPreference.category), col(MailPreference.subscribed)).where(
            col(MailPreference.customer_id) == customer_id
        )
    )
    chosen = dict(rows.all())
    return {category: chosen.get(category, True) for category in MailCategory.ALL}


async def _set(
    session: AsyncSession, customer_id: str, changes: dict[str, bool], source: str
) -> None:
    insert = insert_for(session.get_bind().dialect.name)
    now = utcnow()
    for category, subscribed in changes.items():
        # An upsert on (customer, category): a double-clicked button cannot race itself
        # into an integrity error.
        await session.execute(
            insert(MailPreference)
            .values(
                customer_id=customer_id,
                category=category,
                subscribed=subscribed,
                source=source,
                updated_at=now,
            )
            .on_conflict_do_update(
                index_elements=["customer_id", "category"],
                set_={"subscribed": subscribed, "source": source, "updated_at": now},
            )
        )
    await session.commit()


async def _page(
    state: AppStateDep,
    session: AsyncSession,
    token: str,
    reader: tuple[str, str],
    notice: str | None = None,
) -> HTMLResponse:
    customer_id, category = reader
    choices = _choices(state.settings)
    subscribed = await _subscribed(session, customer_id)
    return _PREFERENCES.respond(
        brand=Brand.from_settings(state.settings),
        token=token,
        category=category,
        labels=CATEGORY_LABELS,
        choices=choices,
        subscribed=subscribed,
        billing_choice=MailCategory.BILLING in choices,
        offer_one_click=category in choices and subscribed[category],
        notice=notice,
    )


@router.get(
    "/u/{token}",
    response_class=HTMLResponse,
    responses=RATE_LIMITED,
    dependencies=[LINK_CLIENT_LIMIT],
)
async def preferences_page(token: str, state: AppStateDep, session: SessionDep) -> HTMLResponse:
    """The customer's email preferences; changes nothing."""
    return await _page(state, session, token, _reader(state, token))


@router.post(
    "/u/{token}",
    response_class=HTMLResponse,
    responses=RATE_LIMITED,
    dependencies=[LINK_CLIENT_LIMIT],
)
async def one_click_unsubscribe(
    token: str, state: AppStateDep, session: SessionDep
) -> HTMLResponse:
    """RFC 8058 one-click unsubscribe from the category of the email the token came in."""
    reader = _reader(state, token)
    customer_id, category = reader
    await _set(session, customer_id, {category: False}, ONE_CLICK)
    name = CATEGORY_LABELS[category][0].lower()
    if category in _choices(state.settings):
        notice = f"You're unsubscribed from {name} emails."
    else:
        notice = (
            f"Noted. {CATEGORY_LABELS[category][0]} emails are still sent: "
            "they are about payments on your account."
        )
    return await _page(state, session, token, reader, notice)


@router.post(
    "/u/{token}/preferences",
    response_class=HTMLResponse,
    responses=RATE_LIMITED,
    dependencies=[LINK_CLIENT_LIMIT],
)
async def save_preferences(
    token: str,
    state: AppStateDep,
    session: SessionDep,
    marketing: Annotated[str | None, Form()] = None,
    product: Annotated[str | None, Form()] = None,
    billing: Annotated[str | None, Form()] = None,
) -> HTMLResponse:
    """The preferences form: a checked category is subscribed, an unchecked one is not."""
    reader = _reader(state, token)
    customer_id, _ = reader
    checked = {
        MailCategory.MARKETING: marketing is not None,
        MailCategory.PRODUCT: product is not None,
        MailCategory.BILLING: billing is not None,
    }
    # Billing stays as it is while customers cannot opt out of it.
    changes = {c: checked[c] for c in _choices(state.settings)}
    await _set(session, customer_id, changes, PREFERENCES)
    return await _page(state, session, token, reader, "Your email preferences are saved.")
