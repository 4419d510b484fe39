"""Template preview: every template rendered against Stripe events of each API version
(the corpus) as its lifecycle would send it, the same email the real workflows record,
and the API that serves it."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from stripe_lifecycle.domain.events import BillingEvent, ObjectInfo, QuoteInfo
from stripe_lifecycle.domain.lifecycles import Lifecycle
from stripe_lifecycle.domain.money import format_amount
from stripe_lifecycle.intake.forwarder import ForwarderConfig, temporal_delivery
from stripe_lifecycle.intake.normalise import normalise_event
from stripe_lifecycle.mail import Brand, TemplateRenderer
from stripe_lifecycle.mail import preview as preview_module
from stripe_lifecycle.mail.preview import (
    DEFAULT_SAMPLES,
    SAMPLE_CREATED,
    SAMPLE_CUSTOMER_EMAIL,
    SAMPLE_CUSTOMER_NAME,
    SAMPLE_EVENTS,
    SAMPLE_OFFER,
    PreviewError,
    UnknownTemplate,
    build_context,
    default_sample,
    find_automation,
    lifecycle_of,
    render_preview,
    sample_event,
)
from stripe_lifecycle.mail.templates import load_checked_automations
from stripe_lifecycle.settings import Settings

from . import corpus
from .conftest import ADMIN_KEY, LINK_SECRET, SUPPORT_KEY, WorkerRig, app_settings, free_port
from .conftest import running_api as running_app
from .events import customer_event, subscription_event, unique_customer_id
from .workflow_helpers import DAY, eventually

PUBLIC = "https://billing.acme.example"
BRAND = Brand(
    name="Acme Analytics",
    logo_url=None,
    support_email="help@acme.example",
    primary_color="#0a7cff",
    address="500 Market St\nSan Francisco, CA 94105",
)
RENDERER = TemplateRenderer(BRAND)

# Corpus events for each lifecycle, previewed in every API version they exist in.
FIXTURES: dict[str, list[str]] = {
    "dunning": [
        "invoice.payment_failed",
        "invoice.payment_failed.final_attempt",
        "invoice.payment_failed.annual",
    ],
    "payment_action": ["invoice.payment_action_required"],
    "trial": [
        "customer.subscription.created.trialing",
        "customer.subscription.trial_will_end",
        "customer.subscription.updated.trial_end_moved",
    ],
    "winback": ["customer.subscription.deleted", "customer.subscription.deleted.payment_failed"],
    "scheduled_cancel": ["customer.subscription.updated.cancel_at_period_end"],
    "renewal": ["invoice.upcoming"],
    "card_expiring": [
        "customer.source.expiring",
        "customer.source.expiring.receiver_source",
        "payment_method.attached",
        "payment_method.automatically_updated",
    ],
    "plan_change": ["customer.subscription.updated.plan_change"],
    "upgrade": ["customer.subscription.updated.renewal", "customer.subscription.created"],
    # Bea's Bakery's invoice, sent with a due date: finalized, a week before it, overdue.
    "invoice_due": ["invoice.will_be_due", "invoice.finalized.send_invoice"],
    "invoice_overdue": ["invoice.overdue", "invoice.finalized.send_invoice"],
    "invoice_finalized": ["invoice.finalized", "invoice.finalized.send_invoice"],
    # Quotes exist since basil.
    "quote_expiring": ["quote.finalized"],
    # Any event at all: an order, a dispute (of no customer), a new customer and
    # subscription, a refund, an object with no money and no customer.
    "event": [
        "checkout.session.completed",
        "charge.dispute.created",
        "customer.created",
        "customer.subscription.created",
        "charge.refunded",
        "price.created",
    ],
}

# The button of each shipped template (the contract table in mail/templates.py).
BUTTON: dict[str, str | None] = {
    "dunning/payment-failed": "update_payment",
    "dunning/reminder": "update_payment",
    "dunning/final-notice": "update_payment",
    "payment_action/confirm": "update_payment",
    "card_expiring/reminder": "update_payment",
    "trial/welcome": "update_payment",
    "trial/ending": "update_payment",
    "winback/cancelled": "survey",
    "winback/offer": "offer",
    "scheduled_cancel/save": "offer",
    "renewal/upcoming": "update_payment",
    "plan_change/downgrade": "survey",
    "upgrade/offer": "offer",
    "invoice_due/reminder": "update_payment",
    "invoice_overdue/reminder": "update_payment",
    "quote_expiring/reminder": None,
    "event/notice": None,
}

# Which amount a template shows: the invoice's amount due, or the subscription's price.
AMOUNT_OF = {
    "dunning/payment-failed": "invoice",
    "dunning/reminder": "invoice",
    "dunning/final-notice": "invoice",
    "payment_action/confirm": "invoice",
    "renewal/upcoming": "invoice",
    "trial/welcome": "subscription",
    "trial/ending": "subscription",
    "plan_change/downgrade": "subscription",
    "invoice_due/reminder": "invoice",
    "invoice_overdue/reminder": "invoice",
    "quote_expiring/reminder": "quote",
}
AMOUNT_FIELD = {"invoice": "amount_due", "subscription": "amount", "quote": "amount_total"}

# What one event cannot tell, by lifecycle: anything else filled with a sample value means
# the preview ignored what the event carries.
MAY_BE_SAMPLED = {"customer", "offer"}
ALSO_SAMPLED = {
    # An upcoming invoice names its subscription but does not carry it.
    "renewal": {"subscription"},
    # Product usage comes from the business's app, never from a Stripe event.
    "upgrade": {"usage"},
}
# A Source that is a bank account (ACH credit transfer), not a card: no expiry.
SAMPLED_CARD = {"customer.source.expiring.receiver_source"}
INVOICE_PREVIEWS = ("dunning", "payment_action", "invoice_due", "invoice_overdue")


def unread(template: str, event: dict[str, Any]) -> set[str]:
    """What the normaliser does not read yet from this event, so the preview fills it in:
    the quote of a quote event, the summary of an event's object (issue 13 extends
    `intake/normalise.py` to read both; then this is empty)."""
    obj = event["data"]["object"]
    # A dispute names no customer; the preview gives it a sample one.
    billing = normalise_event(
        {**event, "data": {"object": {**obj, "customer": obj.get("customer") or "cus_x"}}}
    )
    assert billing is not None
    lifecycle = lifecycle_of(template)
    if lifecycle == Lifecycle.QUOTE_EXPIRING and billing.quote is None:
        return {"quote"}
    if lifecycle == Lifecycle.EVENT and billing.object is None:
        return {"event.object"}
    return set()


def allowed_samples(template: str, event: dict[str, Any]) -> set[str]:
    return (
        MAY_BE_SAMPLED | ALSO_SAMPLED.get(lifecycle_of(template), set()) | unread(template, event)
    )


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def hrefs(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.hrefs


CASES = [
    pytest.param(template, name, version, id=f"{template}<-{name}@{version}")
    for template in RENDERER.names()
    for name in FIXTURES.get(lifecycle_of(template), [])
    for version in corpus.available(name)
]


def test_every_shipped_template_has_real_events_to_preview_with() -> None:
    names = RENDERER.names()
    assert set(names) == set(BUTTON)
    # Every lifecycle previews with a sample event, also those without a shipped template
    # (`invoice_finalized`: its automations send templates of your own).
    assert set(DEFAULT_SAMPLES) == set(FIXTURES) == set(Lifecycle)
    assert {lifecycle_of(n) for n in names} <= set(FIXTURES)


@pytest.mark.parametrize(("template", "fixture", "version"), CASES)
def test_every_template_renders_against_real_events(
    template: str, fixture: str, version: str
) -> None:
    event = corpus.load(fixture, version)
    preview = render_preview(RENDERER, template, event, public_url=PUBLIC)
    email = preview.email
    assert email.subject.strip() and "\n" not in email.subject
    assert email.html.strip().startswith("<!DOCTYPE html>")
    assert email.text.strip()
    assert preview.event_type == event["type"]

    # Every link to us in the HTML is in the text part too, the button's among them.
    ours = [h for h in hrefs(email.html) if h.startswith(PUBLIC)]
    button = BUTTON[template]
    if button is not None:
        assert f"{PUBLIC}/t/preview-{button}" in ours
    else:
        assert not [h for h in ours if h.startswith(f"{PUBLIC}/t/")]
    for href in ours:
        assert href in email.text, href
    assert all(h.startswith((PUBLIC, "mailto:")) for h in hrefs(email.html))

    for part in (email.subject, email.html, email.text):
        assert not re.search(r"\bNone\b", part)
        assert "undefined" not in part.lower()
        assert "{{" not in part and "{%" not in part

    # Amounts in minor units reach the copy formatted with their currency.
    context = build_context(template, event, public_url=PUBLIC).context
    if template in AMOUNT_OF:
        source = context[AMOUNT_OF[template]]
        money = format_amount(source[AMOUNT_FIELD[AMOUNT_OF[template]]], source["currency"])
        assert money in email.text and money in email.html
    if template == "event/notice":
        obj = context["event"]["object"]
        assert context["event"]["type"] == event["type"]
        assert obj["type"] == event["data"]["object"]["object"]
        if obj["amount"] and obj["currency"]:
            money = format_amount(obj["amount"], obj["currency"])
            assert money in email.text and money in email.html
        else:
            assert "Amount" not in email.text
    assert not re.search(r"\b\d{3,}\s*(usd|eur|gbp)\b", email.text, re.IGNORECASE)

    # What the event carries is used, not replaced by samples.
    allowed = allowed_samples(template, event)
    if fixture in SAMPLED_CARD:
        allowed |= {"payment_method"}
    assert set(preview.samples) <= allowed, preview.samples
    obj = event["data"]["object"]
    if obj["object"] == "invoice" and lifecycle_of(template) in INVOICE_PREVIEWS:
        assert context["invoice"]["amount_due"] == obj["amount_due"]
        assert context["invoice"]["number"] == obj.get("number")
        assert context["invoice"]["due_date"] == obj.get("due_date")
    if obj["object"] == "quote" and "quote" not in preview.samples:
        assert context["quote"]["number"] == obj["number"]
        assert context["quote"]["expires_at"] == obj["expires_at"]


def test_failed_invoice_preview_shows_the_event_and_names_the_samples() -> None:
    event = corpus.load("invoice.payment_failed", "clover")
    preview = render_preview(RENDERER, "dunning/payment-failed", event, public_url=PUBLIC)
    assert preview.email.subject == "We couldn't process your $20.00 payment to Acme Analytics"
    # The invoice event names no customer: a sample one, said so.
    assert f"Hi {SAMPLE_CUSTOMER_NAME}," in preview.email.text
    assert list(preview.samples) == ["customer"]
    assert "invoice.payment_failed" in preview.samples["customer"]
    # Billing mail carries no unsubscribe link (LIFECYCLE_UNSUBSCRIBE_BILLING is off).
    assert preview.links == {
        "unsubscribe": None,
        "update_payment": f"{PUBLIC}/t/preview-update_payment",
    }
    assert "Unsubscribe" not in preview.email.text
    with_billing = render_preview(
        RENDERER, "dunning/payment-failed", event, public_url=PUBLIC, unsubscribe_billing=True
    )
    assert f"Unsubscribe: {PUBLIC}/u/preview" in with_billing.email.text


def test_customer_event_gives_the_real_customer_and_a_sample_invoice() -> None:
    event = corpus.event("customer.updated", "clover", "cus_Real1", created=1_700_000_000)
    event["data"]["object"].update({"name": "Grace Hopper", "email": "grace@navy.example"})
    context = build_context("dunning/reminder", event, public_url=PUBLIC)
    assert context.context["customer"] == {"email": "grace@navy.example", "name": "Grace Hopper"}
    assert list(context.samples) == ["invoice"]
    preview = render_preview(RENDERER, "dunning/reminder", event, public_url=PUBLIC)
    assert "Hi Grace Hopper," in preview.email.text


def test_trial_preview_uses_the_subscription_of_the_event() -> None:
    event = corpus.load("customer.subscription.created.trialing", "clover")
    email = render_preview(RENDERER, "trial/ending", event, public_url=PUBLIC).email
    assert email.subject == "Your Acme Analytics trial ends on November 17, 2025"
    assert "Cool Plan" in email.text and "$10.00" in email.text
    # No card in the event: the copy asks for one, as the real trial email would.
    assert "Add a payment method" in email.text


def test_trial_template_with_an_event_outside_a_trial_fills_the_date_and_says_so() -> None:
    event = corpus.load("customer.subscription.deleted", "clover")
    preview = render_preview(RENDERER, "trial/ending", event, public_url=PUBLIC)
    assert "subscription.trial_end" in preview.samples
    assert "sub_CorpusCleoPro" in preview.samples["subscription.trial_end"]
    # 14 days after the event (December 12, 2025).
    assert "December 26, 2025" in preview.email.subject


def test_card_expiring_uses_the_card_of_the_event_or_a_marked_sample() -> None:
    event = corpus.load("payment_method.attached", "clover")
    preview = render_preview(RENDERER, "card_expiring/reminder", event, public_url=PUBLIC)
    assert preview.email.subject == "Your Visa ending in 4242 expires soon"
    assert "at the end of March 2026" in preview.email.text
    assert "payment_method" not in preview.samples

    # A bank-account Source of no customer: both filled in, both said.
    source = corpus.load("customer.source.expiring.receiver_source", "clover")
    sampled = render_preview(RENDERER, "card_expiring/reminder", source, public_url=PUBLIC)
    assert set(sampled.samples) == {"customer", "payment_method"}
    assert sampled.email.subject == "Your Visa ending in 4242 expires soon"


def test_offer_comes_from_the_automation_else_a_marked_sample() -> None:
    event = corpus.load("customer.subscription.deleted", "clover")
    sample = render_preview(RENDERER, "winback/offer", event, public_url=PUBLIC)
    assert SAMPLE_OFFER.description in sample.email.subject
    assert "offer" in sample.samples

    _, automations = load_checked_automations(Settings())
    voluntary = find_automation(automations, "winback-voluntary")
    assert voluntary.offer is not None
    real = render_preview(RENDERER, "winback/offer", event, public_url=PUBLIC, automation=voluntary)
    assert voluntary.offer.description in real.email.text
    assert SAMPLE_OFFER.description not in real.email.text
    assert "offer" not in real.samples
    # Win-back mail is marketing: it carries an unsubscribe link.
    assert f"{PUBLIC}/u/preview" in hrefs(real.email.html)

    with pytest.raises(PreviewError, match="winback-voluntary is a winback automation"):
        build_context("trial/welcome", event, public_url=PUBLIC, automation=voluntary)
    with pytest.raises(PreviewError, match="no automation 'nope'; known automations: .*trial"):
        find_automation(automations, "nope")


def test_invoice_without_hosted_page_still_links_to_a_way_to_pay() -> None:
    """The real lifecycle sends the Customer Portal instead: nothing to stand in for."""
    event = corpus.load("invoice.payment_failed", "clover")
    event["data"]["object"]["hosted_invoice_url"] = None
    preview = render_preview(RENDERER, "dunning/payment-failed", event, public_url=PUBLIC)
    assert "links.update_payment" not in preview.samples
    assert f"{PUBLIC}/t/preview-update_payment" in preview.email.text


def test_due_date_reminders_count_days_from_the_event() -> None:
    # Stripe's reminder a week before the due date (December 1, 2025), and its overdue
    # notice the day after.
    due = render_preview(
        RENDERER,
        "invoice_due/reminder",
        corpus.load("invoice.will_be_due", "basil"),
        public_url=PUBLIC,
    )
    assert due.email.subject == "Reminder: your $60.00 invoice from Acme Analytics is due in 7 days"
    assert "is due in 7 days, on December 1, 2025." in due.email.text
    assert f"Pay your invoice:\n{PUBLIC}/t/preview-update_payment\n" in due.email.text
    overdue = render_preview(
        RENDERER,
        "invoice_overdue/reminder",
        corpus.load("invoice.overdue", "legacy"),
        public_url=PUBLIC,
    )
    assert overdue.email.subject == "Your $60.00 invoice from Acme Analytics is 1 day overdue"
    assert "was due on December 1, 2025 and is still unpaid: it's now 1 day overdue." in (
        overdue.email.text
    )
    assert set(due.samples) == set(overdue.samples) == {"customer"}


def test_invoice_without_a_due_date_is_previewed_as_sent_with_one_and_says_so() -> None:
    # Collected automatically, no due date: the due-date lifecycles never start for it.
    failed = corpus.load("invoice.payment_failed", "clover")
    preview = render_preview(RENDERER, "invoice_due/reminder", failed, public_url=PUBLIC)
    assert set(preview.samples) == {"customer", "invoice.due_date"}
    assert "charge_automatically" in preview.samples["invoice.due_date"]
    # Three days after the event (November 20, 2025), paid by hand.
    assert "is due in 3 days, on November 23, 2025" in preview.email.text
    assert "You can view and pay it online" in preview.email.text

    # No invoice at all: a sample one, sent with a due date, said so.
    customer = corpus.event("customer.updated", "clover", "cus_Real1", created=SAMPLE_CREATED)
    context = build_context("invoice_overdue/reminder", customer, public_url=PUBLIC)
    assert list(context.samples) == ["invoice"]
    invoice = context.context["invoice"]
    assert invoice["collection_method"] == "send_invoice"
    assert invoice["due_date"] == SAMPLE_CREATED - 2 * DAY
    assert invoice["days_overdue"] == 2


@pytest.mark.parametrize(
    ("template", "billing_mail"),
    [
        ("invoice_due/reminder", True),
        ("invoice_overdue/reminder", True),
        ("quote_expiring/reminder", False),
        ("event/notice", False),
    ],
)
def test_unsubscribe_link_follows_the_mail_category(template: str, billing_mail: bool) -> None:
    """Invoice reminders are billing mail (no opt-out unless LIFECYCLE_UNSUBSCRIBE_BILLING);
    quote reminders and event notices are product mail."""
    event = sample_event(default_sample(template))
    plain = render_preview(RENDERER, template, event, public_url=PUBLIC)
    opted = render_preview(RENDERER, template, event, public_url=PUBLIC, unsubscribe_billing=True)
    unsubscribe = f"{PUBLIC}/u/preview"
    assert plain.links["unsubscribe"] == (None if billing_mail else unsubscribe)
    assert (f"Unsubscribe: {unsubscribe}" in plain.email.text) is not billing_mail
    assert opted.links["unsubscribe"] == unsubscribe
    assert f"Unsubscribe: {unsubscribe}" in opted.email.text


def _normalised_with(monkeypatch: pytest.MonkeyPatch, **fields: Any) -> None:
    """The preview's normaliser, adding what `intake/normalise.py` is to read."""

    def normalise(raw: dict[str, Any]) -> BillingEvent | None:
        billing = normalise_event(raw)
        if billing is not None:
            for name, value in fields.items():
                setattr(billing, name, value)
        return billing

    monkeypatch.setattr(preview_module, "normalise_event", normalise)


