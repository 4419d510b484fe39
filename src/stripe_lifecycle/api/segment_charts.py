"""The segments page's chart as geometry: per week, the customers who entered a segment as
columns above the axis and those who left it as columns below, drawn by
`pages/_segment_charts.html` with a table of the same figures under it.

Pure, like `charts.py`: the counts in, the shapes and labels out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from stripe_lifecycle.api.charts import CHART_WIDTH, AxisLabel, Column, Tick, nice_step, plural
from stripe_lifecycle.storage.segments import PeriodChanges

ENTRY_COLOR = "#0a8f5c"
EXIT_COLOR = "#c0362c"


@dataclass
class FlowChart:
    """Entries (up) and exits (down) per week of one segment."""

    id: str
    title: str
    description: str
    height: int = 200
    width: int = CHART_WIDTH
    left: int = 48
    right: int = 16
    top: int = 12
    bottom: int = 28
    entry_color: str = ENTRY_COLOR
    exit_color: str = EXIT_COLOR
    # Where the count 0 is drawn: entries rise above it, exits hang below.
    zero_y: float = 0.0
    ticks: list[Tick] = field(default_factory=list)
    entries: list[Column] = field(default_factory=list)
    exits: list[Column] = field(default_factory=list)
    x_labels: list[AxisLabel] = field(default_factory=list)
    table_head: list[str] = field(default_factory=list)
    table_rows: list[list[str]] = field(default_factory=list)

    @property
    def plot_bottom(self) -> int:
        return self.height - self.bottom


def _week_name(point: PeriodChanges) -> str:
    return f"Week of {point.start.day} {point.start:%b %Y}"


def flow_chart(segment: str, weeks: list[PeriodChanges]) -> FlowChart:
    chart = FlowChart(
        id=f"segment-flow-{segment}",
        title=f"{segment}: entries and exits per week",
        description=(
            f"Customers who entered the segment {segment} (above the axis) and who left it "
            f"(below), week by week"
            + (f" from {weeks[0].start:%Y-%m-%d} to {weeks[-1].end:%Y-%m-%d}." if weeks else ".")
        ),
    )
    most_in = max((w.entered for w in weeks), default=0)
    most_out = max((w.exited for w in weeks), default=0)
    step = max(1, round(nice_step(max(most_in, most_out) / 3)))
    up = step * max(1, math.ceil(most_in / step))
    down = step * math.ceil(most_out / step)
    plot_height = chart.plot_bottom - chart.top
    per_customer = plot_height / (up + down)
    chart.zero_y = round(chart.top + up * per_customer, 1)
    chart.ticks = [
        Tick(y=round(chart.zero_y - value * per_customer, 1), label=str(abs(value)))
        for value in range(-down, up + 1, step)
    ]
    band = (chart.width - chart.left - chart.right) / max(len(weeks), 1)
    width = round(max(1.0, band * 0.6), 1)
    every = max(1, math.ceil(len(weeks) / 6))
    for i, week in enumerate(weeks):
        x = chart.left + band * (i + 0.5)
        name = _week_name(week)
        entered = week.entered * per_customer
        chart.entries.append(
            Column(
                x=round(x - width / 2, 1),
                y=round(chart.zero_y - entered, 1),
                width=width,
                height=round(entered, 1),
                title=f"{name}: {plural(week.entered, 'customer')} entered",
            )
        )
        exited = week.exited * per_customer
        chart.exits.append(
            Column(
                x=round(x - width / 2, 1),
                y=chart.zero_y,
                width=width,
                height=round(exited, 1),
                title=f"{name}: {plural(week.exited, 'customer')} left",
            )
        )
        if i % every == 0:
            chart.x_labels.append(
                AxisLabel(x=round(x, 1), text=f"{week.start.day} {week.start:%b}")
            )
        chart.table_rows.append(
            [
                name,
                str(week.entered),
                str(week.exited),
                str(week.entered - week.exited),
                str(week.initial),
            ]
        )
    chart.table_head = ["Week", "Entered", "Left", "Net", "In at first evaluation"]
    return chart
