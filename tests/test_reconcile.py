"""Reconciliation: `StripeReconcileWorkflow` and its activities, with the real stripe
library against the local server that lists events as Stripe's `GET /v1/events` does
(newest first, pages, `created[gte]`, `types[]`, rate limits, key checks), storing into
this test's database."""

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select
from sqlmodel import col
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from stripe_lifecycle.activities.reconcile import ReconcileActivities
from stripe_lifecycle.domain import contract, ids
from stripe_lifecycle.domain.reconcile import type_groups
from stripe_lifecycle.intake.inbox import inbox_row
from stripe_lifecycle.intake.normalise import normalise_event
from stripe_lifecycle.settings import Settings
from stripe_lifecycle.storage.db import SessionMaker, create_engine, create_sessionmaker
from stripe_lifecycle.storage.models import InboxStatus, ReconciliationPass, WebhookEvent
from stripe_lifecycle.stripe_api.client import build_stripe_client
from stripe_lifecycle.worker import sandbox_runner
from stripe_lifecycle.workflows.reconcile import (
    ReconcileInput,
    ReconcileResult,
    StripeReconcileWorkflow,
)

from . import corpus
from .cli_helpers import clean_env, run_cli
from .fakes import STRIPE_API_KEY, STRIPE_KEY_WITHOUT_EVENTS, StripeHttpServer, StripeState, serving

THREE_DAYS = int(timedelta(days=3).total_seconds())


@pytest.fixture
def stripe_api() -> Iterator[StripeHttpServer]:
    with serving(StripeHttpServer(StripeState())) as server:
        yield server