def test_quote_preview_uses_the_quote_of_the_event(monkeypatch: pytest.MonkeyPatch) -> None:
    event = corpus.load("quote.finalized", "clover")
    obj = event["data"]["object"]
    quote = QuoteInfo(
        id=obj["id"],
        customer_id=obj["customer"],
        status=obj["status"],
        expires_at=obj["expires_at"],
        amount_total=obj["amount_total"],
        currency=obj["currency"],
        number=obj["number"],
    )
    _normalised_with(monkeypatch, quote=quote)
    preview = render_preview(RENDERER, "quote_expiring/reminder", event, public_url=PUBLIC)
    assert set(preview.samples) == {"customer"}
    assert (
        preview.email.subject == "Your $11.00 quote from Acme Analytics expires on December 9, 2025"
    )
    assert "Quote: QT-CORPUS-0001-1" in preview.email.text
    assert preview.links == {"unsubscribe": f"{PUBLIC}/u/preview"}

    # A quote with no expiry (a draft): filled in and said.
    _normalised_with(monkeypatch, quote=QuoteInfo(id="qt_1", number="QT-1", amount_total=500))
    undated = render_preview(RENDERER, "quote_expiring/reminder", event, public_url=PUBLIC)
    assert "quote.expires_at" in undated.samples and "qt_1" in undated.samples["quote.expires_at"]


