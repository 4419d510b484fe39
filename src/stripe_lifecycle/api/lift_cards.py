"""The dashboard's lift cards as geometry: one card per automation of the lift report,
server-rendered SVG drawn by `pages/_lift.html`, with the figures beside it.

Each card has two bars, the treated and the held-out conversion rate, on one scale; and,
when the report has a lift for the automation (status ok), its 95% interval drawn as a
line with the estimate as a dot, against a zero line. Otherwise the card says why not.

Pure: no web framework, no I/O; the report in, the shapes and labels out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stripe_lifecycle.api.charts import BAR_COLOR, CHART_WIDTH, RATE_COLOR, money, percent
from stripe_lifecycle.domain.lift import LiftStatus
from stripe_lifecycle.storage.lift import AutomationLift, GroupFigures

HELD_OUT_COLOR = "#a3acb9"
INTERVAL_COLOR = RATE_COLOR


@dataclass(frozen=True)
class RateBar:
    y: float
    width: float
    label: str
    value: str
    color: str
    title: str


@dataclass(frozen=True)
class Interval:
    """The lift's 95% interval on its own axis: x positions in the SVG."""

    y: float
    zero_x: float
    low_x: float
    high_x: float
    estimate_x: float
    low_label: str
    high_label: str
    title: str
    color: str = INTERVAL_COLOR


@dataclass
class LiftCard:
    id: str
    automation: str
    lifecycle: str
    status: str
    headline: str
    # The figures under the chart: (name, value) pairs.
    figures: list[tuple[str, str]] = field(default_factory=list)
    # Why there is no lift to show; None when there is.
    note: str | None = None
    width: int = CHART_WIDTH
    label_width: int = 110
    value_width: int = 170
    row_height: int = 30
    top: int = 8
    bars: list[RateBar] = field(default_factory=list)
    interval: Interval | None = None

    @property
    def bar_left(self) -> int:
        return self.label_width + 8

    @property
    def bar_span(self) -> int:
        return self.width - self.bar_left - self.value_width

    @property
    def height(self) -> int:
        rows = len(self.bars) + (2 if self.interval else 0)
        return self.top * 2 + self.row_height * rows

    @property
    def title(self) -> str:
        return f"Conversion rate: treated against held out ({self.automation})"

    @property
    def description(self) -> str:
        bars = "; ".join(bar.title for bar in self.bars)
        return f"{bars}. {self.interval.title}." if self.interval else f"{bars}. {self.headline}."


def points(proportion: float) -> str:
    """A difference of rates in percentage points, signed: "+4 pts", "−1.7 pts"."""
    value = f"{abs(proportion) * 100:.1f}".removesuffix(".0")
    sign = "−" if proportion < 0 and value != "0" else "+" if proportion > 0 else ""
    return f"{sign}{value} pts"


def _signed_percent(proportion: float) -> str:
    text = percent(abs(proportion))
    return f"−{text}" if proportion < 0 else f"+{text}"


def _group_value(group: GroupFigures) -> str:
    return f"{percent(group.rate)} ({group.conversions} of {group.customers})"


def _per_customer(group: GroupFigures) -> str:
    if not group.customers:
        return "—"
    return ", ".join(money(c, cur) for cur, c in group.mrr_per_customer.items()) or "none"


def lift_card(entry: AutomationLift) -> LiftCard:
    lift = entry.lift
    if lift is not None:
        headline = f"Lift {points(lift.absolute)}" + (
            f" ({_signed_percent(lift.relative)} relative)" if lift.relative is not None else ""
        )
    elif entry.status == LiftStatus.NO_HOLDOUT:
        headline = "No holdout group"
    else:
        headline = "Not enough data"
    card = LiftCard(
        id=f"lift-{entry.lifecycle}-{entry.automation}",
        automation=entry.automation,
        lifecycle=entry.lifecycle,
        status=entry.status.value,
        headline=headline,
        note=entry.reason,
    )
    groups = (
        ("Treated", entry.treated, BAR_COLOR, "emailed"),
        ("Held out", entry.held_out, HELD_OUT_COLOR, "held out, not emailed"),
    )
    most = max((g.rate or 0.0 for _, g, _, _ in groups), default=0.0) or 1.0
    for i, (label, group, color, who) in enumerate(groups):
        card.bars.append(
            RateBar(
                y=card.top + card.row_height * i,
                width=round(card.bar_span * (group.rate or 0.0) / most, 1),
                label=label,
                value=_group_value(group),
                color=color,
                title=f"{label}: {percent(group.rate)} converted, {group.conversions} of "
                f"{group.customers} customers {who}",
            )
        )
    if lift is not None:
        card.interval = _interval(card, lift.absolute, lift.ci95)
        card.figures.append(("95% interval", f"{points(lift.ci95[0])} to {points(lift.ci95[1])}"))
        card.figures.append(
            ("Significant", "yes" if lift.significant else "no: the interval includes 0")
        )
    card.figures.append(("MRR per treated customer", _per_customer(entry.treated)))
    card.figures.append(("MRR per held-out customer", _per_customer(entry.held_out)))
    if entry.incremental_mrr is not None:
        earned = ", ".join(money(c, cur) for cur, c in entry.incremental_mrr.items())
        card.figures.append(("MRR beyond the holdout", earned or "none"))
    if entry.holdout_percent is not None:
        card.figures.append(("Held out", f"{entry.holdout_percent:g}% of customers"))
    return card


def _interval(card: LiftCard, estimate: float, ci95: tuple[float, float]) -> Interval:
    low, high = ci95
    # The axis spans the interval and zero, with a margin so the ends are not on the edge.
    lo, hi = min(low, 0.0), max(high, 0.0)
    pad = (hi - lo) * 0.08 or 0.01
    lo, hi = lo - pad, hi + pad

    def x(value: float) -> float:
        return round(card.bar_left + card.bar_span * (value - lo) / (hi - lo), 1)

    return Interval(
        y=card.top + card.row_height * (len(card.bars) + 1),
        zero_x=x(0.0),
        low_x=x(low),
        high_x=x(high),
        estimate_x=x(estimate),
        low_label=points(low),
        high_label=points(high),
        title=f"Lift {points(estimate)}, 95% interval {points(low)} to {points(high)}",
    )


def lift_cards(automations: list[AutomationLift]) -> list[LiftCard]:
    return [lift_card(entry) for entry in automations]
