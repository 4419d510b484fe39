"""Every shipped email template, rendered with contexts built from Stripe payloads (the
corpus, `tests/corpus.py`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from jinja2 import UndefinedError

from stripe_lifecycle.domain.events import InvoiceInfo, PaymentMethodInfo, SubscriptionInfo
from stripe_lifecycle.domain.money import format_amount
from stripe_lifecycle.domain.template_context import invoice_context as lifecycle_invoice_context
from stripe_lifecycle.intake.normalise import (
    parse_invoice,
    parse_payment_method,
    parse_subscription,
)
from stripe_lifecycle.mail import Brand, RenderedEmail, TemplateNotFound, TemplateRenderer
from stripe_lifecycle.mail.templates import describe_card, format_date
from stripe_lifecycle.settings import Settings

from . import corpus

SHIPPED = [
    "card_expiring/reminder",
    "dunning/final-notice",
    "dunning/payment-failed",
    "dunning/reminder",
    "event/notice",
    "invoice_due/reminder",
    "invoice_overdue/reminder",
    "payment_action/confirm",
    "plan_change/downgrade",
    "quote_expiring/reminder",
    "renewal/upcoming",
    "scheduled_cancel/save",
    "trial/ending",
    "trial/welcome",
    "upgrade/offer",
    "winback/cancelled",
    "winback/offer",
]

# The context contract of `stripe_lifecycle.mail.templates`: what each lifecycle provides
# (objects, its button's link, None for none) and which optional object it may add. Tests
# pass exactly this, so a template reaching for anything else fails under StrictUndefined.
REQUIRES: dict[str, tuple[tuple[str, ...], str | None, tuple[str, ...]]] = {
    "dunning/payment-failed": (("customer", "invoice"), "update_payment", ("payment_method",)),
    "dunning/reminder": (("customer", "invoice"), "update_payment", ("payment_method",)),
    "dunning/final-notice": (("customer", "invoice"), "update_payment", ("payment_method",)),
    "payment_action/confirm": (("customer", "invoice"), "update_payment", ()),
    "card_expiring/reminder": (("customer", "payment_method"), "update_payment", ()),
    "trial/welcome": (("customer", "subscription"), "update_payment", ("payment_method",)),
    "trial/ending": (("customer", "subscription"), "update_payment", ("payment_method",)),
    "winback/cancelled": (("customer", "subscription"), "survey", ()),
    "winback/offer": (("customer", "offer"), "offer", ()),
    "scheduled_cancel/save": (("customer", "subscription"), "offer", ("offer",)),
    "renewal/upcoming": (
        ("customer", "subscription", "invoice"),
        "update_payment",
        ("payment_method",),
    ),
    "plan_change/downgrade": (("customer", "subscription"), "survey", ()),
    "upgrade/offer": (("customer", "subscription", "offer"), "offer", ()),
    "invoice_due/reminder": (("customer", "invoice"), "update_payment", ("payment_method",)),
    "invoice_overdue/reminder": (("customer", "invoice"), "update_payment", ("payment_method",)),
    "quote_expiring/reminder": (("customer", "quote"), None, ()),
    "event/notice": (("customer", "event"), None, ()),
}

BRAND = Brand(
    name="Acme Analytics",
    logo_url=None,
    support_email="help@acme.example",
    primary_color="#0a7cff",
    address="500 Market St\nSan Francisco, CA 94105",
)
DAY = 86_400
TRACKED = "https://billing.acme.example/t"
UNSUBSCRIBE = f"{TRACKED}/unsub.Zk9xQ2"
LINKS = {
    "update_payment": f"{TRACKED}/pay.c2lnbmVk",
    "survey": f"{TRACKED}/survey.c3VydmV5",
    "offer": f"{TRACKED}/offer.b2ZmZXI",
}


def _object(name: str, version: str) -> dict[str, Any]:
    """`data.object` of a corpus event."""
    obj: dict[str, Any] = corpus.load(name, version)["data"]["object"]
    return obj


def invoice_context(invoice: InvoiceInfo) -> dict[str, Any]:
    assert invoice.currency is not None
    return {
        "number": invoice.number,
        "amount_due": invoice.amount_due,
        "currency": invoice.currency,
        "hosted_invoice_url": invoice.hosted_invoice_url,
        "next_payment_attempt": invoice.next_payment_attempt,
        "attempt_count": invoice.attempt_count,
    }


def subscription_context(subscription: SubscriptionInfo) -> dict[str, Any]:
    assert subscription.current_period_end is not None
    return {
        "plan": next((i.nickname for i in subscription.items if i.nickname), None),
        "amount": sum((i.unit_amount or 0) * i.quantity for i in subscription.items),
        "currency": subscription.currency,
        "current_period_end": subscription.current_period_end,
        "trial_end": subscription.trial_end,
        "cancel_at": subscription.cancel_at,
    }


def payment_method_context(payment_method: PaymentMethodInfo) -> dict[str, Any]:
    return {
        "brand": payment_method.brand,
        "last4": payment_method.last4,
        "exp_month": payment_method.exp_month,
        "exp_year": payment_method.exp_year,
    }


def quote_context(quote: Mapping[str, Any]) -> dict[str, Any]:
    """A Stripe Quote object as `quote_expiring` templates get it."""
    return {key: quote[key] for key in ("id", "number", "amount_total", "currency", "expires_at")}


def event_context(name: str, version: str) -> dict[str, Any]:
    """A corpus event as `event/notice` gets it: the event and its object in brief."""
    event = corpus.load(name, version)
    obj = event["data"]["object"]
    amount = next((obj[k] for k in ("amount_total", "amount") if obj.get(k) is not None), None)
    return {
        "type": event["type"],
        "id": event["id"],
        "object": {
            "type": obj["object"],
            "id": obj["id"],
            "amount": amount,
            "currency": obj.get("currency"),
            "status": obj.get("status"),
            "related": {k: obj[k] for k in ("charge", "subscription") if obj.get(k)},
        },
    }


def due_invoice_context(name: str, version: str, now: int | None = None) -> dict[str, Any]:
    """A due-date invoice as its lifecycle passes it, at `now` (default: the event's time)."""
    event = corpus.load(name, version)
    when = event["created"] if now is None else now
    invoice: dict[str, Any] = lifecycle_invoice_context(
        parse_invoice(event["data"]["object"]), when
    )["invoice"]
    return invoice


def fixture_objects() -> dict[str, dict[str, Any]]:
    """One of each context object, from corpus payloads (basil and clover shapes)."""
    failed = _object("invoice.payment_failed.annual", "basil")
    return {
        "customer": {"email": failed["customer_email"], "name": failed["customer_name"]},
        "invoice": invoice_context(parse_invoice(failed)),
        "payment_method": payment_method_context(
            parse_payment_method(_object("payment_method.automatically_updated", "clover"))
        ),
        "offer": {"code": "COMEBACK50", "description": "50% off your next 3 months"},
        "quote": quote_context(_object("quote.finalized", "clover")),
        "event": event_context("checkout.session.completed", "clover"),
    }


def subscription_for(name: str) -> dict[str, Any]:
    lifecycle = name.split("/")[0]
    fixture, version = {
        "trial": ("customer.subscription.created.trialing", "legacy"),
        "scheduled_cancel": ("customer.subscription.updated.cancel_at_period_end", "clover"),
        "winback": ("customer.subscription.deleted", "basil"),
    }.get(lifecycle, ("customer.subscription.created", "clover"))
    return subscription_context(parse_subscription(_object(fixture, version)))


def invoice_for(name: str) -> dict[str, Any]:
    due = {
        # Sent a week before its due date; and the day after it, unpaid.
        "invoice_due": ("invoice.will_be_due", "basil"),
        "invoice_overdue": ("invoice.overdue", "clover"),
    }.get(name.split("/")[0])
    if due is not None:
        return due_invoice_context(*due)
    fixture = {
        "payment_action": ("invoice.payment_action_required", "basil"),
        "renewal": ("invoice.upcoming", "clover"),
    }.get(name.split("/")[0])
    if fixture is None:
        return fixture_objects()["invoice"]
    return invoice_context(parse_invoice(_object(*fixture)))


def context_for(
    name: str, *, optional: bool = False, unsubscribe: str | None = None
) -> dict[str, Any]:
    """Exactly what the template's lifecycle provides (plus its optional objects if asked)."""
    required, link, optionals = REQUIRES[name]
    available = {**fixture_objects(), "subscription": subscription_for(name)}
    available["invoice"] = invoice_for(name)
    keys = required + (optionals if optional else ())
    context: dict[str, Any] = {key: available[key] for key in keys}
    context["links"] = {"unsubscribe": unsubscribe}
    if link is not None:
        context["links"][link] = LINKS[link]
    return context


def expected_amount(name: str, context: Mapping[str, Any]) -> str | None:
    """The money figure the template must show, formatted, or None if it shows none."""
    if "invoice" in context:
        return format_amount(context["invoice"]["amount_due"], context["invoice"]["currency"])
    if "quote" in context:
        return format_amount(context["quote"]["amount_total"], context["quote"]["currency"])
    if "event" in context:
        obj = context["event"]["object"]
        return format_amount(obj["amount"], obj["currency"])
    if name.split("/")[0] in {"trial", "plan_change"}:
        sub = context["subscription"]
        return format_amount(sub["amount"], sub["currency"])
    return None


@pytest.fixture(scope="module")
def renderer() -> TemplateRenderer:
    return TemplateRenderer(BRAND)


def test_names_are_exactly_the_shipped_set(renderer: TemplateRenderer) -> None:
    assert renderer.names() == SHIPPED
    assert set(REQUIRES) == set(SHIPPED)


@pytest.mark.parametrize("optional", [False, True], ids=["required-only", "with-optional"])
@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_template_renders(
    renderer: TemplateRenderer, name: str, optional: bool
) -> None:
    context = context_for(name, optional=optional)
    email = renderer.render(name, context)
    link_name = REQUIRES[name][1]

    assert email.subject
    assert email.subject == email.subject.strip()
    assert "\n" not in email.subject and "  " not in email.subject
    assert email.html.startswith("<!DOCTYPE html>")
    assert email.text.strip()

    if link_name is not None:
        # One primary call to action, in the brand colour, in both parts; in the text
        # part on a line of its own, so mail clients make it a link.
        link = LINKS[link_name]
        assert email.html.count(f'href="{link}"') == 1
        assert f'bgcolor="{BRAND.primary_color}"' in email.html
        assert f"\n{link}\n" in email.text
    else:
        # Nothing to click through to: no button, and no link but the footer's.
        assert f'bgcolor="{BRAND.primary_color}"' not in email.html
        assert TRACKED not in email.html and TRACKED not in email.text

    amount = expected_amount(name, context)
    if amount is not None:
        assert re.fullmatch(r"\$\d{1,3}(,\d{3})*\.\d\d", amount)
        assert amount in email.html
        assert amount in email.text

    customer_name = context["customer"]["name"]
    assert customer_name == "Example Customer"
    for part in (email.html, email.text):
        assert f"Hi {customer_name}," in part
        assert BRAND.support_email is not None and BRAND.support_email in part
        assert "500 Market St" in part
        assert "None" not in part
        assert "nsubscribe" not in part
    assert "San Francisco, CA 94105" in email.text
    # Email-safe HTML: a preheader, inline styles only, nothing loaded or run.
    assert 'style="display:none;' in email.html
    assert "<script" not in email.html
    assert "<link" not in email.html
    assert "<style" not in email.html


@pytest.mark.parametrize("name", SHIPPED)
def test_customer_name_is_escaped_in_html_and_verbatim_in_text(
    renderer: TemplateRenderer, name: str
) -> None:
    context = context_for(name)
    hostile = '<script>alert("hi")</script> & Co'
    context["customer"] = {**context["customer"], "name": hostile}

    email = renderer.render(name, context)

    assert "<script>" not in email.html
    assert "&lt;script&gt;alert(&#34;hi&#34;)&lt;/script&gt; &amp; Co" in email.html
    assert f"Hi {hostile}," in email.text


def test_subject_and_text_are_plain_text_not_escaped(renderer: TemplateRenderer) -> None:
    context = context_for("winback/offer")
    context["offer"] = {"code": None, "description": "Tom & Jerry's 50% <off>"}

    email = renderer.render("winback/offer", context)

    assert email.subject == "We'd love to have you back: Tom & Jerry's 50% <off>"
    assert "Tom & Jerry's 50% <off>" in email.text
    assert "Tom &amp; Jerry&#39;s 50% &lt;off&gt;" in email.html
    assert "Use code" not in email.html and "Use code" not in email.text


@pytest.mark.parametrize("name", SHIPPED)
def test_unsubscribe_link_only_when_given(renderer: TemplateRenderer, name: str) -> None:
    without = renderer.render(name, context_for(name, unsubscribe=None))
    with_link = renderer.render(name, context_for(name, unsubscribe=UNSUBSCRIBE))

    assert "nsubscribe" not in without.html and "nsubscribe" not in without.text
    assert f'href="{UNSUBSCRIBE}"' in with_link.html
    assert f"Unsubscribe: {UNSUBSCRIBE}" in with_link.text


@pytest.mark.parametrize(
    ("name", "drop", "named"),
    [
        ("dunning/payment-failed", ("invoice",), "invoice"),
        ("dunning/payment-failed", ("customer", "name"), "name"),
        ("dunning/reminder", ("links", "update_payment"), "update_payment"),
        ("trial/ending", ("subscription", "trial_end"), "trial_end"),
        ("winback/offer", ("offer",), "offer"),
        ("card_expiring/reminder", ("links", "unsubscribe"), "unsubscribe"),
        ("invoice_due/reminder", ("invoice",), "invoice"),
        ("invoice_overdue/reminder", ("links", "update_payment"), "update_payment"),
        ("quote_expiring/reminder", ("quote",), "quote"),
        ("quote_expiring/reminder", ("quote", "expires_at"), "expires_at"),
        ("event/notice", ("event",), "event"),
        ("event/notice", ("links", "unsubscribe"), "unsubscribe"),
    ],
)
def test_missing_variable_is_an_error_naming_it(
    renderer: TemplateRenderer, name: str, drop: tuple[str, ...], named: str
) -> None:
    context = context_for(name)
    if len(drop) == 1:
        del context[drop[0]]
    else:
        context[drop[0]] = {k: v for k, v in context[drop[0]].items() if k != drop[1]}

    with pytest.raises(UndefinedError, match=rf"{re.escape(name)}\..*{named}"):
        renderer.render(name, context)


def test_dunning_shows_what_happens_next(renderer: TemplateRenderer) -> None:
    context = context_for("dunning/payment-failed", optional=True)
    retry = context["invoice"]["next_payment_attempt"]
    email = renderer.render("dunning/payment-failed", context)

    assert email.subject == "We couldn't process your $249.00 payment to Acme Analytics"
    assert f"try the payment again on {format_date(retry)}" in email.text
    assert "Visa ending in 4242" in email.text
    assert "Invoice: F612594F-0002" in email.text

    # Stripe's last attempt has no next one: the copy must not promise a retry.
    last = context_for("dunning/final-notice")
    last["invoice"] = invoice_context(
        parse_invoice(_object("invoice.payment_failed.final_attempt", "legacy"))
    )
    assert last["invoice"]["next_payment_attempt"] is None
    final = renderer.render("dunning/final-notice", last)
    assert "$20.00" in final.subject
    assert "final attempt on" not in final.text
    assert "If the payment isn't made, your subscription may be cancelled" in final.text


def test_zero_decimal_currency_in_copy(renderer: TemplateRenderer) -> None:
    context = context_for("dunning/payment-failed")
    context["invoice"] = {**context["invoice"], "amount_due": 24900, "currency": "jpy"}
    email = renderer.render("dunning/payment-failed", context)
    assert "¥24,900" in email.subject
    assert "¥24,900" in email.html and "¥24,900" in email.text


def test_trial_copy_depends_on_a_card_on_file(renderer: TemplateRenderer) -> None:
    no_card = renderer.render("trial/ending", context_for("trial/ending"))
    card = renderer.render("trial/ending", context_for("trial/ending", optional=True))

    # The trialing fixture: "Cool Plan", $10.00 a month, trial ends 2025-11-17.
    assert no_card.subject == "Your Acme Analytics trial ends on November 17, 2025"
    assert "Your free trial of Cool Plan ends on November 17, 2025" in no_card.text
    assert "Add a payment method" in no_card.html and "Manage billing" not in no_card.html
    assert "we'll charge $10.00 to your Visa ending in 4242" in card.text
    assert "Manage billing" in card.html and "Add a payment method" not in card.html


def test_card_expiring_names_card_and_expiry(renderer: TemplateRenderer) -> None:
    email = renderer.render("card_expiring/reminder", context_for("card_expiring/reminder"))
    assert email.subject == "Your Visa ending in 4242 expires soon"
    assert "expires at the end of August 2030" in email.text


def test_save_offer_is_optional(renderer: TemplateRenderer) -> None:
    plain = renderer.render("scheduled_cancel/save", context_for("scheduled_cancel/save"))
    offer = renderer.render(
        "scheduled_cancel/save", context_for("scheduled_cancel/save", optional=True)
    )
    # Cleo's cancel_at_period_end subscription: ends at its period end, 2025-12-12.
    assert plain.subject == "Your Acme Analytics subscription ends on December 12, 2025"
    assert "COMEBACK50" not in plain.html and "Keep my subscription" in plain.html
    assert "COMEBACK50" in offer.html and "Use code: COMEBACK50" in offer.text


DUE = 1764590703  # Bea's Bakery's invoice 9D3E11B0-0005: due December 1, 2025, 12:05 UTC


@pytest.mark.parametrize(
    ("now", "subject_end", "copy"),
    [
        (DUE - 7 * DAY, "is due in 7 days", "is due in 7 days, on December 1, 2025."),
        (DUE - DAY, "is due tomorrow", "is due tomorrow, December 1, 2025."),
        (DUE - 3600, "is due today", "is due today, December 1, 2025."),
        # Sent late (a step after the due date): never "due in", and never a negative count.
        (DUE + 2 * DAY, "was due on December 1, 2025", "was due on December 1, 2025."),
    ],
)
def test_invoice_due_reminder_counts_days_to_the_due_date(
    renderer: TemplateRenderer, now: int, subject_end: str, copy: str
) -> None:
    context = context_for("invoice_due/reminder")
    context["invoice"] = due_invoice_context("invoice.will_be_due", "clover", now=now)
    email = renderer.render("invoice_due/reminder", context)

    assert email.subject == f"Reminder: your $60.00 invoice from Acme Analytics {subject_end}"
    assert f"your Acme Analytics invoice 9D3E11B0-0005 for $60.00 {copy}" in email.text
    assert "Due date: December 1, 2025" in email.text
    assert "Pay your invoice:" in email.text and ">Pay invoice</a>" in email.html


def test_invoice_due_reminder_without_a_count_or_a_due_date(renderer: TemplateRenderer) -> None:
    context = context_for("invoice_due/reminder")
    # As an older caller builds it: no due-date keys at all.
    context["invoice"] = invoice_context(parse_invoice(_object("invoice.will_be_due", "basil")))
    email = renderer.render("invoice_due/reminder", context)
    assert email.subject == "Reminder: your $60.00 invoice from Acme Analytics is ready to pay"
    assert "Due date" not in email.text

    # A due date but no send time to count from: the date alone.
    context["invoice"] = {**context["invoice"], "due_date": DUE}
    email = renderer.render("invoice_due/reminder", context)
    assert email.subject.endswith("is due on December 1, 2025")


def test_invoice_due_reminder_of_an_automatically_collected_invoice(
    renderer: TemplateRenderer,
) -> None:
    """An `invoice_finalized` automation may send it for an invoice Stripe charges itself."""
    context = context_for("invoice_due/reminder", optional=True)
    context["invoice"] = {**context["invoice"], "collection_method": "charge_automatically"}
    email = renderer.render("invoice_due/reminder", context)
    assert "We'll collect the payment automatically from your Visa ending in 4242" in email.text
    assert "View your invoice:" in email.text and ">View invoice</a>" in email.html
    assert "Pay invoice" not in email.html

    # Paid by hand: the card on file is not the point, and is not named.
    by_hand = renderer.render(
        "invoice_due/reminder", context_for("invoice_due/reminder", optional=True)
    )
    assert "Visa" not in by_hand.text and "You can view and pay it online" in by_hand.text


@pytest.mark.parametrize(
    ("now", "subject_end", "copy"),
    [
        (DUE + DAY, "is 1 day overdue", ": it's now 1 day overdue."),
        (DUE + 12 * DAY, "is 12 days overdue", ": it's now 12 days overdue."),
        # Past the due time the same day: overdue, but not a whole day yet.
        (DUE + 60, "is overdue", " and is still unpaid."),
    ],
)
def test_invoice_overdue_reminder_says_how_late(
    renderer: TemplateRenderer, now: int, subject_end: str, copy: str
) -> None:
    context = context_for("invoice_overdue/reminder")
    context["invoice"] = due_invoice_context("invoice.overdue", "legacy", now=now)
    email = renderer.render("invoice_overdue/reminder", context)

    assert email.subject == f"Your $60.00 invoice from Acme Analytics {subject_end}"
    assert "invoice 9D3E11B0-0005 for $60.00 was due on December 1, 2025" in email.text
    assert copy in email.text
    assert "0 days" not in email.text
    assert "write to us at help@acme.example" in email.text


def test_quote_reminder_asks_for_a_reply(renderer: TemplateRenderer) -> None:
    email = renderer.render("quote_expiring/reminder", context_for("quote_expiring/reminder"))
    # The corpus quote: QT-CORPUS-0001-1, $11.00, expiring December 9, 2025.
    assert email.subject == "Your $11.00 quote from Acme Analytics expires on December 9, 2025"
    assert "Your quote QT-CORPUS-0001-1 for $11.00 expires on December 9, 2025." in email.text
    assert (
        "To accept it, reply to this email or write to us at help@acme.example before then."
        in email.text
    )
    assert 'href="mailto:help@acme.example"' in email.html

    # A draft-like quote: no number, no amount, no expiry; a brand without a support address.
    bare = Brand("Acme", None, None, "#0a7cff", None)
    context = context_for("quote_expiring/reminder")
    context["quote"] = {**context["quote"], "number": None, "amount_total": 0, "expires_at": None}
    email = TemplateRenderer(bare).render("quote_expiring/reminder", context)
    assert email.subject == "Your quote from Acme is waiting for you"
    assert "Your quote is still open." in email.text
    assert "To accept it, reply to this email." in email.text
    assert "$0.00" not in email.text and "None" not in email.text


@pytest.mark.parametrize(
    ("fixture", "subject", "copy"),
    [
        (
            "checkout.session.completed",
            "Thanks for your order from Acme Analytics",
            "We've received your order for $20.00.",
        ),
        ("customer.created", "Welcome to Acme Analytics", "We're glad to have you with us."),
        (
            "customer.subscription.created.trialing",
            "Thanks for subscribing to Acme Analytics",
            "Your free trial of Acme Analytics has started.",
        ),
        (
            "charge.succeeded",
            "Thanks for your payment to Acme Analytics",
            "We've received your payment of $20.00.",
        ),
        (
            "charge.dispute.created",
            "About a disputed payment to Acme Analytics",
            "has been disputed with your bank or card issuer",
        ),
        (
            "price.created",
            "An update about your Acme Analytics account",
            "a recent update to your Acme Analytics account.",
        ),
    ],
)
def test_event_notice_words_what_the_event_tells(
    renderer: TemplateRenderer, fixture: str, subject: str, copy: str
) -> None:
    context = context_for("event/notice")
    context["event"] = event_context(fixture, "clover")
    email = renderer.render("event/notice", context)
    assert email.subject == subject
    assert copy in email.text
    obj = context["event"]["object"]
    if obj["amount"] and obj["currency"]:
        assert f"Amount: {format_amount(obj['amount'], obj['currency'])}" in email.text
    else:
        assert "Amount" not in email.text and "$" not in email.text


def test_event_notice_names_money_only_with_its_currency(renderer: TemplateRenderer) -> None:
    context = context_for("event/notice")
    event = context["event"]
    for obj in (
        {**event["object"], "currency": None},
        {**event["object"], "amount": None},
        None,
    ):
        context["event"] = {**event, "object": obj}
        email = renderer.render("event/notice", context)
        assert "$" not in email.text and "Amount" not in email.html
        assert "We've received your order. Thank you" in email.text


@pytest.mark.parametrize(
    "name", ["event/notice", "invoice_due/reminder", "quote_expiring/reminder"]
)
def test_brand_is_escaped_in_copy_from_shared_phrases(name: str) -> None:
    """Phrase macros live in plain-text files; their output must still be escaped in HTML."""
    brand = Brand("Acme <b>Tools</b>", None, None, "#0a7cff", None)
    email = TemplateRenderer(brand).render(name, context_for(name))
    assert "<b>" not in email.html
    assert "Acme &lt;b&gt;Tools&lt;/b&gt;" in email.html
    assert "Acme <b>Tools</b>" in email.text


def test_logo_when_set() -> None:
    branded = Brand(
        name="Acme",
        logo_url="https://cdn.acme.example/logo.png",
        support_email=None,
        primary_color="#ffd400",
        address=None,
    )
    email = TemplateRenderer(branded).render("winback/cancelled", context_for("winback/cancelled"))
    assert '<img src="https://cdn.acme.example/logo.png" alt="Acme"' in email.html
    # A light brand colour gets dark button text.
    assert "color:#1a1f36;text-decoration:none;" in email.html
    assert "Questions?" not in email.html and "Questions?" not in email.text


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_override_directory_wins_file_by_file(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "dunning/payment-failed.html",
        '{% extends "_layout.html" %}{% block content %}'
        '<p>Custom for {{ customer.name }}: <a href="{{ links.update_payment }}">Pay</a></p>'
        "{% endblock %}",
    )
    _write(tmp_path, "dunning/payment-failed.subject.txt", "Custom: {{ brand.name }}\n")
    renderer = TemplateRenderer(BRAND, templates_dir=tmp_path)
    context = context_for("dunning/payment-failed")

    email = renderer.render("dunning/payment-failed", context)

    assert email.subject == "Custom: Acme Analytics"
    assert "Custom for Example Customer" in email.html
    assert "500 Market St" in email.html  # the shipped layout still frames it
    assert "We tried to collect" in email.text  # text part not overridden: shipped one
    assert renderer.names() == SHIPPED


def test_override_directory_adds_new_templates(tmp_path: Path) -> None:
    _write(tmp_path, "dunning/vip-call.subject.txt", "Let's talk, {{ customer.name }}\n")
    _write(
        tmp_path,
        "dunning/vip-call.html",
        '{% extends "_layout.html" %}{% block content %}Call us{% endblock %}',
    )
    _write(tmp_path, "dunning/vip-call.txt", "Call us about {{ invoice.number }}")
    _write(tmp_path, "enterprise/kickoff.html", "only one part: not a template")
    _write(tmp_path, "_partials/footer.subject.txt", "x")
    _write(tmp_path, "_partials/footer.html", "x")
    _write(tmp_path, "_partials/footer.txt", "x")
    renderer = TemplateRenderer(BRAND, templates_dir=tmp_path)

    assert renderer.names() == sorted([*SHIPPED, "dunning/vip-call"])
    email = renderer.render("dunning/vip-call", context_for("dunning/payment-failed"))
    assert email.subject == "Let's talk, Example Customer"
    assert email.text == "Call us about F612594F-0002\n"
    with pytest.raises(TemplateNotFound, match="enterprise/kickoff"):
        renderer.render("enterprise/kickoff", {})


@pytest.mark.parametrize(
    "name", ["dunning/nope", "nope", "_layout", "dunning/_macros", "../etc/passwd", ""]
)
def test_unknown_template(renderer: TemplateRenderer, name: str) -> None:
    with pytest.raises(TemplateNotFound) as caught:
        renderer.render(name, {})
    assert isinstance(caught.value, LookupError)
    assert caught.value.name == name


def test_templates_dir_must_be_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="LIFECYCLE_TEMPLATES_DIR"):
        TemplateRenderer(BRAND, templates_dir=tmp_path / "missing")


