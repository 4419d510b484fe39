"""The attribution report: what each automation, step or template earned over a time range.

Read-only queries over `conversions`, `conversion_credits` and `messages`, shared by the
API (`GET /v1/reports/attribution`) and anything else that shows the figures. Money is
never summed across currencies: every figure with money in it comes with its currency.

- A conversion is in the range when it occurred in it (`since` included, `until` not); a
  message when it was sent in it. Conversions are credited as they were recorded (the
  model in force then, see attribution.py).
- `rows`: per group and currency, the conversions credited to its messages, their share
  (`credited_conversions`: under `linear` a conversion credits several rows), the MRR and
  amount credited, the messages it sent in the range and credited conversions per message
  sent. A group whose messages earned nothing has one row with no currency. A group that
  earned in two currencies has a row for each, both with all the group's messages.
- `unattributed`: conversions that no message earned, per lifecycle, automation and
  `reason`: None when no message of the lifecycle touched the customer in the window,
  else the reason it was recorded uncredited (an invoice paid out of band).
- `totals`: per currency, every conversion and the credited ones, and their money with
  the money of one Stripe event counted once. One event can be several conversions (the
  `invoice.paid` that recovers a trial's failed first charge also converts the trial):
  each is its own row above, but they describe one payment and one subscription, so the
  totals take the largest MRR delta and amount among the event's conversions (of those
  credited, for the credited figures) instead of their sum. `events` counts the events,
  `shared_events` those that made more than one conversion.
- `dunning`: failed invoices (dunning instances in the range: those that recorded a
  message in it, and those closed as paid in it), the recovered ones, and the recovered
  MRR and amounts per currency. An invoice paid but recorded uncredited (out of band) was
  not recovered by dunning: it counts as failed, not recovered, in `uncredited_invoices`.
"""

from __future__ import annotations

import bisect
import csv
import io
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal, get_args

from pydantic import BaseModel
from sqlalchemy import ColumnElement, Select, case, func, select, union
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from stripe_lifecycle.domain.attribution import NOT_TOUCHES, WHOLE
from stripe_lifecycle.domain.conversions import RECOVERED
from stripe_lifecycle.domain.lifecycles import Lifecycle
from stripe_lifecycle.storage.models import (
    SENT_STATUSES,
    Conversion,
    ConversionCredit,
    Message,
    sent_time,
)

# A dunning's invoice closed as paid in the range; recovered by dunning unless it was
# recorded uncredited (paid out of band).
DUNNING_PAID = (col(Conversion.lifecycle) == Lifecycle.DUNNING, col(Conversion.kind) == RECOVERED)
BY_DUNNING = col(Conversion.uncredited_reason).is_(None)

GroupBy = Literal["automation", "step", "template"]
GROUPINGS: tuple[GroupBy, ...] = get_args(GroupBy)
DEFAULT_RANGE = timedelta(days=30)


class ReportRow(BaseModel):
    lifecycle: str
    automation: str | None
    step: str | None
    template: str | None
    currency: str | None
    # Conversions credited, wholly or in part, to this row's messages.
    conversions: int
    # Their shares added up: equal to `conversions` unless credit is split (linear).
    credited_conversions: float
    mrr_delta_cents: int
    amount_cents: int
    messages_sent: int
    # credited_conversions per message sent; None when nothing was sent in the range.
    conversion_rate: float | None


class UnattributedRow(BaseModel):
    lifecycle: str
    automation: str | None
    currency: str | None
    # Why no email was credited: None when none of the lifecycle touched the customer in
    # the window, else the reason recorded with the conversion (paid out of band, ...).
    reason: str | None
    conversions: int
    mrr_delta_cents: int
    amount_cents: int


class CurrencyTotal(BaseModel):
    """Every conversion of a currency; the money of one Stripe event counted once."""

    currency: str | None
    conversions: int
    attributed_conversions: int
    # The Stripe events behind the conversions, and those that made more than one.
    events: int
    shared_events: int
    mrr_delta_cents: int
    attributed_mrr_delta_cents: int
    amount_cents: int
    attributed_amount_cents: int


class RecoveredMoney(BaseModel):
    currency: str | None
    invoices: int
    mrr_delta_cents: int
    amount_cents: int


