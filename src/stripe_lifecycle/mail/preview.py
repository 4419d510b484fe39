"""Template preview: a template rendered against a Stripe event, as its lifecycle would send it.

A marketer gives a template name and a Stripe event (a captured webhook, or one of the
small sample events below) and sees the subject, HTML and text the customer would get.
The context is built the way the real lifecycle builds it:

- invoice lifecycles (`dunning`, `payment_action`, `invoice_due`, `invoice_overdue`,
  `invoice_finalized`): the invoice of the event, through `template_context.step_context`,
  the function the lifecycle engine itself calls; the due-date ones at the time of the
  event (how many days until or past the due date);
- `quote_expiring`: the quote of the event (`BillingEvent.quote`); `event`: the event and
  its object in brief (`BillingEvent.object`), for an event of any type;
- subscription and card lifecycles: the event is applied to a `CustomerLedger`, as the
  customer workflow does, and the template objects are built from its snapshot by the
  functions of `template_context` the workflows use;
- links: the lifecycle's links (`domain/lifecycles.LINKS`), as the engine passes them.

The email is then composed as the `send_email` activity composes it (`mail/compose.py`:
the same links, the same unsubscribe rule), with tracked links at
`{public_url}/t/preview-<link>` and the unsubscribe link (where the real email has one) at
`{public_url}/u/preview`: no signature, so the real endpoints answer them with a 404.

What one event cannot tell (the customer's name on an invoice event, the subscription of
an upcoming invoice, a trial end on a subscription that has none) is filled with sample
values, and each is named in `Preview.samples`. Without an event of their own, previews
use the sample events of `samples/events.json`: small hand-written events in the current
API shape (periods on subscription items, invoices reaching their subscription through
`parent`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from jinja2 import UndefinedError

from stripe_lifecycle.domain.automations import Automation, Offer
from stripe_lifecycle.domain.events import (
    BillingEvent,
    CustomerInfo,
    InvoiceInfo,
    ObjectInfo,
    PaymentMethodInfo,
    QuoteInfo,
    SubscriptionInfo,
    SubscriptionItemInfo,
)
from stripe_lifecycle.domain.ledger import CustomerLedger, new_state
from stripe_lifecycle.domain.lifecycles import (
    BILLED_INVOICE_LIFECYCLES,
    INVOICE_LIFECYCLES,
    LINKS,
    Lifecycle,
)
from stripe_lifecycle.domain.rules import subscription_of
from stripe_lifecycle.domain.template_context import (
    card_context,
    event_context,
    quote_context,
    step_context,
    step_destinations,
    subscription_context,
)
from stripe_lifecycle.intake.normalise import PAYMENT_METHOD_OBJECTS, normalise_event
from stripe_lifecycle.mail.compose import PreviewLinks, compose_email
from stripe_lifecycle.mail.templates import RenderedEmail, TemplateRenderer

DAY = 86_400
LINK_NAMES = ("update_payment", "survey", "offer")
# The status of a sample subscription by lifecycle (otherwise active).
_SAMPLE_STATUSES: dict[str, str] = {Lifecycle.TRIAL: "trialing", Lifecycle.WINBACK: "canceled"}
PREVIEW_OBJECTS = frozenset({"invoice", "subscription", "customer", *PAYMENT_METHOD_OBJECTS})
# Lifecycles that start only for an invoice sent with a due date (`send_invoice`): an
# event's invoice without one is previewed with one, and says so.
_DUE_DATE_LIFECYCLES = (Lifecycle.INVOICE_DUE, Lifecycle.INVOICE_OVERDUE)
# Where a sample invoice's due date falls from the event, by lifecycle (days): a reminder
# before it, an overdue notice after it, 30 days' terms for a finalized invoice.
_SAMPLE_DUE_IN_DAYS: dict[str, int] = {
    Lifecycle.INVOICE_DUE: 3,
    Lifecycle.INVOICE_OVERDUE: -2,
    Lifecycle.INVOICE_FINALIZED: 30,
}

SAMPLE_CUSTOMER_ID = "cus_sample"
SAMPLE_CUSTOMER_NAME = "Ada Lovelace"
SAMPLE_CUSTOMER_EMAIL = "ada.lovelace@example.com"
SAMPLE_OFFER = Offer(description="30% off for 3 months", code="SAMPLE30", next_plan="Pro")
# What an upgrade offer names of the customer's usage (the app reports it through
# `POST /v1/customers/{id}/usage`; seats against the plan's limit).
SAMPLE_USAGE = {"metrics": {"seats_used": 9}, "seats_used": 9, "seat_limit": 10, "seat_usage": 0.9}
# 2026-03-02 09:00 UTC: the sample events' `created`, so their dates stay the same.
SAMPLE_CREATED = 1_772_442_000


class PreviewError(ValueError):
    """The event (or automation) cannot be previewed with that template; says why."""


class UnknownTemplate(PreviewError, LookupError):
    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        self.known = list(known)
        super().__init__(f"no email template {name!r}; known templates: {', '.join(known)}")


@dataclass(frozen=True)
class PreviewContext:
    """What one preview's email is composed of, and what in it is sample data."""

    template: str
    lifecycle: str
    event_type: str
    # The template context as the lifecycle passes it to `send_email` (without `links`).
    context: dict[str, Any]
    # The link names the lifecycle passes as destinations.
    destinations: list[str]
    addresses: PreviewLinks
    unsubscribe_billing: bool
    # What the event did not tell, filled with sample values: what → why.
    samples: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Preview:
    template: str
    lifecycle: str
    event_type: str
    email: RenderedEmail
    links: dict[str, str | None]
    samples: dict[str, str]


