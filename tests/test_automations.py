"""Automation definitions: parsing, validation errors that name file/automation/field,
filters and priority (table-driven, pure)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from stripe_lifecycle.domain.automations import (
    LIFECYCLES,
    PACKAGED_DEFAULTS,
    AutomationsError,
    MatchContext,
    automations_path,
    load_automations,
    matches,
    parse_automations,
    parse_duration,
    select,
)
from stripe_lifecycle.domain.segments import load_segments
from stripe_lifecycle.mail.templates import Brand, TemplateRenderer
from stripe_lifecycle.settings import Settings

TEMPLATES = {
    "dunning/payment-failed",
    "dunning/reminder",
    "dunning/final-notice",
    "payment_action/confirm",
    "card_expiring/reminder",
    "trial/ending",
}


def parse(yaml_text: str) -> list[object]:
    return list(parse_automations(textwrap.dedent(yaml_text), "automations.yaml", TEMPLATES))


def problems(yaml_text: str) -> list[str]:
    with pytest.raises(AutomationsError) as info:
        parse(yaml_text)
    return info.value.problems


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0s", 0),
        ("2s", 2),
        ("15m", 900),
        ("2h", 7200),
        ("3d", 259_200),
        ("1w", 604_800),
        (" 7d ", 604_800),
    ],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["3", "3x", "-1d", "1.5d", "", "d", True, None])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)


def test_design_example_parses_with_its_steps() -> None:
    [automation] = parse_automations(
        textwrap.dedent(
            """
            automations:
              - name: dunning-annual-high-value
                lifecycle: dunning
                priority: 10
                enabled: true
                filters:
                  subscription_interval: year
                  invoice_amount_min: 50000
                  customer_metadata: {tier: enterprise}
                  product: [prod_ABC]
                steps:
                  - {after: 0s,  send: dunning/payment-failed}
                  - {after: 3d,  send: dunning/reminder}
                  - {after: 7d,  send: dunning/final-notice}
                  - {after: 14d, action: cancel_subscription}
            """
        ),
        "automations.yaml",
        TEMPLATES,
    )
    assert automation.name == "dunning-annual-high-value"
    assert automation.filters.subscription_interval == ["year"]
    assert automation.filters.customer_metadata == {"tier": "enterprise"}
    assert [(s.after_seconds, s.send, s.action) for s in automation.steps] == [
        (0, "dunning/payment-failed", None),
        (259_200, "dunning/reminder", None),
        (604_800, "dunning/final-notice", None),
        (1_209_600, None, "cancel_subscription"),
    ]
    assert [s.key for s in automation.steps] == [
        "0-dunning-payment-failed",
        "1-dunning-reminder",
        "2-dunning-final-notice",
        "3-cancel_subscription",
    ]


OK_STEPS = "\n    steps: [{after: 1d, send: dunning/reminder}]"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "lifecycle: dunning\n    steps: [{after: 1d, send: dunning/nope}]",
            "automation 'a': steps[0].send: unknown template 'dunning/nope'",
        ),
        (
            "lifecycle: dunning\n    steps: [{after: 1d, action: refund_everyone}]",
            "automation 'a': steps[0].action: unknown action 'refund_everyone'",
        ),
        (
            # Renamed: Stripe cannot mark a subscription unpaid; the error says what to use.
            "lifecycle: dunning\n    steps: [{after: 1d, action: mark_unpaid}]",
            "automation 'a': steps[0].action: 'mark_unpaid': Stripe has no call",
        ),
        (
            "lifecycle: card_expiring\n    steps: [{before: 1d, action: cancel_subscription}]",
            "steps[0].action: 'cancel_subscription' is not allowed for card_expiring",
        ),
        (
            "lifecycle: dunning\n    steps: [{after: 3x, send: dunning/reminder}]",
            "automation 'a': steps[0].after: bad duration '3x'",
        ),
        (
            "lifecycle: dunning\n    steps: [{before: 3d, send: dunning/reminder}]",
            "automation 'a': steps[0].before: dunning has no date to count back from",
        ),
        (
            "lifecycle: dunning\n    steps: [{send: dunning/reminder}]",
            "automation 'a': steps[0]: needs exactly one of `after` or `before`",
        ),
        (
            "lifecycle: dunning\n    steps: [{after: 1d, send: dunning/x, action: notify_team}]",
            "automation 'a': steps[0]: needs exactly one of `send`, `action` or `webhook`",
        ),
        (
            "lifecycle: dunnning" + OK_STEPS,
            "automation 'a': lifecycle: 'dunnning'",
        ),
        (
            # Accepted and never run would be worse: a campaign starts on a segment entry.
            "lifecycle: upgrade\n    steps: [{after: 0s, send: upgrade/offer}]",
            "automation 'a': trigger: required for an upgrade campaign",
        ),
        ("lifecycle: dunning\n    steps: []", "automation 'a': steps: required, a non-empty list"),
        (
            "lifecycle: dunning\n    filters: {invoice_amount_min: ten}" + OK_STEPS,
            "automation 'a': filters.invoice_amount_min: 'ten' is not an amount",
        ),
        (
            "lifecycle: dunning\n    filters: {colour: red}" + OK_STEPS,
            "automation 'a': filters.colour: unknown filter",
        ),
        (
            "lifecycle: dunning\n    filters: {subscription_interval: fortnight}" + OK_STEPS,
            "automation 'a': filters.subscription_interval: 'fortnight' is not a billing period",
        ),
        (
            "lifecycle: dunning\n    on_pause: explode" + OK_STEPS,
            "automation 'a': on_pause: 'explode' is not finish or cancel",
        ),
        (
            "lifecycle: dunning\n    prioriti: 3" + OK_STEPS,
            "automation 'a': prioriti: unknown field",
        ),
    ],
)
def test_invalid_definitions_name_file_automation_and_field(body: str, expected: str) -> None:
    found = problems(f"automations:\n  - name: a\n    {body}\n")
    assert any(p.startswith("automations.yaml: ") and expected in p for p in found), found


def test_every_problem_is_reported_at_once_and_duplicate_names_are_refused() -> None:
    found = problems(
        """
        automations:
          - name: a
            lifecycle: dunning
            steps: [{after: 1d, send: dunning/nope}]
          - name: a
            lifecycle: dunning
            steps: [{after: 2x, send: dunning/reminder}]
        """
    )
    assert len(found) == 3
    assert "automations.yaml: automation 'a': name: used by more than one automation" in found


@pytest.mark.parametrize("text", ["automations: {}", "- a\n- b", "automations: [", ""])
def test_malformed_files_are_refused(text: str) -> None:
    assert problems(text)[0].startswith("automations.yaml: ")


FILTER_CASES = [
    ({}, MatchContext(), True),
    ({"livemode": True}, MatchContext(livemode=False), False),
    ({"subscription_interval": "year"}, MatchContext(subscription_periods=["year"]), True),
    ({"subscription_interval": ["month"]}, MatchContext(subscription_periods=["year"]), False),
    # Twelve months are a year; a quarter is three months, not a month.
    ({"subscription_interval": "12 months"}, MatchContext(subscription_periods=["year"]), True),
    ({"subscription_interval": "month"}, MatchContext(subscription_periods=["3 month"]), False),
    ({"subscription_interval": "3 month"}, MatchContext(subscription_periods=["3 month"]), True),
    # Every item must bill at the period: an annual plan with a monthly add-on does not.
    (
        {"subscription_interval": "year"},
        MatchContext(subscription_periods=["month", "year"]),
        False,
    ),
    ({"subscription_interval": "year"}, MatchContext(), False),
    ({"invoice_amount_min": 50_000}, MatchContext(invoice_amount=50_000), True),
    ({"invoice_amount_min": 50_000}, MatchContext(invoice_amount=49_999), False),
    ({"invoice_amount_min": 1}, MatchContext(invoice_amount=None), False),
    ({"invoice_amount_max": 1_000}, MatchContext(invoice_amount=999), True),
    ({"currency": "EUR"}, MatchContext(currency="eur"), True),
    ({"currency": ["usd"]}, MatchContext(currency="EUR"), False),
    ({"product": ["prod_A"]}, MatchContext(product_ids=["prod_B", "prod_A"]), True),
    ({"product": ["prod_A"]}, MatchContext(product_ids=[]), False),
    ({"price": "price_1"}, MatchContext(price_ids=["price_1"]), True),
    ({"plan": ["Starter"]}, MatchContext(plan="Pro"), False),
    (
        {"cancellation_reason": "payment_failed"},
        MatchContext(cancellation_reason="payment_failed"),
        True,
    ),
    (
        {"customer_metadata": {"tier": "enterprise"}},
        MatchContext(customer_metadata={"tier": "enterprise", "x": "1"}),
        True,
    ),
    ({"customer_metadata": {"tier": "enterprise"}}, MatchContext(customer_metadata={}), False),
    ({"invoice_metadata": {"po": "123"}}, MatchContext(invoice_metadata={"po": "124"}), False),
]


@pytest.mark.parametrize(("filters", "ctx", "expected"), FILTER_CASES)
def test_filters(filters: dict[str, object], ctx: MatchContext, expected: bool) -> None:
    document = {
        "automations": [
            {
                "name": "a",
                "lifecycle": "dunning",
                "filters": filters,
                "steps": [{"after": "0s", "send": "dunning/reminder"}],
            }
        ]
    }
    [automation] = parse_automations(yaml.safe_dump(document), "f", TEMPLATES)
    assert matches(automation.filters, ctx) is expected


PRIORITY_FILE = """
automations:
  - name: fallback
    lifecycle: dunning
    priority: 100
    steps: [{after: 0s, send: dunning/payment-failed}]
  - name: annual
    lifecycle: dunning
    priority: 10
    filters: {subscription_interval: year}
    steps: [{after: 0s, send: dunning/payment-failed}]
  - name: enterprise-paused
    lifecycle: dunning
    priority: 1
    enabled: false
    filters: {customer_metadata: {tier: enterprise}}
    steps: [{after: 0s, send: dunning/payment-failed}]
  - name: also-fallback
    lifecycle: dunning
    priority: 100
    steps: [{after: 0s, send: dunning/reminder}]
  - name: cards
    lifecycle: card_expiring
    steps: [{before: 30d, send: card_expiring/reminder}]
