"""Revenue attribution end to end: signed webhooks through the real API, the customer and
dunning workflows on the dev server sending real (outbox) email, a click through the
tracked redirect, the recovery recorded by the real activity, and the report read back
as JSON and as CSV."""

import csv
import io
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlmodel import col
from temporalio.testing import WorkflowEnvironment

from stripe_lifecycle.storage.db import create_engine, create_sessionmaker
from stripe_lifecycle.storage.models import Conversion

from . import corpus
from .conftest import SUPPORT_KEY, running_stack
from .events import customer_event, subscription_event, unique_customer_id
from .signing import signed
from .workflow_helpers import eventually

AUTH = {"Authorization": f"Bearer {SUPPORT_KEY}"}
DAY = 86_400

# Two emails a second apart, and a final notice that keeps the dunning running meanwhile.
AUTOMATIONS = """\
automations:
  - name: dunning-quick
    lifecycle: dunning
    steps:
      - {after: 0s, send: dunning/payment-failed}
      - {after: 1s, send: dunning/reminder}
      - {after: 1h, send: dunning/final-notice}
  - name: trial-quick
    lifecycle: trial
    steps:
      - {after: 0s, send: trial/welcome}
      - {after: 1h, send: trial/ending}
"""
STEP_FAILED, STEP_REMINDER = "0-dunning-payment-failed", "1-dunning-reminder"


