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
    "payment_action/confirm",
    "plan_change/downgrade",
    "renewal/upcoming",
    "scheduled_cancel/save",
    "trial/ending",
    "trial/welcome",
    "upgrade/offer",
    "winback/cancelled",
    "winback/offer",
]

# The context contract of `stripe_lifecycle.mail.templates`: what each lifecycle provides
# (objects, links) and which optional object it may add. Tests pass exactly this, so a
# template reaching for anything else fails under StrictUndefined.
REQUIRES: dict[str, tuple[tuple[str, ...], str, tuple[str, ...]]] = {
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
}

BRAND = Brand(
    name="Acme Analytics",
    logo_url=None,
    support_email="help@acme.example",
    primary_color="#0a7cff",
    address="500 Market St\nSan Francisco, CA 94105",
)
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
    context["links"] = {link: LINKS[link], "unsubscribe": unsubscribe}
    return context


def expected_amount(name: str, context: Mapping[str, Any]) -> str | None:
    """The money figure the template must show, formatted, or None if it shows none."""
    if "invoice" in context:
        return format_amount(context["invoice"]["amount_due"], context["invoice"]["currency"])
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
    link = LINKS[REQUIRES[name][1]]

    assert email.subject
    assert email.subject == email.subject.strip()
    assert "\n" not in email.subject and "  " not in email.subject
    assert email.html.startswith("<!DOCTYPE html>")
    assert email.text.strip()

    # One primary call to action, in the brand colour, in both parts.
    assert email.html.count(f'href="{link}"') == 1
    assert f'bgcolor="{BRAND.primary_color}"' in email.html
    assert link in email.text

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
