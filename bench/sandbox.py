"""Workflow sandboxes: the worker's CPU to create one for a new workflow run, for the
customer workflow as the worker runs it (our package passed through the sandbox, so the
run takes the class the worker imported) and with its module loaded for each run as the
stock sandbox loads a workflow's module (the rest of our package passed through, as
before), and for the no-op workflow in the stock sandbox and passed through, as ratios of
the no-op's in the stock sandbox, measured in the same process; and with `--worker`, what
that does to a worker's CPU per event.

    make bench-sandbox    # or: .venv/bin/python -m bench.sandbox --creations 200 --rounds 6
    .venv/bin/python -m bench.sandbox --worker --rounds 6

The worker creates a sandbox for every customer workflow it starts and for every one it
replays after evicting it from its cache; the ingest benchmark's floors (`bench/noop.py`)
create one for each of their workflows too, in the stock sandbox. Each round creates
`--creations` sandboxes of each kind in turn, the kinds interleaved; it prints the median
CPU milliseconds per sandbox over the rounds (`time.process_time`), and the spread.

`--worker`: one Temporal dev server and two real workers in this process (on SQLite),
one on each kind of sandbox, each on its own task queue; each round delivers
`--events-per-customer` events to each of `--customers` new customers by
signal-with-start, as the forwarder does, and waits until every snapshot is stored;
rounds alternate between the two workers, after one round to warm up. It prints this
process's CPU milliseconds per event per round (the worker's and the delivering client's:
the same in both) and the ratio of the means.

Run it with compiled bytecode, as the image runs (`env -u PYTHONDONTWRITEBYTECODE`):
without it, loading the module for each run compiles its source for every sandbox.
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
from pathlib import Path

from sqlalchemy import func, select
from sqlmodel import col
from temporalio import workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from bench.harness import BIN, LINK_SECRET, migrated_database, run_benchmark
from bench.ingest import make_event
from bench.noop import NoopWorkflow
from stripe_lifecycle.domain import contract
from stripe_lifecycle.domain.events import BillingEvent
from stripe_lifecycle.intake.forwarder import Deliver, ForwarderConfig, temporal_delivery
from stripe_lifecycle.intake.normalise import normalise_event
from stripe_lifecycle.payload_codec import data_converter
from stripe_lifecycle.settings import Settings
from stripe_lifecycle.storage.db import SessionMaker, create_engine, create_sessionmaker
from stripe_lifecycle.storage.models import Customer
from stripe_lifecycle.worker import (
    ContextFreeSandbox,
    build_stripe_reads_worker,
    sandbox_runner,
    worker_config,
)
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


def loaded_each_run() -> WorkflowRunner:
    """The worker's sandbox, but loading the customer workflow's module for each run as
    the stock sandbox does, with the rest of our package passed through (as the worker
    did before it passed the package through whole)."""
    module = CustomerWorkflow.__module__
    ours = [
        name
        for name in sys.modules
        if name.startswith("stripe_lifecycle.")
        and name != module
        and not module.startswith(name + ".")
    ]
    return ContextFreeSandbox(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*ours)
    )


async def main(args: argparse.Namespace) -> None:
    if args.worker:
        await in_worker(args)
        return
    # A coroutine: the instance a sandbox creates binds to the running event loop, as in a
    # worker.
    ours = sandbox_runner(data_converter(None))
    reloading = loaded_each_run()
    stock = SandboxedWorkflowRunner()
    noop_through = SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(NoopWorkflow.__module__)
    )
    figures: dict[str, list[float]] = {
        "no-op": [],
        "no-op passed through": [],
        "loaded each run": [],
        "passed through": [],
    }
    for _ in range(args.rounds):
        figures["no-op"].append(per_sandbox(stock, NoopWorkflow, args.creations))
        figures["no-op passed through"].append(
            per_sandbox(noop_through, NoopWorkflow, args.creations)
        )
        figures["loaded each run"].append(per_sandbox(reloading, CustomerWorkflow, args.creations))
        figures["passed through"].append(per_sandbox(ours, CustomerWorkflow, args.creations))
    baseline = statistics.median(figures["no-op"])
    print(
        f"sandbox per new workflow run, CPU ms (median of {args.rounds} rounds of "
        f"{args.creations}; min-max):"
    )
    labels = {
        "no-op": "no-op workflow, stock sandbox (baseline)",
        "no-op passed through": "no-op workflow, its module passed through",
        "loaded each run": "customer workflow, its module loaded for each run",
        "passed through": "customer workflow, our package passed through (the worker's)",
    }
    for kind, values in figures.items():
        median = statistics.median(values)
        print(
            f"  {labels[kind]:<62} {median:6.2f} ({min(values):.2f}-{max(values):.2f})"
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
    runners = {"loaded each run": loaded_each_run(), "passed through": None}
    figures: dict[str, list[float]] = {kind: [] for kind in runners}
    try:
        async with contextlib.AsyncExitStack() as running:
            delivery: dict[str, Deliver] = {}
            for kind, runner in runners.items():
                queue = f"{task_queue}-{len(delivery)}"
                config = worker_config(env.client, settings, sessionmaker, task_queue=queue)
                if runner is not None:
                    config["workflow_runner"] = runner
                for worker in (
                    Worker(**config),
                    build_stripe_reads_worker(env.client, settings, sessionmaker, task_queue=queue),
                ):
                    await running.enter_async_context(worker)
                delivery[kind] = temporal_delivery(env.client, ForwarderConfig(task_queue=queue))
            for n in range(2 * args.rounds + 1):
                kind = "passed through" if n % 2 else "loaded each run"
                used = await one_round(args, delivery[kind], sessionmaker)
                label = "warm-up" if n == 0 else kind
                print(f"  round {n}: {label:<15} {used:6.2f} ms/event", flush=True)
                if n:
                    figures[kind].append(used)
    finally:
        await env.shutdown()
        await engine.dispose()
        shutil.rmtree(workdir, ignore_errors=True)
    before = statistics.mean(figures["loaded each run"])
    after = statistics.mean(figures["passed through"])
    print(
        f"process CPU per event, mean of {args.rounds} rounds each: loaded each run "
        f"{before:.2f} ms, passed through {after:.2f} ms = {after / before:.2f}x"
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