@pytest.fixture
async def stack(
    dev_env: WorkflowEnvironment, sqlite_url: str, task_queue: str, tmp_path: Path
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    automations = tmp_path / "automations.yaml"
    automations.write_text(AUTOMATIONS, encoding="utf-8")
    async with running_stack(dev_env, sqlite_url, task_queue, automations=automations) as pair:
        yield pair


class Customer:
    """One customer with a failed subscription invoice, driven through signed webhooks."""

    def __init__(self, http: httpx.AsyncClient, env: WorkflowEnvironment) -> None:
        self.http, self.env = http, env
        self.id = unique_customer_id()
        self.sub = f"sub_{self.id[4:]}"
        self.invoice = f"in_{uuid.uuid4().hex[:14]}"

    async def post(self, event: dict[str, Any]) -> None:
        body, headers = signed(event)
        response = await self.http.post("/webhooks/stripe", content=body, headers=headers)
        assert response.status_code == 200, response.text

    def invoice_event(self, fixture: str, created: int, **fields: Any) -> dict[str, Any]:
        return corpus.event(
            fixture,
            "legacy",
            self.id,
            created=created,
            id=self.invoice,
            subscription=self.sub,
            billing_reason="subscription_cycle",
            amount_due=4900,
            **fields,
        )

    async def fail_payment(self) -> list[dict[str, Any]]:
        """The payment fails; returns the two emails dunning sends, oldest first."""
        now = int(time.time())
        await self.post(customer_event(self.id, "ada@example.com", created=now - 10))
        await self.post(
            subscription_event(self.id, created=now - 9, status="past_due", sub_id=self.sub)
        )
        await self.post(self.invoice_event("invoice.payment_failed", now - 8))
        emails: list[dict[str, Any]] = []

        async def both_sent() -> bool:
            nonlocal emails
            log = (await self.http.get(f"/v1/customers/{self.id}/messages", headers=AUTH)).json()
            emails = log.get("messages", [])
            return [m["status"] for m in emails] == ["recorded", "recorded"]

        await eventually(both_sent, f"the two dunning emails of {self.id}")
        assert [m["step"] for m in emails] == [STEP_FAILED, STEP_REMINDER]
        return emails

    async def emails(self, what: str, count: int) -> list[dict[str, Any]]:
        """Waits until the customer's log holds `count` emails; returns them, oldest first."""
        emails: list[dict[str, Any]] = []

        async def logged() -> bool:
            nonlocal emails
            log = (await self.http.get(f"/v1/customers/{self.id}/messages", headers=AUTH)).json()
            emails = log.get("messages", [])
            return len(emails) == count

        await eventually(logged, f"{what} of {self.id}")
        return emails

    async def click(self, email: dict[str, Any]) -> None:
        detail = (await self.http.get(f"/v1/messages/{email['id']}", headers=AUTH)).json()
        [link] = [url for url in detail["links"] if "/t/" in url]
        response = await self.http.get("/t/" + link.partition("/t/")[2])
        assert response.status_code == 302
        assert response.headers["location"].startswith("https://invoice.stripe.com/")

    async def pay(self, created: int) -> None:
        """Stripe reports the invoice paid at `created`; waits for the recovery."""
        await self.post(self.invoice_event("invoice.paid", created, amount_paid=4900))
        handle = self.env.client.get_workflow_handle(f"dunning-{self.invoice}")
        assert (await handle.result())["outcome"] == "recovered"


async def test_recoveries_are_credited_to_the_clicked_then_last_email_within_the_window(
    stack: tuple[FastAPI, httpx.AsyncClient], dev_env: WorkflowEnvironment, sqlite_url: str
) -> None:
    _, http = stack
    clicker, reader, late, unpaid = (Customer(http, dev_env) for _ in range(4))

    # Clicked the first email (after the reminder went out), then paid.
    clicked_email, _ = await clicker.fail_payment()
    await clicker.click(clicked_email)
    await clicker.pay(int(time.time()) + 1)
    # Clicked nothing, paid: the last email sent earned it.
    _, last_email = await reader.fail_payment()
    await reader.pay(int(time.time()) + 1)
    # Paid eight days after the emails: outside the 7-day window, earned by no email.
    await late.fail_payment()
    await late.pay(int(time.time()) + 8 * DAY)
    # Never paid.
    await unpaid.fail_payment()

    engine = create_engine(sqlite_url)
    async with create_sessionmaker(engine)() as session:
        rows = await session.execute(select(Conversion).order_by(col(Conversion.id)))
        credited = [(c.customer_id, c.message_id, c.attribution) for c in rows.scalars()]
    await engine.dispose()
    assert credited == [
        (clicker.id, clicked_email["id"], "last_click"),
        (reader.id, last_email["id"], "last_send"),
        (late.id, None, None),
    ]

    today = datetime.now(UTC).date()
    window = {
        "since": (today - timedelta(days=1)).isoformat(),
        "until": (today + timedelta(days=10)).isoformat(),
    }
    response = await http.get("/v1/reports/attribution", params=window, headers=AUTH)
    assert response.status_code == 200, response.text
    report = response.json()
    assert [
        (r["automation"], r["step"], r["template"], r["currency"], r["conversions"])
        + (r["mrr_delta_cents"], r["messages_sent"], r["conversion_rate"])
        for r in report["rows"]
    ] == [
        ("dunning-quick", STEP_FAILED, "dunning/payment-failed", "usd", 1, 4900, 4, 0.25),
        ("dunning-quick", STEP_REMINDER, "dunning/reminder", "usd", 1, 4900, 4, 0.25),
    ]
    assert [
        (u["automation"], u["currency"], u["conversions"], u["mrr_delta_cents"])
        for u in report["unattributed"]
    ] == [("dunning-quick", "usd", 1, 4900)]
    assert report["dunning"] == {
        "failed_invoices": 4,
        "recovered_invoices": 3,
        "uncredited_invoices": 0,
        "recovery_rate": 0.75,
        "recovered": [
            {"currency": "usd", "invoices": 3, "mrr_delta_cents": 14_700, "amount_cents": 14_700}
        ],
    }

    as_csv = await http.get(
        "/v1/reports/attribution", params=window, headers={**AUTH, "Accept": "text/csv"}
    )
    assert as_csv.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert len(as_csv.text.splitlines()) == 1 + len(table)  # one header line
    attributed = [r for r in table if r["record"] == "attributed"]
    unattributed = [r for r in table if r["record"] == "unattributed"]
    assert [typed(r, report["rows"][0]) for r in attributed] == report["rows"]
    assert [typed(r, report["unattributed"][0]) for r in unattributed] == report["unattributed"]


async def test_one_paid_invoice_recovers_the_trials_first_charge_and_converts_the_trial(
    stack: tuple[FastAPI, httpx.AsyncClient], dev_env: WorkflowEnvironment, sqlite_url: str
) -> None:
    _, http = stack
    trialist = Customer(http, dev_env)
    now = int(time.time())
    await trialist.post(customer_event(trialist.id, "ada@example.com", created=now - 10))
    await trialist.post(
        subscription_event(
            trialist.id,
            created=now - 9,
            status="trialing",
            sub_id=trialist.sub,
            type_="customer.subscription.created",
            trial_end=now + 7 * DAY,
        )
    )
    welcome = await trialist.emails("the trial welcome", 1)
    # The trial ends and its first charge fails: the trial hands over to dunning.
    await trialist.post(
        subscription_event(trialist.id, created=now - 8, status="past_due", sub_id=trialist.sub)
    )
    await trialist.post(trialist.invoice_event("invoice.payment_failed", now - 7))
    *_, reminder = await trialist.emails("the trial welcome and two dunning emails", 3)
    assert [welcome[0]["template"], reminder["template"]] == ["trial/welcome", "dunning/reminder"]

    await trialist.pay(int(time.time()) + 1)
    engine = create_engine(sqlite_url)
    sessionmaker = create_sessionmaker(engine)
    found: list[tuple[Any, ...]] = []

    async def both_recorded() -> bool:
        async with sessionmaker() as session:
            rows = await session.execute(
                select(
                    col(Conversion.lifecycle),
                    col(Conversion.kind),
                    col(Conversion.message_id),
                    col(Conversion.amount_cents),
                    col(Conversion.stripe_event_id),
                )
                .where(col(Conversion.customer_id) == trialist.id)
                .order_by(col(Conversion.lifecycle))
            )
            found[:] = [tuple(row) for row in rows]
        return len(found) == 2

    try:
        await eventually(both_recorded, f"the two conversions of {trialist.id}")
    finally:
        await engine.dispose()
    paid_event = found[0][4]
    assert found == [
        ("dunning", "recovered", reminder["id"], 4900, paid_event),
        ("trial", "trial_converted", welcome[0]["id"], 4900, paid_event),
    ]

    today = datetime.now(UTC).date()
    window = {"since": (today - timedelta(days=1)).isoformat(), "until": today.isoformat()}
    report = (await http.get("/v1/reports/attribution", params=window, headers=AUTH)).json()
    [usd] = [t for t in report["totals"] if t["currency"] == "usd"]
    assert (usd["conversions"], usd["events"], usd["shared_events"]) == (2, 1, 1)
    assert (usd["amount_cents"], usd["attributed_amount_cents"]) == (4900, 4900)


def typed(cells: dict[str, str], like: dict[str, Any]) -> dict[str, Any]:
    """A CSV row as the JSON row it stands for: the JSON row's fields, in their types."""
    out: dict[str, Any] = {}
    for name, example in like.items():
        value = cells[name]
        if value == "":
            out[name] = None
        elif isinstance(example, bool) or not isinstance(example, int | float):
            out[name] = value
        else:
            out[name] = type(example)(value)
    return out
