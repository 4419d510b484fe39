"""The ingest benchmark's floor: a workflow that takes the customer workflow's signals and
does nothing with them, on a task queue of its own, in a worker process of its own.

    python -m bench.noop ADDRESS TASK_QUEUE

What its worker spends per signal is what Temporal and the Python SDK cost per
signal-with-start (history, workflow task, sandbox, payload decoding to JSON values),
so the customer worker's CPU per applied event reads against it.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker

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


async def serve(address: str, task_queue: str) -> None:
    client = await Client.connect(address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with Worker(client, task_queue=task_queue, workflows=[NoopWorkflow]):
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2]))
