"""Upgrade campaigns and holdouts as data and rules (pure): the automation fields that say
when a campaign starts, starts again and ends; `filters: {segment}` on every automation;
the holdout assignment."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest

from stripe_lifecycle.domain import holdout, ids
from stripe_lifecycle.domain.automations import (
    Automation,
    AutomationsError,
    MatchContext,
    campaign_segments,
    matches,
    parse_automations,
    select,
)
from stripe_lifecycle.domain.ledger import CustomerLedger, LifecycleRef, new_state
from stripe_lifecycle.domain.lifecycles import Lifecycle
from stripe_lifecycle.domain.rules import (
    LEFT_SEGMENT,
    RUNNING,
    End,
    campaign_exits,
    campaign_start,
    finished,
    started,
)
from stripe_lifecycle.mail.templates import load_checked_automations
from stripe_lifecycle.settings import Settings

TEMPLATES = {"upgrade/offer", "dunning/payment-failed", "dunning/reminder"}
SEGMENTS = {"starter-3-months", "seats-near-limit", "high-ltv"}
DAY = 86_400


def parse(text: str, segments: set[str] | None = None) -> list[Automation]:
    return parse_automations(
        textwrap.dedent(text),
        "automations.yaml",
        TEMPLATES,
        SEGMENTS if segments is None else segments,
    )


def problems(text: str) -> list[str]:
    with pytest.raises(AutomationsError) as info:
        parse(text)
    return info.value.problems


CAMPAIGN = """
automations:
  - name: starter-upgrade
    lifecycle: upgrade
    trigger: {segment: starter-3-months}
    reentry: 30d
    exit_on_leave: false
    enter_existing: true
    holdout: 12.5%
    offer: {description: A month of Pro on us, next_plan: Pro}
    steps:
      - {after: 0s, send: upgrade/offer}
"""


def test_an_upgrade_campaign_reads_its_trigger_entry_rules_and_holdout() -> None:
    [campaign] = parse(CAMPAIGN)
    assert campaign.lifecycle == Lifecycle.UPGRADE
    assert campaign.trigger_segment == "starter-3-months"
    assert campaign.reentry_seconds == 30 * DAY
    assert campaign.exit_on_leave is False
    assert campaign.enter_existing is True
    assert campaign.holdout_basis_points == 1250
    assert campaign.holdout_percent == 12.5
    assert campaign.offer is not None and campaign.offer.next_plan == "Pro"


def test_campaign_defaults_never_reenter_end_on_leaving_and_leave_existing_members_alone() -> None:
    [campaign] = parse(
        """
        automations:
          - name: c
            lifecycle: upgrade
            trigger: {segment: seats-near-limit}
            offer: {description: More seats}
            steps: [{after: 0s, send: upgrade/offer}]
        """
    )
    assert (campaign.reentry_seconds, campaign.exit_on_leave, campaign.enter_existing) == (
        None,
        True,
        False,
    )
    assert campaign.holdout_basis_points == 0


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ("", "automation 'c': trigger: required for an upgrade campaign"),
        ("trigger: {segment: nope}", "automation 'c': trigger.segment: unknown segment 'nope'"),
        ("trigger: {event: x}", "automation 'c': trigger: required for an upgrade campaign"),
        (
            "trigger: {segment: high-ltv}\n    reentry: sometimes",
            "automation 'c': reentry: never, or a duration",
        ),
        (
            "trigger: {segment: high-ltv}\n    exit_on_leave: maybe",
            "automation 'c': exit_on_leave: 'maybe' is not true or false",
        ),
        (
            "trigger: {segment: high-ltv}\n    holdout: 10",
            "automation 'c': holdout: 10 is not a percentage like 10%",
        ),
        (
            "trigger: {segment: high-ltv}\n    holdout: 60%",
            "automation 'c': holdout: '60%': hold out more than 0% and at most 50%",
        ),
        (
            "trigger: {segment: high-ltv}\n    holdout: 0%",
            "automation 'c': holdout: '0%': hold out more than 0% and at most 50%",
        ),
    ],
)
def test_campaign_problems_name_the_file_automation_and_field(fields: str, expected: str) -> None:
    text = f"""
automations:
  - name: c
    lifecycle: upgrade
    {fields}
    offer: {{description: x}}
    steps: [{{after: 0s, send: upgrade/offer}}]
"""
    found = problems(text)
    assert any(p.startswith(f"automations.yaml: {expected}") for p in found), found


@pytest.mark.parametrize(
    "key", ["trigger: {segment: high-ltv}", "reentry: 3d", "enter_existing: true"]
)
def test_only_upgrade_campaigns_take_campaign_fields(key: str) -> None:
    found = problems(
        f"""