class DunningSummary(BaseModel):
    failed_invoices: int
    recovered_invoices: int
    # Paid, but not by dunning (out of band): among the failed, not the recovered.
    uncredited_invoices: int
    # recovered_invoices / failed_invoices; None when no invoice failed.
    recovery_rate: float | None
    recovered: list[RecoveredMoney]


class AttributionReport(BaseModel):
    since: datetime
    until: datetime
    group_by: GroupBy
    rows: list[ReportRow]
    unattributed: list[UnattributedRow]
    totals: list[CurrencyTotal]
    messages_sent: int
    dunning: DunningSummary


def report_range(since: str | None, until: str | None, now: datetime) -> tuple[datetime, datetime]:
    """ISO dates or datetimes → a UTC range; by default the 30 days up to `now`.

    A date as `until` includes that whole day; a datetime without an offset is UTC.
    Raises `RangeError` naming the parameter.
    """
    end = _bound("until", until, end_of_day=True) if until else now
    start = _bound("since", since, end_of_day=False) if since else end - DEFAULT_RANGE
    if start >= end:
        raise RangeError("since", f"since ({start.isoformat()}) must be before until")
    return start, end


class RangeError(ValueError):
    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _bound(name: str, raw: str, *, end_of_day: bool) -> datetime:
    text = raw.strip()
    try:
        if _DATE_ONLY.match(text):
            day = date.fromisoformat(text) + timedelta(days=1 if end_of_day else 0)
            return datetime.combine(day, time(), UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise RangeError(
            name,
            f"{name} must be an ISO date (2026-01-31) or datetime "
            f"(2026-01-31T12:00:00Z), not {raw!r}",
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _group_columns(group_by: GroupBy) -> list[Any]:
    columns: list[Any] = [col(Message.lifecycle)]
    if group_by in ("automation", "step"):
        columns.append(col(Message.automation))
    if group_by == "step":
        columns.append(col(Message.step))
    if group_by in ("step", "template"):
        columns.append(col(Message.template))
    return columns


def _key(
    group_by: GroupBy, values: Sequence[Any]
) -> tuple[str, str | None, str | None, str | None]:
    """(lifecycle, automation, step, template) from the grouped columns' values."""
    it = iter(values)
    lifecycle = next(it)
    automation = next(it) if group_by in ("automation", "step") else None
    step = next(it) if group_by == "step" else None
    template = next(it) if group_by in ("step", "template") else None
    return lifecycle, automation, step, template


def _step_order(step: str | None) -> tuple[int, str]:
    # Step keys start with their position ("10-dunning-reminder"): 2 before 10.
    index, _, rest = (step or "").partition("-")
    return (int(index), rest) if index.isdigit() else (-1, step or "")


async def attribution_report(
    session: AsyncSession, since: datetime, until: datetime, group_by: GroupBy = "step"
) -> AttributionReport:
    occurred_in_range = (
        col(Conversion.occurred_at) >= since,
        col(Conversion.occurred_at) < until,
    )
    sent_in_range = (sent_time() >= since, sent_time() < until)
    groups = _group_columns(group_by)

    credited = await session.execute(
        select(
            *groups,
            col(Conversion.currency),
            func.count(func.distinct(col(Conversion.id))),
            func.sum(col(ConversionCredit.share_bp)),
            func.sum(col(ConversionCredit.mrr_delta_cents)),
            func.sum(col(ConversionCredit.amount_cents)),
        )
        .select_from(ConversionCredit)
        .join(Conversion, col(Conversion.id) == col(ConversionCredit.conversion_id))
        .join(Message, col(Message.id) == col(ConversionCredit.message_id))
        .where(*occurred_in_range)
        .group_by(*groups, col(Conversion.currency))
    )
    sent = await session.execute(
        select(*groups, func.count())
        .where(col(Message.status).in_(SENT_STATUSES))
        .where(col(Message.template).not_in(NOT_TOUCHES))
        .where(*sent_in_range)
        .group_by(*groups)
    )
    messages_sent = {_key(group_by, row[:-1]): int(row[-1]) for row in sent}

    rows: list[ReportRow] = []
    earned: set[tuple[str, str | None, str | None, str | None]] = set()
    for row in credited:
        key = _key(group_by, row[: len(groups)])
        currency, conversions, share_bp, mrr, amount = row[len(groups) :]
        earned.add(key)
        rows.append(
            _row(
                key,
                currency,
                int(conversions),
                int(share_bp),
                int(mrr),
                int(amount),
                messages_sent.get(key, 0),
            )
        )
    for key, count in messages_sent.items():
        if key not in earned:
            rows.append(_row(key, None, 0, 0, 0, 0, count))
    rows.sort(
        key=lambda r: (
            r.lifecycle,
            r.automation or "",
            _step_order(r.step),
            r.template or "",
            r.currency or "",
        )
    )

    credited_ids = select(col(ConversionCredit.conversion_id)).distinct().subquery()
    has_credit = credited_ids.c.conversion_id.is_not(None)
    conversions = (
        select(Conversion)
        .outerjoin(credited_ids, credited_ids.c.conversion_id == col(Conversion.id))
        .where(*occurred_in_range)
    )
    unattributed = [
        UnattributedRow(
            lifecycle=lifecycle,
            automation=automation or None,
            currency=currency,
            reason=reason,
            conversions=int(count),
            mrr_delta_cents=int(mrr),
            amount_cents=int(amount),
        )
        for lifecycle, automation, currency, reason, count, mrr, amount in await session.execute(
            conversions.with_only_columns(
                col(Conversion.lifecycle),
                col(Conversion.automation),
                col(Conversion.currency),
                col(Conversion.uncredited_reason),
                func.count(),
                func.sum(col(Conversion.mrr_delta_cents)),
                func.sum(col(Conversion.amount_cents)),
            )
            .where(~has_credit)
            .group_by(
                col(Conversion.lifecycle),
                col(Conversion.automation),
                col(Conversion.currency),
                col(Conversion.uncredited_reason),
            )
        )
    ]
    unattributed.sort(
        key=lambda r: (r.lifecycle, r.automation or "", r.currency or "", r.reason or "")
    )

    return AttributionReport(
        since=since,
        until=until,
        group_by=group_by,
        rows=rows,
        unattributed=unattributed,
        totals=await _totals(session, conversions, has_credit),
        messages_sent=sum(messages_sent.values()),
        dunning=await _dunning(session, occurred_in_range, sent_in_range),
    )


async def _totals(
    session: AsyncSession, conversions: Select[Any], has_credit: ColumnElement[bool]
) -> list[CurrencyTotal]:
    """Per currency, from each Stripe event's conversions: the largest MRR delta and amount
    (of all, and of those credited) as the event's money, added up over the events."""

    def largest(column: Any, *, of_credited: bool) -> Any:
        return func.max(case((has_credit, column)) if of_credited else column)

    per_event = (
        conversions.with_only_columns(
            col(Conversion.currency).label("currency"),
            func.count().label("conversions"),
            func.sum(case((has_credit, 1), else_=0)).label("credited"),
            largest(col(Conversion.mrr_delta_cents), of_credited=False).label("mrr"),
            largest(col(Conversion.mrr_delta_cents), of_credited=True).label("credited_mrr"),
            largest(col(Conversion.amount_cents), of_credited=False).label("amount"),
            largest(col(Conversion.amount_cents), of_credited=True).label("credited_amount"),
        )
        .group_by(col(Conversion.stripe_event_id), col(Conversion.currency))
        .subquery()
    )
    event = per_event.c
    figures = await session.execute(
        select(
            event.currency,
            func.sum(event.conversions).label("conversions"),
            func.sum(event.credited).label("credited"),
            func.count().label("events"),
            func.sum(case((event.conversions > 1, 1), else_=0)).label("shared"),
            func.sum(event.mrr).label("mrr"),
            func.coalesce(func.sum(event.credited_mrr), 0).label("credited_mrr"),
            func.sum(event.amount).label("amount"),
            func.coalesce(func.sum(event.credited_amount), 0).label("credited_amount"),
        ).group_by(event.currency)
    )
    totals = [
        CurrencyTotal(
            currency=total.currency,
            conversions=int(total.conversions),
            attributed_conversions=int(total.credited),
            events=int(total.events),
            shared_events=int(total.shared),
            mrr_delta_cents=int(total.mrr),
            attributed_mrr_delta_cents=int(total.credited_mrr),
            amount_cents=int(total.amount),
            attributed_amount_cents=int(total.credited_amount),
        )
        for total in figures
    ]
    totals.sort(key=lambda t: t.currency or "")
    return totals


def _row(
    key: tuple[str, str | None, str | None, str | None],
    currency: str | None,
    conversions: int,
    share_bp: int,
    mrr: int,
    amount: int,
    messages_sent: int,
) -> ReportRow:
    lifecycle, automation, step, template = key
    credited = round(share_bp / WHOLE, 4)
    return ReportRow(
        lifecycle=lifecycle,
        automation=automation,
        step=step,
        template=template,
        currency=currency,
        conversions=conversions,
        credited_conversions=credited,
        mrr_delta_cents=mrr,
        amount_cents=amount,
        messages_sent=messages_sent,
        conversion_rate=round(credited / messages_sent, 4) if messages_sent else None,
    )


async def _dunning(
    session: AsyncSession,
    occurred_in_range: tuple[ColumnElement[bool], ...],
    sent_in_range: tuple[ColumnElement[bool], ...],
) -> DunningSummary:
    paid = (*DUNNING_PAID, *occurred_in_range)
    recovered = (*paid, BY_DUNNING)
    in_dunning = union(
        select(col(Message.workflow_id)).where(
            col(Message.lifecycle) == Lifecycle.DUNNING, *sent_in_range
        ),
        select(col(Conversion.workflow_id)).where(*paid),
    ).subquery()
    failed = (await session.execute(select(func.count()).select_from(in_dunning))).scalar_one()
    invoices = func.count(func.distinct(col(Conversion.workflow_id)))
    recovered_invoices = (await session.execute(select(invoices).where(*recovered))).scalar_one()
    uncredited = (await session.execute(select(invoices).where(*paid, ~BY_DUNNING))).scalar_one()
    money = [
        RecoveredMoney(
            currency=currency,
            invoices=int(count),
            mrr_delta_cents=int(mrr),
            amount_cents=int(amount),
        )
        for currency, count, mrr, amount in await session.execute(
            select(
                col(Conversion.currency),
                invoices,
                func.sum(col(Conversion.mrr_delta_cents)),
                func.sum(col(Conversion.amount_cents)),
            )
            .where(*recovered)
            .group_by(col(Conversion.currency))
        )
    ]
    money.sort(key=lambda m: m.currency or "")
    return DunningSummary(
        failed_invoices=int(failed),
        recovered_invoices=int(recovered_invoices),
        uncredited_invoices=int(uncredited),
        recovery_rate=round(recovered_invoices / failed, 4) if failed else None,
        recovered=money,
    )


CSV_COLUMNS = (
    "record",
    "lifecycle",
    "automation",
    "step",
    "template",
    "currency",
    "conversions",
    "credited_conversions",
    "mrr_delta_cents",
    "amount_cents",
    "messages_sent",
    "conversion_rate",
    # Added later, so older readers of the columns above by position still read them.
    "reason",
    "attributed_conversions",
    "events",
    "shared_events",
    "attributed_mrr_delta_cents",
    "attributed_amount_cents",
)


def report_csv(report: AttributionReport) -> str:
    """The report's rows (`record` = attributed), unattributed conversions (`record` =
    unattributed) and totals per currency (`record` = total) as CSV with one header line;
    empty cells for what does not apply."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in report.rows:
        writer.writerow(_cells({"record": "attributed", **row.model_dump()}))
    for unattributed in report.unattributed:
        writer.writerow(_cells({"record": "unattributed", **unattributed.model_dump()}))
    for total in report.totals:
        writer.writerow(_cells({"record": "total", **total.model_dump()}))
    return out.getvalue()


def _cells(values: dict[str, Any]) -> list[str]:
    return ["" if values.get(name) is None else str(values[name]) for name in CSV_COLUMNS]


# Dunning recovery over time: the `dunning` summary above, period by period (the dashboard).

Interval = Literal["day", "week"]
INTERVALS: tuple[Interval, ...] = get_args(Interval)
# Ranges up to this long are shown day by day, longer ones week by week.
DAILY_UP_TO = timedelta(days=31)


class RecoveryPoint(BaseModel):
    """One period of the series: the `dunning` summary of [start, end)."""

    start: datetime
    end: datetime
    failed_invoices: int
    recovered_invoices: int
    uncredited_invoices: int
    recovery_rate: float | None
    recovered: list[RecoveredMoney]


class RecoverySeries(BaseModel):
    since: datetime
    until: datetime
    interval: Interval
    points: list[RecoveryPoint]

    def currencies(self) -> list[str | None]:
        """Every currency recovered in some period, sorted."""
        found = {money.currency for point in self.points for money in point.recovered}
        return sorted(found, key=lambda c: c or "")


def default_interval(since: datetime, until: datetime) -> Interval:
    return "day" if until - since <= DAILY_UP_TO else "week"


def periods(
    since: datetime, until: datetime, interval: Interval
) -> list[tuple[datetime, datetime]]:
    """Consecutive [start, end) periods covering [since, until): whole UTC days, or ISO
    weeks (Monday to Sunday, UTC); the first and last are cut to the range."""
    step = timedelta(days=1 if interval == "day" else 7)
    start = datetime.combine(since.astimezone(UTC).date(), time(), UTC)
    if interval == "week":
        start -= timedelta(days=start.weekday())
    found: list[tuple[datetime, datetime]] = []
    while start < until:
        end = start + step
        found.append((max(start, since), min(end, until)))
        start = end
    return found


async def recovery_series(
    session: AsyncSession, since: datetime, until: datetime, interval: Interval
) -> RecoverySeries:
    """Failed and recovered invoices, recovery rate and recovered money per period, counted
    as `attribution_report`'s `dunning` summary counts them for its whole range: an invoice
    is in dunning in a period when its dunning recorded an email in it or was paid in it
    (recovered, or uncredited when paid out of band). So a period's figures equal that
    summary's for the same range, and the money of the periods adds up to the range's
    (invoices can count in several periods)."""
    spans = periods(since, until, interval)
    starts = [start for start, _ in spans]

    def period(moment: datetime) -> int:
        return bisect.bisect_right(starts, moment) - 1

    in_dunning: list[set[str]] = [set() for _ in spans]
    recovered_in: list[set[str]] = [set() for _ in spans]
    uncredited_in: list[set[str]] = [set() for _ in spans]
    # period -> currency -> (invoices, MRR, amount)
    money: list[dict[str | None, tuple[set[str], int, int]]] = [{} for _ in spans]

    emailed = await session.execute(
        select(col(Message.workflow_id), sent_time())
        .where(col(Message.lifecycle) == Lifecycle.DUNNING)
        .where(sent_time() >= since, sent_time() < until)
        .distinct()
    )
    for workflow_id, sent_at in emailed:
        in_dunning[period(sent_at)].add(workflow_id)

    recoveries = await session.execute(
        select(
            col(Conversion.workflow_id),
            col(Conversion.occurred_at),
            col(Conversion.currency),
            col(Conversion.mrr_delta_cents),
            col(Conversion.amount_cents),
            BY_DUNNING,
        ).where(
            *DUNNING_PAID,
            col(Conversion.occurred_at) >= since,
            col(Conversion.occurred_at) < until,
        )
    )
    for workflow_id, occurred_at, currency, mrr, amount, by_dunning in recoveries:
        index = period(occurred_at)
        in_dunning[index].add(workflow_id)
        if not by_dunning:
            uncredited_in[index].add(workflow_id)
            continue
        recovered_in[index].add(workflow_id)
        invoices, mrr_sum, amount_sum = money[index].get(currency, (set(), 0, 0))
        invoices.add(workflow_id)
        money[index][currency] = (invoices, mrr_sum + int(mrr), amount_sum + int(amount))

    points = []
    for index, (start, end) in enumerate(spans):
        failed, recovered = len(in_dunning[index]), len(recovered_in[index])
        points.append(
            RecoveryPoint(
                start=start,
                end=end,
                failed_invoices=failed,
                recovered_invoices=recovered,
                uncredited_invoices=len(uncredited_in[index]),
                recovery_rate=round(recovered / failed, 4) if failed else None,
                recovered=[
                    RecoveredMoney(
                        currency=currency,
                        invoices=len(invoices),
                        mrr_delta_cents=mrr,
                        amount_cents=amount,
                    )
                    for currency, (invoices, mrr, amount) in sorted(
                        money[index].items(), key=lambda item: item[0] or ""
                    )
                ],
            )
        )
    return RecoverySeries(since=since, until=until, interval=interval, points=points)