def lifecycle_of(template: str) -> str:
    return template.partition("/")[0]


def render_preview(
    renderer: TemplateRenderer,
    template: str,
    event: Mapping[str, Any],
    *,
    public_url: str,
    automation: Automation | None = None,
    unsubscribe_billing: bool = False,
) -> Preview:
    """`template` rendered against `event`; raises UnknownTemplate or PreviewError."""
    known = renderer.names()
    if template not in known:
        raise UnknownTemplate(template, known)
    built = build_context(
        template,
        event,
        public_url=public_url,
        automation=automation,
        unsubscribe_billing=unsubscribe_billing,
    )
    try:
        composed = compose_email(
            renderer,
            template,
            built.lifecycle,
            built.context,
            built.destinations,
            built.addresses,
            unsubscribe_billing=built.unsubscribe_billing,
        )
    except (UndefinedError, TypeError, ValueError) as exc:
        raise PreviewError(
            f"{template} could not be rendered with this {built.event_type} event: {exc}"
        ) from exc
    return Preview(
        template=template,
        lifecycle=built.lifecycle,
        event_type=built.event_type,
        email=composed.rendered,
        links=composed.links.for_template(),
        samples=built.samples,
    )


def build_context(
    template: str,
    event: Mapping[str, Any],
    *,
    public_url: str,
    automation: Automation | None = None,
    unsubscribe_billing: bool = False,
) -> PreviewContext:
    """What `template`'s lifecycle would send it with, had `event` started it.

    `unsubscribe_billing` is `LIFECYCLE_UNSUBSCRIBE_BILLING`: whether billing mail carries
    an unsubscribe link too.
    """
    lifecycle = lifecycle_of(template)
    if automation is not None and automation.lifecycle != lifecycle:
        raise PreviewError(
            f"automation {automation.name} is a {automation.lifecycle} automation; "
            f"{template} is sent by {lifecycle} automations"
        )
    samples: dict[str, str] = {}
    billing = _normalise(event, samples, lifecycle)
    ledger = CustomerLedger(new_state(billing.customer_id))
    if lifecycle in INVOICE_LIFECYCLES or lifecycle in BILLED_INVOICE_LIFECYCLES:
        context, destinations = _invoice_context(lifecycle, billing, ledger, automation, samples)
    elif lifecycle == Lifecycle.QUOTE_EXPIRING:
        context, destinations = _quote_context(billing, ledger, samples)
    elif lifecycle == Lifecycle.EVENT:
        context, destinations = _event_context(event, billing, ledger, samples)
    else:
        context, destinations = _lifecycle_context(lifecycle, billing, ledger, automation, samples)
    return PreviewContext(
        template=template,
        lifecycle=lifecycle,
        event_type=billing.type,
        context=context,
        destinations=destinations,
        addresses=PreviewLinks(public_url),
        unsubscribe_billing=unsubscribe_billing,
        samples=samples,
    )


def find_automation(automations: Sequence[Automation], name: str) -> Automation:
    for automation in automations:
        if automation.name == name:
            return automation
    known = ", ".join(a.name for a in automations) or "none"
    raise PreviewError(f"no automation {name!r}; known automations: {known}")


