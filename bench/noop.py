"""The ingest benchmark's floors: workflows that take the customer workflow's signals and
do nothing with them, on a task queue of their own, in a worker process of their own.

    python -m bench.noop ADDRESS TASK_QUEUE   # and TASK_QUEUE-through

What that worker spends per signal with `NoopWorkflow` is what Temporal and the Python SDK
cost per signal-with-start (history, workflow task, sandbox, payload decoding to JSON
values), so the customer worker's CPU per applied event reads against it.
`NoopWriteWorkflow` also runs one local activity that does nothing for each batch of
signals it takes, as the customer workflow runs one to store each batch's snapshot: what
a durable write per batch costs at the least, before it writes anything.

Both run in the SDK's stock sandbox on TASK_QUEUE, which loads this module afresh for
every new run, and on `TASK_QUEUE-through` in one that passes it through, as the
customer worker passes our package through (`worker.sandbox_runner`).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

with workflow.unsafe.imports_passed_through():
    from stripe_lifecycle.domain import contract


@workflow.defn(name="NoopWorkflow")
class NoopWorkflow:
    """Counts the events it is signalled and never ends (like the customer workflow)."""

    def __init__(self) -> None:
        self._events = 0

    @workflow.run
    async def run(self, _input: Any) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.signal(name=contract.BILLING_EVENTS_SIGNAL)
    def billing_events(self, batch: Any) -> None:
        self._events += len(batch["events"])

    @workflow.query
    def events(self) -> int:
        return self._events


@activity.defn(name="noop_write")
async def noop_write(events: int) -> int:
    return events


@workflow.defn(name="NoopWriteWorkflow")
class NoopWriteWorkflow(NoopWorkflow):
    """Takes its signals as `NoopWorkflow` does, and after each batch of them runs a local
    activity that does nothing; never ends."""

    def __init__(self) -> None:
        super().__init__()
        self._written = 0

    @workflow.run
    async def run(self, _input: Any) -> None:
        while True:
            await workflow.wait_condition(lambda: self._events > self._written)
            self._written = self._events
            await workflow.execute_local_activity(
                noop_write, self._written, start_to_close_timeout=timedelta(seconds=30)
            )


async def serve(address: str, task_queue: str) -> None:
    client = await Client.connect(address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    through = SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(__name__)
    )
    async with (
        Worker(
            client,
            task_queue=task_queue,
            workflows=[NoopWorkflow, NoopWriteWorkflow],
            activities=[noop_write],
        ),
        Worker(
            client,
            task_queue=f"{task_queue}-through",
            workflows=[NoopWorkflow, NoopWriteWorkflow],
            activities=[noop_write],
            workflow_runner=through,
        ),
    ):
        await stop.wait()


if __name__ == "__main__":
    # Served from `bench.noop`, not `__main__`: the sandbox passes a module through by the
    # name its workflows were defined under.
    from bench import noop

    asyncio.run(noop.serve(sys.argv[1], sys.argv[2]))
