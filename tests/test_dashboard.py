"""The dashboard: signing in, what the page shows for emails and conversions recorded by the
real activities (SQLite and PostgreSQL), and support stopping a dunning through it on the
real dev server. The browser half is tests/test_dashboard_browser.py."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select
from temporalio.client import WorkflowExecutionStatus
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.testing import WorkflowEnvironment

from stripe_lifecycle.api.dashboard import InDunning, customers_in_dunning
from stripe_lifecycle.api.deps import key_fingerprint
from stripe_lifecycle.api.sessions import (
    SESSION_COOKIE,
    DashboardSession,
    seal_session,
    session_secret,
)
from stripe_lifecycle.domain import contract
from stripe_lifecycle.domain.lifecycles import Lifecycle
from stripe_lifecycle.settings import Settings
from stripe_lifecycle.storage.db import create_engine, create_sessionmaker
from stripe_lifecycle.storage.models import SupportAction
from stripe_lifecycle.storage.reports import attribution_report, periods, recovery_series

from .conftest import (
    ADMIN_KEY,
    SUPPORT_KEY,
    app_settings,
    free_port,
    running_api,
    running_stack,
)
from .events import unique_customer_id
from .page_helpers import csrf_of, read_page
from .report_helpers import (
    PAYMENT_FAILED,
    REMINDER,
    DunningRig,
    invoice,
    paid,
    start_dunning,
)
from .workflow_helpers import eventually

DAY = 86_400


# --- reading the page --------------------------------------------------------------------


async def sign_in(http: httpx.AsyncClient, key: str) -> httpx.Response:
    return await http.post("/dashboard/login", data={"key": key})


# --- data written by the real activities -------------------------------------------------


Rig = DunningRig


@pytest.fixture
async def rig(database_url: str) -> AsyncIterator[Rig]:
    # No Temporal: the list of customers in dunning says Temporal is unreachable.
    async with Rig.running(database_url, "tq-dashboard") as rig:
        yield rig


async def away_from_midnight() -> None:
    """The figures per day are checked for today: don't start seconds before midnight."""
    now = datetime.now(UTC)
    left = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC) - now
    if left < timedelta(seconds=30):
        await asyncio.sleep(left.total_seconds() + 1)