def test_quote_preview_of_another_event_uses_a_marked_sample_quote() -> None:
    event = corpus.load("customer.created", "clover")
    preview = render_preview(RENDERER, "quote_expiring/reminder", event, public_url=PUBLIC)
    assert set(preview.samples) == {"quote"}
    assert "Hi Ada Lovelace," in preview.email.text
    assert "QT-SAMPLE-0001-1" in preview.email.text


def test_event_notice_uses_the_object_of_the_event(monkeypatch: pytest.MonkeyPatch) -> None:
    event = corpus.load("charge.dispute.created", "clover")
    summary = ObjectInfo(
        type="dispute",
        id="dp_CorpusBen0001",
        amount=2000,
        currency="usd",
        status="needs_response",
        related={"charge": "ch_CorpusBen0001"},
    )
    _normalised_with(monkeypatch, object=summary)
    built = build_context("event/notice", event, public_url=PUBLIC)
    assert built.context["event"] == {
        "type": "charge.dispute.created",
        "id": event["id"],
        "object": {
            "type": "dispute",
            "id": "dp_CorpusBen0001",
            "amount": 2000,
            "currency": "usd",
            "status": "needs_response",
            "related": {"charge": "ch_CorpusBen0001"},
        },
    }
    # A dispute names no customer (only its charge does): a sample one, said.
    assert set(built.samples) == {"customer"}
    assert built.destinations == []
    preview = render_preview(RENDERER, "event/notice", event, public_url=PUBLIC)
    assert preview.email.subject == "About a disputed payment to Acme Analytics"
    assert "Amount: $20.00" in preview.email.text


