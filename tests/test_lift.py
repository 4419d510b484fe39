"""Lift against the holdout: the maths against hand-computed tables, the storage query on
SQLite and PostgreSQL, `GET /v1/reports/lift` (JSON, CSV, keys) and the dashboard's lift
page (HTML here; in Chromium in tests/test_lift_browser.py)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from fractions import Fraction

import httpx
import pytest
from fastapi import FastAPI

from stripe_lifecycle.api.lift_cards import lift_card, points
from stripe_lifecycle.domain.lift import (
    GroupCounts,
    LiftStatus,
    difference,
    incremental_mrr,
    measure,
    mrr_per_customer,
    round_half_up,
    sample_problem,
)
from stripe_lifecycle.storage.db import SessionMaker, create_engine, create_sessionmaker
from stripe_lifecycle.storage.lift import automation_lift, group_counts, lift_report

from .conftest import ADMIN_KEY, SUPPORT_KEY, app_settings, free_port, running_api
from .lift_helpers import NOW, Rows, api_rows

SUPPORT = {"Authorization": f"Bearer {SUPPORT_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


# --- the maths -----------------------------------------------------------------------------

# (n_t, c_t, n_h, c_h) → p_t, p_h, p_t − p_h, relative, SE, 95% interval; by hand:
#
# 1000 treated, 120 converted; 100 held out, 8 converted:
#   p_t = 120/1000 = 0.12, p_h = 8/100 = 0.08, diff = 0.04, relative = 0.04/0.08 = 0.5
#   var = 0.12·0.88/1000 + 0.08·0.92/100 = 0.0001056 + 0.000736 = 0.0008416
#   SE = √0.0008416 = 0.0290103430, z·SE = 1.959964 × 0.0290103 = 0.0568592
#   CI = 0.04 ± 0.0568592 = [−0.0168592, 0.0968592]: includes 0, not significant
# 500 treated, 100 converted; 500 held out, 50 converted:
#   p_t = 0.2, p_h = 0.1, diff = 0.1, relative = 1
#   var = 0.2·0.8/500 + 0.1·0.9/500 = 0.25/500 = 0.0005, SE = 0.0223607
#   z·SE = 0.0438261, CI = [0.0561739, 0.1438261]: significant
# 200 treated, 20 converted; 50 held out, 10 converted (email did harm):
#   p_t = 0.1, p_h = 0.2, diff = −0.1, relative = −0.5
#   var = 0.1·0.9/200 + 0.2·0.8/50 = 0.00045 + 0.0032 = 0.00365, SE = 0.0604152
#   z·SE = 0.1184117, CI = [−0.2184117, 0.0184117]
# 100 treated, 10 converted; 100 held out, none converted (p_h = 0):
#   diff = 0.1, relative: none; var = 0.1·0.9/100 + 0 = 0.0009, SE = 0.03
#   z·SE = 0.0587989, CI = [0.0412011, 0.1587989]
HAND_TABLE = [
    (1000, 120, 100, 8, "0.12", "0.08", "0.04", "0.5", 0.0290103, (-0.0168592, 0.0968592), False),
    (500, 100, 500, 50, "0.2", "0.1", "0.1", "1", 0.0223607, (0.0561739, 0.1438261), True),
    (200, 20, 50, 10, "0.1", "0.2", "-0.1", "-0.5", 0.0604152, (-0.2184117, 0.0184117), False),
    (100, 10, 100, 0, "0.1", "0", "0.1", None, 0.03, (0.0412011, 0.1587989), True),
]


@pytest.mark.parametrize(
    ("n_t", "c_t", "n_h", "c_h", "p_t", "p_h", "diff", "relative", "se", "ci", "significant"),
    HAND_TABLE,
)
def test_rates_lift_and_interval_match_the_hand_computation(
    n_t: int,
    c_t: int,
    n_h: int,
    c_h: int,
    p_t: str,
    p_h: str,
    diff: str,
    relative: str | None,
    se: float,
    ci: tuple[float, float],
    significant: bool,
) -> None:
    treated, held_out = GroupCounts(n_t, c_t), GroupCounts(n_h, c_h)
    lift = difference(treated, held_out)
    result = measure(treated, held_out)
    assert (result.treated_rate, result.held_out_rate) == (Fraction(p_t), Fraction(p_h))
    assert lift.absolute == Fraction(diff)
    assert lift.relative == (None if relative is None else Fraction(relative))
    assert lift.standard_error == pytest.approx(se, abs=5e-8)
    assert lift.ci95 == pytest.approx(ci, abs=5e-8)
    assert lift.significant is significant


def test_the_first_table_row_is_reported_as_ok_with_its_rounded_figures() -> None:
    entry = automation_lift(
        "dunning", "dunning-default", GroupCounts(1000, 120), GroupCounts(100, 8)
    )
    assert entry.status == LiftStatus.OK and entry.reason is None
    assert (entry.treated.rate, entry.held_out.rate) == (0.12, 0.08)
    assert entry.lift is not None
    assert (entry.lift.absolute, entry.lift.relative) == (0.04, 0.5)
    assert entry.lift.ci95 == (-0.0169, 0.0969)
    assert entry.lift.significant is False


def test_no_holdout_zero_conversions_and_the_minimum_sample() -> None:
    # Nobody held out: nothing to compare with.
    alone = measure(GroupCounts(1000, 120), GroupCounts(0, 0))
    assert alone.status == LiftStatus.NO_HOLDOUT
    assert (alone.lift, alone.incremental_mrr, alone.held_out_rate) == (None, None, None)
    assert alone.treated_rate == Fraction(3, 25)

    # Nobody converted in either group: no outcome to compare.
    none = measure(GroupCounts(400, 0), GroupCounts(40, 0))
    assert none.status == LiftStatus.NOT_ENOUGH_DATA and none.lift is None
    assert none.reason == (
        "the treated group has 0 converted customers (5 needed); "
        "the held-out group has 0 converted customers (5 needed)"
    )
    assert (none.treated_rate, none.held_out_rate) == (Fraction(0), Fraction(0))

    # p_h = 0: the estimate has no relative lift, and the sample is below the minimum.
    assert sample_problem(GroupCounts(100, 10), GroupCounts(100, 0)) == (
        "the held-out group has 0 converted customers (5 needed)"
    )
    assert measure(GroupCounts(100, 10), GroupCounts(100, 0)).lift is None

    # The boundaries: 30 customers, 5 converted and 5 not, in each group.
    assert sample_problem(GroupCounts(30, 5), GroupCounts(30, 25)) is None
    assert measure(GroupCounts(30, 5), GroupCounts(30, 25)).status == LiftStatus.OK
    assert sample_problem(GroupCounts(29, 5), GroupCounts(30, 5)) == (
        "the treated group has 29 customers (30 needed)"
    )
    assert sample_problem(GroupCounts(30, 4), GroupCounts(30, 26)) == (
        "the treated group has 4 converted customers (5 needed); "
        "the held-out group has 4 customers who did not convert (5 needed)"
    )
    with pytest.raises(ValueError, match="between 0 and customers"):
        GroupCounts(10, 11)
    with pytest.raises(ValueError, match="both groups"):
        difference(GroupCounts(10, 1), GroupCounts(0, 0))


def test_mrr_per_customer_and_the_revenue_beyond_the_holdout_per_currency() -> None:
    treated = GroupCounts(1000, 120, {"usd": 1_234_567, "eur": 5_000})
    held_out = GroupCounts(100, 8, {"usd": 100_050, "gbp": 2_000})
    # usd: 1,234,567 / 1000 = 1234.567 → 1235; 100,050 / 100 = 1000.5 → 1001 (half up).
    # eur: 5,000 / 1000 = 5; gbp: 2,000 / 100 = 20. Never added across currencies.
    assert mrr_per_customer(treated) == {"eur": 5, "usd": 1235}
    assert mrr_per_customer(held_out) == {"gbp": 20, "usd": 1001}
    # usd: 1,234,567 − 100,050 × 1000/100 = 1,234,567 − 1,000,500 = 234,067: exact, not
    # (1235 − 1001) × 1000 = 234,000 from the rounded figures.
    # eur: 5,000 − 0 = 5,000. gbp: 0 − 2,000 × 1000/100 = −20,000.
    assert incremental_mrr(treated, held_out) == {"eur": 5_000, "gbp": -20_000, "usd": 234_067}
    # 7 held out earned 1,000: 1,000 × 10/7 = 1428.57… → S_t − that = 2000 − 1428.57 = 571.43
    # → 571.
    assert incremental_mrr(GroupCounts(10, 5, {"usd": 2000}), GroupCounts(7, 1, {"usd": 1000})) == {
        "usd": 571
    }
    assert [round_half_up(Fraction(n, 2)) for n in (5, -5, 3, -3, 4)] == [3, -3, 2, -2, 2]
    assert mrr_per_customer(GroupCounts(0, 0)) == {}
    result = measure(treated, held_out)
    assert result.incremental_mrr == incremental_mrr(treated, held_out)
    assert result.treated_mrr_per_customer == {"eur": 5, "usd": 1235}


def test_cards_say_the_lift_or_why_there_is_none() -> None:
    ok = lift_card(automation_lift("dunning", "d", GroupCounts(500, 100), GroupCounts(500, 50), 10))
    assert ok.headline == "Lift +10 pts (+100% relative)"
    assert ok.interval is not None and ok.note is None
    # The interval's ends sit either side of the estimate, and all right of zero.
    assert ok.interval.zero_x < ok.interval.low_x < ok.interval.estimate_x < ok.interval.high_x
    assert ok.bars[0].width == ok.bar_span and ok.bars[1].width == ok.bar_span / 2
    assert ("Held out", "10% of customers") in ok.figures
    small = lift_card(automation_lift("winback", "w", GroupCounts(10, 2), GroupCounts(3, 0)))
    assert (small.headline, small.interval) == ("Not enough data", None)
    assert small.note and "30 needed" in small.note
    alone = lift_card(automation_lift("trial", "t", GroupCounts(5, 1), GroupCounts(0, 0)))
    assert alone.headline == "No holdout group"
    assert [points(v) for v in (0.04, -0.0169, 0.0, 0.1)] == [
        "+4 pts",
        "−1.7 pts",
        "0 pts",
        "+10 pts",
    ]


# --- rows in the database -------------------------------------------------------------------


@asynccontextmanager
async def database(url: str) -> AsyncIterator[SessionMaker]:
    engine = create_engine(url)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


async def test_groups_count_customers_once_money_per_event_and_currency(database_url: str) -> None:
    rows = Rows()
    since, until = NOW - timedelta(days=10), NOW
    # Treated: cus_a fails two invoices (two dunnings), both recovered: one customer, one
    # converted customer, two events' money.
    a1, a2 = rows.instance("cus_a", "dunning-default"), rows.instance("cus_a", "dunning-default")
    rows.conversion(a1, 2900)
    rows.conversion(a2, 1000)
    # cus_b: one Stripe event recorded as two conversions of the lifecycle (two kinds): its
    # money counts once (the largest).
    b = rows.instance("cus_b", "dunning-default")
    shared = rows.conversion(b, 4900, kind="recovered")
    rows.conversion(b, 4900, event=shared, kind="converted")
    # cus_c: not converted. cus_d: converted in euros, kept apart.
    rows.instance("cus_c", "dunning-default")
    rows.conversion(rows.instance("cus_d", "dunning-default"), 1900, "eur")
    # cus_e: a conversion without a currency (no money): a converted customer, no money.
    rows.conversion(rows.instance("cus_e", "dunning-default"), 0, None)
    # Held out: cus_h1 converted (recorded, no mail was sent), cus_h2 did not.
    rows.conversion(rows.instance("cus_h1", "dunning-default", held_out=True), 2900)
    rows.instance("cus_h2", "dunning-default", held_out=True)
    # Outside the range: started before `since`, or at `until` (excluded); their
    # conversions do not count either.
    early = rows.instance("cus_old", "dunning-default", started=since - timedelta(seconds=1))
    rows.conversion(early, 9900)
    late = rows.instance("cus_late", "dunning-default", held_out=True, started=until)
    rows.conversion(late, 9900)
    # A conversion of an instance not in the table: nobody's.
    rows.conversion("dunning-unknown", 7700)
    # Another automation, no holdout; started exactly at `since` (included).
    rows.instance("cus_a", "trial-default", lifecycle="trial", started=since)

    async with database(database_url) as sessionmaker:
        await rows.insert(sessionmaker)
        async with sessionmaker() as session:
            groups = await group_counts(session, since, until)
            report = await lift_report(session, since, until, {"dunning-default": 10})

    assert groups == {
        ("dunning", "dunning-default"): (
            GroupCounts(5, 4, {"eur": 1900, "usd": 2900 + 1000 + 4900}),
            GroupCounts(2, 1, {"usd": 2900}),
        ),
        ("trial", "trial-default"): (GroupCounts(1, 0, {}), GroupCounts(0, 0, {})),
    }
    [dunning, trial] = report.automations
    assert (dunning.automation, dunning.holdout_percent, dunning.status) == (
        "dunning-default",
        10,
        LiftStatus.NOT_ENOUGH_DATA,
    )
    # 8800 / 5 customers = 1760 per treated customer; 1900 / 5 = 380 in euros.
    assert dunning.treated.mrr_per_customer == {"eur": 380, "usd": 1760}
    assert dunning.held_out.mrr_per_customer == {"usd": 1450}
    assert (dunning.treated.rate, dunning.held_out.rate) == (0.8, 0.5)
    assert (trial.lifecycle, trial.status, trial.holdout_percent) == (
        "trial",
        LiftStatus.NO_HOLDOUT,
        None,
    )


# --- the API and the page -------------------------------------------------------------------


@pytest.fixture
async def api(sqlite_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = app_settings(sqlite_url, f"127.0.0.1:{free_port()}", "tq-lift")
    async with running_api(settings) as (app, http):
        await api_rows().insert(app.state.lifecycle.sessionmaker)
        yield app, http


DUNNING_JSON = {
    "automation": "dunning-default",
    "lifecycle": "dunning",
    "holdout_percent": None,
    "treated": {
        "customers": 1000,
        "conversions": 120,
        "rate": 0.12,
        # usd: 100 × 2900 = 290,000 / 1000 = 290; eur: 20 × 1900 = 38,000 / 1000 = 38.
        "mrr_per_customer": {"eur": 38, "usd": 290},
        "mrr_delta_cents": {"eur": 38_000, "usd": 290_000},
    },
    "held_out": {
        "customers": 100,
        "conversions": 8,
        "rate": 0.08,
        # 8 × 2900 = 23,200 / 100 = 232.
        "mrr_per_customer": {"usd": 232},
        "mrr_delta_cents": {"usd": 23_200},
    },
    "lift": {"absolute": 0.04, "relative": 0.5, "ci95": [-0.0169, 0.0969], "significant": False},
    "status": "ok",
    "reason": None,
    # usd: 290,000 − 23,200 × 1000/100 = 58,000; eur: 38,000 − 0.
    "incremental_mrr": {"eur": 38_000, "usd": 58_000},
}


async def test_the_lift_report_as_json(api: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, http = api
    response = await http.get("/v1/reports/lift", headers=SUPPORT)
    assert response.status_code == 200, response.text
    body = response.json()
    since, until = datetime.fromisoformat(body["since"]), datetime.fromisoformat(body["until"])
    assert until - since == timedelta(days=30)
    assert body["minimum_sample"] == {
        "customers_per_group": 30,
        "converted_and_unconverted_per_group": 5,
    }
    dunning, trial, winback = body["automations"]
    assert dunning == DUNNING_JSON
    assert (trial["automation"], trial["status"], trial["lift"], trial["incremental_mrr"]) == (
        "trial-default",
        "no_holdout",
        None,
        None,
    )
    assert trial["held_out"] == {
        "customers": 0,
        "conversions": 0,
        "rate": None,
        "mrr_per_customer": {},
        "mrr_delta_cents": {},
    }
    assert (winback["status"], winback["lift"]) == ("not_enough_data", None)
    assert winback["reason"] == (
        "the treated group has 10 customers (30 needed); "
        "the held-out group has 3 customers (30 needed)"
    )
    assert (winback["treated"]["rate"], winback["held_out"]["rate"]) == (0.2, 0.0)

    # The instance started 45 days ago is in a range that reaches it.
    wide = await http.get(
        "/v1/reports/lift",
        params={"since": (NOW - timedelta(days=60)).date().isoformat()},
        headers=ADMIN,
    )
    assert wide.status_code == 200
    assert wide.json()["automations"][0]["treated"]["customers"] == 1001
    # A range before everything: no automation.
    empty = await http.get(
        "/v1/reports/lift", params={"since": "2020-01-01", "until": "2020-02-01"}, headers=SUPPORT
    )
    assert empty.json()["automations"] == []


async def test_the_lift_report_as_csv_per_automation_and_currency(
    api: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, http = api
    response = await http.get("/v1/reports/lift", headers={**SUPPORT, "Accept": "text/csv"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"].startswith('attachment; filename="lift-')
    rows = list(csv.DictReader(io.StringIO(response.text)))

    def cells(row: dict[str, str], *names: str) -> tuple[str, ...]:
        return tuple(row[n] for n in names)

    assert [cells(r, "automation", "currency", "status") for r in rows] == [
        ("dunning-default", "eur", "ok"),
        ("dunning-default", "usd", "ok"),
        ("trial-default", "", "no_holdout"),
        ("winback-default", "usd", "not_enough_data"),
    ]
    money = (
        "treated_mrr_per_customer",
        "held_out_mrr_per_customer",
        "treated_mrr_delta_cents",
        "held_out_mrr_delta_cents",
        "incremental_mrr",
    )
    assert cells(rows[0], *money) == ("38", "0", "38000", "0", "38000")
    assert cells(rows[1], *money) == ("290", "232", "290000", "23200", "58000")
    assert cells(
        rows[1], "treated_customers", "treated_conversions", "treated_rate", "held_out_rate"
    ) == ("1000", "120", "0.12", "0.08")
    assert cells(rows[1], "absolute_lift", "relative_lift", "ci95_low", "ci95_high") == (
        "0.04",
        "0.5",
        "-0.0169",
        "0.0969",
    )
    # No lift, no incremental money and no held-out per-customer figure where none exists.
    assert cells(rows[2], "absolute_lift", "held_out_mrr_per_customer", "incremental_mrr") == (
        "",
        "",
        "",
    )
    assert "30 needed" in rows[3]["reason"]
    # JSON unless CSV ranks higher.
    tie = await http.get(
        "/v1/reports/lift", headers={**SUPPORT, "Accept": "text/csv, application/json"}
    )
    assert tie.headers["content-type"] == "application/json"


async def test_the_lift_report_needs_a_key_and_a_valid_range(
    api: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, http = api
    assert (await http.get("/v1/reports/lift")).status_code == 401
    wrong = {"Authorization": "Bearer sk_nope"}
    assert (await http.get("/v1/reports/lift", headers=wrong)).status_code == 401
    # Support and admin keys both read it (there is no role below support to refuse: 403
    # cannot happen here).
    assert (await http.get("/v1/reports/lift", headers=ADMIN)).status_code == 200
    for params, where in [
        ({"since": "last tuesday"}, "since"),
        ({"until": "2026-13-01"}, "until"),
        ({"since": "2026-02-01", "until": "2026-01-01"}, "since"),
    ]:
        response = await http.get("/v1/reports/lift", params=params, headers=SUPPORT)
        assert response.status_code == 422, params
        [error] = response.json()["detail"]
        assert error["loc"] == ["query", where]


async def test_the_lift_page_shows_a_card_per_automation(
    api: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, http = api
    refused = await http.get("/dashboard/lift")
    assert (refused.status_code, refused.headers["location"]) == (303, "/dashboard/login")
    # The page's default range is 90 days: 30 leaves out the instance started 45 days ago.
    recent = {"since": (NOW - timedelta(days=30)).date().isoformat()}
    page = await http.get("/dashboard/lift", params=recent, headers=SUPPORT)
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    html = page.text
    for card in ("lift-dunning-dunning-default", "lift-winback-winback-default"):
        assert f'id="{card}"' in html
    assert 'data-status="ok"' in html and 'data-status="no_holdout"' in html
    assert "Lift +4 pts (+50% relative)" in html
    assert "−1.7 pts to +9.7 pts" in html
    assert "Not enough data: the treated group has 10 customers (30 needed)" in html
    assert "$580.00" in html  # the MRR beyond the holdout, in dollars
    assert '<a href="/dashboard/lift"' in html
    bad = await http.get("/dashboard/lift", params={"since": "soon"}, headers=SUPPORT)
    assert bad.status_code == 422 and "since must be an ISO date" in bad.text
