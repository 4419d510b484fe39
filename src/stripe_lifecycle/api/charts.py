"""The dashboard's charts as geometry: server-rendered SVG, computed here from the report
figures and drawn by `pages/_charts.html`, with a table of the same figures under each.

Pure: no web framework, no I/O; the numbers in, the shapes and labels out.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from stripe_lifecycle.domain.money import currency_exponent, format_amount

if TYPE_CHECKING:
    from stripe_lifecycle.storage.reports import (
        AttributionReport,
        Interval,
        RecoverySeries,
        ReportRow,
    )

CHART_WIDTH = 640
BAR_COLOR = "#635bff"
RATE_COLOR = "#0a8f5c"


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class Column:
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class Dot:
    x: float
    y: float
    title: str


@dataclass(frozen=True)
class AxisLabel:
    x: float
    text: str


@dataclass
class TimeChart:
    """Columns (money) or a line (a rate) over the periods of the range."""

    id: str
    title: str
    description: str
    kind: Literal["columns", "line"]
    color: str
    height: int = 240
    width: int = CHART_WIDTH
    left: int = 72
    right: int = 16
    top: int = 16
    bottom: int = 32
    ticks: list[Tick] = field(default_factory=list)
    columns: list[Column] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    dots: list[Dot] = field(default_factory=list)
    x_labels: list[AxisLabel] = field(default_factory=list)
    table_head: list[str] = field(default_factory=list)
    table_rows: list[list[str]] = field(default_factory=list)

    @property
    def plot_bottom(self) -> int:
        return self.height - self.bottom


@dataclass(frozen=True)
class HBar:
    y: float
    width: float
    label: str
    value: str
    title: str


@dataclass
class BarChart:
    """Horizontal bars, one per automation or step."""

    id: str
    title: str
    description: str
    color: str = BAR_COLOR
    width: int = CHART_WIDTH
    label_width: int = 250
    value_width: int = 96
    row_height: int = 28
    top: int = 8
    bars: list[HBar] = field(default_factory=list)
    table_head: list[str] = field(default_factory=list)
    table_rows: list[list[str]] = field(default_factory=list)
    note: str | None = None

    @property
    def height(self) -> int:
        return self.top * 2 + self.row_height * len(self.bars)

    @property
    def bar_left(self) -> int:
        return self.label_width + 8

    @property
    def bar_span(self) -> int:
        return self.width - self.bar_left - self.value_width


def nice_step(value: float) -> float:
    """The smallest 1, 2 or 5 × 10^k at least `value`."""
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(value))
    for multiple in (1, 2, 5, 10):
        if multiple * magnitude >= value * (1 - 1e-9):
            return multiple * magnitude
    return 10 * magnitude


def money(minor_units: int, currency: str | None) -> str:
    return format_amount(minor_units, currency) if currency else f"{minor_units} (no currency)"


def _short_money(minor_units: int, currency: str | None) -> str:
    """An axis label: "$1,200" rather than "$1,200.00"."""
    return re.sub(r"\.0+(?=\D*$)", "", money(minor_units, currency))


def percent(rate: float | None) -> str:
    if rate is None:
        return "—"
    return f"{rate * 100:.1f}".removesuffix(".0") + "%"


def _period_name(start: datetime, interval: Interval) -> str:
    day = f"{start.day} {start:%b %Y}"
    return f"Week of {day}" if interval == "week" else day


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _x_positions(chart: TimeChart, count: int) -> tuple[float, list[float]]:
    band = (chart.width - chart.left - chart.right) / max(count, 1)
    return band, [chart.left + band * (i + 0.5) for i in range(count)]


def _x_labels(series: RecoverySeries, centres: list[float]) -> list[AxisLabel]:
    every = max(1, math.ceil(len(centres) / 8))
    return [
        AxisLabel(x=round(x, 1), text=f"{point.start.day} {point.start:%b}")
        for i, (point, x) in enumerate(zip(series.points, centres, strict=True))
        if i % every == 0
    ]


def recovered_chart(series: RecoverySeries, currency: str | None) -> TimeChart:
    per = "week" if series.interval == "week" else "day"
    code = (currency or "").upper()
    chart = TimeChart(
        id=f"recovered-{currency or 'none'}",
        title=f"Recovered revenue per {per} ({code or 'no currency'})",
        description=(
            f"Amounts paid on invoices that dunning recovered, in {code or 'no currency'}, "
            f"per {per} from {series.since:%Y-%m-%d} to {series.until:%Y-%m-%d}."
        ),
        kind="columns",
        color=BAR_COLOR,
    )
    amounts = []
    for point in series.points:
        found = [m for m in point.recovered if m.currency == currency]
        amounts.append((found[0].amount_cents, found[0].invoices) if found else (0, 0))
    unit = 10 ** currency_exponent(currency) if currency else 1
    step = nice_step(max((a for a, _ in amounts), default=0) / unit / 4) * unit
    top = step * max(1, math.ceil(max((a for a, _ in amounts), default=0) / step))
    plot_height = chart.plot_bottom - chart.top
    chart.ticks = [
        Tick(
            y=round(chart.plot_bottom - plot_height * value / top, 1),
            label=_short_money(round(value), currency),
        )
        for value in (step * i for i in range(round(top / step) + 1))
    ]
    band, centres = _x_positions(chart, len(amounts))
    width = max(1.0, band * 0.7)
    for point, x, (amount, invoices) in zip(series.points, centres, amounts, strict=True):
        height = plot_height * max(amount, 0) / top
        name = _period_name(point.start, series.interval)
        chart.columns.append(
            Column(
                x=round(x - width / 2, 1),
                y=round(chart.plot_bottom - height, 1),
                width=round(width, 1),
                height=round(height, 1),
                title=f"{name}: {money(amount, currency)} recovered from "
                f"{plural(invoices, 'invoice')}",
            )
        )
        chart.table_rows.append([name, money(amount, currency), str(invoices)])
    chart.x_labels = _x_labels(series, centres)
    chart.table_head = [per.capitalize(), "Recovered", "Invoices"]
    return chart


def rate_chart(series: RecoverySeries) -> TimeChart:
    per = "week" if series.interval == "week" else "day"
    chart = TimeChart(
        id="recovery-rate",
        title=f"Recovery rate per {per}",
        description=(
            f"Recovered invoices as a share of the invoices in dunning, per {per} from "
            f"{series.since:%Y-%m-%d} to {series.until:%Y-%m-%d}; no point where no "
            f"invoice was in dunning."
        ),
        kind="line",
        color=RATE_COLOR,
    )
    plot_height = chart.plot_bottom - chart.top
    chart.ticks = [
        Tick(y=round(chart.plot_bottom - plot_height * share, 1), label=f"{round(share * 100)}%")
        for share in (0, 0.25, 0.5, 0.75, 1)
    ]
    _, centres = _x_positions(chart, len(series.points))
    segment: list[str] = []
    for point, x in zip(series.points, centres, strict=True):
        name = _period_name(point.start, series.interval)
        chart.table_rows.append(
            [
                name,
                percent(point.recovery_rate),
                str(point.recovered_invoices),
                str(point.failed_invoices),
            ]
        )
        if point.recovery_rate is None:
            if segment:
                chart.lines.append(" ".join(segment))
            segment = []
            continue
        y = round(chart.plot_bottom - plot_height * point.recovery_rate, 1)
        segment.append(f"{round(x, 1)},{y}")
        chart.dots.append(
            Dot(
                x=round(x, 1),
                y=y,
                title=f"{name}: {percent(point.recovery_rate)} recovered "
                f"({point.recovered_invoices} of {plural(point.failed_invoices, 'invoice')} "
                f"in dunning)",
            )
        )
    if segment:
        chart.lines.append(" ".join(segment))
    chart.x_labels = _x_labels(series, centres)
    chart.table_head = [per.capitalize(), "Recovery rate", "Recovered", "In dunning"]
    return chart


def _row_label(row: ReportRow) -> str:
    automation = row.automation or row.lifecycle
    if row.step is None:
        return automation
    index, _, _ = row.step.partition("-")
    number = f"{int(index) + 1}. " if index.isdigit() else ""
    return f"{automation} › {number}{row.template or row.step}"


def earned_charts(report: AttributionReport, per: Literal["automation", "step"]) -> list[BarChart]:
    """One chart per currency of the MRR credited to each group's emails; groups whose
    emails earned nothing in the range show as empty bars in each."""
    currencies = sorted({r.currency for r in report.rows if r.currency is not None})
    idle = [r for r in report.rows if r.currency is None]
    charts = []
    for currency in currencies:
        rows = [r for r in report.rows if r.currency == currency] + idle
        chart = BarChart(
            id=f"earned-{per}-{currency}",
            title=f"MRR earned per {per} ({currency.upper()})",
            description=(
                f"MRR credited to the emails of each {per} in {currency.upper()}, "
                f"from {report.since:%Y-%m-%d} to {report.until:%Y-%m-%d}."
            ),
        )
        most = max((max(r.mrr_delta_cents, 0) for r in rows), default=0) or 1
        for i, row in enumerate(rows):
            label = _row_label(row)
            value = money(row.mrr_delta_cents if row.currency else 0, currency)
            chart.bars.append(
                HBar(
                    y=chart.top + chart.row_height * i,
                    width=round(chart.bar_span * max(row.mrr_delta_cents, 0) / most, 1),
                    label=label if len(label) <= 38 else label[:37] + "…",
                    value=value,
                    title=f"{label} ({row.lifecycle}): {value} MRR from "
                    f"{plural(row.conversions, 'conversion')}, "
                    f"{plural(row.messages_sent, 'email')} sent",
                )
            )
            chart.table_rows.append(
                [
                    label,
                    value,
                    str(row.conversions),
                    str(row.messages_sent),
                    percent(row.conversion_rate),
                ]
            )
        chart.table_head = [per.capitalize(), "MRR earned", "Conversions", "Emails sent", "Rate"]
        chart.note = _unearned_note(report, currency)
        charts.append(chart)
    return charts


def _unearned_note(report: AttributionReport, currency: str) -> str | None:
    """What no email earned in `currency`, so the bars are read against it: from the totals,
    which count the money of one Stripe event once; and the conversions recorded
    uncredited on purpose, with why."""
    unearned = sum(
        t.mrr_delta_cents - t.attributed_mrr_delta_cents
        for t in report.totals
        if t.currency == currency
    )
    reasons: dict[str, int] = {}
    for row in report.unattributed:
        if row.currency == currency and row.reason is not None:
            reasons[row.reason] = reasons.get(row.reason, 0) + row.conversions
    if not unearned and not reasons:
        return None
    note = f"Not credited to any email: {money(unearned, currency)} MRR."
    if reasons:
        why = ", ".join(
            f"{reason.replace('_', ' ')} ({n})" for reason, n in sorted(reasons.items())
        )
        note += f" Recorded uncredited: {why}."
    return note
