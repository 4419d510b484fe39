"""`StripeReconcileWorkflow`: one pass reading Stripe's recent events back into the webhook
inbox, run by the `stripe-reconcile` Schedule and by `lifecycle reconcile`."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from stripe_lifecycle.activities.interface import (
    EventsPageRequest,
    GapRequest,
    Reconciliation,
    ReconciliationRecord,
)
from stripe_lifecycle.domain import contract, ids
from stripe_lifecycle.domain.reconcile import type_groups
from stripe_lifecycle.workflows.sync import StripeSyncWorkflow, SyncInput

# Rate limits and outages pass within minutes; a pass still failing then ends, and the next
# scheduled one covers the same window again.
STRIPE_LIST_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=10,
)
DB_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))
# Passes begun since read their pages on the Stripe reads task queue, under its rate cap,
# and start a sync when the last pass is older than Stripe keeps events; those recorded
# before did neither, and replay so.
RECONCILE_V2_PATCH = "reconcile-v2"
# Stripe keeps events for 30 days: a gap longer than that cannot be read back as events.
STRIPE_EVENT_RETENTION = timedelta(days=30)


@dataclass
class ReconcileInput:
    lookback_seconds: int


@dataclass
class ReconcileResult:
    events_seen: int
    # Events Stripe had that no webhook had delivered: now in the inbox.
    events_recovered: int
    finished_at: datetime
    # The last pass was older than Stripe keeps events: this pass started a sync of the
    # account's current state (`stripe-sync-default`) for what no event can tell any more.
    sync_started: bool = False


@workflow.defn
class StripeReconcileWorkflow:
    """One reconciliation pass over the last `lookback_seconds` of `GET /v1/events`, one
    activity per page; the cursor lives here, so a pass resumes where a lost worker left it.

    No signals, updates or queries: its progress shows in the workflow's details."""

    @workflow.run
    async def run(self, request: ReconcileInput) -> ReconcileResult:
        created_gte = int(workflow.now().timestamp()) - request.lookback_seconds
        reads_queue = None
        sync_started = False
        if workflow.patched(RECONCILE_V2_PATCH):
            reads_queue = contract.stripe_reads_queue(workflow.info().task_queue)
            sync_started = await self._sync_if_events_were_lost()
        seen = recovered = 0
        for types in type_groups():
            cursor: str | None = None
            while True:
                page = await workflow.execute_activity_method(
                    Reconciliation.reconcile_events_page,
                    EventsPageRequest(created_gte=created_gte, types=types, starting_after=cursor),
                    task_queue=reads_queue,
                    start_to_close_timeout=timedelta(minutes=1),
                    retry_policy=STRIPE_LIST_RETRY,
                )
                seen += page.events_seen
                recovered += page.events_recovered
                workflow.set_current_details(
                    f"read {seen} events from Stripe, {recovered} missing from the inbox"
                )
                cursor = page.next_starting_after
                if cursor is None:
                    break
        finished_at = workflow.now()
        await workflow.execute_activity_method(
            Reconciliation.record_reconciliation,
            ReconciliationRecord(
                finished_at=finished_at,
                lookback_seconds=request.lookback_seconds,
                events_seen=seen,
                events_recovered=recovered,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=DB_RETRY,
        )
        if recovered:
            workflow.logger.warning(
                "reconciliation recovered %d of %d events: webhooks are being lost",
                recovered,
                seen,
            )
        else:
            workflow.logger.info("reconciliation: all %d events had arrived by webhook", seen)
        return ReconcileResult(
            events_seen=seen,
            events_recovered=recovered,
            finished_at=finished_at,
            sync_started=sync_started,
        )

    async def _sync_if_events_were_lost(self) -> bool:
        """Start a sync when the last successful pass is older than Stripe keeps events
        (workers down for weeks, a schedule paused): the events of the gap are gone, the
        state they left is not. Only what changed is delivered, so it is as targeted as
        Stripe's lists allow (they filter by creation, not by change)."""
        last = await workflow.execute_activity_method(
            Reconciliation.reconciliation_gap,
            GapRequest(before=workflow.now() - STRIPE_EVENT_RETENTION),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=DB_RETRY,
        )
        if last is None:
            return False
        workflow.logger.warning(
            "the last reconciliation finished %s, longer ago than Stripe keeps events (30 "
            "days): a sync (%s) reads the account's current state instead",
            last.isoformat(),
            ids.sync_workflow_id(None),
        )
        try:
            await workflow.start_child_workflow(
                StripeSyncWorkflow.run,
                SyncInput(),
                id=ids.sync_workflow_id(None),
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                static_summary="Historical sync: the last reconciliation is older than "
                "Stripe keeps events",
            )
        except WorkflowAlreadyStartedError:
            workflow.logger.info("a sync runs already; it covers the gap")
        return True
