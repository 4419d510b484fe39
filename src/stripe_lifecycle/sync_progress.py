"""The progress bar of `lifecycle sync`: one bar per list read and one for the delivery,
with counts, an estimate of the whole (Stripe lists say no totals), an ETA and the 429s,
drawn from the progress the sync workflow keeps in its memo until it ends."""

from __future__ import annotations

import asyncio

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from temporalio.client import Client, WorkflowExecutionStatus

from stripe_lifecycle.sync_control import running_progress
from stripe_lifecycle.workflows.sync import (
    COMPLETED,
    LISTING,
    MEMO_INTERVAL,
    StripeSyncWorkflow,
    SyncProgress,
)

# As often as the workflow writes its memo (while its state holds): no staler, no busier.
SYNC_POLL_SECONDS = MEMO_INTERVAL.total_seconds()
DELIVERY = "delivery"


async def follow_sync(client: Client, workflow_id: str, poll_seconds: float) -> SyncProgress:
    """Draw the sync's progress until it ends; its result, or the failure it ended with
    (`WorkflowFailureError`). Follows it across continue-as-new."""
    handle = client.get_workflow_handle_for(StripeSyncWorkflow.run, workflow_id)
    columns = (
        TextColumn("{task.description:<14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        tasks: dict[str, TaskID] = {}
        while True:
            described = await handle.describe()
            if described.status != WorkflowExecutionStatus.RUNNING:
                break
            progress = await running_progress(handle, described)
            if progress is not None:
                _draw(bar, tasks, progress)
            await asyncio.sleep(poll_seconds)
        result = await handle.result()
        _draw(bar, tasks, result)
    return result


def _draw(bar: Progress, tasks: dict[str, TaskID], progress: SyncProgress) -> None:
    for r in progress.resources:
        if r.resource not in tasks:
            tasks[r.resource] = bar.add_task(r.resource, total=None, note="")
        estimate = "" if r.done or r.estimated_total is None else "estimated"
        bar.update(
            tasks[r.resource],
            completed=r.read,
            total=r.estimated_total,
            note=f"{estimate} · {r.changed:,} new or changed · 429s {progress.rate_limited}",
        )
    if progress.state != LISTING:
        if DELIVERY not in tasks:
            tasks[DELIVERY] = bar.add_task("to customers", total=None, note="")
        customers = next((r for r in progress.resources if r.resource == "customers"), None)
        bar.update(
            tasks[DELIVERY],
            completed=progress.customers_delivered,
            # Customers with something new; at most every customer listed.
            total=progress.customers_delivered if progress.state == COMPLETED else None,
            note=f"{progress.events_delivered:,} events"
            + (f" of {customers.read:,} customers' backfill" if customers else ""),
        )
