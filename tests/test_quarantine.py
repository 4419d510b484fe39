"""Poison events: what can never be delivered is quarantined (a reason, shown in `/readyz`,
the log, the dashboard and `/v1/inbox`), not retried forever; what is only too big is
trimmed and delivered. Through the real app, worker and Temporal dev server, and the
forwarder alone with a scripted Temporal."""

from __future__ import annotations

import asyncio
import logging
import sysconfig
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import col
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from stripe_lifecycle.domain import contract
from stripe_lifecycle.domain.events import BillingEvent
from stripe_lifecycle.intake.forwarder import ForwarderConfig, InboxForwarder
from stripe_lifecycle.intake.inbox import InboxWriter, inbox_row
from stripe_lifecycle.intake.normalise import normalise_event
from stripe_lifecycle.storage.db import SessionMaker, create_engine, create_sessionmaker
from stripe_lifecycle.storage.models import InboxStatus, SupportAction, WebhookEvent

from .conftest import ADMIN_KEY, SUPPORT_KEY, running_stack
from .events import customer_event, subscription_event, unique_customer_id
from .signing import post_webhook
from .workflow_helpers import eventually

T0 = 1_790_000_000
SUPPORT = {"Authorization": f"Bearer {SUPPORT_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
FORWARDER_LOG = "stripe_lifecycle.intake.forwarder"


async def stored(sessionmaker: SessionMaker, event_id: str) -> WebhookEvent:
    async with sessionmaker() as session:
        row = (
            await session.execute(
                select(WebhookEvent).where(col(WebhookEvent.event_id) == event_id)
            )
        ).scalar_one()
        return row


async def audit(sessionmaker: SessionMaker) -> list[SupportAction]:
    async with sessionmaker() as session:
        rows = await session.execute(select(SupportAction).order_by(col(SupportAction.id)))
        return list(rows.scalars())


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[SessionMaker]:
    engine = create_engine(database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


def quarantine_logs(caplog: pytest.LogCaptureFixture, event_id: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == FORWARDER_LOG and r.levelno == logging.ERROR and event_id in r.getMessage()
    ]


async def test_an_event_with_a_10_kib_customer_id_is_quarantined_shown_retried_and_dropped(
    dev_env: WorkflowEnvironment,
    database_url: str,
    db: SessionMaker,
    task_queue: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=FORWARDER_LOG)
    poison = customer_event("cus_" + "x" * 10 * 1024, "poison@example.com", created=T0)
    healthy_cus = unique_customer_id()
    healthy = customer_event(healthy_cus, "fine@example.com", created=T0)
    async with running_stack(dev_env, database_url, task_queue) as (app, http):
        forwarder = app.state.lifecycle.forwarder
        await post_webhook(http, poison)
        await post_webhook(http, healthy)
        await forwarder.drained()

        row = await stored(db, poison["id"])
        assert row.status == InboxStatus.QUARANTINED
        assert row.last_error is not None
        assert "customer_id is 10244 characters long" in row.last_error
        # Refused before any attempt, and the id did not fit the column: stored without it.
        assert (row.attempts, row.customer_id) == (0, None)
        assert (await stored(db, healthy["id"])).status == InboxStatus.FORWARDED
        assert len(quarantine_logs(caplog, poison["id"])) == 1

        # Several sweeps later it is still where it was: no retry, no second log line.
        await asyncio.sleep(4 * app.state.lifecycle.settings.forwarder_sweep_seconds)
        row = await stored(db, poison["id"])
        assert (row.status, row.attempts) == (InboxStatus.QUARANTINED, 0)
        assert len(quarantine_logs(caplog, poison["id"])) == 1

        # Ready (the replica is fine), but degraded, and it says why.
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["quarantined_events"] == 1
        assert ready.json()["degraded"] is True

        listed = await http.get("/v1/inbox/quarantined", headers=SUPPORT)
        assert listed.status_code == 200
        assert listed.json()["total"] == 1
        [entry] = listed.json()["events"]
        assert entry["event_id"] == poison["id"]
        assert entry["type"] == "customer.updated"
        assert entry["customer_id"] is None
        assert "10244 characters" in entry["reason"]
        assert entry["received_at"]

        page = await http.get("/dashboard", headers=SUPPORT)
        assert page.status_code == 200
        section = page.text[page.text.index('id="quarantined"') :]
        section = section[: section.index("</section>")]
        assert "1 Stripe event cannot be delivered" in " ".join(section.split())
        assert f'data-event="{poison["id"]}"' in section
        assert "customer_id is 10244 characters long" in section

        # Retry and drop are an admin's: support may look, not act.
        assert (
            await http.post(f"/v1/inbox/{poison['id']}/retry", headers=SUPPORT)
        ).status_code == 403
        assert (await http.delete(f"/v1/inbox/{poison['id']}", headers=SUPPORT)).status_code == 403
        assert (await http.post(f"/v1/inbox/{poison['id']}/retry")).status_code == 401
        # Only a quarantined event can be retried or dropped.
        missing = await http.post("/v1/inbox/evt_nope/retry", headers=ADMIN)
        assert missing.status_code == 404
        delivered = await http.delete(f"/v1/inbox/{healthy['id']}", headers=ADMIN)
        assert delivered.status_code == 409

        # A retry with nothing fixed is quarantined again, for the same reason.
        retried = await http.post(
            f"/v1/inbox/{poison['id']}/retry",
            json={"reason": "checking whether it still fails"},
            headers=ADMIN,
        )
        assert retried.status_code == 202
        assert retried.json() == {"event_id": poison["id"], "status": "pending"}

        async def quarantined_again() -> bool:
            return (await stored(db, poison["id"])).status == InboxStatus.QUARANTINED

        await eventually(quarantined_again, "the retried event to be quarantined again")
        assert "customer_id is 10244 characters long" in (
            (await stored(db, poison["id"])).last_error or ""
        )
        assert len(quarantine_logs(caplog, poison["id"])) == 2

        dropped = await http.delete(
            f"/v1/inbox/{poison['id']}", params={"reason": "test data"}, headers=ADMIN
        )
        assert dropped.status_code == 200
        assert dropped.json() == {"event_id": poison["id"], "status": "dropped"}
        listed = await http.get("/v1/inbox/quarantined", headers=SUPPORT)
        assert listed.json() == {"total": 0, "events": []}
        ready = (await http.get("/readyz")).json()
        assert (ready["quarantined_events"], ready["degraded"]) == (0, False)
        assert 'id="quarantined"' not in (await http.get("/dashboard", headers=SUPPORT)).text
        # Kept for audit, never delivered; a second drop finds nothing to drop.
        row = await stored(db, poison["id"])
        assert row.status == InboxStatus.DROPPED
        assert row.payload["id"] == poison["id"]
        again = await http.delete(f"/v1/inbox/{poison['id']}", headers=ADMIN)
        assert again.status_code == 409

    retry_audit, drop_audit = await audit(db)
    assert (retry_audit.action, drop_audit.action) == ("inbox.retry", "inbox.drop")
    assert retry_audit.actor.startswith("admin key ")
    assert drop_audit.actor == retry_audit.actor
    assert poison["id"] in retry_audit.reason
    assert "checking whether it still fails" in retry_audit.reason
    assert "test data" in drop_audit.reason


def named(customer_id: str, name: str, created: int) -> dict[str, Any]:
    event = customer_event(customer_id, "big@example.com", created=created)
    event["data"]["object"]["name"] = name
    return event


async def test_a_huge_customer_name_is_trimmed_and_delivered(
    dev_env: WorkflowEnvironment, database_url: str, db: SessionMaker, task_queue: str
) -> None:
    """A 3 MiB name (over Temporal's 2 MiB blob limit) reaches the workflow cut to Stripe's
    256 characters. It arrives the way reconciliation stores what `GET /v1/events` read,
    which no webhook body limit guards; a webhook's name of most of a MiB is trimmed alike."""
    cus = unique_customer_id()
    by_reconciliation = named(cus, "R" * 3 * 1024 * 1024, created=T0)
    by_webhook = named(cus, "W" * 900 * 1024, created=T0 + 10)
    async with running_stack(dev_env, database_url, task_queue) as (app, http):
        lifecycle = app.state.lifecycle
        as_read = inbox_row(
            by_reconciliation, normalise_event(by_reconciliation), datetime.now(UTC)
        )
        assert await lifecycle.inbox.store(as_read) is not None
        await lifecycle.forwarder.sweep(grace=timedelta(0))
        await post_webhook(http, by_webhook)
        await lifecycle.forwarder.drained()
        for event in (by_reconciliation, by_webhook):
            row = await stored(db, event["id"])
            assert (row.status, row.attempts) == (InboxStatus.FORWARDED, 1)

        async def named_now() -> bool:
            response = await http.get(f"/v1/customers/{cus}", headers=SUPPORT)
            return response.status_code == 200 and response.json()["name"] == "W" * 255 + "…"

        await eventually(named_now, "the trimmed name in the customer's snapshot", timeout=20.0)
        assert (await http.get("/readyz")).json()["quarantined_events"] == 0


TEMPORAL_CLI = str(Path(sysconfig.get_path("scripts")) / "temporal")
# A blob limit low enough that an event within our own bound (256 KiB) is over it.
SMALL_BLOB_LIMIT = 100_000


@pytest.fixture(scope="module")
async def small_blob_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=TEMPORAL_CLI,
        search_attributes=contract.SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
        dev_server_extra_args=[
            "--dynamic-config-value",
            f"limit.blobSize.error={SMALL_BLOB_LIMIT}",
            # The error limit alone did not take effect on the dev server; with the warning limit
            # (512 KiB by default) below it, it does.
            "--dynamic-config-value",
            f"limit.blobSize.warn={SMALL_BLOB_LIMIT // 2}",
        ],
    )
    async with env:
        yield env


async def test_what_temporal_refuses_is_quarantined_and_the_customers_other_events_delivered(
    small_blob_env: WorkflowEnvironment,
    sqlite_url: str,
    task_queue: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Past our bounds, Temporal's own refusal (INVALID_ARGUMENT: "Blob data size exceeds
    limit") quarantines the one event it is about after one attempt; the batch it came in
    is delivered around it."""
    caplog.set_level(logging.INFO, logger=FORWARDER_LOG)
    cus = unique_customer_id()
    before = subscription_event(cus, created=T0, status="trialing")
    # 30 changed fields of 5,000 characters: 150 KB, within our bound, over this server's.
    poison = subscription_event(
        cus,
        created=T0 + 10,
        previous_attributes={f"{i:03d}" + "a" * 4997: None for i in range(30)},
    )
    after = subscription_event(cus, created=T0 + 20, status="active")
    engine = create_engine(sqlite_url)
    db = create_sessionmaker(engine)
    try:
        async with running_stack(small_blob_env, sqlite_url, task_queue) as (app, http):
            forwarder = app.state.lifecycle.forwarder
            for event in (before, poison, after):
                await post_webhook(http, event)
            await forwarder.drained()
            row = await stored(db, poison["id"])
            assert row.status == InboxStatus.QUARANTINED
            assert row.attempts == 1
            assert "Blob data size exceeds limit" in (row.last_error or "")
            for event in (before, after):
                assert (await stored(db, event["id"])).status == InboxStatus.FORWARDED
            await asyncio.sleep(2.0)
            assert (await stored(db, poison["id"])).attempts == 1
            assert len(quarantine_logs(caplog, poison["id"])) == 1
            assert (await http.get("/readyz")).json()["quarantined_events"] == 1
    finally:
        await engine.dispose()


# --- the forwarder alone, with a scripted Temporal ---------------------------------------


class ScriptedTemporal:
    """A delivery that fails as told: `refuse` event ids with INVALID_ARGUMENT whenever
    they are in a batch, and the first `transient` calls with a rate limit."""

    def __init__(self, refuse: frozenset[str] = frozenset(), transient: int = 0) -> None:
        self.refuse = refuse
        self.transient = transient
        self.calls: list[list[str]] = []
        self.delivered: list[str] = []

    async def __call__(self, customer_id: str, events: list[BillingEvent]) -> None:  # noqa: ARG002
        self.calls.append([e.event_id for e in events])
        if self.transient:
            self.transient -= 1
            raise RPCError("namespace rate limit exceeded", RPCStatusCode.RESOURCE_EXHAUSTED, b"")
        if self.refuse & {e.event_id for e in events}:
            raise RPCError(
                "WorkflowId exceeds maximum allowed length", RPCStatusCode.INVALID_ARGUMENT, b""
            )
        self.delivered += [e.event_id for e in events]


async def forward(
    sqlite_url: str, temporal: ScriptedTemporal, events: list[dict[str, Any]]
) -> dict[str, WebhookEvent]:
    """Store `events` and run a forwarder over them until it is done; the rows after."""
    engine = create_engine(sqlite_url)
    sessionmaker = create_sessionmaker(engine)
    writer = InboxWriter(engine)
    writer.start()
    forwarder = InboxForwarder(
        sessionmaker, temporal, ForwarderConfig(task_queue="unused", max_backoff_seconds=0.05)
    )
    try:
        for event in events:
            normalised = normalise_event(event)
            row_id = await writer.store(inbox_row(event, normalised, datetime.now(UTC)))
            assert row_id is not None and normalised is not None
            forwarder.submit(row_id, normalised)
        # Submitted before the lanes start: one customer's events go out as one batch.
        await forwarder.start()
        await asyncio.wait_for(forwarder.drained(), timeout=10)
        return {e["id"]: await stored(sessionmaker, e["id"]) for e in events}
    finally:
        await forwarder.stop()
        await writer.stop()
        await engine.dispose()


async def test_a_refused_batch_is_split_and_only_the_event_at_fault_quarantined(
    sqlite_url: str,
) -> None:
    cus = unique_customer_id()
    events = [subscription_event(cus, created=T0 + i) for i in range(3)]
    temporal = ScriptedTemporal(refuse=frozenset({events[1]["id"]}))
    rows = await forward(sqlite_url, temporal, events)
    first, poison, last = (e["id"] for e in events)
    # The batch, then each event alone, in order.
    assert temporal.calls == [[first, poison, last], [first], [poison], [last]]
    assert temporal.delivered == [first, last]
    assert [rows[e["id"]].status for e in events] == [
        InboxStatus.FORWARDED,
        InboxStatus.QUARANTINED,
        InboxStatus.FORWARDED,
    ]
    assert rows[poison].attempts == 1
    assert rows[poison].last_error == (
        "Temporal refused the delivery: WorkflowId exceeds maximum allowed length"
    )


async def test_a_rate_limit_is_retried_with_backoff_not_quarantined(sqlite_url: str) -> None:
    cus = unique_customer_id()
    events = [subscription_event(cus, created=T0)]
    temporal = ScriptedTemporal(transient=3)
    rows = await forward(sqlite_url, temporal, events)
    [row] = rows.values()
    assert len(temporal.calls) == 4
    assert row.status == InboxStatus.FORWARDED
    # Three failures recorded, and the delivery.
    assert row.attempts == 4
    assert row.last_error == "namespace rate limit exceeded"


async def test_batches_stay_under_a_mebibyte(sqlite_url: str) -> None:
    cus = unique_customer_id()
    # Eight events of about 150 KB each: 1.2 MB together, over a 2 MiB blob once JSON'd
    # with their escapes if sent as one.
    big = {f"{i:03d}" + "a" * 4997: None for i in range(30)}
    events = [subscription_event(cus, created=T0 + i, previous_attributes=big) for i in range(8)]
    temporal = ScriptedTemporal()
    await forward(sqlite_url, temporal, events)
    assert temporal.delivered == [e["id"] for e in events]
    assert len(temporal.calls) > 1
    assert all(len(call) < 8 for call in temporal.calls)
