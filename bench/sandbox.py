"""Workflow sandboxes: the worker's CPU to create one for a new workflow run, for the
customer workflow with its modules compiled once (`sandbox_code.py`, as the worker runs)
and read from disk for each run (Temporal's stock way), as ratios of the no-op
workflow's in Temporal's stock sandbox, measured in the same process; and with
`--worker`, what that does to a worker's CPU per event.

    make bench-sandbox    # or: .venv/bin/python -m bench.sandbox --creations 200 --rounds 6
    .venv/bin/python -m bench.sandbox --worker --rounds 6

The worker creates a sandbox for every customer workflow it starts and for every one it
replays after evicting it from its cache; the ingest benchmark's floors (`bench/noop.py`)
create one for each of their workflows too. Each round creates `--creations` sandboxes of
each kind in turn, the kinds interleaved; it prints the median CPU milliseconds per
sandbox over the rounds (`time.process_time`), and the spread.

`--worker`: one Temporal dev server and the real worker in this process (on SQLite);
each round delivers `--events-per-customer` events to each of `--customers` new
customers by signal-with-start, as the forwarder does, and waits until every snapshot is
stored; rounds alternate between the modules compiled once and read for each run, after
one round to warm up. It prints this process's CPU milliseconds per event per round (the
worker's and the delivering client's: the same in both) and the ratio of the means.

Run it with compiled bytecode, as the image runs (`env -u PYTHONDONTWRITEBYTECODE`):
without it, reading from disk compiles the workflow's source for every sandbox.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import func, select
from sqlmodel import col
from temporalio import workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from bench.harness import BIN, LINK_SECRET, migrated_database, run_benchmark
from bench.ingest import make_event
from bench.noop import NoopWorkflow
from stripe_lifecycle.domain import contract
from stripe_lifecycle.domain.events import BillingEvent
from stripe_lifecycle.intake.forwarder import Deliver, ForwarderConfig, temporal_delivery
from stripe_lifecycle.intake.normalise import normalise_event
from stripe_lifecycle.payload_codec import data_converter
from stripe_lifecycle.sandbox_code import CompiledOnce
from stripe_lifecycle.settings import Settings
from stripe_lifecycle.storage.db import SessionMaker, create_engine, create_sessionmaker
from stripe_lifecycle.storage.models import Customer
from stripe_lifecycle.worker import build_workers, sandbox_runner
from stripe_lifecycle.workflows.customer import CustomerWorkflow


def per_sandbox(runner: WorkflowRunner, workflow_class: type, creations: int) -> float:
    """CPU milliseconds per sandbox created for a new run of `workflow_class`."""
    # `prepare_workflow` is what a worker calls once per workflow type at start: it
    # creates one instance (a sandbox) with placeholder run details.
    definition = workflow._Definition.must_from_class(workflow_class)
    start = time.process_time()
    for _ in range(creations):
        runner.prepare_workflow(definition)
    return (time.process_time() - start) / creations * 1000


def without_finder() -> contextlib.AbstractContextManager[None]:
    """Workflow modules read from disk for each run (the finder out of `sys.meta_path`)."""
    finder = next(f for f in sys.meta_path if isinstance(f, CompiledOnce))

    @contextlib.contextmanager
    def removed() -> Iterator[None]:
        sys.meta_path.remove(finder)
        try:
            yield
        finally:
            sys.meta_path.insert(0, finder)

    return removed()


async def main(args: argparse.Namespace) -> None:
    if args.worker:
        await in_worker(args)
        return
    # A coroutine: the instance a sandbox creates binds to the running event loop, as in a
    # worker.
    ours = sandbox_runner(data_converter(None))
    stock = SandboxedWorkflowRunner()
    figures: dict[str, list[float]] = {"no-op": [], "read each run": [], "compiled once": []}
    for _ in range(args.rounds):
        figures["no-op"].append(per_sandbox(stock, NoopWorkflow, args.creations))
        with without_finder():
            figures["read each run"].append(per_sandbox(ours, CustomerWorkflow, args.creations))
        figures["compiled once"].append(per_sandbox(ours, CustomerWorkflow, args.creations))
    baseline = statistics.median(figures["no-op"])
    print(
        f"sandbox per new workflow run, CPU ms (median of {args.rounds} rounds of "
        f"{args.creations}; min-max):"
    )
    labels = {
        "no-op": "no-op workflow, stock sandbox (baseline)",
        "read each run": "customer workflow, modules read for each run",
        "compiled once": "customer workflow, modules compiled once (the worker's)",
    }
    for kind, values in figures.items():
        median = statistics.median(values)
        print(
            f"  {labels[kind]:<58} {median:6.2f} ({min(values):.2f}-{max(values):.2f})"
            f"  = {median / baseline:.2f}x"
        )


async def in_worker(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-sandbox-"))
    database_url, _ = await migrated_database(workdir, postgres=False)
    engine = create_engine(database_url)
    sessionmaker = create_sessionmaker(engine)
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(BIN / "temporal"),
        search_attributes=contract.SEARCH_ATTRIBUTES,
        data_converter=data_converter(None),
        dev_server_log_level="error",
    )
    task_queue = f"bench-sandbox-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        database_url=database_url,
        task_queue=task_queue,
        link_secret=LINK_SECRET,
        # Every round's customers stay cached: no run is evicted and replayed.
        worker_max_cached_workflows=(2 * args.rounds + 1) * args.customers,
    )
    deliver = temporal_delivery(env.client, ForwarderConfig(task_queue=task_queue))
    figures: dict[str, list[float]] = {"read each run": [], "compiled once": []}
    try:
        async with contextlib.AsyncExitStack() as running:
            for worker in build_workers(env.client, settings, sessionmaker):
                await running.enter_async_context(worker)
            for n in range(2 * args.rounds + 1):
                kind = "compiled once" if n % 2 else "read each run"
                with contextlib.nullcontext() if n % 2 else without_finder():
                    used = await one_round(args, deliver, sessionmaker)
                label = "warm-up" if n == 0 else kind
                print(f"  round {n}: {label:<14} {used:6.2f} ms/event", flush=True)
                if n:
                    figures[kind].append(used)
    finally:
        await env.shutdown()
        await engine.dispose()
        shutil.rmtree(workdir, ignore_errors=True)
    before = statistics.mean(figures["read each run"])
    after = statistics.mean(figures["compiled once"])
    print(
        f"process CPU per event, mean of {args.rounds} rounds each: read each run "
        f"{before:.2f} ms, compiled once {after:.2f} ms = {after / before:.2f}x"
    )


async def one_round(
    args: argparse.Namespace, deliver: Deliver, sessionmaker: SessionMaker
) -> float:
    """CPU milliseconds of this process per event, until every customer's snapshot of its
    last event is stored."""
    tag = uuid.uuid4().hex[:8]
    customers = [f"cus_sbx{tag}{n:05d}" for n in range(args.customers)]
    total: int = args.customers * args.events_per_customer
    events = []
    for n in range(total):
        event = normalise_event(make_event(customers[n % args.customers], n))
        assert event is not None
        events.append(event)
    lanes = asyncio.Semaphore(32)

    async def send(event: BillingEvent) -> None:
        async with lanes:
            await deliver(event.customer_id, [event])

    start = time.process_time()
    await asyncio.gather(*(send(event) for event in events))
    stored = select(func.count()).where(
        col(Customer.customer_id).in_(customers),
        col(Customer.snapshot_version) >= args.events_per_customer,
    )
    while True:
        async with sessionmaker() as session:
            if (await session.execute(stored)).scalar_one() == args.customers:
                break
        await asyncio.sleep(0.2)
    return (time.process_time() - start) / total * 1000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--creations", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--worker", action="store_true", help="a worker's CPU per event")
    parser.add_argument("--customers", type=int, default=120)
    parser.add_argument("--events-per-customer", type=int, default=5)
    return parser.parse_args()


if __name__ == "__main__":
    run_benchmark(main(parse_args()))
