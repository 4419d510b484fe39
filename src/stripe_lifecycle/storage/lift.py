"""The lift report: per automation, the customers it treated against those it held out,
their conversions and money, and the lift (the maths is domain/lift.py).

Read-only queries over `lifecycle_instances` and `conversions`, shared by the API
(`GET /v1/reports/lift`) and the dashboard's lift page. Works on SQLite and PostgreSQL.

- The population: lifecycle instances started in [since, until), per lifecycle and
  automation, split by `held_out`. A group's customers are its distinct `customer_id`s:
  a customer with several instances (a dunning per failed invoice) counts once. The
  holdout assignment is a stable hash of (customer, automation), so a customer is in one
  group; one found in both (the automation's holdout share changed) counts in both.
- Converted customers: distinct customers of the group with at least one conversion whose
  `workflow_id` is one of the group's instances in the range, whenever it occurred (the
  instance's outcome: a range's figures grow while its instances are still running).
- MRR delta of a group, per currency: of those conversions, each Stripe event's money once,
  as the attribution report's totals count it (storage/reports.py): one event can be
  several conversions of a lifecycle (different kinds), so per event and currency the
  largest MRR delta is taken, and those are added up. Conversions without a currency carry
  no money and are left out of the money (still counted as conversions).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from stripe_lifecycle.domain.lift import (
    MIN_CUSTOMERS,
    MIN_OUTCOMES,
    GroupCounts,
    LiftStatus,
    measure,
)
from stripe_lifecycle.storage.models import Conversion, LifecycleInstance

# Rates and lifts are proportions (0.12 = 12%), rounded to this many decimals.
DECIMALS = 4


class GroupFigures(BaseModel):
    customers: int
    # Distinct customers of the group who converted.
    conversions: int
    # conversions / customers; None for an empty group.
    rate: float | None
    # Per currency, minor units: the group's MRR delta over all its customers.
    mrr_per_customer: dict[str, int]
    # Per currency, minor units: the group's MRR delta (each Stripe event once).
    mrr_delta_cents: dict[str, int]


class LiftFigures(BaseModel):
    # p_t − p_h, a proportion.
    absolute: float
    # (p_t − p_h) / p_h; None when p_h = 0.
    relative: float | None
    # The 95% interval of `absolute` (unpooled Wald).
    ci95: tuple[float, float]
    # The interval leaves out 0.
    significant: bool


class MinimumSample(BaseModel):
    customers_per_group: int = MIN_CUSTOMERS
    converted_and_unconverted_per_group: int = MIN_OUTCOMES


class AutomationLift(BaseModel):
    automation: str
    lifecycle: str
    # The share the automation holds out, when the caller knows its configuration.
    holdout_percent: float | None = None
    treated: GroupFigures
    held_out: GroupFigures
    # Only when `status` is ok.
    lift: LiftFigures | None
    status: LiftStatus
    # Why the status is not ok; None when it is.
    reason: str | None
    # Per currency, minor units: (MRR per treated − per held-out customer) × treated
    # customers. Only when `status` is ok.
    incremental_mrr: dict[str, int] | None


class LiftReport(BaseModel):
    since: datetime
    until: datetime
    minimum_sample: MinimumSample = MinimumSample()
    automations: list[AutomationLift]


@dataclass
class _Counts:
    customers: int = 0
    converted: int = 0
    mrr: dict[str, int] = field(default_factory=dict)

    def group(self) -> GroupCounts:
        return GroupCounts(self.customers, self.converted, dict(self.mrr))


def _ratio(value: Fraction | None) -> float | None:
    return None if value is None else round(float(value), DECIMALS)


def _figures(
    counts: GroupCounts, rate: Fraction | None, per_customer: dict[str, int]
) -> GroupFigures:
    return GroupFigures(
        customers=counts.customers,
        conversions=counts.converted,
        rate=_ratio(rate),
        mrr_per_customer=per_customer,
        mrr_delta_cents=dict(sorted(counts.mrr_delta_cents.items())),
    )


async def group_counts(
    session: AsyncSession, since: datetime, until: datetime
) -> dict[tuple[str, str], tuple[GroupCounts, GroupCounts]]:
    """(lifecycle, automation) → (treated, held out) counts for instances started in
    [since, until)."""
    instance = LifecycleInstance
    started_in_range = (
        col(instance.started_at) >= since,
        col(instance.started_at) < until,
    )
    key = (col(instance.lifecycle), col(instance.automation), col(instance.held_out))
    found: dict[tuple[str, str, bool], _Counts] = {}

    def counts(lifecycle: str, automation: str, held_out: bool) -> _Counts:
        return found.setdefault((lifecycle, automation, bool(held_out)), _Counts())

    population = await session.execute(
        select(*key, func.count(func.distinct(col(instance.customer_id))))
        .where(*started_in_range)
        .group_by(*key)
    )
    for lifecycle, automation, held_out, customers in population:
        counts(lifecycle, automation, held_out).customers = int(customers)

    joined = (
        select(col(instance.workflow_id))
        .join(Conversion, col(Conversion.workflow_id) == col(instance.workflow_id))
        .where(*started_in_range)
    )
    converted = await session.execute(
        joined.with_only_columns(
            *key, func.count(func.distinct(col(instance.customer_id)))
        ).group_by(*key)
    )
    for lifecycle, automation, held_out, customers in converted:
        counts(lifecycle, automation, held_out).converted = int(customers)

    per_event = (
        joined.with_only_columns(
            col(instance.lifecycle).label("lifecycle"),
            col(instance.automation).label("automation"),
            col(instance.held_out).label("held_out"),
            col(Conversion.currency).label("currency"),
            func.max(col(Conversion.mrr_delta_cents)).label("mrr"),
        )
        .where(col(Conversion.currency).is_not(None))
        .group_by(*key, col(Conversion.stripe_event_id), col(Conversion.currency))
        .subquery()
    )
    event = per_event.c
    money = await session.execute(
        select(
            event.lifecycle, event.automation, event.held_out, event.currency, func.sum(event.mrr)
        ).group_by(event.lifecycle, event.automation, event.held_out, event.currency)
    )
    for row in money:
        counts(row.lifecycle, row.automation, row.held_out).mrr[row.currency] = int(row[4])

    groups: dict[tuple[str, str], tuple[GroupCounts, GroupCounts]] = {}
    for lifecycle, automation in sorted({(lc, a) for lc, a, _ in found}):
        groups[(lifecycle, automation)] = (
            found.get((lifecycle, automation, False), _Counts()).group(),
            found.get((lifecycle, automation, True), _Counts()).group(),
        )
    return groups


def automation_lift(
    lifecycle: str,
    automation: str,
    treated: GroupCounts,
    held_out: GroupCounts,
    holdout_percent: float | None = None,
) -> AutomationLift:
    """One automation's entry of the report, from its two groups' counts."""
    result = measure(treated, held_out)
    lift = result.lift
    return AutomationLift(
        automation=automation,
        lifecycle=lifecycle,
        holdout_percent=holdout_percent,
        treated=_figures(treated, result.treated_rate, result.treated_mrr_per_customer),
        held_out=_figures(held_out, result.held_out_rate, result.held_out_mrr_per_customer),
        lift=(
            LiftFigures(
                absolute=round(float(lift.absolute), DECIMALS),
                relative=_ratio(lift.relative),
                ci95=(round(lift.ci95[0], DECIMALS), round(lift.ci95[1], DECIMALS)),
                significant=lift.significant,
            )
            if lift
            else None
        ),
        status=result.status,
        reason=result.reason,
        incremental_mrr=result.incremental_mrr,
    )


async def lift_report(
    session: AsyncSession,
    since: datetime,
    until: datetime,
    holdout_percents: Mapping[str, float] | None = None,
) -> LiftReport:
    """Every automation with an instance started in [since, until), by lifecycle then
    automation name. `holdout_percents` (automation name → configured share, 10 for
    `holdout: 10%`) fills `holdout_percent` where known."""
    shares = holdout_percents or {}
    return LiftReport(
        since=since,
        until=until,
        automations=[
            automation_lift(lifecycle, automation, treated, held_out, shares.get(automation))
            for (lifecycle, automation), (treated, held_out) in (
                await group_counts(session, since, until)
            ).items()
        ],
    )


CSV_COLUMNS = (
    "lifecycle",
    "automation",
    "status",
    "currency",
    "treated_customers",
    "treated_conversions",
    "treated_rate",
    "held_out_customers",
    "held_out_conversions",
    "held_out_rate",
    "absolute_lift",
    "relative_lift",
    "ci95_low",
    "ci95_high",
    "treated_mrr_per_customer",
    "held_out_mrr_per_customer",
    "treated_mrr_delta_cents",
    "held_out_mrr_delta_cents",
    "incremental_mrr",
    "holdout_percent",
    "reason",
)


def lift_csv(report: LiftReport) -> str:
    """One row per automation and currency (the currencies either group earned in; one row
    with an empty currency when neither earned money); the counts, rates and lift repeat
    on each of an automation's rows. Empty cells for what does not apply."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for entry in report.automations:
        treated, held_out, lift = entry.treated, entry.held_out, entry.lift
        currencies = sorted(set(treated.mrr_delta_cents) | set(held_out.mrr_delta_cents))
        rows: list[str | None] = [*currencies] or [None]
        for currency in rows:

            def money(figures: Mapping[str, int] | None, cur: str | None = currency) -> Any:
                return None if cur is None or figures is None else figures.get(cur, 0)

            values: dict[str, Any] = {
                "lifecycle": entry.lifecycle,
                "automation": entry.automation,
                "status": entry.status.value,
                "currency": currency,
                "treated_customers": treated.customers,
                "treated_conversions": treated.conversions,
                "treated_rate": treated.rate,
                "held_out_customers": held_out.customers,
                "held_out_conversions": held_out.conversions,
                "held_out_rate": held_out.rate,
                "absolute_lift": lift.absolute if lift else None,
                "relative_lift": lift.relative if lift else None,
                "ci95_low": lift.ci95[0] if lift else None,
                "ci95_high": lift.ci95[1] if lift else None,
                "treated_mrr_per_customer": money(
                    treated.mrr_per_customer if treated.customers else None
                ),
                "held_out_mrr_per_customer": money(
                    held_out.mrr_per_customer if held_out.customers else None
                ),
                "treated_mrr_delta_cents": money(treated.mrr_delta_cents),
                "held_out_mrr_delta_cents": money(held_out.mrr_delta_cents),
                "incremental_mrr": money(entry.incremental_mrr),
                "holdout_percent": entry.holdout_percent,
                "reason": entry.reason,
            }
            writer.writerow(["" if values[c] is None else str(values[c]) for c in CSV_COLUMNS])
    return out.getvalue()