# --- signing in --------------------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sign_in_refuses_a_wrong_key_and_gives_a_strict_http_only_session(
    rig: Rig,
) -> None:
    http = rig.http
    anonymous = await http.get("/dashboard")
    assert (anonymous.status_code, anonymous.headers["location"]) == (303, "/dashboard/login")
    form = await http.get("/dashboard/login")
    assert form.status_code == 200
    assert read_page(form.text).attrs("input", name="key", type="password")

    wrong = await sign_in(http, "sk_not_a_key")
    assert wrong.status_code == 401
    assert "not a support or admin key" in wrong.text
    assert "set-cookie" not in wrong.headers
    assert (await http.get("/dashboard")).status_code == 303

    signed_in = await sign_in(http, SUPPORT_KEY)
    assert (signed_in.status_code, signed_in.headers["location"]) == (303, "/dashboard")
    cookie = signed_in.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite", "path", "max-age"} <= attributes
    assert "secure" not in attributes  # plain http: a Secure cookie would never come back
    assert re.search(r"SameSite=strict", cookie, re.IGNORECASE)
    assert "Path=/dashboard" in cookie and "Max-Age=43200" in cookie
    # It names the role and the key's fingerprint, never the key.
    value = cookie.split(";")[0].partition("=")[2].strip('"')
    payload = json.loads(base64.urlsafe_b64decode(value.split(".")[0] + "=="))
    assert (payload["r"], payload["k"]) == ("support", key_fingerprint(SUPPORT_KEY))
    assert SUPPORT_KEY not in value and SUPPORT_KEY not in json.dumps(payload)

    page = await http.get("/dashboard")
    assert page.status_code == 200
    assert f"Signed in with the support key {key_fingerprint(SUPPORT_KEY)}" in " ".join(
        page.text.replace("<code>", "").replace("</code>", "").split()
    )
    assert page.headers["cache-control"] == "no-store"
    assert "script-src" not in page.headers["content-security-policy"]
    # Signed in already: the login page sends on to the dashboard.
    assert (await http.get("/dashboard/login")).headers["location"] == "/dashboard"

    # Signing out needs the session's CSRF token, then ends the session.
    assert (await http.post("/dashboard/logout", data={"csrf": "forged"})).status_code == 403
    out = await http.post("/dashboard/logout", data={"csrf": csrf_of(page.text)})
    assert (out.status_code, out.headers["location"]) == (303, "/dashboard/login")
    assert "Max-Age=0" in out.headers["set-cookie"]
    assert (await http.get("/dashboard")).status_code == 303


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_forged_expired_or_revoked_sessions_and_bearer_keys(rig: Rig) -> None:
    secret = session_secret(rig.settings)

    def cookie(role: str, key: str, expires_in: float) -> dict[str, str]:
        session = DashboardSession(
            role="admin" if role == "admin" else "support",
            key_id=key_fingerprint(key),
            issued_at=time.time(),
            expires_at=int(time.time() + expires_in),
            nonce="n1",
        )
        return {"Cookie": f"{SESSION_COOKIE}={seal_session(secret, session)}"}

    async def status_with(headers: dict[str, str]) -> int:
        return (await rig.http.get("/dashboard", headers=headers)).status_code

    assert await status_with(cookie("admin", ADMIN_KEY, 60)) == 200
    assert await status_with(cookie("admin", ADMIN_KEY, -1)) == 303  # expired
    assert await status_with(cookie("admin", "sk_removed_key", 60)) == 303  # key not configured
    assert await status_with(cookie("admin", SUPPORT_KEY, 60)) == 303  # not that key's role
    genuine = cookie("support", SUPPORT_KEY, 60)["Cookie"]
    payload, _, mac = genuine.partition("=")[2].partition(".")
    admin_claim = base64.urlsafe_b64encode(
        base64.urlsafe_b64decode(payload + "==").replace(b'"support"', b'"admin"')
    ).rstrip(b"=")
    forged = f"{SESSION_COOKIE}={admin_claim.decode()}.{mac}"
    assert await status_with({"Cookie": forged}) == 303
    other_secret = Settings(link_secret="another-link-secret-Pw7Kd2Vb9Qs4Lx6Ny", api_keys="")
    foreign = seal_session(
        session_secret(other_secret),
        DashboardSession(
            "support", key_fingerprint(SUPPORT_KEY), time.time(), int(time.time()) + 60, "n"
        ),
    )
    assert await status_with({"Cookie": f"{SESSION_COOKIE}={foreign}"}) == 303

    # Scripts send the key itself.
    assert await status_with({"Authorization": f"Bearer {ADMIN_KEY}"}) == 200
    assert await status_with({"Authorization": f"Bearer {SUPPORT_KEY}"}) == 200
    refused = await rig.http.get("/dashboard", headers={"Authorization": "Bearer sk_wrong"})
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    # A proxy's basic auth in front of the dashboard is not a key: sign in as usual.
    assert await status_with({"Authorization": "Basic dXNlcjpwYXNz"}) == 303

    # Over https the cookie is Secure.
    assert rig.app is not None
    transport = httpx.ASGITransport(app=rig.app)
    async with httpx.AsyncClient(transport=transport, base_url="https://api.test") as https:
        response = await sign_in(https, ADMIN_KEY)
    assert response.status_code == 303
    assert "secure" in response.headers["set-cookie"].lower().split("; ")


# --- the figures -------------------------------------------------------------------------


