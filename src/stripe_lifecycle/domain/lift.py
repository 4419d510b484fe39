"""Lift: what an automation's emails changed, measured against its holdout group.

Pure: stdlib only, no I/O. For one automation over one range, the customers whose
instances sent email (treated) and those held out (the instance ran and recorded, but
sent nothing) are two samples; everything below compares them.

- Conversion rate of a group: p = c / n, the customers who converted (c) among the
  group's customers (n). Exact (`Fraction`).
- Absolute lift: p_t − p_h. Relative lift: (p_t − p_h) / p_h, None when p_h = 0.
- 95% confidence interval of p_t − p_h, unpooled Wald for a difference of two
  independent proportions:

      SE = sqrt(p_t (1 − p_t) / n_t + p_h (1 − p_h) / n_h)
      CI = (p_t − p_h) ± z × SE,   z = 1.959963984540054 (the 97.5th normal percentile)

  `significant` when the interval leaves out 0.
- Minimum sample: the interval leans on the normal approximation, which holds when each
  group has at least `MIN_CUSTOMERS` (30) customers and at least `MIN_OUTCOMES` (5)
  converted and 5 unconverted customers. Below it the status is `not_enough_data`, with
  the reason; with no held-out customer at all it is `no_holdout`.
- MRR per customer, per currency: the MRR delta of the group's conversions in that
  currency (each Stripe event's money once, see storage/lift.py) divided by every
  customer of the group, in minor units, rounded half away from zero
  (`ROUND_HALF_UP`, as MRR is rounded in mrr.py). The whole group is the denominator, not
  only the customers billed in that currency: assignment is random, so both groups hold
  the same mix of currencies, and a free customer has no currency until they convert.
  Money is never added across currencies.
- Revenue beyond the holdout (`incremental_mrr`), per currency: what the treated group
  earned over what it would have earned converting like the holdout,

      (MRR per treated customer − MRR per held-out customer) × n_t
        = S_t − S_h × n_t / n_h      (S: the group's MRR delta in that currency)

  computed exactly from S and n (not from the rounded per-customer figures) and rounded
  once, half away from zero. Negative when the held-out customers earned more per head.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction

Z_95 = 1.959963984540054
MIN_CUSTOMERS = 30
MIN_OUTCOMES = 5


class LiftStatus(StrEnum):
    OK = "ok"
    NOT_ENOUGH_DATA = "not_enough_data"
    NO_HOLDOUT = "no_holdout"


@dataclass(frozen=True)
class GroupCounts:
    """One group of one automation: distinct customers, distinct converted customers, and
    the MRR delta of their conversions per currency (minor units)."""

    customers: int
    converted: int
    mrr_delta_cents: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.customers < 0 or not 0 <= self.converted <= self.customers:
            raise ValueError(
                f"converted ({self.converted}) must be between 0 and customers ({self.customers})"
            )


@dataclass(frozen=True)
class Lift:
    absolute: Fraction
    # None when the held-out rate is 0: no baseline to be relative to.
    relative: Fraction | None
    standard_error: float
    ci95: tuple[float, float]

    @property
    def significant(self) -> bool:
        low, high = self.ci95
        return low > 0 or high < 0


@dataclass(frozen=True)
class LiftResult:
    status: LiftStatus
    # Why the status is not `ok`, as a sentence; None when it is.
    reason: str | None
    treated_rate: Fraction | None
    held_out_rate: Fraction | None
    treated_mrr_per_customer: dict[str, int]
    held_out_mrr_per_customer: dict[str, int]
    # Only with status `ok`: below the minimum sample an estimate would mislead.
    lift: Lift | None
    incremental_mrr: dict[str, int] | None


def rate(group: GroupCounts) -> Fraction | None:
    """Converted customers over customers; None for an empty group."""
    return Fraction(group.converted, group.customers) if group.customers else None


def difference(treated: GroupCounts, held_out: GroupCounts) -> Lift:
    """p_t − p_h, relative lift and the unpooled Wald 95% interval. Both groups must have
    customers."""
    p_t, p_h = rate(treated), rate(held_out)
    if p_t is None or p_h is None:
        raise ValueError("both groups need customers to compare their rates")
    absolute = p_t - p_h
    variance = p_t * (1 - p_t) / treated.customers + p_h * (1 - p_h) / held_out.customers
    standard_error = math.sqrt(variance)
    margin = Z_95 * standard_error
    return Lift(
        absolute=absolute,
        relative=absolute / p_h if p_h else None,
        standard_error=standard_error,
        ci95=(float(absolute) - margin, float(absolute) + margin),
    )


def sample_problem(treated: GroupCounts, held_out: GroupCounts) -> str | None:
    """Why the two groups are too small for the normal approximation; None when they are
    not."""
    problems = []
    for name, group in (("treated", treated), ("held-out", held_out)):
        if group.customers < MIN_CUSTOMERS:
            problems.append(
                f"the {name} group has {group.customers} customers ({MIN_CUSTOMERS} needed)"
            )
            continue
        unconverted = group.customers - group.converted
        if group.converted < MIN_OUTCOMES:
            problems.append(
                f"the {name} group has {group.converted} converted customers "
                f"({MIN_OUTCOMES} needed)"
            )
        if unconverted < MIN_OUTCOMES:
            problems.append(
                f"the {name} group has {unconverted} customers who did not convert "
                f"({MIN_OUTCOMES} needed)"
            )
    return "; ".join(problems) or None


def round_half_up(value: Fraction) -> int:
    """To the nearest integer, halves away from zero (2.5 → 3, −2.5 → −3), exactly."""
    whole = math.floor(abs(value) + Fraction(1, 2))
    return -whole if value < 0 else whole


def mrr_per_customer(group: GroupCounts) -> dict[str, int]:
    """The group's MRR delta per customer, per currency; empty for an empty group."""
    if not group.customers:
        return {}
    return {
        currency: round_half_up(Fraction(total, group.customers))
        for currency, total in sorted(group.mrr_delta_cents.items())
    }


def incremental_mrr(treated: GroupCounts, held_out: GroupCounts) -> dict[str, int]:
    """Per currency, (S_t / n_t − S_h / n_h) × n_t = S_t − S_h × n_t / n_h, exact then
    rounded half away from zero. The held-out group must have customers."""
    if not held_out.customers:
        raise ValueError("no held-out customers: nothing to compare with")
    currencies = sorted(set(treated.mrr_delta_cents) | set(held_out.mrr_delta_cents))
    return {
        currency: round_half_up(
            treated.mrr_delta_cents.get(currency, 0)
            - Fraction(held_out.mrr_delta_cents.get(currency, 0) * treated.customers)
            / held_out.customers
        )
        for currency in currencies
    }


def measure(treated: GroupCounts, held_out: GroupCounts) -> LiftResult:
    """Everything the lift report shows for one automation."""
    status, reason = LiftStatus.OK, None
    if not held_out.customers:
        status, reason = LiftStatus.NO_HOLDOUT, "no customer was held out in this range"
    elif problem := sample_problem(treated, held_out):
        status, reason = LiftStatus.NOT_ENOUGH_DATA, problem
    ok = status is LiftStatus.OK
    return LiftResult(
        status=status,
        reason=reason,
        treated_rate=rate(treated),
        held_out_rate=rate(held_out),
        treated_mrr_per_customer=mrr_per_customer(treated),
        held_out_mrr_per_customer=mrr_per_customer(held_out),
        lift=difference(treated, held_out) if ok else None,
        incremental_mrr=incremental_mrr(treated, held_out) if ok else None,
    )
