"""Long lives: one customer's five years of monthly Stripe events through its
`customer-{cus_id}` workflow; the history of every run (continue-as-new keeps each one
short) against Temporal's limits, and the replay time of the longest.

    make bench-long-life            # or: .venv/bin/python -m bench.long_life --months 24

Starts its own Temporal dev server (SQLite file, WAL), a local Stripe-speaking server
(tests/fakes.py) answering the paid invoices' payments, and one `lifecycle worker` process
with the default settings; the database is a SQLite file. The customer's life is
tests/lifetime.py's: a monthly subscription, and every month the upcoming-invoice notice,
the renewal, and the renewal invoice created, finalized, paid and its payment succeeded
(a seat more each year). Each event is delivered on its own through the forwarder's
signal-with-start and applied before the next (webhooks days apart never share a signal:
the longest histories). Prints:
- per run: history events and bytes (as the server counts them) and the events applied,
- the largest run against Temporal's limits (50,000 events / 50 MB; the server warns at
  10,000 / 10 MB), and whether the final snapshot holds the five years (LTV, seats),
- the replay time (temporalio's Replayer, this process) of the longest history, as a
  ratio of replaying a short one (a customer's first month) and per history event.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer

from bench.harness import Stack, dev_stack, run_benchmark, wait_polling
from stripe_lifecycle.domain import contract, ids
from stripe_lifecycle.domain.ledger import BillingSnapshot
from stripe_lifecycle.intake.forwarder import ForwarderConfig, temporal_delivery
from stripe_lifecycle.intake.normalise import normalise_event
from stripe_lifecycle.worker import WORKFLOWS, sandbox_runner
from stripe_lifecycle.workflows.customer import CustomerWorkflow
from stripe_lifecycle.workflows.customer_messages import CustomerWorkflowInput
from tests.fakes import STRIPE_API_KEY, StripeHttpServer, StripeState, serving
from tests.lifetime import Lifetime, lifetime, month_start

MB = 1_000_000
# Temporal's defaults: a workflow is terminated past these; the server warns from the others.
LIMIT_EVENTS, LIMIT_BYTES = 50_000, 50 * MB
WARN_EVENTS, WARN_BYTES = 10_000, 10 * MB


@dataclass(frozen=True)
class Run:
    run_id: str
    events: int
    bytes: int


async def deliver_life(stack: Stack, life: Lifetime, months: int) -> BillingSnapshot:
    """Each event of the first `months` months on its own, applied before the next."""
    deliver = temporal_delivery(stack.client, ForwarderConfig(task_queue=stack.task_queue))
    handle = stack.client.get_workflow_handle_for(
        CustomerWorkflow.run, ids.customer_workflow_id(life.customer_id)
    )
    applied = 0
    snapshot: BillingSnapshot | None = None
    for month in life.by_month[:months]:
        for raw in month:
            event = normalise_event(raw)
            assert event is not None, raw["type"]
            await deliver(life.customer_id, [event])
            applied += 1
            while snapshot is None or snapshot.events_applied < applied:
                await asyncio.sleep(0.05)
                snapshot = await handle.query(CustomerWorkflow.state)
    assert snapshot is not None
    return snapshot


async def runs_of(client: Client, workflow_id: str) -> list[Run]:
    """Every run of the workflow, oldest first, with its history as the server counts it."""
    found = []
    async for execution in client.list_workflows(f"WorkflowId = '{workflow_id}'"):
        described = await client.get_workflow_handle(
            workflow_id, run_id=execution.run_id
        ).describe()
        info = described.raw_description.workflow_execution_info
        found.append(
            (
                execution.start_time,
                Run(execution.run_id, info.history_length, info.history_size_bytes),
            )
        )
    return [run for _, run in sorted(found, key=lambda pair: pair[0])]


async def replay_seconds(
    replayer: Replayer, histories: list[WorkflowHistory], times: int
) -> list[float]:
    """The median of `times` replays of each history, taken in turns so that what else
    the machine does weighs on each alike (a first round warms the sandbox's imports)."""
    samples: list[list[float]] = [[] for _ in histories]
    for round_ in range(times + 1):
        for history, taken in zip(histories, samples, strict=True):
            started = time.perf_counter()
            await replayer.replay_workflow(history)
            if round_:
                taken.append(time.perf_counter() - started)
    return [statistics.median(taken) for taken in samples]


def verdict(value: int, warn: int, limit: int) -> str:
    if value >= limit:
        return "OVER THE LIMIT"
    return "past the warning" if value >= warn else "under the warning"


async def run(args: argparse.Namespace, stack: Stack, stripe: StripeState) -> None:
    worker = stack.spawn("worker")
    await wait_polling(
        stack.client, [stack.task_queue, contract.stripe_reads_queue(stack.task_queue)], worker
    )
    # Every month of the life is past: its lifecycles' reminders have had their moment.
    this_month = datetime.now(UTC).replace(day=1, hour=9, minute=0, second=0, microsecond=0)
    start = month_start(int(this_month.timestamp()), -(args.months + 1))
    life = lifetime(f"cus_long{uuid.uuid4().hex[:10]}", args.months, start)
    short = lifetime(f"cus_short{uuid.uuid4().hex[:10]}", 1, start)
    stripe.invoice_payments += life.invoice_payments + short.invoice_payments
    if args.run_cap is not None:
        # Started ahead of its events, with a lower cap: the forwarder's signal-with-start
        # then finds it running.
        await stack.client.start_workflow(
            CustomerWorkflow.run,
            CustomerWorkflowInput(customer_id=life.customer_id, max_history_events=args.run_cap),
            id=ids.customer_workflow_id(life.customer_id),
            task_queue=stack.task_queue,
        )
    cap = args.run_cap or CustomerWorkflowInput(customer_id="").max_history_events
    print(
        f"bench: one customer, {args.months} months of events ({len(life.events()):,} "
        f"events, each delivered and applied on its own), continue-as-new from {cap:,} "
        f"history events, worker with default settings, "
        f"{stack.describe()}",
        flush=True,
    )
    started = time.perf_counter()
    snapshot = await deliver_life(stack, life, args.months)
    seconds = time.perf_counter() - started
    await deliver_life(stack, short, 1)
    print(f"delivered and applied: {snapshot.events_applied:,} events in {seconds:.1f}s")
    workflow_id = ids.customer_workflow_id(life.customer_id)
    runs = await runs_of(stack.client, workflow_id)
    for n, each in enumerate(runs, 1):
        print(f"  run {n:2}: {each.events:6,} history events, {each.bytes / MB:6.2f} MB")
    largest_events = max(each.events for each in runs)
    largest_bytes = max(each.bytes for each in runs)
    events_verdict = verdict(largest_events, WARN_EVENTS, LIMIT_EVENTS)
    bytes_verdict = verdict(largest_bytes, WARN_BYTES, LIMIT_BYTES)
    print(f"runs:                  {len(runs)} (continue-as-new {len(runs) - 1} times)")
    print(
        f"largest run:           {largest_events:,} events ({events_verdict} "
        f"{WARN_EVENTS:,} / limit {LIMIT_EVENTS:,}), {largest_bytes / MB:.2f} MB "
        f"({bytes_verdict} {WARN_BYTES // MB} MB / limit {LIMIT_BYTES // MB} MB)"
    )
    carried = (snapshot.ltv_cents, snapshot.events_applied) == (
        life.paid_cents,
        len(life.events()),
    )
    print(
        f"final snapshot:        LTV {snapshot.ltv_cents:,} cents of {life.paid_cents:,} paid, "
        f"MRR {snapshot.mrr_cents:,} cents ({life.seats} seats), "
        f"{snapshot.events_applied:,} events applied: "
        f"{'carried through every run' if carried else 'STATE LOST'}"
    )
    longest = max(runs, key=lambda each: each.events)
    history = await stack.client.get_workflow_handle(
        workflow_id, run_id=longest.run_id
    ).fetch_history()
    baseline = await stack.client.get_workflow_handle(
        ids.customer_workflow_id(short.customer_id)
    ).fetch_history()
    converter = stack.client.data_converter
    replayer = Replayer(
        workflows=WORKFLOWS, workflow_runner=sandbox_runner(converter), data_converter=converter
    )
    long_seconds, short_seconds = await replay_seconds(replayer, [history, baseline], args.replays)
    # What each further history event costs, the sandbox's start being the same for both.
    marginal = (long_seconds - short_seconds) / (len(history.events) - len(baseline.events))
    print(
        f"replay, longest run:   {long_seconds * 1000:.0f} ms for {len(history.events):,} "
        f"events = {long_seconds / short_seconds:.1f}x a first month's {len(baseline.events)} "
        f"events ({short_seconds * 1000:.0f} ms); {marginal * 1e6:.0f} us per further event; "
        f"median of {args.replays}"
    )


async def main(args: argparse.Namespace) -> None:
    stripe = StripeState()
    with serving(StripeHttpServer(stripe)) as stripe_api:
        settings = {
            "LIFECYCLE_STRIPE_API_KEY": STRIPE_API_KEY,
            "LIFECYCLE_STRIPE_API_BASE": stripe_api.url,
        }
        async with dev_stack("long-life", postgres=False, settings=settings) as stack:
            await run(args, stack, stripe)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--months", type=int, default=60)
    parser.add_argument(
        "--run-cap",
        type=int,
        help="continue as new from this many history events (default: the workflow's own)",
    )
    parser.add_argument("--replays", type=int, default=5, help="replays timed per history")
    return parser.parse_args()


if __name__ == "__main__":
    run_benchmark(main(parse_args()))
