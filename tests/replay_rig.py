"""Delivering a replay corpus (`tests/replay_corpus.py`) through the real stack, and what
that delivery ended with: shared by `tests/test_replay_corpus.py` and `make replay-corpus`.

One delivery runs in a Temporal namespace of its own (the corpus's ids are the same in
both deliveries, and a customer's holdout group is a hash of its id), with its own
database and its own local Postmark-speaking server: the real API (webhooks signed as
Stripe signs them, verified by the `stripe` library), the real forwarder and the real
worker, with every workflow and activity.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from google.protobuf.duration_pb2 import Duration
from sqlalchemy import func, select
from sqlmodel import col
from temporalio.api.enums.v1 import PendingWorkflowTaskState
from temporalio.api.workflowservice.v1 import (
    DescribeNamespaceRequest,
    RegisterNamespaceRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError

from stripe_lifecycle.storage.db import create_engine, create_sessionmaker
from stripe_lifecycle.storage.models import (
    Conversion,
    Customer,
    InboxStatus,
    LifecycleInstance,
    Message,
    WebhookEvent,
)
from stripe_lifecycle.temporal_setup import register_search_attributes

from .conftest import app_settings, running_api, workers
from .fakes import POSTMARK_TOKEN, PostmarkHttpServer, PostmarkState, serving
from .signing import signed

# One chain of deliveries: posted one after another; chains run side by side.
Chain = Sequence[dict[str, Any]]
# How long one slot may take to be applied, and the whole to settle, before the run gives
# up saying what it was waiting for (a stuck run must fail, not hang).
SLOT_TIMEOUT = 300.0
SETTLE_TIMEOUT = 300.0


@dataclass
class Outcome:
    """What one delivery ended with, keyed so that two deliveries compare field by field:
    per customer the billing snapshot, per send key the message, per (instance, kind,
    invoice or subscription) the conversion, per workflow id the lifecycle instance
    started; and how many emails the Postmark server accepted."""

    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    conversions: dict[str, dict[str, Any]] = field(default_factory=dict)
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    emails_accepted: int = 0
    deliveries: int = 0
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        statuses: dict[str, int] = {}
        for message in self.messages.values():
            statuses[message["status"]] = statuses.get(message["status"], 0) + 1
        return {
            "customers": len(self.snapshots),
            "messages": len(self.messages),
            **{f"messages {status}": n for status, n in sorted(statuses.items())},
            "emails accepted by Postmark": self.emails_accepted,
            "conversions": len(self.conversions),
            "lifecycle instances": len(self.instances),
        }


def differences(expected: Outcome, actual: Outcome, limit: int = 20) -> list[str]:
    """Where `actual` differs from `expected`, one line each (at most `limit`)."""
    lines: list[str] = []
    for part in ("snapshots", "messages", "conversions", "instances"):
        want: dict[str, dict[str, Any]] = getattr(expected, part)
        got: dict[str, dict[str, Any]] = getattr(actual, part)
        for key in sorted(want.keys() | got.keys()):
            if want.get(key) != got.get(key):
                lines.append(f"{part} {key}: in order {want.get(key)} / disordered {got.get(key)}")
    if expected.emails_accepted != actual.emails_accepted:
        lines.append(
            f"emails accepted: in order {expected.emails_accepted} / "
            f"disordered {actual.emails_accepted}"
        )
    return lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])


async def open_namespace(address: str, namespace: str) -> Client:
    """A client of a namespace registered now, with our search attributes, once the server
    answers in it (a new namespace takes the server a moment to load)."""
    admin = await Client.connect(address)
    await admin.workflow_service.register_namespace(
        RegisterNamespaceRequest(
            namespace=namespace, workflow_execution_retention_period=Duration(seconds=86_400)
        )
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            await admin.workflow_service.describe_namespace(
                DescribeNamespaceRequest(namespace=namespace)
            )
            await register_search_attributes(admin, namespace)
            client = await Client.connect(address, namespace=namespace)
            await client.count_workflows()
            return client
        except RPCError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def running_delivery(
    address: str, namespace: str, database_url: str, task_queue: str
) -> AsyncIterator[Delivery]:
    """The API, forwarder and worker of one delivery, mailing through a Postmark server of
    its own."""
    client = await open_namespace(address, namespace)
    postmark = PostmarkHttpServer(PostmarkState(token=POSTMARK_TOKEN))
    with serving(postmark):
        settings = app_settings(
            database_url,
            address,
            task_queue,
            temporal_namespace=namespace,
            mail_transport="postmark",
            postmark_server_token=POSTMARK_TOKEN,
            postmark_api_url=postmark.url,
            # The cap counts by the wall clock, and a month is replayed in minutes.
            marketing_cap=1000,
        )
        engine = create_engine(database_url)
        try:
            async with workers(client, settings, create_sessionmaker(engine)):
                async with running_api(settings) as (_, http):
                    yield Delivery(client, http, create_sessionmaker(engine), postmark)
        finally:
            await engine.dispose()


@dataclass
class Delivery:
    client: Client
    http: httpx.AsyncClient
    sessionmaker: Any
    postmark: PostmarkHttpServer
    delivered: set[str] = field(default_factory=set)
    posts: int = 0

    async def run(
        self,
        slots: Sequence[Sequence[Chain]],
        *,
        concurrency: int = 16,
        advance: Callable[[int], None] = lambda _: None,
    ) -> Outcome:
        """Post each slot's chains, then wait until the customer workflows applied every
        event delivered so far, before the next slot; after the last, until every
        workflow is idle. What it ended with."""
        started = time.perf_counter()
        for slot in slots:
            await self._post_slot(slot, concurrency, advance)
            await self._applied(len(self.delivered))
        await self._settled()
        outcome = await self._outcome()
        outcome.deliveries = self.posts
        outcome.seconds = time.perf_counter() - started
        return outcome

    async def _post_slot(
        self, slot: Sequence[Chain], concurrency: int, advance: Callable[[int], None]
    ) -> None:
        gate = asyncio.Semaphore(concurrency)

        async def post_chain(chain: Chain) -> None:
            async with gate:
                for event in chain:
                    body, headers = signed(event)
                    response = await self.http.post(
                        "/webhooks/stripe", content=body, headers=headers
                    )
                    if response.status_code != 200:
                        raise AssertionError(
                            f"{event['id']} answered {response.status_code}: {response.text}"
                        )
                    self.delivered.add(event["id"])
                    self.posts += 1
                    advance(1)

        await asyncio.gather(*(post_chain(chain) for chain in slot))

    async def _applied(self, events: int) -> None:
        """Until the customer workflows have applied (and saved) `events` events in all."""
        deadline = time.monotonic() + SLOT_TIMEOUT
        while True:
            async with self.sessionmaker() as session:
                applied = await session.scalar(
                    select(func.coalesce(func.sum(Customer.snapshot_version), 0))
                )
            if int(applied or 0) >= events:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{applied} of {events} events applied after {SLOT_TIMEOUT}s")
            await asyncio.sleep(0.1)

    async def _settled(self) -> None:
        """Until two sweeps in a row find every event forwarded and every running workflow
        with nothing to do (no workflow task, activity or child start pending) and no new
        history between them: each workflow was then idle throughout the time between the
        sweeps, and only a timer (days away: the month is in the past, see
        `replay_corpus`) or a new event can wake one."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        last: dict[str, int] | None = None
        while True:
            sweep = await self._idle_sweep()
            if sweep is not None and sweep == last:
                return
            last = sweep
            if time.monotonic() > deadline:
                raise AssertionError(f"workflows still busy after {SETTLE_TIMEOUT}s")
            await asyncio.sleep(0.5)

    async def _idle_sweep(self) -> dict[str, int] | None:
        """Each running workflow's history length, or None if anything is still busy."""
        async with self.sessionmaker() as session:
            pending = await session.scalar(
                select(func.count())
                .select_from(WebhookEvent)
                .where(col(WebhookEvent.status) == InboxStatus.PENDING)
            )
        if pending:
            return None
        ids = [w.id async for w in self.client.list_workflows("ExecutionStatus = 'Running'")]
        gate = asyncio.Semaphore(16)

        async def describe(workflow_id: str) -> int | None:
            async with gate:
                description = await self.client.get_workflow_handle(workflow_id).describe()
            raw = description.raw_description
            busy = (
                raw.pending_activities
                # A child runs for days; one without a run is still being started.
                or any(not child.run_id for child in raw.pending_children)
                or raw.pending_workflow_task.state
                != PendingWorkflowTaskState.PENDING_WORKFLOW_TASK_STATE_UNSPECIFIED
            )
            return None if busy else description.history_length

        lengths = await asyncio.gather(*(describe(workflow_id) for workflow_id in ids))
        if any(length is None for length in lengths):
            return None
        return {wid: length for wid, length in zip(ids, lengths, strict=True) if length is not None}

    async def _outcome(self) -> Outcome:
        outcome = Outcome(emails_accepted=len(self.postmark.state.requests))
        async with self.sessionmaker() as session:
            for customer in (await session.execute(select(Customer))).scalars():
                outcome.snapshots[customer.customer_id] = _comparable(
                    customer.model_dump(exclude={"updated_at"})
                )
            for message in (await session.execute(select(Message))).scalars():
                outcome.messages[message.send_key] = _comparable(
                    message.model_dump(
                        include={
                            "customer_id",
                            "workflow_id",
                            "lifecycle",
                            "automation",
                            "step",
                            "template",
                            "to",
                            "subject",
                            "status",
                            "error",
                            "subscription_id",
                        }
                    )
                )
            for conversion in (await session.execute(select(Conversion))).scalars():
                # One payment is two events a second apart (`invoice.paid` and
                # `invoice.payment_succeeded`), and converts once: on whichever arrives
                # first. So a conversion is compared by what it is about, not by the id
                # and second of the event that happened to bring it.
                about = conversion.invoice_id or conversion.subscription_id
                key = f"{conversion.workflow_id}/{conversion.kind}/{about}"
                outcome.conversions[key] = _comparable(
                    conversion.model_dump(
                        exclude={
                            "id",
                            "message_id",
                            "recorded_at",
                            "stripe_event_id",
                            "occurred_at",
                        }
                    )
                )
            for instance in (await session.execute(select(LifecycleInstance))).scalars():
                # Its MRR is the customer's as known when it started, or, for a failed
                # payment arriving before the first event of its subscription, as that
                # event shows it, which out of order can be a later state.
                outcome.instances[instance.workflow_id] = _comparable(
                    instance.model_dump(exclude={"started_at", "mrr_cents", "currency"})
                )
        return outcome


def _comparable(row: dict[str, Any]) -> dict[str, Any]:
    """A row as plain JSON values (timestamps as ISO text), for equality and printing."""
    value: dict[str, Any] = json.loads(json.dumps(row, default=_iso, sort_keys=True))
    return value


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, timedelta):
        return str(value.total_seconds())
    raise TypeError(f"{type(value).__name__} is not JSON")
