"""Email templates: Jinja2, one subject, HTML part and text part per lifecycle step.

A template is named `<lifecycle>/<purpose>` (the folder is the lifecycle key, as in
automation files: `send: dunning/payment-failed`) and made of three files:

    <lifecycle>/<purpose>.subject.txt   one line once rendered (whitespace is collapsed)
    <lifecycle>/<purpose>.html          autoescaped, extends `_layout.html`
    <lifecycle>/<purpose>.txt           plain text, not escaped, extends `_layout.txt`

Files and folders whose name starts with `_` (layouts, macros) are not templates.
`LIFECYCLE_TEMPLATES_DIR` is searched before the shipped `stripe_lifecycle/templates`,
file by file: an override may replace one part (say only the HTML, or `_layout.html`
for every message) and may add new names, which need all three files between the two
folders. Every variable is strict: a missing one raises `jinja2.UndefinedError` naming
the template file and the variable.

Filters: `money` (`{{ invoice.amount_due | money(invoice.currency) }}` → "$49.00"),
`date` (epoch seconds or datetime → "March 3, 2026", UTC), `month_name` (8 → "August"),
`describe_card` (a payment method → "Visa ending in 4242").

Context contract
----------------
The activity that sends a step builds the context; the renderer adds `brand` (a `Brand`,
overriding any `brand` passed in). Objects are mappings (or objects with the same
attributes). Every key listed for an object is present whenever the object is; values
marked "or None" may be None. Objects are required by the templates listed below and
must not be passed as None there; an optional object is either absent or None.

    customer        {email, name or None}
    invoice         {number or None, amount_due (minor units), currency,
                     hosted_invoice_url or None, next_payment_attempt (epoch) or None,
                     attempt_count; from `template_context.invoice_context` also
                     collection_method ("charge_automatically" | "send_invoice"),
                     due_date (epoch) or None, days_until_due or None, days_overdue or
                     None (whole UTC days from the send time; templates test these four
                     with `is defined`)}
    quote           {id, number or None, amount_total (minor units), currency,
                     expires_at (epoch) or None}
    event           {type (the Stripe event type), id, object or None: {type (Stripe's
                     `object`: "dispute", "checkout.session", ...), id, amount (minor
                     units) or None, currency or None, status or None, related (field ->
                     id of the objects it names)}}
    subscription    {plan (display name: price nickname or product name) or None,
                     amount (recurring amount per period, minor units), currency,
                     current_period_end (epoch), trial_end (epoch) or None,
                     cancel_at (epoch) or None}
    payment_method  {brand (Stripe code: "visa", "amex", ...) or None, last4 or None,
                     exp_month or None, exp_year or None}
    offer           {code (a promotion code to type) or None, description ("50% off for
                     3 months")}
    links           tracked URLs (the signed `/t/...` redirects), never raw targets:
                     {unsubscribe or None (None for transactional mail; always present),
                      update_payment (where the customer fixes or adds the card or pays:
                      the hosted invoice page for an open invoice, which is also where a
                      3-D Secure payment is confirmed; the billing portal otherwise),
                      survey (cancellation/downgrade feedback form),
                      offer (accepts the offer; for scheduled_cancel, keeps the
                      subscription with or without an offer)}

    template                 objects                         button link     optional
    dunning/payment-failed   customer invoice                update_payment  payment_method
    dunning/reminder         customer invoice                update_payment  payment_method
    dunning/final-notice     customer invoice                update_payment  payment_method
    payment_action/confirm   customer invoice                update_payment  -
    card_expiring/reminder   customer payment_method         update_payment  -
    trial/welcome            customer subscription*          update_payment  payment_method
    trial/ending             customer subscription*          update_payment  payment_method
    winback/cancelled        customer subscription           survey          -
    winback/offer            customer offer                  offer           -
    scheduled_cancel/save    customer subscription           offer           offer
    renewal/upcoming         customer subscription invoice   update_payment  payment_method
    plan_change/downgrade    customer subscription           survey          -
    upgrade/offer            customer subscription offer     offer           -
    invoice_due/reminder     customer invoice                update_payment  payment_method
    invoice_overdue/reminder customer invoice                update_payment  payment_method
    quote_expiring/reminder  customer quote                  -               -
    event/notice             customer event                  -               -
    (* with trial_end set)

Each template needs `links` with its button link and `unsubscribe` (the footer shows an
unsubscribe link when it is set), and nothing else. Quotes have no hosted page to accept
them on and an event's object no page of its own: those two have no button (the quote
reminder asks the customer to reply, or to write to `brand.support_email`). The invoice
due reminder names the card only for an invoice collected automatically (an
`invoice_finalized` automation may send it); `send_invoice` invoices are paid by hand.
`event/notice` words a few event types (an order, a payment, a refund, a dispute, a new
customer or subscription) and gives any other a general notice; it shows an amount only
when the object has one with its currency. Given `payment_method` (the card
that failed or will be charged), dunning, trial and renewal copy names the card; trial
copy asks for a card when there is none. Shipped templates link only through `links`
(`invoice.hosted_invoice_url` is there for custom templates).
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PackageLoader,
    StrictUndefined,
    Undefined,
    UndefinedError,
    select_autoescape,
)

from stripe_lifecycle.domain.automations import (
    PACKAGED_DEFAULTS,
    Automation,
    automations_path,
    parse_automations,
)
from stripe_lifecycle.domain.money import format_amount
from stripe_lifecycle.domain.segments import load_segments
from stripe_lifecycle.settings import ConfigurationError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from stripe_lifecycle.settings import Settings

SUBJECT_SUFFIX = ".subject.txt"
HTML_SUFFIX = ".html"
TEXT_SUFFIX = ".txt"
# Longest first: "x.subject.txt" is the subject of "x", not the text part of "x.subject".
_PART_SUFFIXES = (SUBJECT_SUFFIX, HTML_SUFFIX, TEXT_SUFFIX)

# `<lifecycle>/<purpose>`: lifecycle keys are snake_case, purposes kebab- or snake_case.
# Also keeps `_layout`, `_macros` and dotfiles out, and paths from climbing out.
_NAME = re.compile(r"[a-z][a-z0-9_]*/[A-Za-z0-9][A-Za-z0-9_-]*")
# The body text colour of the layouts, also used on light brand colours.
DARK_TEXT = "#1a1f36"
_HEX_COLOUR = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")

_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)

# Stripe's card brand codes as printed on the card (PaymentMethod `card.brand`; legacy
# display names are turned into these codes by `stripe_normalise`).
_CARD_BRANDS = {
    "amex": "American Express",
    "cartes_bancaires": "Cartes Bancaires",
    "diners": "Diners Club",
    "discover": "Discover",
    "eftpos_au": "eftpos Australia",
    "interac": "Interac",
    "jcb": "JCB",
    "link": "Link",
    "mastercard": "Mastercard",
    "unionpay": "UnionPay",
    "visa": "Visa",
}


@dataclass(frozen=True)
class Brand:
    """The business as its emails show it (the `LIFECYCLE_BRAND_*` settings)."""

    name: str
    logo_url: str | None
    support_email: str | None
    primary_color: str
    address: str | None

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ConfigurationError("LIFECYCLE_BRAND_NAME must not be empty")
        # It lands inside style attributes: a colour, nothing else.
        if not _HEX_COLOUR.fullmatch(self.primary_color):
            raise ConfigurationError(
                "LIFECYCLE_BRAND_PRIMARY_COLOR must be a hex colour like #635bff, "
                f"got {self.primary_color!r}"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> Brand:
        return cls(
            name=settings.brand_name,
            logo_url=settings.brand_logo_url,
            support_email=settings.brand_support_email,
            primary_color=settings.brand_primary_color,
            address=settings.brand_address,
        )

    @property
    def on_primary_color(self) -> str:
        """Button text colour: white or dark, whichever contrasts more with the brand colour."""
        background = _luminance(self.primary_color)
        contrast_white = 1.05 / (background + 0.05)
        contrast_dark = (background + 0.05) / (_luminance(DARK_TEXT) + 0.05)
        return "#ffffff" if contrast_white >= contrast_dark else DARK_TEXT


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str


class TemplateNotFound(LookupError):
    """No template of that name (or one of its three files is missing)."""

    def __init__(self, name: str, missing: str | None = None) -> None:
        self.name = name
        self.missing = missing
        detail = f": {missing} not found" if missing else ""
        super().__init__(f"no email template {name!r}{detail}")


class TemplateRenderer:
    """Renders `<lifecycle>/<purpose>` templates; the override folder is searched first."""

    def __init__(self, brand: Brand, templates_dir: Path | None = None) -> None:
        self.brand = brand
        loaders: list[BaseLoader] = []
        if templates_dir is not None:
            if not templates_dir.is_dir():
                raise ConfigurationError(
                    f"LIFECYCLE_TEMPLATES_DIR {str(templates_dir)!r} is not a folder"
                )
            loaders.append(FileSystemLoader(templates_dir))
        loaders.append(PackageLoader("stripe_lifecycle", "templates"))
        self._env = Environment(
            loader=ChoiceLoader(loaders),
            # HTML escaped; subject and text parts are plain text and must stay verbatim.
            autoescape=select_autoescape(enabled_extensions=("html",), default=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.filters.update(
            money=_money,
            date=format_date,
            month_name=month_name,
            describe_card=describe_card,
        )

    def names(self) -> list[str]:
        """Every available template name, shipped and overridden, sorted."""
        parts: dict[str, set[str]] = defaultdict(set)
        for path in self._env.list_templates():
            for suffix in _PART_SUFFIXES:
                if path.endswith(suffix):
                    parts[path.removesuffix(suffix)].add(suffix)
                    break
        return sorted(
            name
            for name, found in parts.items()
            if len(found) == len(_PART_SUFFIXES) and _NAME.fullmatch(name)
        )

    def render(self, name: str, context: Mapping[str, Any]) -> RenderedEmail:
        """Subject, HTML and text of one template; raises TemplateNotFound, UndefinedError."""
        if not _NAME.fullmatch(name):
            raise TemplateNotFound(name)
        try:
            subject, html, text = (
                self._env.get_template(name + suffix) for suffix in _PART_SUFFIXES
            )
        except jinja2.TemplateNotFound as exc:
            raise TemplateNotFound(name, missing=str(exc.name)) from exc
        values = {**context, "brand": self.brand}
        rendered_subject = " ".join(_render(subject, values).split())
        if not rendered_subject:
            raise ValueError(f"email template {name!r} rendered an empty subject")
        return RenderedEmail(
            subject=rendered_subject,
            html=_render(html, values).strip() + "\n",
            text=_tidy_text(_render(text, values)),
        )


def load_checked_automations(settings: Settings) -> tuple[Path, list[Automation]]:
    """The automations in force, validated against the templates and segments that exist.

    A file of your own must name only segments that exist. The packaged defaults' upgrade
    campaigns name packaged segments: with a segments file of your own that lacks them,
    those campaigns are left out (and logged), not an error about a file you never wrote.
    """
    renderer = TemplateRenderer(Brand.from_settings(settings), settings.templates_dir)
    path = automations_path(settings.automations)
    text = path.read_text(encoding="utf-8")
    segments = load_segments(settings.segments).names
    hosts = settings.outbound_hosts()
    if path != PACKAGED_DEFAULTS:
        return path, parse_automations(text, str(path), renderer.names(), segments, hosts)
    automations = []
    for automation in parse_automations(text, str(path), renderer.names(), None, hosts):
        named = set(automation.filters.segment)
        if automation.trigger_segment is not None:
            named.add(automation.trigger_segment)
        missing = named - set(segments)
        if missing:
            log.info(
                "packaged automation %s left out: %s has no segment %s",
                automation.name,
                settings.segments,
                ", ".join(sorted(missing)),
            )
            continue
        automations.append(automation)
    return path, automations


def format_date(value: int | float | datetime | date) -> str:
    """A day as email copy reads it, in UTC: "March 3, 2026"."""
    _require(value)
    if isinstance(value, datetime):
        day = value.astimezone(UTC) if value.tzinfo is not None else value
    elif isinstance(value, date):
        day = datetime(value.year, value.month, value.day)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        day = datetime.fromtimestamp(value, tz=UTC)
    else:
        raise TypeError(f"date filter needs epoch seconds or a datetime, got {value!r}")
    return f"{_MONTHS[day.month - 1]} {day.day}, {day.year}"


def month_name(month: int) -> str:
    """1 → "January"."""
    _require(month)
    if not 1 <= month <= 12:
        raise ValueError(f"month_name filter needs 1-12, got {month!r}")
    return _MONTHS[month - 1]


def describe_card(payment_method: Any) -> str:
    """A payment method as copy names it: "Visa ending in 4242", "card ending in 4242"."""
    _require(payment_method)
    brand = _field(payment_method, "brand")
    last4 = _field(payment_method, "last4")
    name = _CARD_BRANDS.get(brand, brand.replace("_", " ").title()) if brand else "card"
    return f"{name} ending in {last4}" if last4 else name


def _money(amount: int, currency: str) -> str:
    _require(amount, currency)
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise TypeError(f"money filter needs an amount in minor units, got {amount!r}")
    return format_amount(amount, currency)


def _require(*values: Any) -> None:
    """Raise the UndefinedError naming the variable, as any other use of it would.

    Filters receive an undefined value as an object, and type checks alone would turn it
    into a vague TypeError; `str()` of a StrictUndefined raises the error Jinja words.
    """
    for value in values:
        if isinstance(value, Undefined):
            str(value)
            raise UndefinedError(f"{value!r} is undefined")


def _field(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _render(template: jinja2.Template, values: Mapping[str, Any]) -> str:
    try:
        return template.render(values)
    except UndefinedError as exc:
        # Name the file: an activity failure shows the message, not the Jinja traceback.
        raise UndefinedError(f"{template.name}: {exc.message or exc}") from exc


def _tidy_text(text: str) -> str:
    """Trailing spaces off every line, at most one blank line in a row, one final newline."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    tidy: list[str] = []
    for line in lines:
        if line or (tidy and tidy[-1]):
            tidy.append(line)
    return "\n".join(tidy) + "\n"


def _luminance(colour: str) -> float:
    """WCAG relative luminance of a #rgb or #rrggbb colour."""
    digits = colour[1:]
    if len(digits) == 3:
        digits = "".join(d * 2 for d in digits)
    channels = [int(digits[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    red, green, blue = (
        c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels
    )
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue
