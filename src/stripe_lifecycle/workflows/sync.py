"""`StripeSyncWorkflow` (`stripe-sync-{account}`): the history a new install cannot see,
read from Stripe's list endpoints into the customer workflows as backfill.

Two phases. Listing: customers, subscriptions (`status=all`), invoices and charges, one
activity per page on the Stripe reads task queue (capped by Temporal at
`LIFECYCLE_STRIPE_READ_RATE` for every worker at once), each page stored by object. Only
objects created up to the sync's start are listed, so pages do not shift under it; what
is created later comes by webhook. Each list starts as one window of `created` times;
whenever fewer than `LANES` windows are being read, a window that has just read a page
hands the older half of what it has left to a new window, so the long lists (invoices,
charges) are read as several chains of pages side by side instead of one. Delivering:
the stored backfill, customer by customer, to the customer workflows, as the forwarder
delivers webhooks.

Every cursor lives in this workflow's state: a worker lost mid-page retries that page,
which stores nothing twice; a long sync continues as new with its state. A key Stripe
refuses fails the run with the error naming the problem and the resource; the `progress`
query still answers on the failed run, and the next `lifecycle sync` or `POST /v1/sync`
resumes from its cursors.

The progress is also kept in the memo (`contract.MEMO_SYNC_PROGRESS`), written when the
state changes and otherwise at most every `MEMO_INTERVAL` of the run's time: `lifecycle
sync`, `GET /v1/sync` and the Temporal UI read it with no worker answering.
"""

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from stripe_lifecycle.activities.interface import (
    DeliverRequest,
    StripeSync,
    SyncAccountRequest,
    SyncPageRequest,
    SyncPageResult,
)
from stripe_lifecycle.domain import contract
from stripe_lifecycle.domain.sync import (
    RESOURCES,
    covered_seconds,
    estimate_in_windows,
    estimate_total,
)

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

# Runs since read each list in `created` windows side by side; runs before it, one chain
# of pages per list (replayed as they ran).
WINDOWS_PATCH = "lists-read-in-windows"
# Windows read at once, over every list. One window is a chain of round trips (request,
# backfill, upsert, workflow task): about 7 pages a second on a 2-core machine, so a few
# chains are needed to use the reads queue's rate, and more only queue behind its cap.
LANES = 8
# A window is split only while what it has left spans this many seconds or more.
MIN_SPLIT_SECONDS = 120

# Runs since keep their progress in the memo too (runs before it answer the query only).
PROGRESS_MEMO_PATCH = "progress-in-memo"
# Each memo write is a history event: while the state holds, one per this much workflow
# time at most (a reader polls every 2 s), not one per page.
MEMO_INTERVAL = timedelta(seconds=2)

LISTING = "listing"
DELIVERING = "delivering"
COMPLETED = "completed"


@dataclass
class Window:
    """Part of a list still being read: the objects created from `since` to `until` (both
    included), newest first, the next page after `cursor`. A window read to its end is
    dropped from its list's `windows`."""

    since: int
    until: int
    cursor: str | None = None
    # `created` of the oldest object read: what is left is `since` up to it.
    oldest_created: int | None = None