def parse_event(text: str, source: str) -> dict[str, Any]:
    """A Stripe event from JSON text; PreviewError naming `source` if it is not one."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PreviewError(f"{source} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PreviewError(f"{source} is not a Stripe event (a JSON object)")
    return data


# --- From the event -----------------------------------------------------------------


def _normalise(event: Mapping[str, Any], samples: dict[str, str], lifecycle: str) -> BillingEvent:
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    event_type = event.get("type")
    if not isinstance(event_type, str) or not isinstance(obj, Mapping):
        raise PreviewError(
            'not a Stripe event: expected {"type": ..., "data": {"object": {...}}} '
            "(a webhook payload as Stripe sends it)"
        )
    kind = obj.get("object")
    # An event sequence starts on any event; a quote reminder reads a quote event (or
    # previews a sample quote for another billing event).
    allowed = (
        PREVIEW_OBJECTS | {"quote"} if lifecycle == Lifecycle.QUOTE_EXPIRING else PREVIEW_OBJECTS
    )
    if lifecycle != Lifecycle.EVENT and kind not in allowed:
        raise PreviewError(
            f"the {event_type} event carries a {kind}; a preview needs an invoice, "
            "subscription, customer or payment method (card, source) event"
            + (" or a quote event" if lifecycle == Lifecycle.QUOTE_EXPIRING else "")
        )
    raw: dict[str, Any] = dict(event)
    raw.setdefault("id", "evt_preview")
    if "created" not in raw:
        raw["created"] = SAMPLE_CREATED
        samples["event.created"] = "the event has no created time"
    try:
        billing = normalise_event(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise PreviewError(f"the {event_type} event could not be read: {exc!r}") from exc
    if billing is None:
        # A Source can belong to no customer (`customer.source.expiring` of a receiver).
        raw = copy.deepcopy(raw)
        raw["data"]["object"]["customer"] = SAMPLE_CUSTOMER_ID
        billing = normalise_event(raw)
    if billing is None:
        raise PreviewError(f"the {event_type} event names no customer")
    return billing


def _apply(ledger: CustomerLedger, billing: BillingEvent, **objects: Any) -> None:
    """Apply a sample object as if Stripe had sent it with the event."""
    ledger.apply(
        BillingEvent(
            event_id=f"{billing.event_id}/sample-{'-'.join(objects)}",
            type="preview.sample",
            created=billing.created,
            livemode=billing.livemode,
            customer_id=billing.customer_id,
            **objects,
        )
    )


def _customer(ledger: CustomerLedger, billing: BillingEvent, samples: dict[str, str]) -> None:
    if billing.customer is not None:
        return
    snap = ledger.snapshot
    samples["customer"] = f"the {billing.type} event carries no customer object"
    sample = CustomerInfo(
        id=billing.customer_id,
        email=SAMPLE_CUSTOMER_EMAIL,
        name=SAMPLE_CUSTOMER_NAME,
        currency=snap.currency,
        # What the event itself said about the customer's default card stays.
        default_payment_method=snap.default_payment_method,
        default_source=snap.default_source,
    )
    _apply(ledger, billing, customer=sample)


def _invoice_context(
    lifecycle: str,
    billing: BillingEvent,
    ledger: CustomerLedger,
    automation: Automation | None,
    samples: dict[str, str],
) -> tuple[dict[str, Any], list[str]]:
    ledger.apply(billing)
    _customer(ledger, billing, samples)
    invoice = billing.invoice
    if invoice is None:
        samples["invoice"] = f"the {billing.type} event carries no invoice"
        invoice = _sample_invoice(lifecycle, billing)
    elif lifecycle in _DUE_DATE_LIFECYCLES and invoice.due_date is None:
        # Only invoices sent with a due date start these lifecycles.
        samples["invoice.due_date"] = (
            f"invoice {invoice.id or '(upcoming)'} has no due date "
            f"({invoice.collection_method or 'charge_automatically'}): previewed as sent "
            "with one"
        )
        invoice = replace(
            invoice,
            collection_method="send_invoice",
            due_date=billing.created + _SAMPLE_DUE_IN_DAYS[lifecycle] * DAY,
        )
    snap = ledger.snapshot
    offer = automation.offer if automation is not None else None
    card = card_context(ledger.billing_payment_method())
    # The due-date lifecycles count days from the send; the event's time stands for it.
    # (Dunning keeps every retry date: a preview of an old event still shows its copy.)
    now = billing.created if lifecycle in BILLED_INVOICE_LIFECYCLES else None
    context = step_context({"payment_method": card}, invoice, snap.email, snap.name, offer, now)
    return context, list(step_destinations(LINKS[Lifecycle(lifecycle)], offer, invoice))


def _sample_invoice(lifecycle: str, billing: BillingEvent) -> InvoiceInfo:
    sub = billing.subscription
    amount = sum((i.unit_amount or 0) * i.quantity for i in sub.items) if sub else 0
    due_in = _SAMPLE_DUE_IN_DAYS.get(lifecycle)
    return InvoiceInfo(
        id="in_sample",
        customer_id=billing.customer_id,
        subscription_id=sub.id if sub else None,
        status="open",
        number="SAMPLE-0001",
        currency=(sub.currency if sub else None) or "usd",
        amount_due=amount or 4900,
        attempt_count=1,
        next_payment_attempt=billing.created + 3 * DAY if lifecycle == Lifecycle.DUNNING else None,
        hosted_invoice_url="https://invoice.stripe.com/i/sample",
        created=billing.created,
        collection_method="send_invoice" if due_in is not None else None,
        due_date=billing.created + due_in * DAY if due_in is not None else None,
    )


def _quote_context(
    billing: BillingEvent, ledger: CustomerLedger, samples: dict[str, str]
) -> tuple[dict[str, Any], list[str]]:
    ledger.apply(billing)
    _customer(ledger, billing, samples)
    quote = billing.quote
    if quote is None:
        samples["quote"] = f"no quote read from the {billing.type} event"
        quote = QuoteInfo(
            id="qt_sample",
            customer_id=billing.customer_id,
            status="open",
            expires_at=billing.created + 7 * DAY,
            amount_total=120_000,
            currency=ledger.snapshot.currency or "usd",
            number="QT-SAMPLE-0001-1",
        )
    else:
        if quote.expires_at is None:
            samples["quote.expires_at"] = f"quote {quote.id} has no expiry date"
            quote = replace(quote, expires_at=billing.created + 7 * DAY)
        if quote.currency is None:
            samples["quote.currency"] = f"quote {quote.id} names no currency"
            quote = replace(quote, currency=ledger.snapshot.currency or "usd")
    snap = ledger.snapshot
    context = step_context(quote_context(quote), None, snap.email, snap.name, None)
    return context, list(LINKS[Lifecycle.QUOTE_EXPIRING])


def _event_context(
    event: Mapping[str, Any],
    billing: BillingEvent,
    ledger: CustomerLedger,
    samples: dict[str, str],
) -> tuple[dict[str, Any], list[str]]:
    ledger.apply(billing)
    _customer(ledger, billing, samples)
    obj = billing.object
    if obj is None:
        # What any event names of its object; its amount and status are not guessed.
        raw = event["data"]["object"]
        samples["event.object"] = (
            f"the {billing.type} event's {raw.get('object')} was not summarised: "
            "previewed without its amount or status"
        )
        obj = ObjectInfo(type=str(raw.get("object")), id=str(raw.get("id") or "unknown"))
    snap = ledger.snapshot
    context = step_context(
        event_context(billing.type, billing.event_id, obj), None, snap.email, snap.name, None
    )
    return context, list(LINKS[Lifecycle.EVENT])


def _lifecycle_context(
    lifecycle: str,
    billing: BillingEvent,
    ledger: CustomerLedger,
    automation: Automation | None,
    samples: dict[str, str],
) -> tuple[dict[str, Any], list[str]]:
    subscription_id = None
    if lifecycle != Lifecycle.CARD_EXPIRING:
        billing = _with_subscription(lifecycle, billing, samples)
        subscription_id = subscription_of(billing)
    ledger.apply(billing)
    _customer(ledger, billing, samples)
    if lifecycle == Lifecycle.CARD_EXPIRING and ledger.billing_payment_method() is None:
        samples["payment_method"] = f"the {billing.type} event names no card with an expiry date"
        # Under the id of the default the event named, if any, so it is the one billed.
        card_id = (
            ledger.snapshot.default_payment_method or ledger.snapshot.default_source or "pm_sample"
        )
        _apply(ledger, billing, payment_method=_sample_card(billing, card_id))
    links = LINKS.get(Lifecycle(lifecycle), LINK_NAMES)
    offer = automation.offer if automation is not None else None
    if automation is None and "offer" in links:
        samples["offer"] = "no automation given (--automation NAME uses its offer)"
        offer = SAMPLE_OFFER
    snap = ledger.snapshot
    context = step_context(
        subscription_context(ledger, subscription_id), None, snap.email, snap.name, offer
    )
    if lifecycle == Lifecycle.UPGRADE:
        samples["usage"] = "sample usage (9 of 10 seats): your app reports it through the usage API"
        context["usage"] = SAMPLE_USAGE
    return context, list(links)


def _with_subscription(
    lifecycle: str, billing: BillingEvent, samples: dict[str, str]
) -> BillingEvent:
    """The event with the subscription its lifecycle needs, sample parts filled in."""
    sub = billing.subscription
    if sub is None:
        sub_id = subscription_of(billing) or "sub_sample"
        samples["subscription"] = f"the {billing.type} event carries no subscription"
        sub = _sample_subscription(lifecycle, billing, sub_id)
    if lifecycle == Lifecycle.TRIAL and sub.trial_end is None:
        samples["subscription.trial_end"] = f"subscription {sub.id} has no trial end"
        sub = replace(sub, trial_end=billing.created + 14 * DAY)
    if sub.current_period_end is None:
        samples["subscription.current_period_end"] = f"subscription {sub.id} has no period end"
        sub = replace(sub, current_period_end=billing.created + 30 * DAY)
    return replace(billing, subscription=sub)


def _sample_subscription(lifecycle: str, billing: BillingEvent, sub_id: str) -> SubscriptionInfo:
    invoice = billing.invoice
    currency = (invoice.currency if invoice else None) or "usd"
    amount = (invoice.amount_due if invoice else 0) or 4900
    return SubscriptionInfo(
        id=sub_id,
        customer_id=billing.customer_id,
        status=_SAMPLE_STATUSES.get(lifecycle, "active"),
        currency=currency,
        items=[
            SubscriptionItemInfo(
                id="si_sample",
                price_id="price_sample",
                product_id="prod_sample",
                nickname="Pro",
                unit_amount=amount,
                currency=currency,
                interval="month",
            )
        ],
        # An upcoming invoice is charged when the period ends.
        current_period_end=(invoice.next_payment_attempt if invoice else None)
        or billing.created + 30 * DAY,
        trial_end=billing.created + 14 * DAY if lifecycle == Lifecycle.TRIAL else None,
        cancel_at_period_end=lifecycle == Lifecycle.SCHEDULED_CANCEL,
    )


def _sample_card(billing: BillingEvent, card_id: str) -> PaymentMethodInfo:
    # Expiring at the end of the month after the event: the reminder's usual moment.
    year, month = divmod(_month_index(billing.created) + 1, 12)
    return PaymentMethodInfo(
        id=card_id,
        customer_id=billing.customer_id,
        type="card",
        brand="visa",
        last4="4242",
        exp_month=month + 1,
        exp_year=year,
    )


def _month_index(epoch: int) -> int:
    day = datetime.fromtimestamp(epoch, UTC)
    return day.year * 12 + day.month - 1


# --- Sample events ------------------------------------------------------------------


def _load_sample_events() -> dict[str, dict[str, Any]]:
    text = (resources.files(__package__) / "samples" / "events.json").read_text("utf-8")
    events: dict[str, dict[str, Any]] = json.loads(text)
    return events


# Name -> event, in the order the API and the CLI list them.
SAMPLE_EVENTS = _load_sample_events()

# The sample event each lifecycle's templates preview with when no event is given.
DEFAULT_SAMPLES: dict[str, str] = {
    Lifecycle.DUNNING: "invoice.payment_failed",
    Lifecycle.PAYMENT_ACTION: "invoice.payment_action_required",
    Lifecycle.TRIAL: "customer.subscription.created",
    Lifecycle.WINBACK: "customer.subscription.deleted",
    Lifecycle.SCHEDULED_CANCEL: "customer.subscription.updated-cancel",
    Lifecycle.RENEWAL: "invoice.upcoming",
    Lifecycle.CARD_EXPIRING: "customer.source.expiring",
    Lifecycle.PLAN_CHANGE: "customer.subscription.updated-downgrade",
    Lifecycle.UPGRADE: "customer.subscription.updated",
    Lifecycle.INVOICE_DUE: "invoice.will_be_due",
    Lifecycle.INVOICE_OVERDUE: "invoice.overdue",
    Lifecycle.INVOICE_FINALIZED: "invoice.finalized",
    Lifecycle.QUOTE_EXPIRING: "quote.finalized",
    Lifecycle.EVENT: "checkout.session.completed",
}


def default_sample(template: str) -> str:
    """The sample event `template` previews with by default."""
    return DEFAULT_SAMPLES.get(lifecycle_of(template), "customer.subscription.updated")


def sample_event(name: str) -> dict[str, Any]:
    """A fresh copy of the named sample event; PreviewError naming the known ones."""
    event = SAMPLE_EVENTS.get(name)
    if event is None:
        raise PreviewError(f"no sample event {name!r}; sample events: {', '.join(SAMPLE_EVENTS)}")
    return copy.deepcopy(event)