automations:
  - name: d
    lifecycle: dunning
    {key}
    steps: [{{after: 0s, send: dunning/payment-failed}}]
"""
    )
    field = key.split(":")[0]
    assert found == [
        f"automations.yaml: automation 'd': {field}: only upgrade campaigns (lifecycle: upgrade) "
        "have one"
    ]


def test_any_automation_may_hold_out_and_filter_by_segment() -> None:
    [dunning] = parse(
        """
        automations:
          - name: gentle-dunning
            lifecycle: dunning
            holdout: 10%
            filters: {segment: high-ltv}
            steps: [{after: 0s, send: dunning/payment-failed}]
        """
    )
    assert dunning.holdout_basis_points == 1000
    assert dunning.filters.segment == ["high-ltv"]
    assert matches(dunning.filters, MatchContext(segments=["trialing", "high-ltv"]))
    assert not matches(dunning.filters, MatchContext(segments=["trialing"]))
    assert not matches(dunning.filters, MatchContext())


def test_a_segment_filter_naming_an_unknown_segment_is_refused() -> None:
    found = problems(
        """
        automations:
          - name: d
            lifecycle: dunning
            filters: {segment: [high-ltv, vip]}
            steps: [{after: 0s, send: dunning/payment-failed}]
        """
    )
    assert found == [
        "automations.yaml: automation 'd': filters.segment: unknown segment 'vip' "
        "(segments: high-ltv, seats-near-limit, starter-3-months)"
    ]


TWO_CAMPAIGNS = """
automations:
  - name: existing-too
    lifecycle: upgrade
    priority: 20
    trigger: {segment: starter-3-months}
    enter_existing: true
    offer: {description: x}
    steps: [{after: 0s, send: upgrade/offer}]
  - name: new-entries
    lifecycle: upgrade
    priority: 10
    trigger: {segment: starter-3-months}
    filters: {segment: high-ltv}
    offer: {description: x}
    steps: [{after: 0s, send: upgrade/offer}]
  - name: paused-campaign
    lifecycle: upgrade
    enabled: false
    trigger: {segment: seats-near-limit}
    offer: {description: x}
    steps: [{after: 0s, send: upgrade/offer}]