def test_event_notice_previews_any_event_without_guessing_its_money() -> None:
    # A charge is refused by the invoice templates but starts an event sequence.
    event = corpus.load("charge.succeeded", "clover")
    preview = render_preview(RENDERER, "event/notice", event, public_url=PUBLIC)
    assert preview.email.subject == "Thanks for your payment to Acme Analytics"
    if "event.object" in preview.samples:
        # Not summarised by the normaliser: no amount rather than a made-up one.
        assert "We've received your payment. Thank you." in preview.email.text
        assert "$" not in preview.email.text
    else:
        assert "We've received your payment of $20.00." in preview.email.text


@pytest.mark.parametrize("name", ["dunning/nope", "dunning", "../dunning/reminder", "x/y/z"])
def test_unknown_template_names_the_known_ones(name: str) -> None:
    event = corpus.load("invoice.payment_failed", "clover")
    with pytest.raises(UnknownTemplate) as raised:
        render_preview(RENDERER, name, event, public_url=PUBLIC)
    assert raised.value.known == RENDERER.names()
    assert "dunning/payment-failed" in str(raised.value) and "winback/offer" in str(raised.value)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (corpus.load("charge.succeeded", "clover"), "carries a charge"),
        ({"hello": "world"}, "not a Stripe event"),
        ({"type": "invoice.paid", "data": {"object": "in_1"}}, "not a Stripe event"),
    ],
)
def test_events_without_billing_objects_are_refused(event: dict[str, Any], message: str) -> None:
    with pytest.raises(PreviewError, match=message):
        render_preview(RENDERER, "dunning/payment-failed", event, public_url=PUBLIC)


