"""The dashboard: a read-only page for the team, and support's "stop this dunning" button.

`GET /dashboard` shows, for a range (`?since=&until=`, ISO dates or datetimes, default the
last 90 days): dunning's recovered revenue and MRR per currency and its recovery rate, the
same per day or week as charts, the MRR credited to each automation and step (the
attribution report), and the customers whose dunning or payment confirmation is running,
each with a form to stop it. Everything is rendered here: inline SVG charts (their
geometry is `charts.py`'s), inline CSS, no script and nothing fetched from elsewhere, so it
works without JavaScript and behind a strict Content-Security-Policy.

Who may see it: any key of `LIFECYCLE_API_KEYS`, `support` or `admin` (support staff need
the cancel button, which the API grants to `support` too), signed in through
`GET /dashboard/login` and `POST /dashboard/login` or sending a Bearer key (`sessions.py`).
Failed sign-ins are throttled per client address and per key presented (`rate_limit.py`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col
from temporalio.client import Client, WorkflowExecution, WorkflowQueryFailedError

from stripe_lifecycle.api.audit import note_caller
from stripe_lifecycle.api.charts import (
    earned_charts,
    money,
    percent,
    plural,
    rate_chart,
    recovered_chart,
)
from stripe_lifecycle.api.customers import UnknownCustomer, stop_dunning
from stripe_lifecycle.api.deps import (
    TEMPORAL_UNREACHABLE,
    AppStateDep,
    CustomerId,
    SessionDep,
    TemporalDep,
    identify,
)
from stripe_lifecycle.api.inbox import quarantined_events
from stripe_lifecycle.api.lift_cards import lift_cards
from stripe_lifecycle.api.page_headers import SELF_CONTAINED_PAGE_HEADERS
from stripe_lifecycle.api.rate_limit import client_address, retry_after
from stripe_lifecycle.api.sessions import (
    SESSION_COOKIE,
    SESSION_TTL,
    ViewerDep,
    check_csrf,
    csrf_token,
    current_viewer,
    new_session,
    seal_session,
    session_secret,
    sign_out,
)
from stripe_lifecycle.domain import contract
from stripe_lifecycle.domain.lifecycles import INVOICE_LIFECYCLES
from stripe_lifecycle.settings import Settings, key_digest
from stripe_lifecycle.storage.lift import lift_report
from stripe_lifecycle.storage.models import Customer
from stripe_lifecycle.storage.reports import (
    INTERVALS,
    Interval,
    RangeError,
    attribution_report,
    default_interval,
    recovery_series,
    report_range,
)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/dashboard", tags=["dashboard"])

DEFAULT_RANGE = timedelta(days=90)
# The dashboard waits for Temporal's list of running dunnings at most this long.
LIST_TIMEOUT = timedelta(seconds=5)
# And for one older dunning's `state` query (see `_invoice_of`) at most this long.
QUERY_TIMEOUT = timedelta(seconds=2)
MAX_LISTED = 500
# Quarantined events the overview lists (`GET /v1/inbox/quarantined` lists them all).
QUARANTINED_LISTED = 10
IN_DUNNING = (
    f"{contract.visibility_in(contract.LIFECYCLE, INVOICE_LIFECYCLES)} "
    "AND ExecutionStatus = 'Running'"
)

_PAGES = Environment(
    loader=PackageLoader("stripe_lifecycle.api", "pages"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

_HEADERS = {
    **SELF_CONTAINED_PAGE_HEADERS,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _cookie_attributes(request: Request, settings: Settings) -> dict[str, Any]:
    """The session cookie's scope and guards, the same when it is set and deleted."""
    return {
        "path": "/dashboard",
        "httponly": True,
        "samesite": "strict",
        # Only a dashboard on this machine may go without: anywhere else the session
        # travels over TLS or not at all.
        "secure": request.url.scheme == "https" or not settings.local_public_url(),
    }