@dataclass
class ResourceProgress:
    resource: str
    read: int = 0
    # New or changed since the last sync (the rest was known already).
    changed: int = 0
    # How many the list holds, judged from how far back the pages read reach.
    estimated_total: int | None = None
    # The one chain of pages of a run from before `WINDOWS_PATCH` (a run since starts its
    # first window from there).
    oldest_created: int | None = None
    cursor: str | None = None
    done: bool = False
    # The windows being read; one read to its end is dropped, its time added to `covered`.
    windows: list[Window] = field(default_factory=list)
    # Seconds of `created` time (from the account's creation on) of the windows read.
    covered: int = 0


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
        # The windows being read, one task each.
        self._reading: list[asyncio.Task[None]] = []
        # When the memo was last written, and in which state.
        self._memo_at: datetime | None = None
        self._memo_state: str | None = None

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
            if workflow.patched(WINDOWS_PATCH):
                await self._list_in_windows(reads_queue)
            else:
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
            page = await self._page(resource, reads_queue, progress.until, None, resource.cursor)
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

    async def _page(
        self,
        resource: ResourceProgress,
        reads_queue: str,
        until: int,
        since: int | None,
        cursor: str | None,
    ) -> SyncPageResult:
        """Read and store one page of `resource` (created from `since` to `until`, after
        `cursor`), and count it."""
        progress = self._progress
        page = await workflow.execute_activity_method(
            StripeSync.sync_list_page,
            SyncPageRequest(
                resource=resource.resource,
                until=until,
                since=since,
                account=progress.account,
                starting_after=cursor,
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
        return page

    async def _list_in_windows(self, reads_queue: str) -> None:
        progress = self._progress
        assert progress.until is not None
        for resource in progress.resources:
            if not resource.done and not resource.windows:
                # The whole list, or what a run before windows had left of its chain. From
                # the epoch, not the account's creation: an object dated before it (copied
                # from another account, say) is listed all the same.
                resource.windows.append(
                    Window(
                        since=0,
                        until=progress.until,
                        cursor=resource.cursor,
                        oldest_created=resource.oldest_created,
                    )
                )
        for resource in progress.resources:
            for window in resource.windows:
                self._read_in_task(resource, window, reads_queue)
        while self._reading:
            await workflow.wait_condition(lambda: any(t.done() for t in self._reading))
            for task in [t for t in self._reading if t.done()]:
                self._reading.remove(task)
                # A window's error (a key Stripe refuses) is the run's.
                task.result()

    def _read_in_task(self, resource: ResourceProgress, window: Window, reads_queue: str) -> None:
        self._reading.append(asyncio.create_task(self._read(resource, window, reads_queue)))

    async def _read(self, resource: ResourceProgress, window: Window, reads_queue: str) -> None:
        """Read `window` page by page until it ends or the history is full, splitting it
        while lanes are free."""
        progress = self._progress
        ended = False
        while not ended and not self._history_full():
            page = await self._page(
                resource, reads_queue, window.until, window.since, window.cursor
            )
            if page.oldest_created is not None:
                window.oldest_created = min(
                    page.oldest_created, window.oldest_created or page.oldest_created
                )
            window.cursor = page.next_starting_after or window.cursor
            ended = page.next_starting_after is None
            if ended:
                resource.windows.remove(window)
                resource.covered += covered_seconds(
                    [(window.since, window.until)], progress.account_created or 0
                )
            else:
                self._split(resource, window, reads_queue)
            resource.done = not resource.windows
            resource.estimated_total = resource.read if resource.done else self._estimate(resource)
            self._describe()

    def _split(self, resource: ResourceProgress, window: Window, reads_queue: str) -> None:
        """Hand the older half of what `window` has left to a new window, read beside it,
        when a lane is free. Between two of its pages: no page of `window` is in flight
        with the old bounds, so no object is read by both."""
        if len(self._reading) >= LANES or self._history_full() or window.oldest_created is None:
            return
        # Halved by time from the account's creation: before it there is next to nothing.
        lowest = max(window.since, self._progress.account_created or 0)
        left = window.oldest_created - lowest
        if left < 2 * MIN_SPLIT_SECONDS:
            return
        middle = lowest + left // 2
        older = Window(since=window.since, until=middle - 1)
        window.since = middle
        resource.windows.append(older)
        self._read_in_task(resource, older, reads_queue)

    def _estimate(self, resource: ResourceProgress) -> int | None:
        """The list's size judged from the time its windows have read."""
        progress = self._progress
        assert progress.until is not None
        spans = [
            (w.oldest_created, w.until) for w in resource.windows if w.oldest_created is not None
        ]
        return estimate_in_windows(
            resource.read, progress.until, spans, progress.account_created, resource.covered
        )

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
            side_by_side = f" ({len(r.windows)} windows)" if len(r.windows) > 1 else ""
            lines.append(
                f"**{r.resource}** {r.read:,}{of}{side_by_side}" + (" ✓" if r.done else "")
            )
        lines.append(
            f"**delivered** {progress.customers_delivered:,} customers"
            f" · **429s** {progress.rate_limited}"
        )
        workflow.set_current_details("  \n".join(lines))
        self._write_memo()

    def _write_memo(self) -> None:
        progress = self._progress
        now = workflow.now()
        if (
            self._memo_at is not None
            and self._memo_state == progress.state
            and now - self._memo_at < MEMO_INTERVAL
        ):
            return
        if workflow.patched(PROGRESS_MEMO_PATCH):
            workflow.upsert_memo({contract.MEMO_SYNC_PROGRESS: progress})
        self._memo_at, self._memo_state = now, progress.state