"""


@pytest.mark.parametrize(
    ("lifecycle", "ctx", "expected"),
    [
        ("dunning", MatchContext(subscription_periods=["year"]), "annual"),
        ("dunning", MatchContext(subscription_periods=["month"]), "fallback"),
        # Disabled automations never run, however well they match.
        ("dunning", MatchContext(customer_metadata={"tier": "enterprise"}), "fallback"),
        ("card_expiring", MatchContext(), "cards"),
        ("trial", MatchContext(), None),
    ],
)
def test_first_enabled_matching_automation_by_priority_runs(
    lifecycle: str, ctx: MatchContext, expected: str | None
) -> None:
    automations = parse_automations(PRIORITY_FILE, "f", TEMPLATES)
    chosen = select(automations, lifecycle, ctx)
    assert (chosen.name if chosen else None) == expected


def test_packaged_defaults_are_valid_and_used_when_no_file_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert automations_path(Path("automations.yaml")) == PACKAGED_DEFAULTS
    shipped = TemplateRenderer(Brand.from_settings(Settings())).names()
    segments = load_segments(Path("segments.yaml")).names
    automations = load_automations(Path("automations.yaml"), shipped, segments)
    # Every lifecycle has a default, upgrade campaigns on packaged segments.
    assert {a.lifecycle for a in automations} == set(LIFECYCLES)
    campaigns = {a.name: a.trigger_segment for a in automations if a.trigger_segment}
    assert campaigns == {
        "upgrade-starter-tenure": "starter-3-months",
        "upgrade-seats-near-limit": "seats-near-limit",
    }
    annual = select(automations, "dunning", MatchContext(subscription_periods=["year"]))
    assert annual is not None and annual.name == "dunning-annual-plans"
    (tmp_path / "automations.yaml").write_text("automations: []\n")
    assert automations_path(Path("automations.yaml")) == Path("automations.yaml")
    with pytest.raises(
        AutomationsError, match="LIFECYCLE_AUTOMATIONS names a file that does not exist"
    ):
        automations_path(tmp_path / "mine.yaml")


TRIGGER_TEMPLATES = TEMPLATES | {"invoice_overdue/reminder", "event/notice"}


def test_event_sequences_webhook_steps_and_invoice_actions_parse() -> None:
    text = """
