"""Automation definitions as data: load, validate and select (pure apart from reading the file).

An automation names a lifecycle, a priority, filters and ordered steps. For each trigger
of a lifecycle the first enabled automation (lowest `priority`, then file order) whose
filters all match runs: exactly one per trigger, like Stripe's Automations. A running
instance keeps the `Automation` it started with (it is passed to the workflow), so
editing the file never changes an instance mid-flight.

Step timing: `after: 3d` is measured from the start of the instance; `before: 7d` from
the lifecycle's anchor date (trial end, period end, card expiry) and is only allowed on
lifecycles that have one.

Upgrade campaigns are triggered by a customer entering a segment (`trigger: {segment:
NAME}`), with `reentry`, `exit_on_leave` and `enter_existing` saying when they start again,
end early, and whether the segment's members of the day it was enabled enter too. Any
automation may hold out a share of its customers (`holdout: 10%`) to measure its lift.
"""

# No `from __future__ import annotations`: these dataclasses cross the Temporal boundary and
# the data converter resolves their types per payload.

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from stripe_lifecycle.domain.ledger import billing_period
from stripe_lifecycle.domain.lifecycles import BILLED_INVOICE_LIFECYCLES, Lifecycle
from stripe_lifecycle.domain.outbound import url_refusal
from stripe_lifecycle.domain.send_windows import SendWindow, parse_window

LIFECYCLES: tuple[Lifecycle, ...] = tuple(Lifecycle)

# What each lifecycle's `before:` is measured from; lifecycles not listed have no anchor.
ANCHORS = {
    Lifecycle.TRIAL: "trial end",
    Lifecycle.SCHEDULED_CANCEL: "period end",
    Lifecycle.RENEWAL: "period end",
    Lifecycle.CARD_EXPIRING: "card expiry",
    Lifecycle.INVOICE_DUE: "due date",
    Lifecycle.QUOTE_EXPIRING: "quote expiry",
}

INVOICE_ACTIONS = ("cancel_subscription", "mark_uncollectible", "void_invoice", "pause_collection")
# What can be done to an invoice the customer pays by hand (it has no subscription to
# cancel or pause, necessarily), and a payment attempted now on any open invoice.
BILLED_INVOICE_ACTIONS = ("mark_uncollectible", "void_invoice", "retry_payment")
# Actions that were renamed: the reason a file naming them is refused.
RENAMED_ACTIONS = {
    "mark_unpaid": "Stripe has no call that marks a subscription unpaid (its subscription "
    "settings do that after the last retry); use pause_collection to stop collecting and "
    "mark its invoices uncollectible, or cancel_subscription",
}
# Actions that change the customer's billing are only allowed where the lifecycle owns the
# failed invoice; every lifecycle may tell the team.
ALLOWED_ACTIONS: dict[str, frozenset[str]] = {
    lifecycle: frozenset(
        {
            "notify_team",
            *(INVOICE_ACTIONS + ("retry_payment",) if lifecycle == Lifecycle.DUNNING else ()),
            *(BILLED_INVOICE_ACTIONS if lifecycle in BILLED_INVOICE_LIFECYCLES else ()),
        }
    )
    for lifecycle in LIFECYCLES
}
ALL_ACTIONS = frozenset().union(*ALLOWED_ACTIONS.values())

PACKAGED_DEFAULTS = Path(__file__).with_name("automations.default.yaml")

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def parse_duration(value: object) -> int:
    """`30s`, `15m`, `2h`, `3d`, `1w` → seconds."""
    match = _DURATION.match(str(value)) if isinstance(value, str | int) else None
    if match is None or isinstance(value, bool):
        raise ValueError(f"bad duration {value!r} (use a number and s, m, h, d or w, e.g. 3d)")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


@dataclass(frozen=True)
class Step:
    """One step: when (`after` from start, or `before` the anchor) and what (send or action)."""

    index: int
    after_seconds: int | None = None
    before_seconds: int | None = None
    send: str | None = None
    action: str | None = None
    # `webhook: {url, event}`: POST a signed event named `webhook_event` to `webhook_url`.
    webhook_url: str | None = None
    webhook_event: str | None = None

    @property
    def what(self) -> str:
        """The template sent, the action taken or the webhook event posted."""
        if self.webhook_event is not None:
            return f"webhook {self.webhook_event}"
        return self.send or self.action or ""

    @property
    def key(self) -> str:
        """Stable within an automation snapshot: part of the send/action idempotency key."""
        return f"{self.index}-{self.what.replace('/', '-').replace(' ', '-')}"

    def describe(self) -> str:
        when = (
            f"after {human_duration(self.after_seconds)}"
            if self.after_seconds is not None
            else f"{human_duration(self.before_seconds or 0)} before"
        )
        if self.send:
            what = f"send {self.send}"
        elif self.webhook_event:
            what = f"webhook {self.webhook_event} to {self.webhook_url}"
        else:
            what = f"action {self.action}"
        return f"{when}: {what}"


@dataclass(frozen=True)
class Filters:
    """All given filters must match; an absent filter matches anything. `segment` matches
    a customer in any of the segments named."""

    livemode: bool | None = None
    subscription_interval: list[str] = field(default_factory=list)
    invoice_amount_min: int | None = None
    invoice_amount_max: int | None = None
    currency: list[str] = field(default_factory=list)
    product: list[str] = field(default_factory=list)
    price: list[str] = field(default_factory=list)
    plan: list[str] = field(default_factory=list)
    cancellation_reason: list[str] = field(default_factory=list)
    customer_metadata: dict[str, str] = field(default_factory=dict)
    invoice_metadata: dict[str, str] = field(default_factory=dict)
    segment: list[str] = field(default_factory=list)
    # `charge_automatically` or `send_invoice`.
    collection_method: list[str] = field(default_factory=list)

    def describe(self) -> str:
        parts = [
            f"{name}={value}" for name, value in vars(self).items() if value not in (None, [], {})
        ]
        return ", ".join(parts) or "any"


@dataclass(frozen=True)
class Offer:
    """What a win-back or save email offers: words, a code to type, where to accept it.

    The code is a Stripe promotion code (or coupon) the business created in Stripe; the
    url is where accepting happens (a checkout or pricing page). Without a url the offer
    button opens the customer's billing portal.
    """

    description: str
    code: str | None = None
    url: str | None = None
    # An upgrade campaign's offer: the plan it invites the customer to move to.
    next_plan: str | None = None


@dataclass(frozen=True)
class Automation:
    name: str
    lifecycle: str
    priority: int = 100
    enabled: bool = True
    on_pause: str = "finish"
    filters: Filters = field(default_factory=Filters)
    steps: list[Step] = field(default_factory=list)
    offer: Offer | None = None
    # Local hours the customer may be mailed; None: any time. An automation without one
    # gets LIFECYCLE_SEND_WINDOW when it is chosen.
    send_window: SendWindow | None = None
    # Set when the file says `send_window: any`, so the default does not apply either.
    any_time: bool = False
    # Upgrade campaigns: the segment whose entry starts one; how long after an instance
    # started a later entry may start another (None: never again); whether leaving the
    # segment ends it; whether the segment's members when the campaign is enabled enter.
    trigger_segment: str | None = None
    # `event` sequences: the Stripe event type that starts one (`trigger: {event: ...}`).
    trigger_event: str | None = None
    reentry_seconds: int | None = None
    exit_on_leave: bool = True
    enter_existing: bool = False
    # The share of customers held out of the automation's mail, in basis points (1000 is
    # 10%): they run the same instance, which records each email as held out.
    holdout_basis_points: int = 0

    @property
    def holdout_percent(self) -> float:
        return self.holdout_basis_points / 100


@dataclass(frozen=True)
class MatchContext:
    """What a trigger knows about the customer, invoice and subscription, for filters."""

    livemode: bool = False
    # The billing period of each item of the subscription (`ledger.billing_period`).
    subscription_periods: Sequence[str] = ()
    invoice_amount: int | None = None
    currency: str | None = None
    product_ids: Sequence[str] = ()
    price_ids: Sequence[str] = ()
    plan: str | None = None
    cancellation_reason: str | None = None
    customer_metadata: Mapping[str, str] = field(default_factory=dict)
    invoice_metadata: Mapping[str, str] = field(default_factory=dict)
    # The segments the customer is in.
    segments: Sequence[str] = ()
    collection_method: str | None = None


def matches(filters: Filters, ctx: MatchContext) -> bool:
    checks = (
        filters.livemode is None or filters.livemode == ctx.livemode,
        # Every item bills at one of the periods: an annual plan with a monthly add-on is
        # not an annual customer.
        not filters.subscription_interval
        or (
            bool(ctx.subscription_periods)
            and all(p in filters.subscription_interval for p in ctx.subscription_periods)
        ),
        filters.invoice_amount_min is None
        or (ctx.invoice_amount is not None and ctx.invoice_amount >= filters.invoice_amount_min),
        filters.invoice_amount_max is None
        or (ctx.invoice_amount is not None and ctx.invoice_amount <= filters.invoice_amount_max),
        _one_of(filters.currency, ctx.currency.lower() if ctx.currency else None),
        not filters.product or bool(set(filters.product) & set(ctx.product_ids)),
        not filters.price or bool(set(filters.price) & set(ctx.price_ids)),
        _one_of(filters.plan, ctx.plan),
        _one_of(filters.cancellation_reason, ctx.cancellation_reason),
        all(ctx.customer_metadata.get(k) == v for k, v in filters.customer_metadata.items()),
        all(ctx.invoice_metadata.get(k) == v for k, v in filters.invoice_metadata.items()),
        not filters.segment or bool(set(filters.segment) & set(ctx.segments)),
        _one_of(filters.collection_method, ctx.collection_method),
    )
    return all(checks)


def select(
    automations: Iterable[Automation],
    lifecycle: str,
    ctx: MatchContext,
    *,
    segment: str | None = None,
    existing: bool = False,
    event_type: str | None = None,
) -> Automation | None:
    """The automation that runs for this trigger, or None when no enabled one matches.

    An upgrade campaign's trigger is an entry into `segment`; with `existing`, the customer
    was already in it (found by the sweep), which only campaigns that say
    `enter_existing` act on. An `event` sequence's trigger is a Stripe event of
    `event_type`."""
    candidates = [
        a
        for a in automations
        if a.lifecycle == lifecycle
        and a.enabled
        and a.trigger_segment == segment
        and a.trigger_event == event_type
        and (a.enter_existing or not existing)
    ]
    # sorted() is stable: equal priorities keep the file's order.
    for automation in sorted(candidates, key=lambda a: a.priority):
        if matches(automation.filters, ctx):
            return automation
    return None


def campaign_segments(automations: Iterable[Automation]) -> frozenset[str]:
    """The segments an entry into which may start an enabled campaign."""
    return frozenset(
        a.trigger_segment for a in automations if a.enabled and a.trigger_segment is not None
    )


def _one_of(allowed: list[str], value: str | None) -> bool:
    return not allowed or value in allowed