def test_override_templates_are_previewed(tmp_path: Path) -> None:
    folder = tmp_path / "winback"
    folder.mkdir()
    (folder / "offer.subject.txt").write_text("Come back, {{ customer.name }}")
    renderer = TemplateRenderer(BRAND, tmp_path)
    event = corpus.load("customer.subscription.deleted", "clover")
    preview = render_preview(renderer, "winback/offer", event, public_url=PUBLIC)
    assert preview.email.subject == f"Come back, {SAMPLE_CUSTOMER_NAME}"


def test_every_sample_event_is_complete_for_its_lifecycle() -> None:
    for name in SAMPLE_EVENTS:
        event = sample_event(name)
        assert event is not sample_event(name)  # a fresh copy each time
        assert normalise_event(event) is not None, name
    for template in RENDERER.names():
        preview = render_preview(
            RENDERER, template, sample_event(default_sample(template)), public_url=PUBLIC
        )
        # Only what no single Stripe event carries is a sample.
        allowed = allowed_samples(template, sample_event(default_sample(template)))
        assert set(preview.samples) <= allowed, (template, preview.samples)
        assert preview.email.subject and preview.email.text
    with pytest.raises(PreviewError, match="sample events: invoice.payment_failed"):
        sample_event("invoice.nope")


# --- The same email as the real workflows -----------------------------------------------