def _page_range(since: str | None, until: str | None) -> tuple[datetime, datetime, str | None]:
    """A page's range (default the last 90 days), or the last 90 days and what was wrong
    with the one asked for."""
    now = datetime.now(UTC)
    try:
        start, end = report_range(since, until, now)
    except RangeError as exc:
        return now - DEFAULT_RANGE, now, str(exc)
    return (end - DEFAULT_RANGE if since is None else start), end, None


def to_login() -> RedirectResponse:
    return RedirectResponse("/dashboard/login", status.HTTP_303_SEE_OTHER, headers=_HEADERS)


def render_page(
    template: str,
    status_code: int = status.HTTP_200_OK,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    html = _PAGES.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=_HEADERS | (headers or {}))


# --- the page ----------------------------------------------------------------------------


@dataclass(frozen=True)
class InDunning:
    customer_id: str
    email: str | None
    mrr: str | None
    # None when the workflow does not tell (the page shows "—").
    invoice_id: str | None
    workflow_id: str
    lifecycle: str
    automation: str | None
    started: datetime | None


async def _invoice_of(temporal: Client, execution: WorkflowExecution) -> str | None:
    """The invoice a running dunning is about: from its memo, or, for instances started
    before the memo was written, from its `state` query; None when neither tells."""
    memo = await execution.memo_value(contract.MEMO_INVOICE_ID, default=None)
    if isinstance(memo, str) and memo:
        return memo
    handle = temporal.get_workflow_handle(execution.id, run_id=execution.run_id)
    try:
        state = await handle.query(contract.STATE_QUERY, rpc_timeout=QUERY_TIMEOUT)
    except (WorkflowQueryFailedError, *TEMPORAL_UNREACHABLE) as exc:
        log.info("the state query of %s failed: %s", execution.id, exc)
        return None
    invoice_id = state.get(contract.MEMO_INVOICE_ID) if isinstance(state, dict) else None
    return invoice_id if isinstance(invoice_id, str) and invoice_id else None


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
    invoices = await asyncio.gather(*(_invoice_of(temporal, e) for e in executions))
    ids = {e.typed_search_attributes.get(contract.CUSTOMER_ID) for e in executions} - {None}
    customers = {
        c.customer_id: c
        for c in (
            await session.execute(select(Customer).where(col(Customer.customer_id).in_(ids)))
        ).scalars()
    }
    found = []
    for execution, invoice_id in zip(executions, invoices, strict=True):
        attrs = execution.typed_search_attributes
        customer_id = attrs.get(contract.CUSTOMER_ID) or ""
        customer = customers.get(customer_id)
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


# What a Stripe customer id can be: nothing else is echoed into a notice.
_CUSTOMER_ID = re.compile(r"[A-Za-z0-9_]{1,255}")


def _notice(
    done: str | None, count: int | None, failed: str | None, why: str | None
) -> Notice | None:
    # Only codes and customer ids travel in the URL: the page writes the sentence, so a
    # crafted link cannot put words of its own on it.
    if done and not _CUSTOMER_ID.fullmatch(done) or failed and not _CUSTOMER_ID.fullmatch(failed):
        return None
    if done:
        stopped = plural(count or 0, "sequence")
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
    viewer: ViewerDep,
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
    if viewer is None:
        return to_login()
    start, end, error = _page_range(since, until)
    chosen = interval or default_interval(start, end)
    series = await recovery_series(session, start, end, chosen)
    by_automation = await attribution_report(session, start, end, "automation")
    by_step = await attribution_report(session, start, end, "step")
    quarantined = await quarantined_events(session, QUARANTINED_LISTED)
    try:
        in_dunning: list[InDunning] | None = await asyncio.wait_for(
            customers_in_dunning(session, temporal), LIST_TIMEOUT.total_seconds() + 1
        )
    except TEMPORAL_UNREACHABLE as exc:
        log.warning("listing the customers in dunning failed: %s", exc)
        in_dunning = None
    since_value, until_value = _range_values(start, end)
    today = datetime.now(UTC)
    return render_page(
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
            (label, urlencode({"since": (today - timedelta(days=days)).date().isoformat()}))
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
        quarantined=quarantined,
        money=money,
        percent=percent,
    )


