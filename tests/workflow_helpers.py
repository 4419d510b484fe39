"""Helpers shared by the workflow tests: the packaged automations, what a workflow's
history says about when it sent its emails and ended, support's cancel update, an
operator's pause of a Schedule, and waiting for what happens in real time (the dev
server, the API's forwarder)."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import (
    Schedule,
    ScheduleHandle,
    WorkflowHandle,
    WorkflowHistory,
    WorkflowUpdateFailedError,
)
from temporalio.service import RPCError, RPCStatusCode

from stripe_lifecycle.domain.automations import PACKAGED_DEFAULTS, Automation, load_automations
from stripe_lifecycle.domain.ledger import LifecycleRef
from stripe_lifecycle.mail.templates import Brand, TemplateRenderer
from stripe_lifecycle.workflows.customer import CustomerWorkflow
from stripe_lifecycle.workflows.engine import CancelRequest, LifecycleWorkflow

DAY = 86_400


def packaged(name: str) -> Automation:
    """One automation of the packaged defaults, checked against the shipped templates."""
    brand = Brand("Acme", logo_url=None, support_email=None, primary_color="#635bff", address=None)
    shipped = TemplateRenderer(brand).names()
    by_name = {a.name: a for a in load_automations(PACKAGED_DEFAULTS, shipped)}
    return by_name[name]


def days_after_start(history: WorkflowHistory, event: HistoryEvent) -> float:
    started = history.events[0].event_time.ToDatetime()
    return round((event.event_time.ToDatetime() - started).total_seconds() / DAY, 2)


async def email_offsets(handle: WorkflowHandle[Any, Any]) -> list[float]:
    """When each email was scheduled, in days after the start (from the history)."""
    history = await handle.fetch_history()
    return [
        days_after_start(history, e)
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "send_email"
    ]


async def ended_after(handle: WorkflowHandle[Any, Any]) -> float:
    """When the workflow completed, in days after its start (from the history)."""
    history = await handle.fetch_history()
    last = history.events[-1]
    assert last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
    return days_after_start(history, last)


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = 15.0
) -> None:
    """Polls `check` until it holds; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# The server applies a Schedule's pause or update through its scheduler workflow a moment
# after it has answered: a generous bound for a loaded machine, not an expected wait.
SCHEDULE_CHANGE_TIMEOUT = 60.0


async def pause_as_operator(handle: ScheduleHandle, note: str) -> None:
    """Pause the Schedule as an operator would, and wait until the pause is in effect;
    if it never is, fail saying how the Schedule stands (who else may have changed it)."""
    await handle.pause(note=note)
    deadline = time.monotonic() + SCHEDULE_CHANGE_TIMEOUT
    while not (described := await handle.describe()).schedule.state.paused:
        if time.monotonic() > deadline:
            action = described.schedule.action
            queue = getattr(action, "task_queue", None)
            raise AssertionError(
                f"the pause of {handle.id} never took effect: {described.schedule.state}, "
                f"action on {queue}, created {described.info.created_at}, "
                f"updated {described.info.last_updated_at}"
            )
        await asyncio.sleep(0.05)


async def schedule_in_effect(
    handle: ScheduleHandle, interval: timedelta, task_queue: str
) -> Schedule:
    """The Schedule once a create or update to `interval`, starting on `task_queue`, is in
    effect. A Schedule of that id may be there already (another test's worker process
    made it on this dev server): then the first ensure is an update, and a pause sent
    before it lands is overwritten by it."""

    async def updated() -> bool:
        schedule = (await handle.describe()).schedule
        queue = getattr(schedule.action, "task_queue", None)
        return [i.every for i in schedule.spec.intervals] == [interval] and queue == task_queue

    await eventually(updated, f"{handle.id} every {interval}", SCHEDULE_CHANGE_TIMEOUT)
    return (await handle.describe()).schedule


async def wait_for_steps(handle: WorkflowHandle[Any, Any], count: int) -> None:
    """Until the lifecycle workflow's `state` query lists `count` steps done."""

    async def done() -> bool:
        state = await handle.query("state")
        return len(state["steps_done"]) >= count

    await eventually(done, f"{handle.id} to reach {count} steps")


async def cancel_by_support(handle: WorkflowHandle[Any, Any], reason: str) -> None:
    """Support's cancel update, which every lifecycle shares: refused without a reason,
    answered with the workflow it stopped, and refused once the workflow has completed.
    Returns once it has completed."""
    with pytest.raises(WorkflowUpdateFailedError) as rejected:
        await handle.execute_update(LifecycleWorkflow.cancel, CancelRequest(reason=" ", actor="x"))
    assert str(rejected.value.cause) == "a reason is required"
    answer = await handle.execute_update(
        LifecycleWorkflow.cancel, CancelRequest(reason=reason, actor="support key 1a2b")
    )
    assert answer.cancelled and answer.workflow_id == handle.id
    await handle.result()
    with pytest.raises(RPCError, match="already completed"):  # nothing left to cancel
        await handle.execute_update(
            LifecycleWorkflow.cancel, CancelRequest(reason="again", actor="x")
        )


async def lifecycles_of(customer: WorkflowHandle[Any, Any]) -> dict[str, LifecycleRef]:
    """The latest lifecycle instance under each workflow id a customer workflow started;
    none while its first event is still on the way."""
    try:
        refs = await customer.query(CustomerWorkflow.lifecycles)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        return {}
    return {r.workflow_id: r for r in refs}


async def wait_for_lifecycle(
    customer: WorkflowHandle[Any, Any], workflow_id: str, status: str = "running"
) -> LifecycleRef:
    """Waits until the customer workflow's instance `workflow_id` has `status`."""
    found: dict[str, LifecycleRef] = {}

    async def check() -> bool:
        nonlocal found
        found = await lifecycles_of(customer)
        ref = found.get(workflow_id)
        return ref is not None and ref.status == status

    await eventually(check, f"{workflow_id} {status}, have {found}")
    return found[workflow_id]