def _without_links(text: str, public_url: str) -> str:
    return re.sub(re.escape(public_url) + r"/[tu]/\S+", "<link>", text)


@pytest.mark.parametrize(
    ("template", "workflow_prefix"),
    [("dunning/payment-failed", "dunning"), ("trial/welcome", "trial")],
)
async def test_preview_is_the_email_the_real_lifecycle_records(
    dev_rig: WorkerRig, template: str, workflow_prefix: str
) -> None:
    """Guards the copies of the workflows' context building in mail/preview.py."""
    now = int(time.time())
    cus = unique_customer_id()
    sub = f"sub_{cus[4:]}"
    if workflow_prefix == "dunning":
        invoice_id = f"in_{uuid.uuid4().hex[:14]}"
        trigger = corpus.event(
            "invoice.payment_failed",
            "legacy",
            cus,
            created=now,
            id=invoice_id,
            subscription=sub,
            next_payment_attempt=now + 3 * DAY,
        )
        workflow_id = f"dunning-{invoice_id}"
    else:
        trigger = subscription_event(
            cus,
            created=now,
            sub_id=sub,
            status="trialing",
            type_="customer.subscription.created",
            trial_end=now + 14 * DAY,
        )
        workflow_id = f"trial-{sub}"
    # The real customer is the preview's sample one, so the two emails can be compared.
    customer = customer_event(cus, SAMPLE_CUSTOMER_EMAIL, created=now - 5, type_="customer.created")
    customer["data"]["object"]["name"] = SAMPLE_CUSTOMER_NAME

    settings = Settings(
        database_url=dev_rig.database_url, task_queue=dev_rig.task_queue, link_secret=LINK_SECRET
    )
    deliver = temporal_delivery(dev_rig.env.client, ForwarderConfig(task_queue=dev_rig.task_queue))
    async with dev_rig.worker():
        for raw in (customer, trigger):
            event = normalise_event(raw)
            assert event is not None
            await deliver(event.customer_id, [event])

        async def recorded() -> bool:
            return [m.template for m in await dev_rig.messages(workflow_id)] == [template]

        await eventually(recorded, f"the {template} email of {workflow_id}")
    [message] = await dev_rig.messages(workflow_id)

    renderer = TemplateRenderer(Brand.from_settings(settings), settings.templates_dir)
    preview = render_preview(renderer, template, trigger, public_url=settings.public_url)
    assert preview.samples == {"customer": preview.samples["customer"]}
    assert preview.email.subject == message.subject
    url = settings.public_url
    assert _without_links(preview.email.text, url) == _without_links(message.text or "", url)
    assert _without_links(preview.email.html, url) == _without_links(message.html or "", url)
    tracked = {name for name, link in preview.links.items() if link and name != "unsubscribe"}
    assert tracked == set(message.destinations or {})