async def test_the_page_shows_recovery_and_earnings_recorded_by_the_activities(rig: Rig) -> None:
    await away_from_midnight()
    clicked, reminded, lost, euro, late = (invoice() for _ in range(5))
    first = await rig.send(clicked, 0, PAYMENT_FAILED, "usd")
    await rig.send(clicked, 1, REMINDER, "usd")
    await rig.click(first)
    await rig.send(reminded, 0, PAYMENT_FAILED, "usd")
    reminder = await rig.send(reminded, 1, REMINDER, "usd")
    await rig.send(lost, 0, PAYMENT_FAILED, "usd")
    euro_email = await rig.send(euro, 0, PAYMENT_FAILED, "eur")
    await rig.send(late, 0, PAYMENT_FAILED, "usd")
    now = int(time.time())
    assert await rig.recover(clicked, now + 2, 4900, "usd") == first.id
    assert await rig.recover(reminded, now + 3 * DAY, 2900, "usd") == reminder.id
    assert await rig.recover(euro, now + 2, 3900, "eur") == euro_email.id
    assert await rig.recover(late, now + 8 * DAY, 4900, "usd") is None  # past the window

    today = datetime.now(UTC).date()
    since, until = today - timedelta(days=1), today + timedelta(days=10)
    response = await rig.http.get(
        "/dashboard",
        params={"since": since.isoformat(), "until": until.isoformat()},
        headers={"Authorization": f"Bearer {SUPPORT_KEY}"},
    )
    assert response.status_code == 200, response.text
    page = read_page(response.text)

    # Headline: five invoices in dunning, four recovered; money per currency.
    assert page.text("recovered-revenue") == (
        "Recovered revenue €39.00 1 invoice in EUR $127.00 3 invoices in USD"
    )
    assert (
        page.text("recovered-mrr") == "Recovered MRR €39.00 per month kept $127.00 per month kept"
    )
    assert page.text("recovery-rate-figure") == (
        "Recovery rate 80% 4 of 5 invoices in dunning recovered"
    )
    assert page.text("earned-by-email") == (
        "MRR earned by email (all lifecycles) €39.00 1 of 1 conversion credited to email "
        "$78.00 2 of 3 conversions credited to email"
    )
    # The range form shows the range asked for; 11 days are shown day by day.
    assert page.attrs("input", id="since")[0]["value"] == since.isoformat()
    assert page.attrs("input", id="until")[0]["value"] == until.isoformat()
    assert page.attrs("option", value="day")[0].get("selected") == ""

    def day(offset: int) -> str:
        moment = datetime.fromtimestamp(now + offset * DAY, UTC)
        return f"{moment.day} {moment:%b %Y}"

    # Recovered revenue per day, one chart per currency, each bar titled with its figures.
    for chart in ("recovered-usd", "recovered-eur", "recovery-rate"):
        [svg] = page.attrs("svg", id=chart)
        assert svg["role"] == "img" and svg["aria-labelledby"] == f"{chart}-title {chart}-desc"
    assert page.text("recovered-usd-title") == "Recovered revenue per day (USD)"
    assert f"{day(0)}: $49.00 recovered from 1 invoice" in page.titles
    assert f"{day(3)}: $29.00 recovered from 1 invoice" in page.titles
    assert f"{day(8)}: $49.00 recovered from 1 invoice" in page.titles
    assert f"{day(0)}: €39.00 recovered from 1 invoice" in page.titles
    assert f"{day(1)}: $0.00 recovered from 0 invoices" in page.titles
    assert len(page.attrs("rect", **{"class": "bar"})) >= 2 * 11
    # Recovery rate per day: today 2 of the 5 invoices emailed; later days 1 of 1.
    assert [t for t in page.titles if "in dunning)" in t] == [
        f"{day(0)}: 40% recovered (2 of 5 invoices in dunning)",
        f"{day(3)}: 100% recovered (1 of 1 invoice in dunning)",
        f"{day(8)}: 100% recovered (1 of 1 invoice in dunning)",
    ]
    assert len(page.attrs("circle", **{"class": "dot"})) == 3

    # MRR earned per automation and per step, per currency, with what no email earned.
    assert "dunning-default (dunning): $78.00 MRR from 2 conversions, 7 emails sent" in page.titles
    assert "dunning-default (dunning): €39.00 MRR from 1 conversion, 7 emails sent" in page.titles
    assert (
        "dunning-default › 1. dunning/payment-failed (dunning): $49.00 MRR from 1 conversion, "
        "5 emails sent" in page.titles
    )
    assert (
        "dunning-default › 2. dunning/reminder (dunning): $29.00 MRR from 1 conversion, "
        "2 emails sent" in page.titles
    )
    assert "Not credited to any email: $49.00 MRR." in response.text
    # No Temporal here: the list says so instead of failing the page.
    assert "Temporal could not be reached" in response.text

    # Nothing of it falls in last month.
    earlier = await rig.http.get(
        "/dashboard",
        params={"since": (today - timedelta(days=40)).isoformat(), "until": since.isoformat()},
        headers={"Authorization": f"Bearer {SUPPORT_KEY}"},
    )
    empty = read_page(earlier.text)
    assert empty.text("recovery-rate-figure") == (
        "Recovery rate — 0 of 0 invoices in dunning recovered"
    )
    assert "No revenue recovered in this range." in earlier.text
    assert "No conversion was credited to an email in this range." in earlier.text
    assert page.attrs("svg", id="recovery-rate") and not empty.attrs("circle")


