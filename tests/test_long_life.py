"""Five years of one customer's monthly events: continue-as-new keeps each run of its
`customer-{cus_id}` workflow short, and the entity's state crosses every run intact.

On the dev server (the customer workflow's search attributes), with the real worker and a
local Stripe answering the paid invoices' payments. The per-run cap is set low so the five
years take several runs; `bench/long_life.py` prints the sizes with the default cap.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from stripe_lifecycle.domain import ids
from stripe_lifecycle.domain.ledger import BillingSnapshot
from stripe_lifecycle.intake.forwarder import ForwarderConfig, temporal_delivery
from stripe_lifecycle.intake.normalise import normalise_event
from stripe_lifecycle.settings import Settings
from stripe_lifecycle.storage.db import SessionMaker
from stripe_lifecycle.workflows.customer import CustomerWorkflow
from stripe_lifecycle.workflows.customer_messages import CustomerWorkflowInput

from .conftest import LINK_SECRET, workers
from .events import customer_event, unique_customer_id
from .fakes import STRIPE_API_KEY, StripeHttpServer, StripeState, serving
from .lifetime import SEAT_CENTS, lifetime

MONTHS = 60
START = int(datetime(2020, 1, 1, 9, tzinfo=UTC).timestamp())
# The run continues as new once its history reaches this many events... (Five years take
# 600-800 history events in all: fewer when a month's signal lands while the last month's
# store is still running and shares its workflow task, as on a slower machine.)
RUN_CAP = 200
# ...checked between batches, so a run may pass the cap by one month's batch at most.
MONTH_BATCH_EVENTS = 60
MOVED = "moved@example.com"


async def runs(client: Client, workflow_id: str) -> list[tuple[datetime, str, int]]:
    """(start time, run id, history events) of every run, oldest first."""
    found = []
    async for execution in client.list_workflows(f"WorkflowId = '{workflow_id}'"):
        handle = client.get_workflow_handle(workflow_id, run_id=execution.run_id)
        history = await handle.fetch_history()
        found.append((execution.start_time, execution.run_id, len(history.events)))
    return sorted(found)


async def applied(client: Client, workflow_id: str, events: int) -> BillingSnapshot:
    """Query the latest run until it has applied `events` events."""
    handle = client.get_workflow_handle_for(CustomerWorkflow.run, workflow_id)
    for _ in range(1200):
        snapshot = await handle.query(CustomerWorkflow.state)
        if snapshot.events_applied >= events:
            return snapshot
        # Each query is work for the worker: leave it the time to apply the batch.
        await asyncio.sleep(0.05)
    raise AssertionError(f"{snapshot.events_applied} of {events} events applied")


async def test_five_years_of_monthly_events_stay_short_per_run_and_keep_the_state(
    dev_env: WorkflowEnvironment, sqlite_url: str, sessionmaker: SessionMaker, task_queue: str
) -> None:
    client = dev_env.client
    life = lifetime(unique_customer_id(), MONTHS, START)
    workflow_id = ids.customer_workflow_id(life.customer_id)
    deliver = temporal_delivery(client, ForwarderConfig(task_queue=task_queue))
    with serving(StripeHttpServer(StripeState(invoice_payments=life.invoice_payments))) as stripe:
        settings = Settings(
            database_url=sqlite_url,
            task_queue=task_queue,
            link_secret=LINK_SECRET,
            stripe_api_key=STRIPE_API_KEY,
            stripe_api_base=stripe.url,
        )
        async with workers(client, settings, sessionmaker):
            await client.start_workflow(
                CustomerWorkflow.run,
                CustomerWorkflowInput(customer_id=life.customer_id, max_history_events=RUN_CAP),
                id=workflow_id,
                task_queue=task_queue,
            )
            total = 0
            for month in life.by_month:
                # A month's webhooks, as the forwarder batches a customer's queued events.
                events = [normalise_event(raw) for raw in month]
                await deliver(life.customer_id, [e for e in events if e is not None])
                total += len(month)
                snapshot = await applied(client, workflow_id, total)
            # The first month's paid invoice again: still known as applied, five years on.
            again = normalise_event(life.by_month[0][4])
            assert again is not None and again.type == "invoice.paid"
            await deliver(life.customer_id, [again])
            # An address change after it: once applied, the replayed invoice was handled.
            last = life.by_month[-1][-1]["created"]
            marker = normalise_event(customer_event(life.customer_id, MOVED, created=last + 60))
            assert marker is not None
            await deliver(life.customer_id, [marker])
            final = await applied(client, workflow_id, total + 1)

    history = await runs(client, workflow_id)
    assert len(history) >= 3, f"expected several continue-as-new, got {len(history)} runs"
    # Every run but the last continued as new because it was full, and none ran far past it.
    assert all(events >= RUN_CAP for _, _, events in history[:-1]), history
    assert all(events <= RUN_CAP + MONTH_BATCH_EVENTS for _, _, events in history), history
    # Five years of money, exact, as one run could have told it.
    assert (
        snapshot.ltv_cents
        == life.paid_cents
        == sum(SEAT_CENTS * (1 + month // 12) for month in range(MONTHS))
    )
    assert (snapshot.mrr_cents, snapshot.email) == (SEAT_CENTS * 5, "long.life@example.com")
    assert snapshot.events_applied == len(life.events())
    # The replayed invoice counted nothing; the address change after it was applied.
    assert (final.events_applied, final.ltv_cents, final.email) == (
        total + 1,
        life.paid_cents,
        MOVED,
    )
