"""`StripeSyncWorkflow` (`stripe-sync-{account}`): the history a new install cannot see,
read from Stripe's list endpoints into the customer workflows as backfill.

Two phases. Listing: customers, subscriptions (`status=all`), invoices and charges, each
a lane of one activity per page on the Stripe reads task queue (capped by Temporal at
`LIFECYCLE_STRIPE_READ_RATE` for every worker at once), each page stored by object. Only
objects created up to the sync's start are listed, so pages do not shift under it; what
is created later comes by webhook. Delivering: the stored backfill, customer by customer,
to the customer workflows, as the forwarder delivers webhooks.

Every cursor lives in this workflow's state: a worker lost mid-page retries that page,
which stores nothing twice; a long sync continues as new with its state. A key Stripe
refuses fails the run with the error naming the problem and the resource; the `progress`
query still answers on the failed run, and the next `lifecycle sync` or `POST /v1/sync`
resumes from its cursors.
"""

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from stripe_lifecycle.activities.interface import (
        DeliverRequest,
        StripeSync,
        SyncAccountRequest,
        SyncPageRequest,
    )
    from stripe_lifecycle.domain import contract
    from stripe_lifecycle.domain.sync import RESOURCES, estimate_total

# Stripe's outages and rate limits pass; a key it refuses fails at once (non-retryable).
STRIPE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
)
DELIVERY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1)
)
# A page waits out a few 429s itself (heartbeating); a lost worker is noticed by the
# missing heartbeat well before the page's time is up.
PAGE_TIMEOUT = timedelta(minutes=3)
PAGE_HEARTBEAT = timedelta(seconds=15)

LISTING = "listing"
DELIVERING = "delivering"
COMPLETED = "completed"


@dataclass
class ResourceProgress:
    resource: str
    read: int = 0
    # New or changed since the last sync (the rest was known already).
    changed: int = 0
    # How many the list holds, judged from how far back the pages read reach.
    estimated_total: int | None = None
    oldest_created: int | None = None
    # The last object read: the next page starts after it.
    cursor: str | None = None
    done: bool = False


@dataclass
class SyncProgress:
    account: str | None = None
    start_lifecycles: bool = False
    state: str = LISTING
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # Objects created up to here are listed (the first start's time).
    until: int | None = None
    account_created: int | None = None
    resources: list[ResourceProgress] = field(default_factory=list)
    customers_delivered: int = 0
    events_delivered: int = 0
    deliver_cursor: str | None = None
    rate_limited: int = 0
    unreadable: int = 0
    # Continue-as-new runs and resumptions after a stop.
    runs: int = 1


@dataclass
class SyncInput:
    account: str | None = None
    start_lifecycles: bool = False
    # Carried over continue-as-new, or from a run that stopped (to resume it).
    progress: SyncProgress | None = None
    # Continue as new past this many history events even if not yet suggested.
    max_history_events: int = 10_000
    # Customers per delivery activity.
    deliver_batch: int = 200


@workflow.defn
class StripeSyncWorkflow:
    """Queries: `progress() -> SyncProgress`. No signals: a sync is started, and read."""

    @workflow.init
    def __init__(self, input: SyncInput) -> None:
        self._input = input
        progress = input.progress or SyncProgress(
            account=input.account,
            start_lifecycles=input.start_lifecycles,
            resources=[ResourceProgress(resource=r) for r in RESOURCES],
        )
        # A resumed sync may be asked to start lifecycles where the first was not.
        progress.start_lifecycles = input.start_lifecycles or progress.start_lifecycles
        self._progress = progress

    @workflow.query
    def progress(self) -> SyncProgress:
        return self._progress

    @workflow.run
    async def run(self, input: SyncInput) -> SyncProgress:
        progress = self._progress
        reads_queue = contract.stripe_reads_queue(workflow.info().task_queue)
        if progress.started_at is None:
            progress.started_at = workflow.now()
        if progress.until is None:
            progress.until = int(workflow.now().timestamp())
            info = await workflow.execute_activity_method(
                StripeSync.sync_account_info,
                SyncAccountRequest(account=progress.account),
                task_queue=reads_queue,
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=STRIPE_RETRY,
            )
            progress.account_created = info.created
            progress.rate_limited += info.rate_limited
        self._describe()
        if progress.state == LISTING:
            await asyncio.gather(
                *(self._list(r, reads_queue) for r in progress.resources if not r.done)
            )
            if not all(r.done for r in progress.resources):
                self._continue_as_new()
            progress.state = DELIVERING
        while True:
            delivered = await workflow.execute_activity_method(
                StripeSync.sync_deliver,
                DeliverRequest(
                    account=progress.account,
                    limit=input.deliver_batch,
                    start_lifecycles=progress.start_lifecycles,
                    after_customer=progress.deliver_cursor,
                ),
                start_to_close_timeout=timedelta(minutes=10),
                heartbeat_timeout=timedelta(minutes=1),
                retry_policy=DELIVERY_RETRY,
            )
            if delivered.customers == 0:
                break
            progress.customers_delivered += delivered.customers
            progress.events_delivered += delivered.events
            progress.deliver_cursor = delivered.last_customer
            self._describe()
            if self._history_full():
                self._continue_as_new()
        progress.state = COMPLETED
        progress.finished_at = workflow.now()
        self._describe()
        workflow.logger.info(
            "sync done: %s; %d customers' backfill delivered",
            ", ".join(
                f"{r.resource} {r.read} ({r.changed} new or changed)" for r in progress.resources
            ),
            progress.customers_delivered,
        )
        return progress

    async def _list(self, resource: ResourceProgress, reads_queue: str) -> None:
        progress = self._progress
        assert progress.until is not None
        while not resource.done and not self._history_full():
            page = await workflow.execute_activity_method(
                StripeSync.sync_list_page,
                SyncPageRequest(
                    resource=resource.resource,
                    until=progress.until,
                    account=progress.account,
                    starting_after=resource.cursor,
                ),
                task_queue=reads_queue,
                start_to_close_timeout=PAGE_TIMEOUT,
                heartbeat_timeout=PAGE_HEARTBEAT,
                retry_policy=STRIPE_RETRY,
            )
            resource.read += page.read
            resource.changed += page.changed
            progress.rate_limited += page.rate_limited
            progress.unreadable += page.unreadable
            if page.oldest_created is not None:
                resource.oldest_created = min(
                    page.oldest_created, resource.oldest_created or page.oldest_created
                )
            resource.cursor = page.next_starting_after or resource.cursor
            resource.done = page.next_starting_after is None
            resource.estimated_total = (
                resource.read
                if resource.done
                else estimate_total(
                    resource.read, progress.until, resource.oldest_created, progress.account_created
                )
            )
            self._describe()

    def _history_full(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= self._input.max_history_events
        )

    def _continue_as_new(self) -> None:
        self._progress.runs += 1
        workflow.continue_as_new(
            SyncInput(
                account=self._input.account,
                start_lifecycles=self._input.start_lifecycles,
                progress=self._progress,
                max_history_events=self._input.max_history_events,
                deliver_batch=self._input.deliver_batch,
            )
        )

    def _describe(self) -> None:
        progress = self._progress
        lines = [f"**Sync** {progress.state}"]
        for r in progress.resources:
            total = r.estimated_total
            of = "" if total is None else (f" / {total:,}" if r.done else f" / ~{total:,}")
            lines.append(f"**{r.resource}** {r.read:,}{of}" + (" ✓" if r.done else ""))
        lines.append(
            f"**delivered** {progress.customers_delivered:,} customers"
            f" · **429s** {progress.rate_limited}"
        )
        workflow.set_current_details("  \n".join(lines))