@pytest.fixture
async def both_databases(database_url: str) -> AsyncIterator[SessionMaker]:
    """Sessions on SQLite, then on PostgreSQL (each spells ON CONFLICT with its own construct)."""
    engine = create_engine(database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


def recent(name: str, customer_id: str, seconds_ago: int, now: int | None = None) -> dict[str, Any]:
    now = int(time.time()) if now is None else now
    return corpus.event(name, "clover", customer_id, created=now - seconds_ago)


async def inbox(sessionmaker: SessionMaker) -> list[WebhookEvent]:
    async with sessionmaker() as session:
        rows = await session.execute(select(WebhookEvent).order_by(col(WebhookEvent.id)))
        return list(rows.scalars())


@contextlib.asynccontextmanager
async def reconcile_worker(
    env: WorkflowEnvironment,
    task_queue: str,
    sessionmaker: SessionMaker,
    stripe_api: StripeHttpServer,
    api_key: str = STRIPE_API_KEY,
) -> AsyncIterator[Worker]:
    """A worker running reconciliation passes with this key, against the local Stripe."""
    settings = Settings(stripe_api_key=api_key, stripe_api_base=stripe_api.url)
    activities = ReconcileActivities(build_stripe_client(settings), sessionmaker)
    # Pages are read on the Stripe reads task queue, the pass recorded on the main one.
    async with (
        Worker(
            env.client,
            task_queue=contract.stripe_reads_queue(task_queue),
            activities=[activities.reconcile_events_page],
        ),
        Worker(
            env.client,
            task_queue=task_queue,
            workflows=[StripeReconcileWorkflow],
            activities=[activities.record_reconciliation, activities.reconciliation_gap],
            workflow_runner=sandbox_runner(env.client.data_converter),
        ) as worker,
    ):
        yield worker


async def reconcile(
    env: WorkflowEnvironment,
    task_queue: str,
    sessionmaker: SessionMaker,
    stripe_api: StripeHttpServer,
    api_key: str = STRIPE_API_KEY,
) -> ReconcileResult:
    async with reconcile_worker(env, task_queue, sessionmaker, stripe_api, api_key):
        return await env.client.execute_workflow(
            StripeReconcileWorkflow.run,
            ReconcileInput(lookback_seconds=THREE_DAYS),
            id=f"stripe-reconcile-{uuid.uuid4().hex}",
            task_queue=task_queue,
        )


async def test_only_the_events_the_inbox_lacks_are_stored_once(
    dev_env: WorkflowEnvironment,
    task_queue: str,
    both_databases: SessionMaker,
    stripe_api: StripeHttpServer,
) -> None:
    sessionmaker = both_databases
    delivered = recent("invoice.payment_failed", "cus_Rec1", 3600)
    lost = recent("invoice.paid", "cus_Rec1", 600)
    # A guest's charge names no customer: recorded, as the webhook records it, and ignored.
    guest_charge = recent("charge.succeeded", "cus_Rec1", 300)
    guest_charge["data"]["object"]["customer"] = None
    too_old = recent("invoice.paid", "cus_Rec1", THREE_DAYS + 3600)
    not_acted_on = recent("quote.finalized", "cus_Rec1", 60)
    stripe_api.state.events = [delivered, lost, guest_charge, too_old, not_acted_on]
    async with sessionmaker() as session:
        row = inbox_row(delivered, normalise_event(delivered), datetime.now(UTC))
        session.add(WebhookEvent(**row))
        await session.commit()

    result = await reconcile(dev_env, task_queue, sessionmaker, stripe_api)

    assert (result.events_seen, result.events_recovered) == (3, 2)
    rows = await inbox(sessionmaker)
    assert [(r.event_id, r.status, r.customer_id) for r in rows] == [
        (delivered["id"], InboxStatus.PENDING, "cus_Rec1"),
        (lost["id"], InboxStatus.PENDING, "cus_Rec1"),
        (guest_charge["id"], InboxStatus.IGNORED, None),
    ]
    # Stored as the webhook stores it: the whole payload, for the forwarder's sweep.
    assert rows[1].payload == lost
    assert rows[1].type == "invoice.paid"
    asked = [r for r in stripe_api.state.requests if r.path == "/v1/events"]
    assert [r.types for r in asked] == type_groups()
    assert all(r.query["limit"] == "100" for r in asked)


async def test_every_page_is_read_and_a_second_pass_recovers_nothing(
    dev_env: WorkflowEnvironment,
    task_queue: str,
    sessionmaker: SessionMaker,
    stripe_api: StripeHttpServer,
) -> None:
    # One clock for all: a second ticking mid-build would give two events one time, and
    # the order of a tie is not what this test is about.
    now = int(time.time())
    stripe_api.state.events = [
        recent("invoice.paid", f"cus_Page{n}", 10 + n, now) for n in range(150)
    ]

    first = await reconcile(dev_env, task_queue, sessionmaker, stripe_api)
    second = await reconcile(dev_env, task_queue, sessionmaker, stripe_api)

    assert (first.events_seen, first.events_recovered) == (150, 150)
    assert (second.events_seen, second.events_recovered) == (150, 0)
    rows = await inbox(sessionmaker)
    # Each page stored oldest first, as its webhooks would have come.
    newest_first = sorted(stripe_api.state.events, key=lambda e: -e["created"])
    assert [r.event_id for r in rows] == [e["id"] for e in newest_first[:100][::-1]] + [
        e["id"] for e in newest_first[100:][::-1]
    ]
    async with sessionmaker() as session:
        passes = (
            await session.execute(select(ReconciliationPass).order_by(col(ReconciliationPass.id)))
        ).scalars()
        assert [(p.events_seen, p.events_recovered) for p in passes] == [(150, 150), (150, 0)]


async def test_a_rate_limited_page_is_retried(
    dev_env: WorkflowEnvironment,
    task_queue: str,
    sessionmaker: SessionMaker,
    stripe_api: StripeHttpServer,
) -> None:
    lost = recent("customer.subscription.created", "cus_Rec429", 60)
    # A field of an API version newer than ours is kept, not refused.
    lost["data"]["object"]["some_future_field"] = {"shape": "unknown"}
    stripe_api.state.events = [lost]
    stripe_api.state.rate_limited = 1

    result = await reconcile(dev_env, task_queue, sessionmaker, stripe_api)

    assert result.events_recovered == 1
    [row] = await inbox(sessionmaker)
    assert row.payload["data"]["object"]["some_future_field"] == {"shape": "unknown"}
    assert len(stripe_api.state.requests) == len(type_groups()) + 1


@pytest.mark.parametrize(
    ("api_key", "problem"),
    [
        ("sk_test_revoked", "Stripe refused LIFECYCLE_STRIPE_API_KEY (401)"),
        (STRIPE_KEY_WITHOUT_EVENTS, "may not read events (403)"),
        ("", "is not set"),
    ],
    ids=["revoked", "restricted", "none"],
)
async def test_a_key_stripe_refuses_stops_the_pass_saying_so(
    dev_env: WorkflowEnvironment,
    task_queue: str,
    sessionmaker: SessionMaker,
    stripe_api: StripeHttpServer,
    api_key: str,
    problem: str,
) -> None:
    stripe_api.state.events = [recent("invoice.paid", "cus_Rec401", 60)]

    with pytest.raises(WorkflowFailureError) as failed:
        await reconcile(dev_env, task_queue, sessionmaker, stripe_api, api_key=api_key)

    activity_error = failed.value.cause
    assert isinstance(activity_error, ActivityError)
    cause = activity_error.cause
    assert isinstance(cause, ApplicationError)
    assert problem in cause.message
    assert "LIFECYCLE_STRIPE_API_KEY" in cause.message
    assert await inbox(sessionmaker) == []
    # Not retried: the same key would be refused again.
    assert len(stripe_api.state.requests) <= 1


@pytest.mark.parametrize("api_key", [STRIPE_API_KEY, "sk_test_revoked"], ids=["ok", "revoked"])
async def test_lifecycle_reconcile_runs_a_pass_and_says_what_it_recovered(
    dev_env: WorkflowEnvironment,
    task_queue: str,
    sessionmaker: SessionMaker,
    sqlite_url: str,
    stripe_api: StripeHttpServer,
    tmp_path: Path,
    api_key: str,
) -> None:
    stripe_api.state.events = [recent("invoice.paid", "cus_RecCli", 60)]
    env = clean_env(
        LIFECYCLE_TEMPORAL_ADDRESS=dev_env.client.service_client.config.target_host,
        LIFECYCLE_TASK_QUEUE=task_queue,
        LIFECYCLE_DATABASE_URL=sqlite_url,
        LIFECYCLE_RECONCILE_LOOKBACK="2d",
    )
    async with reconcile_worker(dev_env, task_queue, sessionmaker, stripe_api, api_key):
        done = await asyncio.to_thread(run_cli, "reconcile", env=env, cwd=tmp_path)

    if api_key == STRIPE_API_KEY:
        assert done.returncode == 0, done.stderr
        assert "read 1 events of the last 2 days" in done.stdout
        assert "1 had not arrived by webhook" in done.stdout
        assert len(await inbox(sessionmaker)) == 1
    else:
        assert done.returncode == 1
        assert "reconciliation failed: Stripe refused LIFECYCLE_STRIPE_API_KEY (401)" in done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("LIFECYCLE_RECONCILE_LOOKBACK", "31d", "at most 30d: Stripe keeps events for 30 days"),
        ("LIFECYCLE_RECONCILE_LOOKBACK", "0s", "must be at least 1s"),
        ("LIFECYCLE_RECONCILE_INTERVAL", "hourly", "bad duration 'hourly'"),
    ],
)
def test_reconcile_settings_fail_fast_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, problem: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as invalid:
        Settings()
    assert variable in str(invalid.value) and problem in str(invalid.value)


