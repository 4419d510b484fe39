"""Pausing an automation: `on_pause: cancel` stops its running instances when a worker
starts, `on_pause: finish` lets them run; on the dev server (search attributes needed)."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from stripe_lifecycle.domain import contract
from stripe_lifecycle.domain.automations import Automation, Step
from stripe_lifecycle.temporal_setup import cancel_paused_instances
from stripe_lifecycle.workflows.engine import LifecycleInput, LifecycleResult
from stripe_lifecycle.workflows.lifecycles import TrialWorkflow

from .conftest import WorkerRig

DAY = 86_400


def trial_automation(name: str, *, enabled: bool, on_pause: str) -> Automation:
    return Automation(
        name=name,
        lifecycle="trial",
        enabled=enabled,
        on_pause=on_pause,
        steps=[Step(index=0, before_seconds=2 * DAY, send="trial/ending")],
    )


@pytest.fixture
async def worker(dev_rig: WorkerRig) -> AsyncIterator[Worker]:
    async with dev_rig.worker() as w:
        yield w


async def start_trial(
    client: Client, task_queue: str, automation: Automation
) -> WorkflowHandle[TrialWorkflow, LifecycleResult]:
    sub = f"sub_P{uuid.uuid4().hex[:12]}"
    return await client.start_workflow(
        TrialWorkflow.run,
        LifecycleInput(
            customer_id="cus_Pause",
            automation=automation,
            subject_id=sub,
            subscription_id=sub,
            anchor=int(time.time()) + 14 * DAY,
        ),
        id=f"trial-{sub}",
        task_queue=task_queue,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(contract.CUSTOMER_ID, "cus_Pause"),
                SearchAttributePair(contract.LIFECYCLE, "trial"),
                SearchAttributePair(contract.AUTOMATION, automation.name),
            ]
        ),
    )


async def visible(client: Client, workflow_id: str) -> None:
    """Visibility is eventually consistent: wait until a list query finds the workflow."""
    query = f"WorkflowId = {contract.visibility_literal(workflow_id)}"
    for _ in range(100):
        if [e async for e in client.list_workflows(query)]:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{workflow_id} never showed up in visibility")


@pytest.mark.usefixtures("worker")
async def test_paused_automation_with_on_pause_cancel_stops_its_running_instances(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = dev_env.client
    suffix = uuid.uuid4().hex[:8]
    cancel_running = trial_automation(f"trial-cancel-{suffix}", enabled=True, on_pause="cancel")
    finish_running = trial_automation(f"trial-finish-{suffix}", enabled=True, on_pause="finish")
    cancelled = await start_trial(client, task_queue, cancel_running)
    finishing = await start_trial(client, task_queue, finish_running)
    for handle in (cancelled, finishing):
        await visible(client, handle.id)

    # The file edited: both paused, and one enabled automation that must be left alone.
    paused = [
        trial_automation(cancel_running.name, enabled=False, on_pause="cancel"),
        trial_automation(finish_running.name, enabled=False, on_pause="finish"),
        trial_automation(f"trial-other-{suffix}", enabled=True, on_pause="cancel"),
    ]
    assert await cancel_paused_instances(client, paused) == [cancelled.id]
    result = await cancelled.result()
    assert result.outcome == "cancelled"
    assert (await finishing.query(TrialWorkflow.state)).outcome is None

    # A second replica doing the same finds nothing left to stop.
    assert await cancel_paused_instances(client, paused) == []
    await finishing.terminate("test over")
