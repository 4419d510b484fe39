"""The dashboard: a read-only page for the team, and support's "stop this dunning" button.

`GET /dashboard` shows, for a range (`?since=&until=`, ISO dates or datetimes, default the
last 90 days): dunning's recovered revenue and MRR per currency and its recovery rate, the
same per day or week as charts, the MRR credited to each automation and step (the
attribution report), and the customers whose dunning or payment confirmation is running,
each with a form to stop it. Everything is rendered here: inline SVG charts, inline CSS,
no script and nothing fetched from elsewhere, so it works without JavaScript and behind
a strict Content-Security-Policy.

Who may see it: any key of `LIFECYCLE_API_KEYS`, `support` or `admin` (support staff need
the cancel button, which the API grants to `support` too). A browser cannot send a Bearer
header, so `GET /dashboard/login` takes a key once and `POST /dashboard/login` answers
with a session cookie: HttpOnly, SameSite=Strict, Secure when served over https (or when
`LIFECYCLE_PUBLIC_URL` is https), valid for 12 hours, signed with a key derived from
`LIFECYCLE_LINK_SECRET`. It holds the role and the key's fingerprint, never the key, and
stops working when that key is removed from `LIFECYCLE_API_KEYS`. Scripts may send
`Authorization: Bearer <key>` instead. Forms posted with the cookie carry a CSRF token
derived from the session; the strict same-site cookie is the second guard.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col
from temporalio.client import Client

from stripe_lifecycle.api.customers import UnknownCustomer, stop_dunning
from stripe_lifecycle.api.deps import (
    TEMPORAL_UNREACHABLE,
    AppStateDep,
    Caller,
    SessionDep,
    TemporalDep,
)
from stripe_lifecycle.api.state import AppState
from stripe_lifecycle.domain import contract
from stripe_lifecycle.domain.links import seal, unseal
from stripe_lifecycle.domain.money import currency_exponent, format_amount
from stripe_lifecycle.settings import ApiRole, Settings
from stripe_lifecycle.storage.models import Customer
from stripe_lifecycle.storage.reports import (
    INTERVALS,
    AttributionReport,
    Interval,
    RangeError,
    RecoverySeries,
    ReportRow,
    attribution_report,
    default_interval,
    recovery_series,
    report_range,
)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/dashboard", tags=["dashboard"])

SESSION_COOKIE = "lifecycle_dashboard"
SESSION_TTL = timedelta(hours=12)
DEFAULT_RANGE = timedelta(days=90)
# The dashboard waits for Temporal's list of running dunnings at most this long.
LIST_TIMEOUT = timedelta(seconds=5)
MAX_LISTED = 500
IN_DUNNING = "Lifecycle IN ('dunning', 'payment_action') AND ExecutionStatus = 'Running'"
WORKFLOW_PREFIXES = ("dunning-", "payment-action-")

_PAGES = Environment(
    loader=PackageLoader("stripe_lifecycle.api", "pages"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


# --- sessions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DashboardSession:
    """What the session cookie holds, signed: never the key itself."""

    role: ApiRole
    key_id: str
    expires_at: int
    # Random per login; the session's CSRF token is derived from it.
    nonce: str


def key_fingerprint(key: str) -> str:
    """The short fingerprint audit trails name a key by (the same as the API's)."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def session_secret(settings: Settings) -> bytes:
    # Derived, so a session cookie can never pass for a tracked-link token or back.
    return hmac.new(settings.link_secret_bytes(), b"dashboard-session", hashlib.sha256).digest()


def seal_session(secret: bytes, session: DashboardSession) -> str:
    payload = json.dumps(
        {"r": session.role, "k": session.key_id, "e": session.expires_at, "n": session.nonce},
        separators=(",", ":"),
    ).encode()
    return seal(secret, b"session", payload)


def open_session(secret: bytes, token: str, now: float) -> DashboardSession | None:
    """The session of a genuine, unexpired cookie; None for anything else."""
    payload = unseal(secret, b"session", token)
    if payload is None:
        return None
    try:
        values = json.loads(payload)
        session = DashboardSession(
            role=values["r"],
            key_id=str(values["k"]),
            expires_at=int(values["e"]),
            nonce=values["n"],
        )
    except (ValueError, KeyError, TypeError):
        return None
    if session.role not in ("support", "admin") or session.expires_at <= now:
        return None
    return session


def csrf_token(secret: bytes, session: DashboardSession) -> str:
    # The MAC part of the nonce sealed for CSRF: nothing a page could guess or reuse.
    return seal(secret, b"csrf", session.nonce.encode()).rpartition(".")[2]


@dataclass(frozen=True)
class Viewer:
    caller: Caller
    # None for a script that sent a Bearer key: there is no cookie to forge requests with.
    session: DashboardSession | None

    @property
    def actor(self) -> str:
        return f"{self.caller} (dashboard)"


def _caller_for_key(state: AppState, presented: str) -> Caller | None:
    # Compare against every key, so timing does not reveal which one nearly matched.
    matched = [k.role for k in state.api_keys if k.matches(presented)]
    return Caller(role=matched[0], key_id=key_fingerprint(presented)) if matched else None


def _viewer(request: Request, state: AppState) -> Viewer | None:
    """Who is looking: a Bearer key (a wrong one is a 401), else a valid session cookie,
    else nobody (None). Other Authorization schemes (a proxy's basic auth in front of the
    dashboard) are left to the proxy."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        caller = _caller_for_key(state, credentials.strip())
        if caller is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="a valid API key is required (Authorization: Bearer <key>)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return Viewer(caller, None)
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    session = open_session(session_secret(state.settings), token, time.time())
    if session is None:
        return None
    # The key must still be configured, with that role: removing a key ends its sessions.
    if not any(
        k.role == session.role and key_fingerprint(k.key.get_secret_value()) == session.key_id
        for k in state.api_keys
    ):
        return None
    return Viewer(Caller(role=session.role, key_id=session.key_id), session)


def _check_csrf(state: AppState, viewer: Viewer, presented: str) -> None:
    """A form posted with the session cookie must carry the session's CSRF token (403);
    one posted with a Bearer key needs none."""
    if viewer.session is None:
        return
    expected = csrf_token(session_secret(state.settings), viewer.session)
    if not hmac.compare_digest(expected.encode(), presented.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="invalid CSRF token")


def _secure(request: Request, settings: Settings) -> bool:
    return request.url.scheme == "https" or settings.public_url.startswith("https://")


def _to_login() -> RedirectResponse:
    return RedirectResponse("/dashboard/login", status.HTTP_303_SEE_OTHER, headers=_HEADERS)


def _html(template: str, status_code: int = status.HTTP_200_OK, **context: Any) -> HTMLResponse:
    html = _PAGES.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=_HEADERS)


# --- charts (server-rendered SVG; the geometry is computed here, drawn by _charts.html) ----

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


def _plural(count: int, word: str) -> str:
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
                f"{_plural(invoices, 'invoice')}",
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
                f"({point.recovered_invoices} of {_plural(point.failed_invoices, 'invoice')} "
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
                    f"{_plural(row.conversions, 'conversion')}, "
                    f"{_plural(row.messages_sent, 'email')} sent",
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
        # What no email earned, so the bars are read against it.
        unearned = [u.mrr_delta_cents for u in report.unattributed if u.currency == currency]
        if unearned:
            chart.note = f"Not credited to any email: {money(sum(unearned), currency)} MRR."
        charts.append(chart)
    return charts


# --- the page ----------------------------------------------------------------------------


@dataclass(frozen=True)
class InDunning:
    customer_id: str
    email: str | None
    mrr: str | None
    invoice_id: str
    workflow_id: str
    lifecycle: str
    automation: str | None
    started: datetime | None


async def customers_in_dunning(session: AsyncSession, temporal: Client) -> list[InDunning]:
    """Running dunning and payment-confirmation workflows, oldest first, with the
    customer's email and MRR from the billing snapshot. Raises RPCError when Temporal
    cannot answer."""
    executions = [
        execution
        async for execution in temporal.list_workflows(
            IN_DUNNING, limit=MAX_LISTED, rpc_timeout=LIST_TIMEOUT
        )
    ]
    ids = {e.typed_search_attributes.get(contract.CUSTOMER_ID) for e in executions} - {None}
    customers = {
        c.customer_id: c
        for c in (
            await session.execute(select(Customer).where(col(Customer.customer_id).in_(ids)))
        ).scalars()
    }
    found = []
    for execution in executions:
        attrs = execution.typed_search_attributes
        customer_id = attrs.get(contract.CUSTOMER_ID) or ""
        customer = customers.get(customer_id)
        invoice_id = execution.id
        for prefix in WORKFLOW_PREFIXES:
            invoice_id = invoice_id.removeprefix(prefix)
        found.append(
            InDunning(
                customer_id=customer_id,
                email=customer.email if customer else None,
                mrr=(
                    money(customer.mrr_cents, customer.currency)
                    if customer and customer.currency
                    else None
                ),
                invoice_id=invoice_id,
                workflow_id=execution.id,
                lifecycle=attrs.get(contract.LIFECYCLE) or execution.workflow_type,
                automation=attrs.get(contract.AUTOMATION),
                started=execution.start_time,
            )
        )
    found.sort(key=lambda d: (d.started or datetime.max.replace(tzinfo=UTC), d.workflow_id))
    return found


def _range_values(since: datetime, until: datetime) -> tuple[str, str]:
    """The range as the form's date fields show it (`until` is inclusive there)."""
    return since.date().isoformat(), (until - timedelta(microseconds=1)).date().isoformat()


Notice = tuple[Literal["ok", "error"], str]


def _notice(
    done: str | None, count: int | None, failed: str | None, why: str | None
) -> Notice | None:
    # Only codes travel in the URL: the page writes the sentence, so a crafted link
    # cannot put words of its own on it.
    if done:
        stopped = _plural(count or 0, "sequence")
        return ("ok", f"Stopped {stopped} for {done}.")
    if failed:
        reasons = {
            "unknown": "there is no such customer",
            "reason": "a reason is required",
            "temporal": "Temporal could not be reached; try again",
        }
        return ("error", f"Nothing was stopped for {failed}: {reasons.get(why or '', 'error')}.")
    return None


@router.get("", response_class=HTMLResponse)
async def dashboard(
    request: Request,
    state: AppStateDep,
    session: SessionDep,
    temporal: TemporalDep,
    since: Annotated[str | None, Query(description="ISO date or datetime")] = None,
    until: Annotated[str | None, Query(description="ISO date (included) or datetime")] = None,
    interval: Annotated[Interval | None, Query(description="day or week")] = None,
    done: Annotated[str | None, Query(include_in_schema=False)] = None,
    count: Annotated[int | None, Query(include_in_schema=False)] = None,
    failed: Annotated[str | None, Query(include_in_schema=False)] = None,
    why: Annotated[str | None, Query(include_in_schema=False)] = None,
) -> Response:
    """The dashboard (HTML). Needs a session (`/dashboard/login`) or a Bearer key."""
    viewer = _viewer(request, state)
    if viewer is None:
        return _to_login()
    now = datetime.now(UTC)
    error = None
    try:
        start, end = report_range(since, until, now)
        if since is None:
            start = end - DEFAULT_RANGE
    except RangeError as exc:
        error = str(exc)
        start, end = now - DEFAULT_RANGE, now
    chosen = interval or default_interval(start, end)
    series = await recovery_series(session, start, end, chosen)
    by_automation = await attribution_report(session, start, end, "automation")
    by_step = await attribution_report(session, start, end, "step")
    try:
        in_dunning: list[InDunning] | None = await asyncio.wait_for(
            customers_in_dunning(session, temporal), LIST_TIMEOUT.total_seconds() + 1
        )
    except TEMPORAL_UNREACHABLE as exc:
        log.warning("listing the customers in dunning failed: %s", exc)
        in_dunning = None
    since_value, until_value = _range_values(start, end)
    return _html(
        "dashboard.html",
        status_code=HTTPStatus.UNPROCESSABLE_ENTITY if error else HTTPStatus.OK,
        viewer=viewer,
        csrf=(csrf_token(session_secret(state.settings), viewer.session) if viewer.session else ""),
        error=error,
        notice=_notice(done, count, failed, why),
        since=start,
        until=end,
        since_value=since_value,
        until_value=until_value,
        interval=chosen,
        intervals=INTERVALS,
        presets=[
            (label, urlencode({"since": (now - timedelta(days=days)).date().isoformat()}))
            for label, days in (("30 days", 30), ("90 days", 90), ("1 year", 365))
        ],
        dunning=by_automation.dunning,
        totals=by_automation.totals,
        recovered_charts=[recovered_chart(series, c) for c in series.currencies()],
        rate_chart=rate_chart(series),
        automation_charts=earned_charts(by_automation, "automation"),
        step_charts=earned_charts(by_step, "step"),
        in_dunning=in_dunning,
        max_listed=MAX_LISTED,
        money=money,
        percent=percent,
    )


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, state: AppStateDep) -> Response:
    """The login form: paste a support or admin API key."""
    if request.cookies.get(SESSION_COOKIE) and _viewer(request, state) is not None:
        return RedirectResponse("/dashboard", status.HTTP_303_SEE_OTHER, headers=_HEADERS)
    return _html("login.html", error=None)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, state: AppStateDep, key: Annotated[str, Form()] = "") -> Response:
    """Exchange an API key for a 12-hour session cookie."""
    caller = _caller_for_key(state, key.strip()) if key.strip() else None
    if caller is None:
        return _html(
            "login.html",
            status_code=status.HTTP_401_UNAUTHORIZED,
            error="That key is not a support or admin key of this installation.",
        )
    session = DashboardSession(
        role=caller.role,
        key_id=caller.key_id,
        expires_at=int(time.time() + SESSION_TTL.total_seconds()),
        nonce=secrets.token_urlsafe(16),
    )
    response = RedirectResponse("/dashboard", status.HTTP_303_SEE_OTHER, headers=_HEADERS)
    response.set_cookie(
        SESSION_COOKIE,
        seal_session(session_secret(state.settings), session),
        max_age=int(SESSION_TTL.total_seconds()),
        path="/dashboard",
        httponly=True,
        samesite="strict",
        secure=_secure(request, state.settings),
    )
    log.info("dashboard login: %s", caller)
    return response