def test_brand_from_settings() -> None:
    settings = Settings(
        _env_file=None,
        brand_name="Acme",
        brand_support_email="help@acme.example",
        brand_primary_color="#123456",
    )
    brand = Brand.from_settings(settings)
    assert brand == Brand(
        name="Acme",
        logo_url=None,
        support_email="help@acme.example",
        primary_color="#123456",
        address=None,
    )
    assert brand.on_primary_color == "#ffffff"


@pytest.mark.parametrize("colour", ["red", "#12345", "#1234567", "123456", "#12g456", ""])
def test_brand_colour_must_be_hex(colour: str) -> None:
    with pytest.raises(ValueError, match="LIFECYCLE_BRAND_PRIMARY_COLOR"):
        Brand(name="Acme", logo_url=None, support_email=None, primary_color=colour, address=None)


def test_brand_passed_in_context_is_ignored(renderer: TemplateRenderer) -> None:
    context = {**context_for("winback/cancelled"), "brand": {"name": "Evil Corp"}}
    email: RenderedEmail = renderer.render("winback/cancelled", context)
    assert "Evil Corp" not in email.html and "Acme Analytics" in email.subject


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1772496000, "March 3, 2026"),
        (1772495999, "March 2, 2026"),  # a second before midnight UTC
        (datetime(2026, 3, 3, 1, 0, tzinfo=timezone(timedelta(hours=5))), "March 2, 2026"),
        (datetime(2026, 3, 3, 23, 0, tzinfo=UTC), "March 3, 2026"),
        (datetime(2026, 12, 31, 12, 0), "December 31, 2026"),
        (date(2026, 1, 9), "January 9, 2026"),
    ],
)
def test_format_date(value: int | datetime | date, expected: str) -> None:
    assert format_date(value) == expected


def test_format_date_refuses_none() -> None:
    with pytest.raises(TypeError, match="date filter"):
        format_date(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("payment_method", "expected"),
    [
        ({"brand": "visa", "last4": "4242"}, "Visa ending in 4242"),
        ({"brand": "amex", "last4": "0005"}, "American Express ending in 0005"),
        ({"brand": "some_new_brand", "last4": "1111"}, "Some New Brand ending in 1111"),
        ({"brand": None, "last4": "1111"}, "card ending in 1111"),
        ({"brand": "mastercard", "last4": None}, "Mastercard"),
        (PaymentMethodInfo(id="pm_1", brand="jcb", last4="0000"), "JCB ending in 0000"),
    ],
)
def test_describe_card(payment_method: Any, expected: str) -> None:
    assert describe_card(payment_method) == expected
