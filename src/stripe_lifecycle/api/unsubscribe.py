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
from jinja2 import DictLoader, Environment, StrictUndefined, select_autoescape
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from stripe_lifecycle.links import read_unsubscribe_token
from stripe_lifecycle.mail.templates import Brand
from stripe_lifecycle.models import MailCategory, MailPreference, utcnow
from stripe_lifecycle.settings import Settings

from .deps import AppStateDep, SessionDep

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

# Standalone like the survey page: inline CSS, no script, nothing fetched from elsewhere,
# and no referrer, so the token in the URL goes nowhere.
_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<meta name="robots" content="noindex">
<title>{{ brand.name }}: email preferences</title>
<style>
body { margin: 0; background: #f6f9fc; color: #1a1f36;
  font: 16px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, Helvetica, Arial,
  sans-serif; }
main { box-sizing: border-box; max-width: 560px; margin: 0 auto; padding: 32px 16px; }
.brand { margin: 0 0 20px; font-size: 20px; font-weight: 700; }
.card { background: #fff; border: 1px solid #e6ebf1; border-radius: 8px; padding: 24px; }
h1 { margin: 0 0 8px; font-size: 22px; line-height: 1.3; }
p { margin: 0 0 16px; }
form { margin: 0 0 16px; }
fieldset { border: 0; margin: 0 0 16px; padding: 0; }
legend { padding: 0; margin: 0 0 8px; font-weight: 600; }
.choice { display: flex; gap: 10px; align-items: flex-start; margin: 0 0 8px; padding: 12px;
  border: 1px solid #e6ebf1; border-radius: 6px; cursor: pointer; }
.choice input { margin: 3px 0 0; width: 18px; height: 18px; flex: none; }
button { width: 100%; padding: 12px 16px; border: 0; border-radius: 6px;
  background: {{ brand.primary_color }}; color: {{ brand.on_primary_color }};
  font: inherit; font-weight: 600; cursor: pointer; }
.notice { padding: 12px; border-radius: 6px; background: #e6f4ea; color: #1e5631; }
.muted { color: #697386; font-size: 14px; }
</style>
</head>
<body>
<main>
<p class="brand">{{ brand.name }}</p>
<div class="card">
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
{% if brand.support_email %}
<p class="muted">Questions? Write to us at
<a href="mailto:{{ brand.support_email }}">{{ brand.support_email }}</a>.</p>
{% endif %}
</div>
</main>
</body>
</html>
"""

_PAGES = Environment(
    loader=DictLoader({"preferences.html": _PAGE}),
    autoescape=select_autoescape(),
    undefined=StrictUndefined,
)

_HEADERS = {
    # The token changes this customer's preferences: keep the page out of caches.
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}


def _choices(settings: Settings) -> tuple[str, ...]:
    """The categories a customer may unsubscribe from."""
    if settings.unsubscribe_billing:
        return MailCategory.ALL
    return tuple(c for c in MailCategory.ALL if c != MailCategory.BILLING)


def _reader(state: AppStateDep, token: str) -> tuple[str, str]:
    found = read_unsubscribe_token(state.settings.link_secret_bytes(), token)
    if found is None or found[1] not in MailCategory.ALL:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="unknown unsubscribe link")
    return found


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
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
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
    state: AppStateDep, session: AsyncSession, token: str, notice: str | None = None
) -> HTMLResponse:
    customer_id, category = _reader(state, token)
    choices = _choices(state.settings)
    subscribed = await _subscribed(session, customer_id)
    html = _PAGES.get_template("preferences.html").render(
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
    return HTMLResponse(html, headers=_HEADERS)


@router.get("/u/{token}", response_class=HTMLResponse)
async def preferences_page(token: str, state: AppStateDep, session: SessionDep) -> HTMLResponse:
    """The customer's email preferences; changes nothing."""
    return await _page(state, session, token)


@router.post("/u/{token}", response_class=HTMLResponse)
async def one_click_unsubscribe(
    token: str, state: AppStateDep, session: SessionDep
) -> HTMLResponse:
    """RFC 8058 one-click unsubscribe from the category of the email the token came in."""
    customer_id, category = _reader(state, token)
    await _set(session, customer_id, {category: False}, ONE_CLICK)
    name = CATEGORY_LABELS[category][0].lower()
    if category in _choices(state.settings):
        notice = f"You're unsubscribed from {name} emails."
    else:
        notice = (
            f"Noted. {CATEGORY_LABELS[category][0]} emails are still sent: "
            "they are about payments on your account."
        )
    return await _page(state, session, token, notice)


@router.post("/u/{token}/preferences", response_class=HTMLResponse)
async def save_preferences(
    token: str,
    state: AppStateDep,
    session: SessionDep,
    marketing: Annotated[str | None, Form()] = None,
    product: Annotated[str | None, Form()] = None,
    billing: Annotated[str | None, Form()] = None,
) -> HTMLResponse:
    """The preferences form: a checked category is subscribed, an unchecked one is not."""
    customer_id, _ = _reader(state, token)
    checked = {
        MailCategory.MARKETING: marketing is not None,
        MailCategory.PRODUCT: product is not None,
        MailCategory.BILLING: billing is not None,
    }
    # Billing stays as it is while customers cannot opt out of it.
    changes = {c: checked[c] for c in _choices(state.settings)}
    await _set(session, customer_id, changes, PREFERENCES)
    return await _page(state, session, token, "Your email preferences are saved.")