@router.post("/logout", response_class=HTMLResponse)
async def logout(
    request: Request, state: AppStateDep, csrf: Annotated[str, Form()] = ""
) -> Response:
    viewer = _viewer(request, state)
    if viewer is not None:
        _check_csrf(state, viewer, csrf)
    response = _to_login()
    response.delete_cookie(
        SESSION_COOKIE,
        path="/dashboard",
        httponly=True,
        samesite="strict",
        secure=_secure(request, state.settings),
    )
    return response


@router.post("/customers/{customer_id}/dunning/cancel", response_class=HTMLResponse)
async def cancel_dunning(
    customer_id: str,
    request: Request,
    state: AppStateDep,
    session: SessionDep,
    temporal: TemporalDep,
    reason: Annotated[str, Form(max_length=2000)] = "",
    csrf: Annotated[str, Form()] = "",
    since: Annotated[str, Form()] = "",
    until: Annotated[str, Form()] = "",
) -> Response:
    """The dashboard's Cancel button: the same as `POST /v1/customers/{id}/dunning/cancel`,
    recorded as done by the signed-in key through the dashboard. Back to the dashboard."""
    viewer = _viewer(request, state)
    if viewer is None:
        return _to_login()
    _check_csrf(state, viewer, csrf)
    back = {k: v for k, v in (("since", since), ("until", until)) if v}
    if not reason.strip():
        back |= {"failed": customer_id, "why": "reason"}
    else:
        try:
            cancelled = await stop_dunning(
                session, temporal, customer_id, reason.strip(), viewer.actor
            )
        except UnknownCustomer:
            back |= {"failed": customer_id, "why": "unknown"}
        except TEMPORAL_UNREACHABLE as exc:
            log.warning("cancelling the dunning of %s failed: %s", customer_id, exc)
            back |= {"failed": customer_id, "why": "temporal"}
        else:
            back |= {"done": customer_id, "count": str(len(cancelled))}
    return RedirectResponse(
        f"/dashboard?{urlencode(back)}", status.HTTP_303_SEE_OTHER, headers=_HEADERS
    )