# --- API ------------------------------------------------------------------------------


@pytest.fixture
async def api(sqlite_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    # Temporal is not needed: the app's client is lazy, so an unused port will do.
    settings = app_settings(
        sqlite_url,
        f"127.0.0.1:{free_port()}",
        "tq-templates",
        public_url=PUBLIC,
        brand_name="Acme <Tools>",
    )
    async with running_app(settings) as running:
        yield running


SUPPORT = {"Authorization": f"Bearer {SUPPORT_KEY}"}


async def test_api_lists_templates_with_their_sample_events(
    api: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, http = api
    assert (await http.get("/v1/templates")).status_code == 401
    bad = {"Authorization": "Bearer nope"}
    assert (await http.get("/v1/templates", headers=bad)).status_code == 401
    answer = await http.get("/v1/templates", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert answer.status_code == 200
    body = answer.json()
    assert [t["name"] for t in body["templates"]] == RENDERER.names()
    assert {
        "name": "dunning/payment-failed",
        "lifecycle": "dunning",
        "sample_event": "invoice.payment_failed",
    } in body["templates"]
    assert body["sample_events"] == list(SAMPLE_EVENTS)


async def test_api_preview_of_a_sample_event_as_json_html_and_text(
    api: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, http = api
    path = "/v1/templates/dunning/payment-failed/preview"
    assert (await http.get(path)).status_code == 401

    answer = await http.get(path, headers=SUPPORT)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["template"] == "dunning/payment-failed"
    assert body["event_type"] == "invoice.payment_failed"
    assert body["subject"] == "We couldn't process your $49.00 payment to Acme <Tools>"
    assert "Acme &lt;Tools&gt;" in body["html"]  # the brand is escaped in HTML only
    assert body["links"]["update_payment"] == f"{PUBLIC}/t/preview-update_payment"
    assert set(body["samples"]) == {"customer"}

    page = await http.get(path, params={"format": "html"}, headers=SUPPORT)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.text == body["html"]
    assert "customer:" in page.headers["x-preview-samples"]
    assert "default-src 'none'" in page.headers["content-security-policy"]

    text = await http.get(path, params={"format": "text"}, headers=SUPPORT)
    assert text.headers["content-type"].startswith("text/plain")
    assert text.text == f"Subject: {body['subject']}\n\n{body['text']}"

    other = await http.get(
        path, params={"fixture": "customer.subscription.created"}, headers=SUPPORT
    )
    assert other.status_code == 200
    assert set(other.json()["samples"]) == {"customer", "invoice"}


async def test_api_preview_with_the_event_in_the_body(
    api: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, http = api
    event = corpus.load("customer.subscription.deleted", "clover")
    path = "/v1/templates/winback/offer/preview"
    assert (await http.post(path, json=event)).status_code == 401
    answer = await http.post(
        path, json=event, params={"automation": "winback-voluntary"}, headers=SUPPORT
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert "Your account and data are still here" in body["text"]
    assert body["links"]["unsubscribe"] == f"{PUBLIC}/u/preview"
    assert set(body["samples"]) == {"customer"}

    charge = corpus.load("charge.succeeded", "clover")
    refused = await http.post(path, json=charge, headers=SUPPORT)
    assert refused.status_code == 422
    assert "carries a charge" in refused.json()["detail"][0]["msg"]
    wrong = await http.post(path, json=event, params={"automation": "nope"}, headers=SUPPORT)
    assert wrong.status_code == 422
    assert "known automations" in wrong.json()["detail"][0]["msg"]


async def test_api_preview_unknown_template_or_sample(
    api: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, http = api
    missing = await http.get("/v1/templates/dunning/nope/preview", headers=SUPPORT)
    assert missing.status_code == 404
    assert "dunning/payment-failed" in missing.json()["detail"]
    assert (await http.get("/v1/templates/nope/preview", headers=SUPPORT)).status_code == 404
    event = corpus.load("invoice.payment_failed", "clover")
    posted = await http.post("/v1/templates/dunning/nope/preview", json=event, headers=SUPPORT)
    assert posted.status_code == 404
    unknown = await http.get(
        "/v1/templates/dunning/reminder/preview",
        params={"fixture": "invoice.nope"},
        headers=SUPPORT,
    )
    assert unknown.status_code == 422
    assert "invoice.payment_failed" in unknown.json()["detail"][0]["msg"]
    bad_format = await http.get(
        "/v1/templates/dunning/reminder/preview", params={"format": "pdf"}, headers=SUPPORT
    )
    assert bad_format.status_code == 422