async def test_the_page_counts_an_events_money_once_and_names_what_went_uncredited(
    rig: Rig,
) -> None:
    trial_and_dunning, wired = invoice(), invoice()
    dunning_email = await rig.send(trial_and_dunning, 0, PAYMENT_FAILED)
    welcome = await rig.send_trial_welcome(trial_and_dunning)
    clicked = await rig.send(wired, 0, PAYMENT_FAILED)
    await rig.click(clicked)
    at = int(time.time()) + 2
    # One invoice.paid recovers the trial's first charge and converts the trial.
    assert await rig.record(paid(trial_and_dunning, at)) == dunning_email.id
    converted = paid(trial_and_dunning, at, kind="trial_converted", lifecycle=Lifecycle.TRIAL)
    assert await rig.record(converted) == welcome.id
    # A wire transfer settles the other invoice: dunning gets no credit for it.
    assert await rig.record(paid(wired, at, 3900, uncredited_reason="paid_out_of_band")) is None

    today = datetime.now(UTC).date()
    response = await rig.http.get(
        "/dashboard",
        params={
            "since": (today - timedelta(days=1)).isoformat(),
            "until": (today + timedelta(days=1)).isoformat(),
        },
        headers={"Authorization": f"Bearer {SUPPORT_KEY}"},
    )
    page = read_page(response.text)
    assert page.text("recovered-revenue") == "Recovered revenue $49.00 1 invoice in USD"
    assert page.text("recovery-rate-figure") == (
        "Recovery rate 50% 1 of 2 invoices in dunning recovered; "
        "1 paid but not credited to dunning (out of band)"
    )
    assert page.text("earned-by-email") == (
        "MRR earned by email (all lifecycles) $49.00 2 of 3 conversions credited to email; "
        "the money of 1 Stripe event with several conversions counted once"
    )
    assert "dunning-default (dunning): $49.00 MRR from 1 conversion, 2 emails sent" in page.titles
    assert "trial-default (trial): $49.00 MRR from 1 conversion, 1 email sent" in page.titles
    assert (
        "Not credited to any email: $39.00 MRR. Recorded uncredited: paid out of band (1)."
        in response.text
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_default_range_is_90_days_by_week_and_a_bad_range_says_why(rig: Rig) -> None:
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    page = read_page((await rig.http.get("/dashboard", headers=auth)).text)
    today = datetime.now(UTC).date()
    assert page.attrs("input", id="until")[0]["value"] == today.isoformat()
    assert page.attrs("input", id="since")[0]["value"] == (today - timedelta(days=90)).isoformat()
    assert page.attrs("option", value="week")[0].get("selected") == ""
    assert page.text("recovery-rate-title") == "Recovery rate per week"

    bad = await rig.http.get("/dashboard", params={"since": "yesterday"}, headers=auth)
    assert bad.status_code == 422
    assert "since must be an ISO date" in bad.text and "Showing the last 90 days" in bad.text


async def test_the_series_adds_up_to_the_report_for_the_same_range(rig: Rig) -> None:
    """Each period's figures are the attribution report's dunning summary for that period."""
    a, b, wired = invoice(), invoice(), invoice()
    await rig.send(a, 0, PAYMENT_FAILED, "usd")
    await rig.send(b, 0, PAYMENT_FAILED, "usd")
    now = int(time.time())
    await rig.recover(a, now + 1, 4900, "usd")
    await rig.recover(b, now + 9 * DAY, 1500, "usd")
    await rig.record(paid(wired, now + 4 * DAY, 2000, uncredited_reason="paid_out_of_band"))
    start = datetime.fromtimestamp(now, UTC) - timedelta(days=2)
    end = start + timedelta(days=20)
    async with rig.sessionmaker() as session:
        series = await recovery_series(session, start, end, "week")
        assert [(p.start, p.end) for p in series.points] == periods(start, end, "week")
        for point in series.points:
            summary = (await attribution_report(session, point.start, point.end)).dunning
            assert (
                point.failed_invoices,
                point.recovered_invoices,
                point.uncredited_invoices,
                point.recovery_rate,
                point.recovered,
            ) == (
                summary.failed_invoices,
                summary.recovered_invoices,
                summary.uncredited_invoices,
                summary.recovery_rate,
                summary.recovered,
            )
        whole = (await attribution_report(session, start, end)).dunning
    assert sum(m.amount_cents for p in series.points for m in p.recovered) == 6400
    assert [m.amount_cents for m in whole.recovered] == [6400]
    assert (whole.failed_invoices, whole.recovered_invoices, whole.uncredited_invoices) == (3, 2, 1)


def test_periods_are_utc_days_or_monday_weeks_cut_to_the_range() -> None:
    since = datetime(2026, 11, 4, 15, 30, tzinfo=UTC)  # a Wednesday
    until = datetime(2026, 11, 20, tzinfo=UTC)
    assert periods(since, until, "week") == [
        (since, datetime(2026, 11, 9, tzinfo=UTC)),
        (datetime(2026, 11, 9, tzinfo=UTC), datetime(2026, 11, 16, tzinfo=UTC)),
        (datetime(2026, 11, 16, tzinfo=UTC), until),
    ]
    days = periods(since, datetime(2026, 11, 6, 1, tzinfo=UTC), "day")
    assert days == [
        (since, datetime(2026, 11, 5, tzinfo=UTC)),
        (datetime(2026, 11, 5, tzinfo=UTC), datetime(2026, 11, 6, tzinfo=UTC)),
        (datetime(2026, 11, 6, tzinfo=UTC), datetime(2026, 11, 6, 1, tzinfo=UTC)),
    ]


# --- stopping a dunning through the dashboard (real dev server, API and worker) ----------


async def test_support_stops_a_dunning_from_the_dashboard_and_forged_posts_are_refused(
    dev_env: WorkflowEnvironment, sqlite_url: str, task_queue: str
) -> None:
    async with running_stack(dev_env, sqlite_url, task_queue) as (app, http):
        cus, workflow_id = await start_dunning(http, "ada@example.com")
        assert (await sign_in(http, SUPPORT_KEY)).status_code == 303

        async def listed() -> bool:
            return bool(
                read_page((await http.get("/dashboard")).text).attrs(
                    "tr", data_workflow=workflow_id
                )
            )

        await eventually(listed, "the dunning on the dashboard")
        html = (await http.get("/dashboard")).text
        page = read_page(html)
        [row] = page.attrs("tr", data_workflow=workflow_id)
        assert row["data-customer"] == cus
        row_text = " ".join(
            html.split(f'data-workflow="{workflow_id}"')[1].split("</tr>")[0].split()
        )
        assert "ada@example.com" in row_text and "dunning-default" in row_text
        assert workflow_id.removeprefix("dunning-") in row_text
        [form] = page.attrs("form", action=f"/dashboard/customers/{cus}/dunning/cancel")
        assert form["method"] == "post"
        csrf = csrf_of(html)
        cancel = f"/dashboard/customers/{cus}/dunning/cancel"
        handle = dev_env.client.get_workflow_handle(workflow_id)

        # Refused: no token, another session's token, no session at all.
        assert (await http.post(cancel, data={"reason": "x"})).status_code == 403
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as other:
            await sign_in(other, SUPPORT_KEY)
            theirs = csrf_of((await other.get("/dashboard")).text)
            assert theirs != csrf
            assert (
                await http.post(cancel, data={"reason": "x", "csrf": theirs})
            ).status_code == 403
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as nobody:
            anonymous = await nobody.post(cancel, data={"reason": "x", "csrf": csrf})
            assert (anonymous.status_code, anonymous.headers["location"]) == (
                303,
                "/dashboard/login",
            )
        # A reason is required.
        blank = await http.post(cancel, data={"reason": "  ", "csrf": csrf})
        assert "failed=" in blank.headers["location"]
        assert "a reason is required" in (await http.get(blank.headers["location"])).text
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        async with app.state.lifecycle.sessionmaker() as session:
            assert list((await session.execute(select(SupportAction))).scalars()) == []

        stopped = await http.post(
            cancel,
            data={"reason": "paid by bank transfer", "csrf": csrf, "since": "", "until": ""},
        )
        assert stopped.status_code == 303
        after = await http.get(stopped.headers["location"])
        assert f"Stopped 1 sequence for {cus}." in after.text
        assert (await handle.result())["outcome"] == "cancelled"
        # A crafted link cannot put words of its own on the page.
        crafted = await http.get(
            "/dashboard", params={"done": "everyone. Call +1 555 0100 to confirm", "count": 3}
        )
        assert "Stopped" not in crafted.text and "555 0100" not in crafted.text

        async def gone() -> bool:
            html = (await http.get("/dashboard")).text
            return not read_page(html).attrs("tr", data_workflow=workflow_id)

        await eventually(gone, "the cancelled dunning to leave the list")
        async with app.state.lifecycle.sessionmaker() as session:
            [audit] = list((await session.execute(select(SupportAction))).scalars())
        assert (audit.customer_id, audit.action, audit.reason, audit.workflow_ids) == (
            cus,
            "dunning.cancel",
            "paid by bank transfer",
            [workflow_id],
        )
        assert audit.actor == f"support key {key_fingerprint(SUPPORT_KEY)} (dashboard)"


async def test_the_invoice_of_a_running_dunning_comes_from_its_memo_never_its_id(
    dev_env: WorkflowEnvironment, sqlite_url: str, task_queue: str
) -> None:
    """No worker polls `task_queue`: the dunning started with a memo shows the memo's
    invoice; the one without gets no answer to its state query and shows none."""
    cus = unique_customer_id()
    attributes = TypedSearchAttributes(
        [
            SearchAttributePair(contract.CUSTOMER_ID, cus),
            SearchAttributePair(contract.LIFECYCLE, "dunning"),
        ]
    )
    with_memo, without = f"dunning-in_Id{cus}", f"dunning-in_Old{cus}"
    handles = [
        await dev_env.client.start_workflow(
            "DunningWorkflow",
            id=workflow_id,
            task_queue=task_queue,
            search_attributes=attributes,
            memo=memo,
        )
        for workflow_id, memo in ((with_memo, {"invoice_id": "in_FromMemo1"}), (without, None))
    ]
    engine = create_engine(sqlite_url)
    listed: list[InDunning] = []
    try:
        async with create_sessionmaker(engine)() as session:

            async def both_listed() -> bool:
                listed[:] = [
                    d
                    for d in await customers_in_dunning(session, dev_env.client)
                    if d.customer_id == cus
                ]
                return len(listed) == 2

            await eventually(both_listed, "both dunnings in the visibility list")
    finally:
        await engine.dispose()
        for handle in handles:
            await handle.terminate("test over")
    assert {d.workflow_id: d.invoice_id for d in listed} == {
        with_memo: "in_FromMemo1",
        without: None,
    }


@pytest.mark.parametrize(
    ("public_url", "secure", "hsts"),
    [
        ("http://localhost:8000", False, False),
        ("http://billing.example.com", True, False),
        ("https://billing.example.com", True, True),
    ],
)
async def test_the_session_travels_over_tls_anywhere_but_this_machine(
    sqlite_url: str, public_url: str, secure: bool, hsts: bool
) -> None:
    settings = app_settings(
        sqlite_url, f"127.0.0.1:{free_port()}", "tq-cookies", public_url=public_url
    )
    async with running_api(settings) as (_, http):
        signed_in = await sign_in(http, SUPPORT_KEY)
        cookie = signed_in.headers["set-cookie"]
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
        assert ("secure" in attributes) is secure
        health = await http.get("/healthz")
        assert ("strict-transport-security" in health.headers) is hsts
