"""Starting a historical sync and reading how it goes, for `lifecycle sync` and `/v1/sync`
alike: one sync per Stripe account, resumed from its cursors after a stop."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from stripe_lifecycle.domain import contract, ids
from stripe_lifecycle.workflows.sync import StripeSyncWorkflow, SyncInput, SyncProgress

log = logging.getLogger(__name__)

# A run that ended without finishing: the next start takes its cursors over.
STOPPED = frozenset(
    {
        WorkflowExecutionStatus.FAILED,
        WorkflowExecutionStatus.TERMINATED,
        WorkflowExecutionStatus.CANCELED,
        WorkflowExecutionStatus.TIMED_OUT,
    }
)

SyncHandle = WorkflowHandle[StripeSyncWorkflow, SyncProgress]


@dataclass
class SyncStarted:
    workflow_id: str
    # Already running (this start joined it), or resumed from a stopped run.
    running_already: bool
    resumed: bool


@dataclass
class SyncStatus:
    workflow_id: str
    # running | completed | failed | terminated | canceled | timed_out
    status: str
    progress: SyncProgress | None
    # Why a stopped sync stopped (the activity's own words).
    error: str | None = None


async def start_sync(
    client: Client, task_queue: str, *, account: str | None, start_lifecycles: bool
) -> SyncStarted:
    """Start the account's sync, join the one running, or resume one that stopped."""
    workflow_id = ids.sync_workflow_id(account)
    handle: SyncHandle = client.get_workflow_handle_for(StripeSyncWorkflow.run, workflow_id)
    previous: SyncProgress | None = None
    try:
        described = await handle.describe()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
    else:
        if described.status == WorkflowExecutionStatus.RUNNING:
            return SyncStarted(workflow_id, running_already=True, resumed=False)
        if described.status in STOPPED:
            previous = await _last_progress(handle)
    if previous is not None:
        previous.runs += 1
    await client.start_workflow(
        StripeSyncWorkflow.run,
        SyncInput(account=account, start_lifecycles=start_lifecycles, progress=previous),
        id=workflow_id,
        task_queue=task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        # Two starts at once (two clicks, two terminals) make one sync.
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"Historical sync of Stripe account {account or 'default'}",
    )
    return SyncStarted(workflow_id, running_already=False, resumed=previous is not None)


# A query waits for a worker to answer it: without one, `GET /v1/sync` would hang until the
# client gives up. It answers the sync's status without progress instead.
PROGRESS_QUERY_TIMEOUT = timedelta(seconds=10)


async def sync_status(client: Client, account: str | None) -> SyncStatus | None:
    """The account's latest sync, or None if none ever ran."""
    workflow_id = ids.sync_workflow_id(account)
    handle: SyncHandle = client.get_workflow_handle_for(StripeSyncWorkflow.run, workflow_id)
    try:
        described = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    status = described.status
    name = status.name.lower() if status is not None else "unknown"
    if status == WorkflowExecutionStatus.RUNNING:
        return SyncStatus(workflow_id, name, await running_progress(handle, described))
    if status == WorkflowExecutionStatus.COMPLETED:
        return SyncStatus(workflow_id, name, await handle.result())
    error = None
    try:
        await handle.result()
    except WorkflowFailureError as exc:
        error = root_cause(exc)
    # The query tells where the run stopped exactly; without a worker, its memo is close.
    progress = await _last_progress(handle) or await _memo_progress(described)
    return SyncStatus(workflow_id, name, progress, error)


async def running_progress(
    handle: SyncHandle, described: WorkflowExecutionDescription
) -> SyncProgress | None:
    """A running sync's progress from its memo, with no worker involved; runs from before
    the memo answer the query (None while no worker answers, one restarting, say)."""
    progress = await _memo_progress(described)
    return progress if progress is not None else await _last_progress(handle)


async def _memo_progress(described: WorkflowExecutionDescription) -> SyncProgress | None:
    return await described.memo_value(contract.MEMO_SYNC_PROGRESS, None, type_hint=SyncProgress)


async def _last_progress(handle: SyncHandle) -> SyncProgress | None:
    """The run's progress, as a worker answers it; a closed run still answers (a worker
    replays it), with its cursors."""
    try:
        return await handle.query(StripeSyncWorkflow.progress, rpc_timeout=PROGRESS_QUERY_TIMEOUT)
    except (RPCError, WorkflowQueryFailedError) as exc:
        log.warning("no worker tells the sync's progress: %s", exc)
        return None


def root_cause(exc: BaseException) -> str:
    """The activity's own words (its ApplicationError), not Temporal's wrappers around it."""
    while not isinstance(exc, ApplicationError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc.message if isinstance(exc, ApplicationError) else str(exc)