@router.get("/lift", response_class=HTMLResponse)
async def lift_page(
    viewer: ViewerDep,
    session: SessionDep,
    state: AppStateDep,
    since: Annotated[str | None, Query(description="ISO date or datetime")] = None,
    until: Annotated[str | None, Query(description="ISO date (included) or datetime")] = None,
) -> Response:
    """A lift card per automation (`GET /v1/reports/lift` for the instances started in the
    range, default the last 90 days). Needs a session or a Bearer key."""
    if viewer is None:
        return to_login()
    start, end, error = _page_range(since, until)
    report = await lift_report(session, start, end, state.holdouts)
    since_value, until_value = _range_values(start, end)
    return render_page(
        "lift.html",
        status_code=HTTPStatus.UNPROCESSABLE_ENTITY if error else HTTPStatus.OK,
        viewer=viewer,
        error=error,
        since=start,
        until=end,
        since_value=since_value,
        until_value=until_value,
        minimum=report.minimum_sample,
        cards=lift_cards(report.automations),
    )


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, state: AppStateDep, db: SessionDep) -> Response:
    """The login form: paste a support or admin API key."""
    if request.cookies.get(SESSION_COOKIE) and await current_viewer(request, state, db):
        return RedirectResponse("/dashboard", status.HTTP_303_SEE_OTHER, headers=_HEADERS)
    return render_page("login.html", error=None)


@router.post(
    "/login",
    response_class=HTMLResponse,
    responses={429: {"description": "Too many failed sign-ins; see Retry-After"}},
)
async def login(request: Request, state: AppStateDep, key: Annotated[str, Form()] = "") -> Response:
    """Exchange an API key for a 12-hour session cookie."""
    presented = key.strip()
    client = client_address(request)
    # Throttled by the key's digest: the key itself is kept nowhere.
    key_id = key_digest(presented).hex()
    limits = state.login_limits
    if wait := limits.wait(client, key_id):
        seconds = retry_after(wait)
        return render_page(
            "login.html",
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            headers={"Retry-After": seconds},
            error=f"Too many failed sign-ins. Try again in {seconds} seconds.",
        )
    caller = identify(state, presented) if presented else None
    if caller is None:
        limits.failed(client, key_id)
        log.warning("failed dashboard sign-in from %s", client)
        return render_page(
            "login.html",
            status_code=status.HTTP_401_UNAUTHORIZED,
            error="That key is not a support or admin key of this installation.",
        )
    limits.succeeded(client, key_id)
    note_caller(request.scope, caller, "dashboard")
    session = new_session(caller, time.time())
    response = RedirectResponse("/dashboard", status.HTTP_303_SEE_OTHER, headers=_HEADERS)
    response.set_cookie(
        SESSION_COOKIE,
        seal_session(session_secret(state.settings), session),
        max_age=int(SESSION_TTL.total_seconds()),
        **_cookie_attributes(request, state.settings),
    )
    log.info("dashboard login: %s", caller)
    return response


@router.post("/logout", response_class=HTMLResponse)
async def logout(
    request: Request,
    viewer: ViewerDep,
    state: AppStateDep,
    db: SessionDep,
    csrf: Annotated[str, Form()] = "",
    everywhere: Annotated[bool, Form()] = False,
) -> Response:
    """Sign out: this session, or with `everywhere` every session of the key (also with a
    Bearer key, which has no session of its own). A copy of a signed-out cookie no longer
    opens anything."""
    if viewer is not None:
        check_csrf(state, viewer, csrf)
        if everywhere or viewer.session is not None:
            await sign_out(db, viewer.caller.key_id, None if everywhere else viewer.session)
            log.info("dashboard sign-out%s: %s", " everywhere" if everywhere else "", viewer.caller)
    response = to_login()
    response.delete_cookie(SESSION_COOKIE, **_cookie_attributes(request, state.settings))
    return response


@router.post("/customers/{customer_id}/dunning/cancel", response_class=HTMLResponse)
async def cancel_dunning(
    customer_id: CustomerId,
    viewer: ViewerDep,
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
    if viewer is None:
        return to_login()
    check_csrf(state, viewer, csrf)
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