"""


@pytest.mark.parametrize(
    ("segment", "existing", "segments", "expected"),
    [
        # An entry runs the first matching campaign of that segment, by priority.
        ("starter-3-months", False, ["starter-3-months", "high-ltv"], "new-entries"),
        ("starter-3-months", False, ["starter-3-months"], "existing-too"),
        # Being in it already: only campaigns that enter existing members.
        ("starter-3-months", True, ["starter-3-months", "high-ltv"], "existing-too"),
        # A disabled campaign, or a segment no campaign is triggered by: none.
        ("seats-near-limit", False, ["seats-near-limit"], None),
        ("high-ltv", False, ["high-ltv"], None),
    ],
)
def test_which_campaign_an_entry_runs(
    segment: str, existing: bool, segments: list[str], expected: str | None
) -> None:
    automations = parse(TWO_CAMPAIGNS)
    chosen = select(
        automations,
        Lifecycle.UPGRADE,
        MatchContext(segments=segments),
        segment=segment,
        existing=existing,
    )
    assert (chosen.name if chosen else None) == expected
    # No other lifecycle's selection ever picks a campaign.
    assert select(automations, Lifecycle.DUNNING, MatchContext(segments=segments)) is None
    assert campaign_segments(automations) == {"starter-3-months"}


def campaign(
    reentry_days: int | None, exit_on_leave: bool = True, name: str = "starter-upgrade"
) -> Automation:
    return Automation(
        name=name,
        lifecycle=Lifecycle.UPGRADE,
        trigger_segment="starter-3-months",
        reentry_seconds=None if reentry_days is None else reentry_days * DAY,
        exit_on_leave=exit_on_leave,
    )


def run_campaign(ledger: CustomerLedger, automation: Automation, at: int) -> str | None:
    start = campaign_start(ledger, automation, "starter-3-months", at)
    if start is None:
        return None
    started(ledger, start, automation.name, at=at)
    return start.workflow_id


def test_each_instance_of_a_campaign_has_the_next_number() -> None:
    ledger = CustomerLedger(new_state("cus_A"))
    automation = campaign(reentry_days=30)
    first = run_campaign(ledger, automation, at=0)
    assert (
        first == ids.upgrade_id("cus_A", "starter-upgrade", 1) == "upgrade-cus_A-starter-upgrade-1"
    )
    # Not while it runs, whatever the re-entry rule.
    assert run_campaign(ledger, automation, at=60 * DAY) is None
    finished(ledger, first, "sequence_finished", keep=50)
    # Within the re-entry period: no; from its end on: the second instance.
    assert run_campaign(ledger, automation, at=30 * DAY - 1) is None
    assert run_campaign(ledger, automation, at=30 * DAY) == "upgrade-cus_A-starter-upgrade-2"
    record = ledger.state.campaigns["starter-upgrade"]
    assert (record.started, record.last_started) == (2, 30 * DAY)


def test_reentry_never_starts_a_campaign_once() -> None:
    ledger = CustomerLedger(new_state("cus_B"))
    automation = campaign(reentry_days=None)
    first = run_campaign(ledger, automation, at=0)
    assert first is not None
    finished(ledger, first, "left_segment", keep=50)
    assert run_campaign(ledger, automation, at=365 * DAY) is None


def test_leaving_the_segment_ends_the_campaigns_that_say_so() -> None:
    ledger = CustomerLedger(new_state("cus_C"))
    ending = run_campaign(ledger, campaign(None), at=0)
    seats = campaign(None, exit_on_leave=False, name="seats-campaign")
    staying = campaign_start(ledger, seats, "seats-near-limit", 0)
    assert staying is not None
    started(ledger, staying, "seats-campaign", at=0)
    other = LifecycleRef("trial-sub_1", Lifecycle.TRIAL, "trial-default", segment=None)
    ledger.state.lifecycles.append(other)
    assert campaign_exits(ledger, ["starter-3-months", "seats-near-limit"]) == [
        End(str(ending), LEFT_SEGMENT)
    ]
    assert campaign_exits(ledger, ["high-ltv"]) == []
    assert all(r.status == RUNNING for r in ledger.state.lifecycles)


def test_holdout_assignment_is_stable_and_independent_per_automation() -> None:
    customers = [f"cus_{n:06d}" for n in range(2000)]
    first = [holdout.held_out(c, "upgrade-a", 1000) for c in customers]
    assert first == [holdout.held_out(c, "upgrade-a", 1000) for c in customers]
    other = [holdout.held_out(c, "upgrade-b", 1000) for c in customers]
    # A customer held out of one automation is not held out of every other.
    assert first != other
    assert not any(holdout.held_out(c, "upgrade-a", 0) for c in customers)
    # A larger share keeps everyone the smaller share held out (the same hash bucket).
    assert all(
        holdout.held_out(c, "upgrade-a", 2000) for c, h in zip(customers, first, strict=True) if h
    )


@pytest.mark.parametrize("basis_points", [500, 1000, 2500, 5000])
def test_holdout_share_is_the_configured_one_within_binomial_noise(basis_points: int) -> None:
    n = 10_000
    share = basis_points / 10_000
    held = sum(
        holdout.held_out(f"cus_{i:08d}", "upgrade-starter-tenure", basis_points) for i in range(n)
    )
    # Four standard deviations of a binomial(n, share): a fair hash fails this about
    # once in 15,000 runs, and the hash is fixed, so this either always passes or never.
    tolerance = 4 * math.sqrt(n * share * (1 - share))
    assert abs(held - n * share) <= tolerance, (held, n * share, tolerance)


def test_packaged_campaigns_whose_segment_your_file_lacks_are_left_out(tmp_path: Path) -> None:
    mine = tmp_path / "segments.yaml"
    mine.write_text(
        "segments:\n  - name: starter-3-months\n    where: {field: plan, eq: Starter}\n"
    )
    _, automations = load_checked_automations(Settings(segments=mine))
    names = {a.name for a in automations}
    assert "upgrade-starter-tenure" in names
    assert "upgrade-seats-near-limit" not in names
    assert "dunning-default" in names
    # A file of your own naming a segment that does not exist stops the start.
    own = tmp_path / "automations.yaml"
    own.write_text(
        "automations:\n"
        "  - name: seats\n"
        "    lifecycle: upgrade\n"
        "    trigger: {segment: seats-near-limit}\n"
        "    offer: {description: x}\n"
        "    steps: [{after: 0s, send: upgrade/offer}]\n"
    )
    with pytest.raises(
        AutomationsError, match="trigger.segment: unknown segment 'seats-near-limit'"
    ):
        load_checked_automations(Settings(segments=mine, automations=own))