automations:
  - name: dispute-alert
    lifecycle: event
    trigger: {event: charge.dispute.created}
    steps:
      - {after: 0s, action: notify_team}
      - {after: 0s, webhook: {url: "https://app.example.com/hooks/billing", event: dispute.opened}}
  - name: overdue-b2b
    lifecycle: invoice_overdue
    filters: {invoice_amount_min: 100000, collection_method: send_invoice}
    steps:
      - {after: 1d, send: invoice_overdue/reminder}
      - {after: 7d, action: retry_payment}
      - {after: 30d, action: mark_uncollectible}
"""
    alert, overdue = parse_automations(
        textwrap.dedent(text),
        "automations.yaml",
        TRIGGER_TEMPLATES,
        webhook_hosts={"app.example.com"},
    )
    assert alert.trigger_event == "charge.dispute.created"
    hook = alert.steps[1]
    assert (hook.webhook_url, hook.webhook_event, hook.key) == (
        "https://app.example.com/hooks/billing",
        "dispute.opened",
        "1-webhook-dispute.opened",
    )
    assert (
        hook.describe()
        == "after 0s: webhook dispute.opened to https://app.example.com/hooks/billing"
    )
    assert overdue.filters.collection_method == ["send_invoice"]
    assert [s.action for s in overdue.steps[1:]] == ["retry_payment", "mark_uncollectible"]
    assert select([alert], "event", MatchContext(), event_type="charge.dispute.created") == alert
    assert select([alert], "event", MatchContext(), event_type="customer.created") is None


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            "lifecycle: event\n    steps: [{after: 0s, action: notify_team}]",
            "automation 'a': trigger: required for an event sequence",
        ),
        (
            "lifecycle: event\n    trigger: {event: Dispute}\n"
            "    steps: [{after: 0s, action: notify_team}]",
            "automation 'a': trigger.event: 'Dispute' is not a Stripe event type",
        ),
        (
            "lifecycle: event\n    trigger: {event: customer.created}\n"
            "    steps: [{after: 0s, action: retry_payment}]",
            "automation 'a': steps[0].action: 'retry_payment' is not allowed for event",
        ),
        (
            "lifecycle: invoice_overdue\n    steps: [{after: 0s, action: cancel_subscription}]",
            "automation 'a': steps[0].action: 'cancel_subscription' is not allowed for "
            "invoice_overdue",
        ),
        (
            "lifecycle: invoice_overdue\n"
            "    steps: [{after: 0s, webhook: {url: 'http://169.254.169.254/x', event: a.b}}]",
            "automation 'a': steps[0].webhook.url: ",
        ),
        (
            "lifecycle: invoice_overdue\n"
            "    steps: [{after: 0s, webhook: {url: 'https://app.example.com/', event: 'A B'}}]",
            "automation 'a': steps[0].webhook.event: 'A B' is not an event name",
        ),
        (
            "lifecycle: invoice_overdue\n"
            "    steps: [{after: 0s, webhook: {url: 'https://app.example.com/'}}]",
            "automation 'a': steps[0].webhook: expected {url: https://..., event: name.of.event}",
        ),
        (
            "lifecycle: invoice_overdue\n    steps: [{before: 1d, send: invoice_overdue/reminder}]",
            "automation 'a': steps[0].before: invoice_overdue has no date to count back from",
        ),
    ],
)
def test_trigger_and_action_problems_name_file_automation_and_field(
    fields: str, expected: str
) -> None:
    text = f"automations:\n  - name: a\n    {fields}\n"
    with pytest.raises(AutomationsError) as info:
        parse_automations(
            text, "automations.yaml", TRIGGER_TEMPLATES, webhook_hosts={"app.example.com"}
        )
    assert any(p.startswith(f"automations.yaml: {expected}") for p in info.value.problems), (
        info.value.problems
    )
