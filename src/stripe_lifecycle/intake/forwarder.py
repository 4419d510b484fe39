"""Delivers stored webhook events to the customer workflows, and keeps trying until it can.

The webhook handler stores the event and acknowledges Stripe at once; the forwarder then
signal-with-starts `customer-{cus_id}`. Each customer has its own queue and at most one
delivery in flight, so one customer's events keep their order while different customers'
events go out concurrently (`lanes` deliveries at a time). A delivery carries every event
queued for that customer (up to MAX_BATCH): Stripe sends bursts per customer (invoice
created, finalized, paid, subscription updated), and under load this turns a backlog into
fewer, larger signals instead of one Temporal call per event. A delivery that fails
(Temporal down) is retried with backoff and holds that customer's later events. Rows that
were stored but never delivered (crash, restart, another replica) are picked up by a
periodic sweep.

An event that names only a payment (a dispute names its charge) first has its customer
read from Stripe (`intake/resolve.py`), retried with the same backoff on rate limits and
Stripe's failures; the customer is stored on its row and the event joins that customer's
queue like any other. One whose payment has no customer (a guest), is gone, or cannot be
read (no API key) is recorded `ignored`, with why in `last_error`.

What can never be delivered is quarantined rather than retried forever: an event the
bounds refuse before any attempt (`intake/bounds.py`: an id longer than Stripe's, a payload
too large even after its free text is trimmed), or one Temporal answers with a refusal no
retry changes (INVALID_ARGUMENT: a workflow id or a payload over its limits). The row goes
to `quarantined` with the reason in `last_error`, logged at ERROR once, and waits for an
admin (`/v1/inbox/...`: retry or drop). Everything else (Temporal or the network down, rate
limits) keeps the backoff above. A batch Temporal refuses is retried one event at a time,
so only the event at fault is quarantined.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import stripe
from sqlalchemy import select, update
from sqlmodel import col
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from stripe_lifecycle.domain import contract, ids
from stripe_lifecycle.domain.events import BillingEvent, BillingEvents, lean
from stripe_lifecycle.intake.bounds import Refused, admit
from stripe_lifecycle.intake.normalise import (
    UnreadableEvent,
    event_payment_reference,
    normalise_event,
    normalise_event_for_customer,
)
from stripe_lifecycle.intake.resolve import PaymentCustomerResolver
from stripe_lifecycle.storage.db import SessionMaker, database_unavailable
from stripe_lifecycle.storage.models import InboxStatus, WebhookEvent
from stripe_lifecycle.workflows.customer import CustomerWorkflow
from stripe_lifecycle.workflows.customer_messages import CustomerWorkflowInput

log = logging.getLogger(__name__)

# Rows younger than this belong to a request still in flight (here or on another
# replica); the sweep leaves them to that request's own delivery.
SWEEP_GRACE = timedelta(seconds=10)
SWEEP_BATCH = 1000
FLUSH_INTERVAL_SECONDS = 0.05
# Events per signal, and their size at most (an upper bound, see `intake/bounds.py`): well
# under Temporal's 2 MiB blob limit. An event is at most 256 KiB, so a batch of one always fits.
MAX_BATCH = 100
MAX_BATCH_BYTES = 1024 * 1024
# Events whose customer is being read from Stripe at once.
RESOLVER_LANES = 8


@dataclass(frozen=True)
class ForwarderConfig:
    task_queue: str
    # LIFECYCLE_INDEX_EMAIL: off unless asked for, as search attributes are never encrypted.
    index_email: bool = False
    lanes: int = 64
    sweep_seconds: float = 5.0
    max_backoff_seconds: float = 30.0


Deliver = Callable[[str, list[BillingEvent]], Awaitable[None]]
# A queued event: its inbox row, the bounded event, and its size (an upper bound).
_Queued = tuple[int, BillingEvent, int]


def refusal(exc: BaseException) -> str | None:
    """Why Temporal will never accept this delivery, or None for a failure worth retrying.

    INVALID_ARGUMENT is Temporal judging the request itself (a workflow id over 1,000
    bytes, a payload over the blob limit); a request over gRPC's 4 MiB message limit fails
    with RESOURCE_EXHAUSTED, which otherwise means a rate limit, so that one is told by its
    message."""
    if not isinstance(exc, RPCError):
        return None
    if exc.status == RPCStatusCode.INVALID_ARGUMENT:
        return f"Temporal refused the delivery: {exc.message}"
    if exc.status == RPCStatusCode.RESOURCE_EXHAUSTED and "larger than max" in exc.message:
        return f"Temporal refused the delivery: {exc.message}"
    return None


def temporal_delivery(client: Client, config: ForwarderConfig) -> Deliver:
    async def deliver(customer_id: str, events: list[BillingEvent]) -> None:
        await client.start_workflow(
            CustomerWorkflow.run,
            CustomerWorkflowInput(customer_id=customer_id, index_email=config.index_email),
            id=ids.customer_workflow_id(customer_id),
            task_queue=config.task_queue,
            start_signal=contract.BILLING_EVENTS_SIGNAL,
            # Defaults left out: what the worker decodes per event is what it carries.
            start_signal_args=[lean(BillingEvents(events=events))],
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=f"Billing snapshot of Stripe customer {customer_id}",
        )

    return deliver


class InboxForwarder:
    def __init__(
        self,
        sessionmaker: SessionMaker,
        deliver: Deliver,
        config: ForwarderConfig,
        resolver: PaymentCustomerResolver | None = None,
    ):
        self._sessionmaker = sessionmaker
        self._deliver = deliver
        self._config = config
        # Without one, no payment's customer can be read (as without an API key).
        self._resolver = resolver or PaymentCustomerResolver(None)
        # Stored events that name only a payment, waiting for their customer to be read.
        self._unresolved: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue()
        self._queues: dict[str, deque[_Queued]] = {}
        # Customers with queued events and no delivery in flight, each listed once.
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._listed: set[str] = set()
        self._busy: set[str] = set()
        # Row ids queued or delivered but not yet marked in the DB: the sweep skips them.
        self._in_flight: set[int] = set()
        self._delivered: list[int] = []
        # Rows to mark quarantined: (row id, why, whether a delivery was attempted).
        self._quarantined: list[tuple[int, str, bool]] = []
        self._flushed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        # Older undelivered events go into the lanes before any new request can. With the
        # database down, the API still starts (answering 503 until it is back, so Stripe
        # retries) and the periodic sweep queues them once it returns: the customer
        # workflow applies late events by their own dates, so that order is a courtesy.
        try:
            await self.sweep(grace=timedelta(0))
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            _log_failure("the first sweep of the inbox", exc)
        self._tasks = [asyncio.create_task(self._lane()) for _ in range(self._config.lanes)]
        self._tasks += [asyncio.create_task(self._resolve_lane()) for _ in range(RESOLVER_LANES)]
        self._tasks.append(asyncio.create_task(self._flush_loop()))
        self._tasks.append(asyncio.create_task(self._sweep_loop()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self._flush()

    def submit(self, row_id: int, event: BillingEvent) -> None:
        if row_id in self._in_flight:
            return
        self._in_flight.add(row_id)
        self._enqueue(row_id, event)

    def submit_unresolved(self, row_id: int, payload: dict[str, Any]) -> None:
        """Queue a stored event that names only a payment: its customer is read first."""
        if row_id in self._in_flight:
            return
        self._in_flight.add(row_id)
        self._unresolved.put_nowait((row_id, payload))

    def _enqueue(self, row_id: int, event: BillingEvent) -> None:
        admitted = admit(event)
        if isinstance(admitted, Refused):
            self._quarantine(row_id, event.event_id, admitted.reason, attempted=False)
            return
        if admitted.trimmed:
            log.warning(
                "forwarder: event %.255s trimmed to Stripe's limits before delivery: %s",
                event.event_id,
                ", ".join(admitted.trimmed),
            )
        customer = event.customer_id
        self._queues.setdefault(customer, deque()).append((row_id, admitted.event, admitted.size))
        self._list(customer)

    def _quarantine(self, row_id: int, event_id: str, reason: str, *, attempted: bool) -> None:
        log.error(
            "forwarder: event %.255s (inbox row %d) quarantined, it cannot be delivered: %s",
            event_id,
            row_id,
            reason,
        )
        self._quarantined.append((row_id, reason, attempted))

    def _list(self, customer: str) -> None:
        if customer not in self._busy and customer not in self._listed:
            self._listed.add(customer)
            self._ready.put_nowait(customer)

    def backlog(self) -> int:
        return len(self._in_flight)

    async def drained(self) -> None:
        """Wait until everything submitted so far is delivered and marked (tests, bench)."""
        while self._in_flight:
            self._flushed.clear()
            await self._flushed.wait()

    async def sweep(self, grace: timedelta = SWEEP_GRACE) -> int:
        cutoff = datetime.now(UTC) - grace
        async with self._sessionmaker() as session:
            rows = (
                await session.execute(
                    select(
                        col(WebhookEvent.id),
                        col(WebhookEvent.payload),
                        col(WebhookEvent.customer_id),
                    )
                    .where(col(WebhookEvent.status) == InboxStatus.PENDING)
                    .where(col(WebhookEvent.received_at) <= cutoff)
                    .order_by(col(WebhookEvent.id))
                    .limit(SWEEP_BATCH)
                )
            ).all()
        queued = 0
        for row_id, payload, customer_id in rows:
            queued += await self.submit_stored(row_id, payload, customer_id)
        if queued:
            log.info("forwarder: %d stored events queued for delivery", queued)
        return queued

    async def submit_stored(self, row_id: Any, payload: Any, customer_id: Any) -> bool:
        """Queue a pending inbox row as stored (the sweep; an admin's retry); whether it was
        queued now."""
        if not isinstance(row_id, int) or row_id in self._in_flight:
            return False
        if not isinstance(payload, dict):
            return False
        try:
            event = normalise_event(payload)
            if event is None and isinstance(customer_id, str):
                # Its customer was read from Stripe before the delivery was interrupted.
                event = normalise_event_for_customer(payload, customer_id)
        except UnreadableEvent as exc:
            # Stored pending by a version that read it less strictly.
            await self._mark_unreadable(row_id, exc)
            return False
        if event is not None:
            self.submit(row_id, event)
        elif event_payment_reference(payload) is not None:
            self.submit_unresolved(row_id, payload)
        else:
            return False
        return True

    async def _lane(self) -> None:
        while True:
            customer = await self._ready.get()
            self._listed.discard(customer)
            self._busy.add(customer)
            try:
                await self._deliver_with_retries(customer, _take_batch(self._queues[customer]))
            finally:
                self._busy.discard(customer)
                if self._queues.get(customer):
                    self._list(customer)
                else:
                    self._queues.pop(customer, None)

    async def _deliver_with_retries(self, customer: str, batch: list[_Queued]) -> None:
        failures = 0
        while True:
            try:
                await self._deliver(customer, [event for _, event, _ in batch])
                self._delivered.extend(row_id for row_id, _, _ in batch)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = refusal(exc)
                if reason is not None and len(batch) > 1:
                    # Which event is at fault, if any one is: each alone, in order.
                    for queued in batch:
                        await self._deliver_with_retries(customer, [queued])
                    return
                if reason is not None:
                    [(row_id, event, _)] = batch
                    self._quarantine(row_id, event.event_id, reason, attempted=True)
                    return
                failures += 1
                await self._record_failure([row_id for row_id, _, _ in batch], exc)
                delay = self._backoff(failures)
                log.warning(
                    "forwarder: delivering %d events of %s failed (attempt %d), "
                    "retrying in %.1fs: %s",
                    len(batch),
                    customer,
                    failures,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)

    def _backoff(self, failures: int) -> float:
        delay: float = min(self._config.max_backoff_seconds, 0.25 * 2.0**failures)
        # Jitter keeps retries from hammering a recovering server in lockstep.
        return delay * random.uniform(0.8, 1.2)

    async def _resolve_lane(self) -> None:
        while True:
            row_id, payload = await self._unresolved.get()
            try:
                await self._resolve(row_id, payload)
            except asyncio.CancelledError:
                raise
            except Exception:
                # The database could not record the answer: the sweep asks again later.
                log.exception("forwarder: finding the customer of inbox row %d failed", row_id)
                self._done_with(row_id)

    async def _resolve(self, row_id: int, payload: dict[str, Any]) -> None:
        reference = event_payment_reference(payload)
        if reference is None:
            self._done_with(row_id)
            return
        account = payload.get("account")
        failures = 0
        while True:
            try:
                found = await self._resolver.resolve(
                    reference, account if isinstance(account, str) else None
                )
                break
            except stripe.StripeError as exc:
                # Only what a retry may change escapes the resolver: 429, 5xx, the network.
                failures += 1
                await self._record_failure([row_id], exc)
                delay = self._backoff(failures)
                log.warning(
                    "forwarder: reading %s %s for event %s failed (attempt %d), "
                    "retrying in %.1fs: %s",
                    reference.kind,
                    reference.id,
                    payload.get("id"),
                    failures,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
        async with self._sessionmaker() as session:
            values: dict[str, Any] = (
                {"customer_id": found.customer_id}
                if found.customer_id is not None
                else {"status": InboxStatus.IGNORED, "last_error": (found.reason or "")[:2000]}
            )
            await session.execute(
                update(WebhookEvent)
                .where(col(WebhookEvent.id) == row_id)
                .where(col(WebhookEvent.status) == InboxStatus.PENDING)
                .values(**values)
            )
            await session.commit()
        if found.customer_id is None:
            log.info(
                "forwarder: event %s concerns no customer: %s", payload.get("id"), found.reason
            )
            self._done_with(row_id)
            return
        try:
            event = normalise_event_for_customer(payload, found.customer_id)
        except UnreadableEvent as exc:
            await self._mark_unreadable(row_id, exc)
            self._done_with(row_id)
            return
        self._enqueue(row_id, event)

    async def _mark_unreadable(self, row_id: int, exc: UnreadableEvent) -> None:
        """A stored event that cannot be read leaves the queue for good, with the reason."""
        log.warning("forwarder: inbox row %d is unreadable: %s", row_id, exc)
        async with self._sessionmaker() as session:
            await session.execute(
                update(WebhookEvent)
                .where(col(WebhookEvent.id) == row_id)
                .where(col(WebhookEvent.status) == InboxStatus.PENDING)
                .values(status=InboxStatus.UNREADABLE, last_error=str(exc)[:2000])
            )
            await session.commit()

    def _done_with(self, row_id: int) -> None:
        """The row leaves the forwarder without a delivery."""
        self._in_flight.discard(row_id)
        self._flushed.set()

    async def _record_failure(self, row_ids: list[int], exc: Exception) -> None:
        try:
            async with self._sessionmaker() as session:
                await session.execute(
                    update(WebhookEvent)
                    .where(col(WebhookEvent.id).in_(row_ids))
                    .values(attempts=WebhookEvent.attempts + 1, last_error=str(exc)[:2000])
                )
                await session.commit()
        except Exception as exc:
            _log_failure(f"recording the failed delivery of rows {row_ids}", exc)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_SECONDS)
            try:
                await self._flush()
            except Exception as exc:
                _log_failure("marking delivered events", exc)

    async def _flush(self) -> None:
        await self._flush_quarantined()
        # One UPDATE for many deliveries keeps the DB off the hot path.
        if not self._delivered:
            self._flushed.set()
            return
        batch, self._delivered = self._delivered, []
        try:
            async with self._sessionmaker() as session:
                await session.execute(
                    update(WebhookEvent)
                    .where(col(WebhookEvent.id).in_(batch))
                    .values(
                        status=InboxStatus.FORWARDED,
                        forwarded_at=datetime.now(UTC),
                        attempts=WebhookEvent.attempts + 1,
                    )
                )
                await session.commit()
        except Exception:
            self._delivered.extend(batch)
            raise
        self._in_flight.difference_update(batch)
        self._flushed.set()

    async def _flush_quarantined(self) -> None:
        # Rare: one UPDATE per row, each with its own reason.
        if not self._quarantined:
            return
        batch, self._quarantined = self._quarantined, []
        try:
            async with self._sessionmaker() as session:
                for row_id, reason, attempted in batch:
                    await session.execute(
                        update(WebhookEvent)
                        .where(col(WebhookEvent.id) == row_id)
                        .where(col(WebhookEvent.status) == InboxStatus.PENDING)
                        .values(
                            status=InboxStatus.QUARANTINED,
                            last_error=reason[:2000],
                            attempts=WebhookEvent.attempts + int(attempted),
                        )
                    )
                await session.commit()
        except Exception:
            self._quarantined.extend(batch)
            raise
        self._in_flight.difference_update(row_id for row_id, _, _ in batch)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.sweep_seconds)
            try:
                await self.sweep()
            except Exception as exc:
                _log_failure("sweeping the inbox", exc)


def _log_failure(what: str, exc: Exception) -> None:
    """A background pass failed and will run again. While the database is down every pass
    fails the same way: a line each, not a traceback each."""
    if database_unavailable(exc):
        log.warning(
            "forwarder: %s failed, the database is unavailable (%s: %s); will retry",
            what,
            exc.__class__.__name__,
            exc,
        )
    else:
        log.error("forwarder: %s failed; will retry", what, exc_info=exc)


def _take_batch(queue: deque[_Queued]) -> list[_Queued]:
    """The oldest queued events, up to MAX_BATCH of them and MAX_BATCH_BYTES together."""
    batch: list[_Queued] = []
    total = 0
    while queue and len(batch) < MAX_BATCH:
        size = queue[0][2]
        if batch and total + size > MAX_BATCH_BYTES:
            break
        batch.append(queue.popleft())
        total += size
    return batch