def test_reconcile_settings_read_durations(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (Settings().reconcile_interval, Settings().reconcile_lookback) == (
        timedelta(hours=1),
        timedelta(days=3),
    )
    monkeypatch.setenv("LIFECYCLE_RECONCILE_INTERVAL", "15m")
    monkeypatch.setenv("LIFECYCLE_RECONCILE_LOOKBACK", "30d")
    assert (Settings().reconcile_interval, Settings().reconcile_lookback) == (
        timedelta(minutes=15),
        timedelta(days=30),
    )


@pytest.mark.parametrize(("days_ago", "syncs"), [(40, True), (2, False)])
async def test_a_gap_longer_than_stripe_keeps_events_starts_a_sync(
    dev_env: WorkflowEnvironment,
    task_queue: str,
    sessionmaker: SessionMaker,
    stripe_api: StripeHttpServer,
    days_ago: int,
    syncs: bool,
) -> None:
    async with sessionmaker() as session:
        session.add(
            ReconciliationPass(
                finished_at=datetime.now(UTC) - timedelta(days=days_ago),
                lookback_seconds=THREE_DAYS,
                events_seen=0,
                events_recovered=0,
            )
        )
        await session.commit()
    result = await reconcile(dev_env, task_queue, sessionmaker, stripe_api)
    assert result.sync_started is syncs
    if syncs:
        sync = dev_env.client.get_workflow_handle(ids.sync_workflow_id(None))
        described = await sync.describe()
        assert described.workflow_type == "StripeSyncWorkflow"
        assert described.status == WorkflowExecutionStatus.RUNNING
        # No worker of this test runs it; the next test starts its own.
        await sync.terminate("test over")
