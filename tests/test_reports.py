"""Attribution through the real activities and the report API, on SQLite and PostgreSQL.

Emails are recorded by the real send_email activity (outbox transport), clicks go through
the real tracking redirect, conversions through the real record_conversion activity; the
report is read through `GET /v1/reports/attribution`."""

import csv
import io
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import select, text
from sqlalchemy.engine import Connection
from sqlmodel import col

from stripe_lifecycle.domain.attribution import Policy
from stripe_lifecycle.domain.lifecycles import Lifecycle
from stripe_lifecycle.storage.db import create_engine
from stripe_lifecycle.storage.migrate import alembic_config, upgrade
from stripe_lifecycle.storage.models import Conversion, ConversionCredit, MessageClick

from .conftest import ADMIN_KEY, SUPPORT_KEY
from .report_helpers import PAYMENT_FAILED, REMINDER, DunningRig, invoice, paid, step_key

SUPPORT = {"Authorization": f"Bearer {SUPPORT_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
DAY = 86_400
FINAL = "dunning/final-notice"


class Rig(DunningRig):
    """The API on this test's database, the worker's real mail and conversion activities
    writing to it, and the conversions and report they make."""

    async def conversion(self, invoice_id: str) -> tuple[Conversion, list[ConversionCredit]]:
        async with self.sessionmaker() as session:
            [row] = (
                await session.execute(
                    select(Conversion).where(col(Conversion.invoice_id) == invoice_id)
                )
            ).scalars()
            credits = (
                await session.execute(
                    select(ConversionCredit)
                    .where(col(ConversionCredit.conversion_id) == row.id)
                    .order_by(col(ConversionCredit.share_bp).desc(), col(ConversionCredit.id))
                )
            ).scalars()
            return row, list(credits)

    async def report(self, **params: str) -> dict[str, Any]:
        response = await self.http.get("/v1/reports/attribution", params=params, headers=SUPPORT)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
async def rig(database_url: str) -> AsyncIterator[Rig]:
    async with Rig.running(database_url, "tq-reports") as rig:
        yield rig


def around_now(days_after: int = 10) -> dict[str, str]:
    """A range of whole days from yesterday to `days_after` days from now."""
    today = datetime.now(UTC).date()
    return {
        "since": (today - timedelta(days=1)).isoformat(),
        "until": (today + timedelta(days=days_after)).isoformat(),
    }


def without_rates(rows: list[dict[str, Any]], *fields: str) -> list[tuple[Any, ...]]:
    return [tuple(row[f] for f in fields) for row in rows]


async def test_clicked_then_sent_then_unattributed_per_step_currency_and_dunning(
    rig: Rig,
) -> None:
    clicked, unclicked, late, euro, unpaid = (invoice() for _ in range(5))
    first_clicked = await rig.send(clicked, 0, PAYMENT_FAILED)
    await rig.send(clicked, 1, REMINDER)
    await rig.click(first_clicked)  # the reader clicks the first email after the reminder
    await rig.send(unclicked, 0, PAYMENT_FAILED)
    last_sent = await rig.send(unclicked, 1, REMINDER)
    await rig.send(late, 0, PAYMENT_FAILED)
    euro_email = await rig.send(euro, 0, PAYMENT_FAILED, currency="eur")
    await rig.send(unpaid, 0, PAYMENT_FAILED)
    now = int(time.time())

    assert await rig.recover(clicked, now + 2) == first_clicked.id
    assert await rig.recover(unclicked, now + 2) == last_sent.id
    assert await rig.recover(late, now + 8 * DAY) is None  # a week and a day later
    assert await rig.recover(euro, now + 2, amount=3900, currency="eur") == euro_email.id
    # The activity retried: nothing new is written and the answer is the same.
    assert await rig.recover(clicked, now + 3) == first_clicked.id

    conversion, credits = await rig.conversion(clicked)
    assert (conversion.message_id, conversion.attribution) == (first_clicked.id, "last_click")
    assert [(c.message_id, c.rule, c.share_bp, c.mrr_delta_cents) for c in credits] == [
        (first_clicked.id, "last_click", 10_000, 4900)
    ]
    conversion, credits = await rig.conversion(unclicked)
    assert (conversion.message_id, conversion.attribution) == (last_sent.id, "last_send")
    assert len(credits) == 1
    conversion, credits = await rig.conversion(late)
    assert (conversion.message_id, conversion.attribution, credits) == (None, None, [])

    report = await rig.report(**around_now(), group_by="step")
    step0, step1 = step_key(0, PAYMENT_FAILED), step_key(1, REMINDER)
    fields = (
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
    )
    assert without_rates(report["rows"], *fields) == [
        ("dunning", "dunning-default", step0, PAYMENT_FAILED, "eur", 1, 1.0, 3900, 3900, 5, 0.2),
        ("dunning", "dunning-default", step0, PAYMENT_FAILED, "usd", 1, 1.0, 4900, 4900, 5, 0.2),
        ("dunning", "dunning-default", step1, REMINDER, "usd", 1, 1.0, 4900, 4900, 2, 0.5),
    ]
    assert report["unattributed"] == [
        {
            "lifecycle": "dunning",
            "automation": "dunning-default",
            "currency": "usd",
            "reason": None,
            "conversions": 1,
            "mrr_delta_cents": 4900,
            "amount_cents": 4900,
        }
    ]
    assert report["messages_sent"] == 7
    assert report["totals"] == [
        {
            "currency": "eur",
            "conversions": 1,
            "attributed_conversions": 1,
            "events": 1,
            "shared_events": 0,
            "mrr_delta_cents": 3900,
            "attributed_mrr_delta_cents": 3900,
            "amount_cents": 3900,
            "attributed_amount_cents": 3900,
        },
        {
            "currency": "usd",
            "conversions": 3,
            "attributed_conversions": 2,
            "events": 3,
            "shared_events": 0,
            "mrr_delta_cents": 14_700,
            "attributed_mrr_delta_cents": 9800,
            "amount_cents": 14_700,
            "attributed_amount_cents": 9800,
        },
    ]
    # Five invoices were in dunning, four were recovered; money never mixes currencies.
    assert report["dunning"] == {
        "failed_invoices": 5,
        "recovered_invoices": 4,
        "uncredited_invoices": 0,
        "recovery_rate": 0.8,
        "recovered": [
            {"currency": "eur", "invoices": 1, "mrr_delta_cents": 3900, "amount_cents": 3900},
            {"currency": "usd", "invoices": 3, "mrr_delta_cents": 14_700, "amount_cents": 14_700},
        ],
    }

    by_automation = await rig.report(**around_now(), group_by="automation")
    assert without_rates(by_automation["rows"], *fields) == [
        ("dunning", "dunning-default", None, None, "eur", 1, 1.0, 3900, 3900, 7, 0.1429),
        ("dunning", "dunning-default", None, None, "usd", 2, 2.0, 9800, 9800, 7, 0.2857),
    ]
    by_template = await rig.report(**around_now(), group_by="template")
    assert without_rates(by_template["rows"], "template", "currency", "conversions") == [
        (PAYMENT_FAILED, "eur", 1),
        (PAYMENT_FAILED, "usd", 1),
        (REMINDER, "usd", 1),
    ]

    # The same rows as CSV: one header line, then the attributed and unattributed rows.
    response = await rig.http.get(
        "/v1/reports/attribution",
        params=around_now(),
        headers={**SUPPORT, "Accept": "text/csv"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    lines = response.text.splitlines()
    assert lines[0].startswith("record,lifecycle,automation,step,template,currency,")
    parsed = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["record"] for r in parsed] == ["attributed"] * 3 + ["unattributed"] + ["total"] * 2
    assert [csv_row(r, report["rows"][0]) for r in parsed[:3]] == report["rows"]
    assert [csv_row(parsed[3], report["unattributed"][0])] == report["unattributed"]
    assert [csv_row(r, report["totals"][0]) for r in parsed[4:]] == report["totals"]
    assert parsed[3]["step"] == parsed[4]["step"] == ""


def csv_row(cells: dict[str, str], like: dict[str, Any]) -> dict[str, Any]:
    """A CSV row read back as the JSON row it stands for: `like`'s fields, in JSON's types."""
    floats = ("credited_conversions", "conversion_rate")
    row: dict[str, Any] = {}
    for name, example in like.items():
        value = cells[name]
        if value == "":
            row[name] = None
        elif name in floats:
            row[name] = float(value)
        elif isinstance(example, int):
            row[name] = int(value)
        else:
            row[name] = value
    return row


async def test_one_event_two_conversions_each_credited_its_money_counted_once(rig: Rig) -> None:
    both_emailed, dunning_emailed, not_emailed, upgraded = (invoice() for _ in range(4))
    dunning_email = await rig.send(both_emailed, 0, PAYMENT_FAILED)
    welcome = await rig.send_trial_welcome(both_emailed)
    other_dunning_email = await rig.send(dunning_emailed, 0, PAYMENT_FAILED)
    at = int(time.time()) + 2

    # One invoice.paid recovers the trial's failed first charge and converts the trial:
    # each lifecycle's conversion is recorded and credited to that lifecycle's email.
    recovered, converted = (
        paid(both_emailed, at),
        paid(both_emailed, at, kind="trial_converted", lifecycle=Lifecycle.TRIAL),
    )
    for _ in range(2):  # and a retried activity writes nothing twice
        assert await rig.record(recovered) == dunning_email.id
        assert await rig.record(converted) == welcome.id
    assert await rig.record(paid(dunning_emailed, at, 2900)) == other_dunning_email.id
    trial = paid(dunning_emailed, at, 2900, kind="trial_converted", lifecycle=Lifecycle.TRIAL)
    assert await rig.record(trial) is None  # no trial email: recorded, unattributed
    assert await rig.recover(not_emailed, at, 1000) is None
    # One subscription update takes back a scheduled cancellation (the subscription's
    # whole MRR saved) and upgrades it (the MRR added): in euros, no email involved.
    update = replace(
        paid(upgraded, at, 9900, "eur", kind="saved", lifecycle=Lifecycle.SCHEDULED_CANCEL),
        stripe_event_id=f"evt_updated_{upgraded}",
        invoice_id=None,
        amount_cents=0,
    )
    assert await rig.record(update) is None
    expansion = replace(update, kind="expansion", lifecycle=Lifecycle.UPGRADE, mrr_delta_cents=5000)
    assert await rig.record(expansion) is None

    async with rig.sessionmaker() as session:
        rows = await session.execute(
            select(col(Conversion.lifecycle), col(Conversion.kind), col(Conversion.message_id))
            .where(col(Conversion.stripe_event_id) == f"evt_paid_{both_emailed}")
            .order_by(col(Conversion.lifecycle))
        )
        assert [tuple(r) for r in rows] == [
            ("dunning", "recovered", dunning_email.id),
            ("trial", "trial_converted", welcome.id),
        ]

    report = await rig.report(**around_now(), group_by="automation")
    # Each row shows its own conversions and their whole money...
    assert without_rates(
        report["rows"], "automation", "currency", "conversions", "mrr_delta_cents"
    ) == [("dunning-default", "usd", 2, 7800), ("trial-default", "usd", 1, 4900)]
    assert without_rates(
        report["unattributed"], "lifecycle", "currency", "conversions", "mrr_delta_cents"
    ) == [
        ("dunning", "usd", 1, 1000),
        ("scheduled_cancel", "eur", 1, 9900),
        ("trial", "usd", 1, 2900),
        ("upgrade", "eur", 1, 5000),
    ]
    # ...while the totals count the money of one Stripe event once: the largest of its
    # conversions' figures, not their sum (16 600 cents in the rows above).
    assert report["totals"] == [
        {
            "currency": "eur",
            "conversions": 2,
            "attributed_conversions": 0,
            "events": 1,
            "shared_events": 1,
            "mrr_delta_cents": 9900,
            "attributed_mrr_delta_cents": 0,
            "amount_cents": 0,
            "attributed_amount_cents": 0,
        },
        {
            "currency": "usd",
            "conversions": 5,
            "attributed_conversions": 3,
            "events": 3,
            "shared_events": 2,
            "mrr_delta_cents": 4900 + 2900 + 1000,
            "attributed_mrr_delta_cents": 4900 + 2900,
            "amount_cents": 4900 + 2900 + 1000,
            "attributed_amount_cents": 4900 + 2900,
        },
    ]
    # Dunning counts its own recoveries, which no other lifecycle shares.
    assert report["dunning"]["recovered"] == [
        {"currency": "usd", "invoices": 3, "mrr_delta_cents": 8800, "amount_cents": 8800}
    ]

    as_csv = await rig.http.get(
        "/v1/reports/attribution", params=around_now(), headers={**SUPPORT, "Accept": "text/csv"}
    )
    totals = [r for r in csv.DictReader(io.StringIO(as_csv.text)) if r["record"] == "total"]
    assert [
        (r["currency"], r["conversions"], r["events"], r["shared_events"], r["mrr_delta_cents"])
        for r in totals
    ] == [("eur", "2", "1", "1", "9900"), ("usd", "5", "3", "2", "8800")]


async def test_a_payment_out_of_band_is_recorded_uncredited_with_its_reason(rig: Rig) -> None:
    wired, recovered = invoice(), invoice()
    clicked = await rig.send(wired, 0, PAYMENT_FAILED)
    await rig.click(clicked)
    recovering = await rig.send(recovered, 0, PAYMENT_FAILED)
    at = int(time.time()) + 2
    out_of_band = paid(wired, at, 3900, uncredited_reason="paid_out_of_band")
    for _ in range(2):  # retried: still one row, still no credit
        assert await rig.record(out_of_band) is None
    assert await rig.recover(recovered, at) == recovering.id

    conversion, credits = await rig.conversion(wired)
    assert (conversion.message_id, conversion.attribution, credits) == (None, None, [])
    assert conversion.uncredited_reason == "paid_out_of_band"
    assert (conversion.kind, conversion.amount_cents) == ("recovered", 3900)

    report = await rig.report(**around_now())
    assert without_rates(report["rows"], "step", "currency", "conversions", "mrr_delta_cents") == [
        (step_key(0, PAYMENT_FAILED), "usd", 1, 4900)
    ]
    assert report["unattributed"] == [
        {
            "lifecycle": "dunning",
            "automation": "dunning-default",
            "currency": "usd",
            "reason": "paid_out_of_band",
            "conversions": 1,
            "mrr_delta_cents": 3900,
            "amount_cents": 3900,
        }
    ]
    [usd] = report["totals"]
    assert (usd["conversions"], usd["attributed_conversions"], usd["mrr_delta_cents"]) == (
        2,
        1,
        8800,
    )
    # The wire was not dunning's doing: in dunning, not recovered, and none of its money.
    assert report["dunning"] == {
        "failed_invoices": 2,
        "recovered_invoices": 1,
        "uncredited_invoices": 1,
        "recovery_rate": 0.5,
        "recovered": [
            {"currency": "usd", "invoices": 1, "mrr_delta_cents": 4900, "amount_cents": 4900}
        ],
    }
    as_csv = await rig.http.get(
        "/v1/reports/attribution", params=around_now(), headers={**SUPPORT, "Accept": "text/csv"}
    )
    [unearned] = [
        r for r in csv.DictReader(io.StringIO(as_csv.text)) if r["record"] == "unattributed"
    ]
    assert (unearned["reason"], unearned["mrr_delta_cents"]) == ("paid_out_of_band", "3900")


async def test_a_click_or_send_in_the_second_of_the_conversion_is_credited(rig: Rig) -> None:
    clicked_invoice, sent_invoice = invoice(), invoice()
    clicked = await rig.send(clicked_invoice, 0, PAYMENT_FAILED)
    await rig.send(clicked_invoice, 1, REMINDER)
    await rig.click(clicked)
    async with rig.sessionmaker() as session:
        [clicked_at] = (
            await session.execute(
                select(col(MessageClick.clicked_at)).where(
                    col(MessageClick.message_id) == clicked.id
                )
            )
        ).scalars()
    # Stripe's `created` is the click's second: the reader paid from the link at once.
    assert await rig.recover(clicked_invoice, int(clicked_at.timestamp())) == clicked.id
    assert (await rig.conversion(clicked_invoice))[0].attribution == "last_click"

    sent = await rig.send(sent_invoice, 0, PAYMENT_FAILED)
    assert sent.sent_at is not None
    assert await rig.recover(sent_invoice, int(sent.sent_at.timestamp())) == sent.id
    # The second before it is before the email.
    assert await rig.recover(invoice(), int(sent.sent_at.timestamp()) - 1) is None


async def test_linear_credit_is_split_across_the_emails_to_the_cent(rig: Rig) -> None:
    paid = invoice()
    sent = [
        await rig.send(paid, 0, PAYMENT_FAILED),
        await rig.send(paid, 1, REMINDER),
        await rig.send(paid, 2, FINAL),
    ]
    linear = Policy(model="linear")
    at = int(time.time()) + 2
    assert await rig.recover(paid, at, amount=10_000, policy=linear) == sent[2].id
    assert await rig.recover(paid, at, amount=10_000, policy=linear) == sent[2].id  # retried

    conversion, credits = await rig.conversion(paid)
    assert (conversion.message_id, conversion.attribution) == (sent[2].id, "linear")
    assert [(c.message_id, c.share_bp, c.mrr_delta_cents) for c in credits] == [
        (sent[2].id, 3334, 3334),
        (sent[1].id, 3333, 3333),
        (sent[0].id, 3333, 3333),
    ]
    report = await rig.report(**around_now())
    assert without_rates(
        report["rows"], "step", "conversions", "credited_conversions", "mrr_delta_cents"
    ) == [
        (step_key(0, PAYMENT_FAILED), 1, 0.3333, 3333),
        (step_key(1, REMINDER), 1, 0.3333, 3333),
        (step_key(2, FINAL), 1, 0.3334, 3334),
    ]
    assert sum(r["mrr_delta_cents"] for r in report["rows"]) == 10_000
    assert report["totals"][0]["attributed_conversions"] == 1


async def test_first_touch_and_a_per_lifecycle_window(rig: Rig) -> None:
    first, wide, narrow = invoice(), invoice(), invoice()
    opening = await rig.send(first, 0, PAYMENT_FAILED)
    await rig.send(first, 1, REMINDER)
    at = int(time.time()) + 2
    assert await rig.recover(first, at, policy=Policy(model="first_touch")) == opening.id
    assert (await rig.conversion(first))[0].attribution == "first_touch"

    # Twenty days later: outside the default week, inside a 30-day dunning window.
    wide_email = await rig.send(wide, 0, PAYMENT_FAILED)
    await rig.send(narrow, 0, PAYMENT_FAILED)
    later = int(time.time()) + 20 * DAY
    month = Policy.build("last_click_then_last_send", 7, "dunning:30,trial:14")
    assert await rig.recover(wide, later, policy=month) == wide_email.id
    assert await rig.recover(narrow, later, policy=Policy.build("linear", 7, "winback:30")) is None


async def test_range_defaults_to_the_last_30_days_and_bad_parameters_are_422(rig: Rig) -> None:
    recent, old, ahead = invoice(), invoice(), invoice()
    now = int(time.time())
    await rig.recover(recent, now - DAY)
    await rig.recover(old, now - 40 * DAY)
    await rig.recover(ahead, now + 2 * DAY)

    def counted(body: dict[str, Any]) -> int:
        return sum(t["conversions"] for t in body["totals"])

    default = await rig.report()
    assert counted(default) == 1
    assert default["dunning"]["recovered_invoices"] == 1
    since, until = (
        datetime.fromisoformat(default["since"]),
        datetime.fromisoformat(default["until"]),
    )
    assert until - since == timedelta(days=30)
    assert abs(until - datetime.now(UTC)) < timedelta(minutes=1)

    today = datetime.now(UTC).date()
    # A date as `until` takes in that whole day; datetimes are exact.
    assert counted(await rig.report(since=(today - timedelta(days=41)).isoformat())) == 2
    two_days = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    assert counted(await rig.report(until=two_days)) == 2
    moment = datetime.fromtimestamp(now - 40 * DAY, UTC)
    exact = await rig.report(
        since=moment.isoformat().replace("+00:00", "Z"),
        until=(moment + timedelta(seconds=1)).isoformat(),
    )
    assert counted(exact) == 1
    naive = await rig.report(since="2026-01-01T00:00:00", until="2026-01-02")
    assert (naive["since"], naive["until"]) == (
        "2026-01-01T00:00:00Z",
        "2026-01-03T00:00:00Z",
    )

    for params, where in [
        ({"since": "last tuesday"}, "since"),
        ({"until": "2026-13-01"}, "until"),
        ({"since": "2026-02-01", "until": "2026-01-01"}, "since"),
        ({"group_by": "subject"}, "group_by"),
    ]:
        response = await rig.http.get("/v1/reports/attribution", params=params, headers=SUPPORT)
        assert response.status_code == 422, params
        [error] = response.json()["detail"]
        assert error["loc"] == ["query", where]
        assert where in error["msg"] or where == "group_by"

    assert (await rig.http.get("/v1/reports/attribution")).status_code == 401
    wrong = {"Authorization": "Bearer sk_nope"}
    assert (await rig.http.get("/v1/reports/attribution", headers=wrong)).status_code == 401
    assert (await rig.http.get("/v1/reports/attribution", headers=ADMIN)).status_code == 200


async def test_json_unless_csv_is_preferred(rig: Rig) -> None:
    for accept, kind in [
        ("*/*", "application/json"),
        ("application/json", "application/json"),
        ("text/html,application/xhtml+xml,*/*;q=0.8", "application/json"),
        ("text/csv", "text/csv"),
        ("text/csv, application/json;q=0.5", "text/csv"),
        ("application/json, text/csv;q=0.9", "application/json"),
    ]:
        response = await rig.http.get(
            "/v1/reports/attribution", headers={**SUPPORT, "Accept": accept}
        )
        assert response.headers["content-type"].startswith(kind), accept
    empty = await rig.http.get("/v1/reports/attribution", headers={**SUPPORT, "Accept": "text/csv"})
    assert len(empty.text.splitlines()) == 1  # the header line only


def _migrate(connection: Connection, url: str, revision: str, down: bool) -> None:
    config = alembic_config(url)
    config.attributes["connection"] = connection
    (command.downgrade if down else command.upgrade)(config, revision)


async def test_conversions_credited_before_credits_existed_are_carried_over(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_migrate, database_url, "0006", True)
            await conn.execute(
                text(
                    "INSERT INTO conversions (stripe_event_id, kind, customer_id, lifecycle,"
                    " workflow_id, automation, amount_cents, mrr_delta_cents, currency,"
                    " occurred_at, message_id, attribution, recorded_at) VALUES"
                    " (:event, 'recovered', 'cus_1', 'dunning', 'dunning-in_1', 'd', 4900,"
                    " 4900, 'usd', :at, :message, 'last_click', :at)"
                ),
                [
                    {"event": "evt_credited", "message": "msg-1", "at": datetime(2026, 1, 1)},
                    {"event": "evt_unattributed", "message": None, "at": datetime(2026, 1, 1)},
                ],
            )
        await upgrade(database_url)
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT message_id, rule, share_bp, mrr_delta_cents, amount_cents"
                        " FROM conversion_credits"
                    )
                )
            ).all()
        assert [tuple(r) for r in rows] == [("msg-1", "last_click", 10_000, 4900, 4900)]
    finally:
        await engine.dispose()