def human_duration(seconds: int | None) -> str:
    seconds = seconds or 0
    for unit, size in (("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class AutomationsError(ValueError):
    """Every problem found in an automations file, each naming file, automation and field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class _Checker:
    source: str
    known_templates: frozenset[str]
    known_segments: frozenset[str] | None = None
    # The hosts webhook steps may post to; None: not checked here.
    webhook_hosts: frozenset[str] | None = None
    problems: list[str] = field(default_factory=list)

    def segment(self, automation: str, where: str, name: object) -> str | None:
        if not isinstance(name, str) or not name:
            self.problem(automation, where, f"{name!r} is not a segment name")
            return None
        if self.known_segments is not None and name not in self.known_segments:
            known = ", ".join(sorted(self.known_segments)) or "none are defined"
            self.problem(automation, where, f"unknown segment {name!r} (segments: {known})")
        return name

    def problem(self, automation: str | None, where: str, message: str) -> None:
        who = f"automation {automation!r}" if automation else "top level"
        self.problems.append(f"{self.source}: {who}: {where}: {message}")


_AUTOMATION_KEYS = {
    "name",
    "lifecycle",
    "priority",
    "enabled",
    "on_pause",
    "filters",
    "steps",
    "offer",
    "send_window",
    "trigger",
    "reentry",
    "exit_on_leave",
    "enter_existing",
    "holdout",
}
# Only upgrade campaigns are started by a segment entry.
_CAMPAIGN_KEYS = ("trigger", "reentry", "exit_on_leave", "enter_existing")
_OFFER_KEYS = {"description", "code", "url", "next_plan"}
# Shipped templates that show the automation's offer and cannot render without one.
OFFER_TEMPLATES = frozenset({"winback/offer", "upgrade/offer"})
_STEP_KEYS = {"after", "before", "send", "action", "webhook"}
_LIST_FILTERS = {
    "subscription_interval",
    "currency",
    "product",
    "price",
    "plan",
    "cancellation_reason",
    "collection_method",
}
# A Stripe event type: lowercase words joined by dots (`charge.dispute.created`).
_EVENT_TYPE = re.compile(r"^[a-z_]+(\.[a-z_]+)+$")
# What an outbound webhook's event is called: the business names it (`dispute.opened`).
_WEBHOOK_EVENT = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")
_INT_FILTERS = {"invoice_amount_min", "invoice_amount_max"}
_MAP_FILTERS = {"customer_metadata", "invoice_metadata"}
_HOLDOUT = re.compile(r"^\s*(\d{1,2}(?:\.\d{1,2})?)\s*%\s*$")


def parse_automations(
    text: str,
    source: str,
    known_templates: Iterable[str],
    known_segments: Iterable[str] | None = None,
    webhook_hosts: Iterable[str] | None = None,
) -> list[Automation]:
    """Parse and validate; raises AutomationsError listing every problem found. With
    `known_segments`, a segment named in a trigger or filter must be one of them; with
    `webhook_hosts`, a webhook step's URL must be on one of them."""
    check = _Checker(
        source,
        frozenset(known_templates),
        None if known_segments is None else frozenset(known_segments),
        None if webhook_hosts is None else frozenset(webhook_hosts),
    )
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AutomationsError([f"{source}: not valid YAML: {exc}"]) from exc
    if not isinstance(document, dict) or not isinstance(document.get("automations"), list):
        raise AutomationsError(
            [f"{source}: top level: expected a mapping with an `automations` list"]
        )
    automations: list[Automation] = []
    seen: set[str] = set()
    for position, raw in enumerate(document["automations"]):
        automation = _parse_automation(check, raw, position)
        if automation is None:
            continue
        if automation.name in seen:
            check.problem(automation.name, "name", "used by more than one automation")
        seen.add(automation.name)
        automations.append(automation)
    if check.problems:
        raise AutomationsError(check.problems)
    return automations


def _parse_automation(check: _Checker, raw: object, position: int) -> Automation | None:
    if not isinstance(raw, dict):
        check.problem(None, f"automations[{position}]", "expected a mapping")
        return None
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        check.problem(None, f"automations[{position}].name", "required, a non-empty string")
        return None
    for key in sorted(set(raw) - _AUTOMATION_KEYS):
        check.problem(
            name, key, f"unknown field (expected one of {', '.join(sorted(_AUTOMATION_KEYS))})"
        )
    lifecycle = raw.get("lifecycle")
    if lifecycle not in LIFECYCLES:
        check.problem(name, "lifecycle", f"{lifecycle!r} is not one of {', '.join(LIFECYCLES)}")
        return None
    priority = raw.get("priority", 100)
    if not isinstance(priority, int) or isinstance(priority, bool):
        check.problem(name, "priority", f"{priority!r} is not a whole number")
        priority = 100
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        check.problem(name, "enabled", f"{enabled!r} is not true or false")
    on_pause = raw.get("on_pause", "finish")
    if on_pause not in ("finish", "cancel"):
        check.problem(name, "on_pause", f"{on_pause!r} is not finish or cancel")
    filters = _parse_filters(check, name, raw.get("filters") or {})
    steps_raw = raw.get("steps")
    if not isinstance(steps_raw, list) or not steps_raw:
        check.problem(name, "steps", "required, a non-empty list")
        steps_raw = []
    steps = [
        step
        for index, raw_step in enumerate(steps_raw)
        if (step := _parse_step(check, name, lifecycle, index, raw_step)) is not None
    ]
    offer = _parse_offer(check, name, raw["offer"]) if "offer" in raw else None
    window = None
    if "send_window" in raw:
        try:
            window = parse_window(raw["send_window"])
        except ValueError as exc:
            check.problem(name, "send_window", str(exc))
    if offer is None:
        for step in steps:
            if step.send in OFFER_TEMPLATES:
                check.problem(
                    name,
                    f"steps[{step.index}].send",
                    f"{step.send} shows an offer: add `offer: {{description: ..., code: ...}}`",
                )
    campaign = _parse_campaign(check, name, lifecycle, raw)
    return Automation(
        name=name,
        lifecycle=lifecycle,
        priority=priority,
        enabled=enabled is True,
        on_pause=str(on_pause),
        filters=filters,
        steps=steps,
        offer=offer,
        send_window=window,
        any_time=raw.get("send_window") == "any",
        holdout_basis_points=_parse_holdout(check, name, raw.get("holdout")),
        **campaign,
    )


def _parse_campaign(
    check: _Checker, name: str, lifecycle: str, raw: dict[str, Any]
) -> dict[str, Any]:
    """An upgrade campaign's trigger and entry rules, or an event sequence's trigger;
    refused on every other lifecycle."""
    if lifecycle == Lifecycle.EVENT:
        for key in _CAMPAIGN_KEYS[1:]:
            if key in raw:
                check.problem(name, key, "only upgrade campaigns (lifecycle: upgrade) have one")
        trigger = raw.get("trigger")
        event_type = trigger.get("event") if isinstance(trigger, dict) else None
        if not isinstance(trigger, dict) or set(trigger) != {"event"}:
            check.problem(
                name,
                "trigger",
                "required for an event sequence, e.g. {event: charge.dispute.created}",
            )
            return {}
        if not isinstance(event_type, str) or not _EVENT_TYPE.match(event_type):
            check.problem(name, "trigger.event", f"{event_type!r} is not a Stripe event type")
            return {}
        return {"trigger_event": event_type}
    if lifecycle != Lifecycle.UPGRADE:
        for key in _CAMPAIGN_KEYS:
            if key in raw:
                check.problem(name, key, "only upgrade campaigns (lifecycle: upgrade) have one")
        return {}
    values: dict[str, Any] = {}
    trigger = raw.get("trigger")
    if not isinstance(trigger, dict) or set(trigger) != {"segment"}:
        check.problem(
            name, "trigger", "required for an upgrade campaign, e.g. {segment: starter-3-months}"
        )
    else:
        values["trigger_segment"] = check.segment(name, "trigger.segment", trigger["segment"])
    reentry = raw.get("reentry", "never")
    if reentry != "never":
        try:
            values["reentry_seconds"] = parse_duration(reentry)
        except ValueError as exc:
            check.problem(name, "reentry", f"never, or a duration: {exc}")
    for key in ("exit_on_leave", "enter_existing"):
        if key in raw:
            if not isinstance(raw[key], bool):
                check.problem(name, key, f"{raw[key]!r} is not true or false")
            else:
                values[key] = raw[key]
    return values


def _parse_holdout(check: _Checker, name: str, raw: object) -> int:
    """`holdout: 10%` (or 2.5%) → basis points; at most half the customers."""
    if raw is None:
        return 0
    match = _HOLDOUT.match(raw) if isinstance(raw, str) else None
    if match is None:
        check.problem(name, "holdout", f"{raw!r} is not a percentage like 10%")
        return 0
    basis_points = round(float(match.group(1)) * 100)
    if not 0 < basis_points <= 5000:
        check.problem(name, "holdout", f"{raw!r}: hold out more than 0% and at most 50%")
        return 0
    return basis_points


def _parse_offer(check: _Checker, name: str, raw: object) -> Offer | None:
    if not isinstance(raw, dict):
        check.problem(name, "offer", "expected a mapping like {description: ..., code: ...}")
        return None
    for key in sorted(set(raw) - _OFFER_KEYS):
        check.problem(
            name, f"offer.{key}", f"unknown field (expected {', '.join(sorted(_OFFER_KEYS))})"
        )
    description = raw.get("description")
    if not isinstance(description, str) or not description.strip():
        check.problem(name, "offer.description", "required, e.g. 20% off for 3 months")
        return None
    code, url, next_plan = raw.get("code"), raw.get("url"), raw.get("next_plan")
    if code is not None and not isinstance(code, str):
        check.problem(name, "offer.code", f"{code!r} is not a string")
    if next_plan is not None and not isinstance(next_plan, str):
        check.problem(name, "offer.next_plan", f"{next_plan!r} is not a plan name")
    if url is not None and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
        check.problem(name, "offer.url", f"{url!r} is not an http(s) URL")
    return Offer(
        description=description,
        code=str(code) if code is not None else None,
        url=str(url) if url is not None else None,
        next_plan=str(next_plan) if next_plan is not None else None,
    )


def _parse_filters(check: _Checker, name: str, raw: object) -> Filters:
    if not isinstance(raw, dict):
        check.problem(name, "filters", "expected a mapping")
        return Filters()
    values: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"filters.{key}"
        if key == "livemode":
            if not isinstance(value, bool):
                check.problem(name, where, f"{value!r} is not true or false")
            values[key] = value
        elif key in _LIST_FILTERS:
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(v, str) for v in items):
                check.problem(name, where, "expected a string or a list of strings")
            values[key] = [str(v).lower() if key == "currency" else str(v) for v in items]
            if key == "subscription_interval":
                values[key] = _billing_periods(check, name, where, values[key])
        elif key in _INT_FILTERS:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                check.problem(name, where, f"{value!r} is not an amount in minor units (e.g. 5000)")
            values[key] = value
        elif key == "segment":
            items = value if isinstance(value, list) else [value]
            values[key] = [
                segment
                for item in items
                if (segment := check.segment(name, where, item)) is not None
            ]
        elif key in _MAP_FILTERS:
            if not isinstance(value, dict):
                check.problem(name, where, "expected a mapping of metadata keys to values")
                continue
            values[key] = {str(k): str(v) for k, v in value.items()}
        else:
            known = sorted({"livemode", "segment", *_LIST_FILTERS, *_INT_FILTERS, *_MAP_FILTERS})
            check.problem(name, where, f"unknown filter (expected one of {', '.join(known)})")
    low, high = values.get("invoice_amount_min"), values.get("invoice_amount_max")
    if isinstance(low, int) and isinstance(high, int) and low > high:
        check.problem(name, "filters.invoice_amount_min", "is greater than invoice_amount_max")
    return Filters(**values)


def _billing_periods(check: _Checker, name: str, where: str, values: list[str]) -> list[str]:
    """`year`, `month`, `3 month`, `12 months`... as `ledger.billing_period` names them."""
    periods = []
    for value in values:
        count, _, unit = value.strip().lower().rpartition(" ")
        number = int(count) if count.isdigit() else (0 if count else 1)
        period = billing_period(unit.removesuffix("s"), number) if number >= 1 else None
        if period is None:
            check.problem(
                name,
                where,
                f"{value!r} is not a billing period (day, week, month, year, or e.g. 3 month)",
            )
            continue
        periods.append(period)
    return periods


def _parse_step(check: _Checker, name: str, lifecycle: str, index: int, raw: object) -> Step | None:
    where = f"steps[{index}]"
    if not isinstance(raw, dict):
        check.problem(name, where, "expected a mapping like {after: 3d, send: dunning/reminder}")
        return None
    for key in sorted(set(raw) - _STEP_KEYS):
        check.problem(
            name,
            f"{where}.{key}",
            "unknown field (expected after or before, and send, action or webhook)",
        )
    timing: dict[str, int] = {}
    for key in ("after", "before"):
        if key in raw:
            try:
                timing[key] = parse_duration(raw[key])
            except ValueError as exc:
                check.problem(name, f"{where}.{key}", str(exc))
    if ("after" in raw) == ("before" in raw):
        check.problem(name, where, "needs exactly one of `after` or `before`")
    if "before" in raw and lifecycle not in ANCHORS:
        anchored = ", ".join(f"{k} ({v})" for k, v in ANCHORS.items())
        check.problem(
            name,
            f"{where}.before",
            f"{lifecycle} has no date to count back from; only {anchored} do",
        )
    send, action = raw.get("send"), raw.get("action")
    webhook = (
        _parse_webhook(check, name, f"{where}.webhook", raw["webhook"])
        if "webhook" in raw
        else None
    )
    if [send, action, raw.get("webhook")].count(None) != 2:
        check.problem(name, where, "needs exactly one of `send`, `action` or `webhook`")
    if send is not None and send not in check.known_templates:
        check.problem(name, f"{where}.send", f"unknown template {send!r}")
    if action is not None:
        if action in RENAMED_ACTIONS:
            check.problem(name, f"{where}.action", f"{action!r}: {RENAMED_ACTIONS[action]}")
        elif action not in ALL_ACTIONS:
            check.problem(
                name,
                f"{where}.action",
                f"unknown action {action!r} (one of {', '.join(sorted(ALL_ACTIONS))})",
            )
        elif action not in ALLOWED_ACTIONS[lifecycle]:
            allowed = ", ".join(sorted(ALLOWED_ACTIONS[lifecycle]))
            check.problem(
                name, f"{where}.action", f"{action!r} is not allowed for {lifecycle} ({allowed})"
            )
    return Step(
        index=index,
        after_seconds=timing.get("after"),
        before_seconds=timing.get("before"),
        send=str(send) if send is not None else None,
        action=str(action) if action is not None else None,
        webhook_url=webhook[0] if webhook else None,
        webhook_event=webhook[1] if webhook else None,
    )


def _parse_webhook(check: _Checker, name: str, where: str, raw: object) -> tuple[str, str] | None:
    """`{url: https://..., event: invoice.will_be_due}`: where to post, and as what event;
    the url's host must be in LIFECYCLE_OUTBOUND_WEBHOOK_HOSTS when that is known."""
    if not isinstance(raw, dict) or set(raw) != {"url", "event"}:
        check.problem(name, where, "expected {url: https://..., event: name.of.event}")
        return None
    url, event = raw["url"], raw["event"]
    host = urlsplit(url).hostname if isinstance(url, str) else None
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not host:
        check.problem(name, f"{where}.url", f"{url!r} is not an http(s) URL")
        return None
    refusal = url_refusal(url, check.webhook_hosts) if check.webhook_hosts is not None else None
    if refusal is not None:
        check.problem(name, f"{where}.url", refusal)
    if not isinstance(event, str) or not _WEBHOOK_EVENT.match(event):
        check.problem(name, f"{where}.event", f"{event!r} is not an event name like dispute.opened")
        return None
    return url, event


def automations_path(configured: Path) -> Path:
    """The configured file; the packaged default set while the default name is absent."""
    if configured.exists():
        return configured
    if configured == Path("automations.yaml"):
        return PACKAGED_DEFAULTS
    raise AutomationsError(
        [f"{configured}: LIFECYCLE_AUTOMATIONS names a file that does not exist"]
    )


def load_automations(
    configured: Path,
    known_templates: Iterable[str],
    known_segments: Iterable[str] | None = None,
) -> list[Automation]:
    path = automations_path(configured)
    return parse_automations(
        path.read_text(encoding="utf-8"), str(path), known_templates, known_segments
    )
