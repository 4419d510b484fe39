"""Pausing an automation (`enabled: false`) with `on_pause: cancel` stops the instances
that are still running it; with `on_pause: finish` (the default) they run to their end.

Runs when a worker starts, since that is when an edited automations file takes effect.
Every replica may run it: an instance already stopped refuses a second cancel.
"""

import logging

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError

from . import contract
from .automations import Automation
from .workflows.dunning import CancelRequest, CancelResult

log = logging.getLogger(__name__)

ACTOR = "automations file"


async def cancel_paused_instances(client: Client, automations: list[Automation]) -> list[str]:
    """Stop the running instances of paused `on_pause: cancel` automations; their ids."""
    stopped: list[str] = []
    for automation in automations:
        if automation.enabled or automation.on_pause != "cancel":
            continue
        query = (
            f"{contract.AUTOMATION.name} = {contract.visibility_literal(automation.name)}"
            f" AND {contract.LIFECYCLE.name} = {contract.visibility_literal(automation.lifecycle)}"
            " AND ExecutionStatus = 'Running'"
        )
        request = CancelRequest(
            reason=f"automation {automation.name} paused (on_pause: cancel)", actor=ACTOR
        )
        async for execution in client.list_workflows(query):
            handle = client.get_workflow_handle(execution.id)
            try:
                await handle.execute_update("cancel", request, result_type=CancelResult)
            except (WorkflowUpdateFailedError, RPCError) as exc:
                # It ended meanwhile, or another replica stopped it first.
                log.info("%s was not cancelled: %s", execution.id, exc)
                continue
            stopped.append(execution.id)
    if stopped:
        log.info("stopped %d instances of paused automations: %s", len(stopped), stopped)
    return stopped
