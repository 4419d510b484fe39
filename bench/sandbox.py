"""Workflow sandboxes: the worker's CPU to create one for a new workflow run, for the
customer workflow with its modules compiled once (`sandbox_code.py`, as the worker runs)
and read from disk for each run (Temporal's stock way), as ratios of the no-op
workflow's in Temporal's stock sandbox, measured in the same process.

    make bench-sandbox    # or: .venv/bin/python -m bench.sandbox --creations 200 --rounds 6

The worker creates a sandbox for every customer workflow it starts and for every one it
replays after evicting it from its cache; the ingest benchmark's floors (`bench/noop.py`)
create one for each of their workflows too. Each round creates `--creations` sandboxes of
each kind in turn, the kinds interleaved; it prints the median CPU milliseconds per
sandbox over the rounds (`time.process_time`), and the spread.

Run it with compiled bytecode, as the image runs (`env -u PYTHONDONTWRITEBYTECODE`):
without it, reading from disk compiles the workflow's source for every sandbox.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from temporalio import workflow
from temporalio.worker import WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from bench.harness import run_benchmark
from bench.noop import NoopWorkflow
from stripe_lifecycle.payload_codec import data_converter
from stripe_lifecycle.sandbox_code import CompiledOnce
from stripe_lifecycle.worker import sandbox_runner
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


async def main(args: argparse.Namespace) -> None:
    # The instance the sandbox creates binds to the running event loop, as in a worker.
    ours = sandbox_runner(data_converter(None))
    finder = next(f for f in sys.meta_path if isinstance(f, CompiledOnce))
    stock = SandboxedWorkflowRunner()
    figures: dict[str, list[float]] = {"no-op": [], "read each run": [], "compiled once": []}
    for _ in range(args.rounds):
        figures["no-op"].append(per_sandbox(stock, NoopWorkflow, args.creations))
        sys.meta_path.remove(finder)
        try:
            figures["read each run"].append(per_sandbox(ours, CustomerWorkflow, args.creations))
        finally:
            sys.meta_path.insert(0, finder)
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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--creations", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=6)
    return parser.parse_args()


if __name__ == "__main__":
    run_benchmark(main(parse_args()))
