"""Historical sync benchmark: a computed Stripe account listed from the local Stripe server
under a per-endpoint rate limit, into the customer workflows, against the least time the
rate limits allow; then the webhook path of the events that made (part of) that account.

    make bench-sync                 # or: .venv/bin/python -m bench.sync --customers 5000

Starts the local Stripe server of tests/fakes.py serving bench/stripe_synthetic.py's
account (one subscription, one card and a year of monthly invoices and charges per
customer), each endpoint admitting --endpoint-rate requests/s and answering 429 past it;
its own Temporal dev server (SQLite, WAL) and one `lifecycle worker` process, whose Stripe
reads Temporal caps at --read-rate/s; the database on PostgreSQL at 127.0.0.1:5432 (a
throwaway database) unless --sqlite is given. Prints:
- the bound: the least listing time the two limits allow, as customers/s,
- listing, delivery (to the customer workflows) and whole-sync times; customers/s over
  the listing, over the whole sync and until the customer workflows have absorbed it all
  (end to end) as ratios of the bound,
- requests served and over the limit per endpoint (target 0), the 429s the sync counted,
- whether the customers table reached the account's totals (count, LTV, statuses),
- the worker's RSS (peak and at the end, its children included),
- webhooks: the events that created --webhook-customers customers' data (one per object
  the sync read) signed through a `lifecycle api` process: acks/s, ack p50/p99,
  delivered/s and applied/s, customers/s as a ratio of the sync's; API and worker RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sqlite3
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import asyncpg
from temporalio.client import Client, WorkflowExecutionStatus

from bench.harness import (
    MIB,
    RssSampler,
    Stack,
    closed_loop,
    dev_stack,
    latency,
    run_benchmark,
    wait_http,
    wait_polling,
)
from bench.ingest import SECRET, wait_delivered
from bench.stripe_synthetic import SyncTotals, SyntheticAccount
from bench.webhooks import WebhookSender
from stripe_lifecycle.domain import contract, ids
from stripe_lifecycle.domain.sync import PAGE_SIZE, RESOURCES
from stripe_lifecycle.sync_control import start_sync, sync_status
from stripe_lifecycle.workflows.sync import StripeSyncWorkflow, SyncProgress
from tests.fakes import STRIPE_API_KEY, StripeHttpServer, StripeState, serving

API_VERSION = "2025-03-31.basil"
# The webhook sample's customers get ids of their own, so their events reach workflows the
# sync did not fill (the sync's are `cus_syn...`).
WEBHOOK_PREFIX = "cus_whk"
POLL_SECONDS = 0.25
PROGRESS_SECONDS = 10.0


@dataclass(frozen=True)
class Bound:
    """The least listing time the per-endpoint limit and the reads cap allow."""

    pages: dict[str, int]
    seconds: float
    customers_per_second: float


def listing_bound(account: SyntheticAccount, endpoint_rate: float, read_rate: float) -> Bound:
    objects = {
        "customers": account.customers,
        "subscriptions": account.customers,
        "invoices": account.customers * account.invoices_per_customer,
        "charges": account.customers * account.invoices_per_customer,
    }
    # A list that is empty still costs its one request.
    pages = {r: max(1, math.ceil(n / PAGE_SIZE)) for r, n in objects.items()}
    # Every list the sync reads, so that none is left out of the bound.
    assert set(pages) == {str(r) for r in RESOURCES}
    # The sync first reads the account (its creation date, for the estimates).
    pages["account"] = 1
    seconds = max(sum(pages.values()) / read_rate, max(pages.values()) / endpoint_rate)
    return Bound(pages, seconds, account.customers / seconds)


async def fetch(database_url: str, query: str) -> list[tuple[Any, ...]]:
    if database_url.startswith("postgresql"):
        conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            return [tuple(row) for row in await conn.fetch(query)]
        finally:
            await conn.close()
    with sqlite3.connect(database_url.split("///", 1)[1]) as db:
        return list(db.execute(query).fetchall())


@dataclass(frozen=True)
class Totals:
    """What the customers table holds for the customers whose ids start with a prefix."""

    customers: int
    ltv_cents: int
    statuses: dict[str, int]
    events_applied: int

    def reaches(self, expected: Totals) -> bool:
        """The customers, LTV and statuses expected, with at least the events applied."""
        return (self.customers, self.ltv_cents, self.statuses) == (
            expected.customers,
            expected.ltv_cents,
            expected.statuses,
        ) and self.events_applied >= expected.events_applied

    def describe(self) -> str:
        statuses = ", ".join(f"{s} {n:,}" for s, n in sorted(self.statuses.items()))
        return (
            f"{self.customers:,} customers, LTV {self.ltv_cents:,} cents, {statuses}; "
            f"{self.events_applied:,} events applied"
        )


def verdict(found: Totals, expected: Totals) -> str:
    return "matches" if found.reaches(expected) else "DOES NOT match"


async def table_totals(database_url: str, prefix: str) -> Totals:
    where = f"WHERE customer_id LIKE '{prefix}%'"
    rows = await fetch(
        database_url,
        "SELECT status, count(*), coalesce(sum(ltv_cents), 0), "
        f"coalesce(sum(snapshot_version), 0) FROM customers {where} GROUP BY status",
    )
    return Totals(
        customers=sum(int(r[1]) for r in rows),
        ltv_cents=sum(int(r[2]) for r in rows),
        statuses={str(r[0]): int(r[1]) for r in rows},
        events_applied=sum(int(r[3]) for r in rows),
    )


async def wait_totals(
    database_url: str, prefix: str, expected: Totals, timeout: float
) -> tuple[Totals, float]:
    """Until the customer workflows have persisted `expected` (events applied at least),
    or `timeout`; returns what the table holds and when it was read (perf_counter)."""
    started = time.perf_counter()
    next_report = started + PROGRESS_SECONDS
    while True:
        found = await table_totals(database_url, prefix)
        now = time.perf_counter()
        if found.reaches(expected) or now > started + timeout:
            return found, now
        if now >= next_report:
            print(
                f"  [{now - started:6.0f}s] absorbing: {found.customers:,} customers, "
                f"{found.events_applied:,} of {expected.events_applied:,} events applied",
                flush=True,
            )
            next_report += PROGRESS_SECONDS
        await asyncio.sleep(0.5)


def progress_line(elapsed: float, progress: SyncProgress | None, worker: RssSampler) -> str:
    if progress is None:
        return f"  [{elapsed:6.0f}s] not started"
    read = ", ".join(f"{r.resource} {r.read:,}" for r in progress.resources)
    return (
        f"  [{elapsed:6.0f}s] {progress.state}: {read}; delivered "
        f"{progress.customers_delivered:,} customers; 429s {progress.rate_limited}; "
        f"worker RSS {worker.last_kib / MIB:.0f} MiB"
    )


# --- the webhook path ------------------------------------------------------------------


def envelope(event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"evt_bench_{uuid.uuid4().hex}",
        "object": "event",
        "api_version": API_VERSION,
        "created": obj["created"],
        "livemode": False,
        "type": event_type,
        "data": {"object": obj},
    }


def creating_events(account: SyntheticAccount, i: int) -> list[dict[str, Any]]:
    """The events Stripe sent as customer `i`'s data came to be, one per object the sync
    read: the customer, its card, its subscription, each invoice and each charge."""
    payment_method = account.payment_method(f"pm_syn{i:06d}")
    assert payment_method is not None
    events = [
        envelope("customer.created", account.customer(i)),
        envelope("payment_method.attached", payment_method),
        envelope("customer.subscription.created", account.subscription(i)),
    ]
    for m in range(account.invoices_per_customer):
        invoice = account.invoice(i, m)
        charge = account.charge(i, m)
        paid = invoice["status"] == "paid"
        events.append(envelope("invoice.paid" if paid else "invoice.payment_failed", invoice))
        if charge["amount_refunded"]:
            charge_event = "charge.refunded"
        else:
            charge_event = "charge.succeeded" if charge["paid"] else "charge.failed"
        events.append(envelope(charge_event, charge))
    return events


def webhook_sample(account: SyntheticAccount, customers: int) -> tuple[list[bytes], Totals]:
    """The bodies (signed as they are sent) of `customers` customers' creating events,
    oldest first, and the totals their workflows must reach."""
    events: list[dict[str, Any]] = []
    ltv = 0
    statuses: dict[str, int] = {}
    for i in range(customers):
        mine = creating_events(account, i)
        events += mine
        objects = [e["data"]["object"] for e in mine]
        ltv += sum(o["amount_paid"] for o in objects if o["object"] == "invoice")
        ltv -= sum(o["amount_refunded"] for o in objects if o["object"] == "charge")
        status = account.subscription(i)["status"]
        statuses[status] = statuses.get(status, 0) + 1
    # Stripe sends them as they happen: every customer's first events before anyone's
    # later ones, which also spreads each customer's events over the concurrent senders.
    events.sort(key=lambda e: e["created"])
    bodies = [json.dumps(e).replace('"cus_syn', f'"{WEBHOOK_PREFIX}').encode() for e in events]
    return bodies, Totals(customers, ltv, statuses, len(bodies))


# --- the run ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncFigures:
    progress: SyncProgress
    listing_seconds: float
    sync_seconds: float
    # Until the customers table held the account's totals (or the wait gave up).
    absorbed_seconds: float
    expected: Totals
    found: Totals


async def run_sync(
    client: Client,
    task_queue: str,
    database_url: str,
    expected: SyncTotals,
    bound: Bound,
    stripe_api: StripeHttpServer,
    worker_rss: RssSampler,
    settle_timeout: float,
) -> SyncFigures:
    started = time.perf_counter()
    await start_sync(client, task_queue, account=None, start_lifecycles=False)
    handle = client.get_workflow_handle_for(StripeSyncWorkflow.run, ids.sync_workflow_id(None))
    list_pages = sum(n for r, n in bound.pages.items() if r != "account")
    listed_at: float | None = None
    next_report = started + PROGRESS_SECONDS
    # Watched through the server and the local Stripe; the progress lines read the sync's
    # memo (`sync_status`), which asks nothing of the worker that is being measured.
    while (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
        now = time.perf_counter()
        if listed_at is None and list_requests(stripe_api) >= list_pages:
            listed_at = now
        if now >= next_report:
            status = await sync_status(client, None)
            progress = status.progress if status is not None else None
            print(progress_line(now - started, progress, worker_rss), flush=True)
            next_report += PROGRESS_SECONDS
        await asyncio.sleep(POLL_SECONDS)
    finished = time.perf_counter()
    status = await sync_status(client, None)
    if status is None or status.status != "completed" or status.progress is None:
        raise RuntimeError(f"the sync did not complete: {status}")
    progress = status.progress
    target = Totals(
        customers=expected.customers,
        ltv_cents=expected.ltv["usd"],
        statuses=expected.subscriptions_by_status,
        events_applied=progress.events_delivered,
    )
    found, absorbed = await wait_totals(database_url, "cus_syn", target, settle_timeout)
    return SyncFigures(
        progress=progress,
        listing_seconds=(listed_at or finished) - started,
        sync_seconds=finished - started,
        absorbed_seconds=absorbed - started,
        expected=target,
        found=found,
    )


def report_sync(
    figures: SyncFigures, bound: Bound, account: SyntheticAccount, stripe_api: StripeHttpServer
) -> None:
    progress = figures.progress
    customers = account.customers
    listing_rate = customers / figures.listing_seconds
    sync_rate = customers / figures.sync_seconds
    read = sum(r.read for r in progress.resources)
    pages = ", ".join(f"{r} {n:,}" for r, n in bound.pages.items())
    print(
        f"bound:                 {sum(bound.pages.values()):,} requests ({pages}) "
        f"in {bound.seconds:.1f}s = {bound.customers_per_second:8.1f} customers/s"
    )
    print(
        f"listing:               {figures.listing_seconds:8.1f}s = {listing_rate:8.1f} customers/s"
        f"  = {listing_rate / bound.customers_per_second:.2f}x bound"
        f" ({read:,} objects, {read / figures.listing_seconds:.0f}/s)"
    )
    print(
        f"delivery:              {figures.sync_seconds - figures.listing_seconds:8.1f}s "
        f"({progress.customers_delivered:,} customers, {progress.events_delivered:,} events, "
        f"{progress.runs} runs)"
    )
    print(
        f"whole sync:            {figures.sync_seconds:8.1f}s = {sync_rate:8.1f} customers/s"
        f"  = {sync_rate / bound.customers_per_second:.2f}x bound"
    )
    absorbed_rate = customers / figures.absorbed_seconds
    print(
        f"absorbed:              {figures.absorbed_seconds:8.1f}s = {absorbed_rate:8.1f} "
        f"customers/s  = {absorbed_rate / bound.customers_per_second:.2f}x bound: the "
        f"customers table {verdict(figures.found, figures.expected)} the account's totals"
    )
    print(f"  expected:            {figures.expected.describe()}")
    print(f"  found:               {figures.found.describe()}")
    over_limit = report_requests(stripe_api, Counter(), Counter())
    print(
        f"over the limit:        {over_limit} answered 429 (target 0); "
        f"the sync counted {progress.rate_limited} 429s"
    )


def list_requests(stripe_api: StripeHttpServer) -> int:
    """List pages the local Stripe has answered so far."""
    served, _ = stripe_counts(stripe_api)
    return sum(served[f"/v1/{r}"] for r in RESOURCES)


def stripe_counts(stripe_api: StripeHttpServer) -> tuple[Counter[str], Counter[str]]:
    """Requests served and answered 429 so far, per endpoint."""
    with stripe_api.lock:
        return Counter(stripe_api.state.served), Counter(stripe_api.state.over_limit)


def report_requests(
    stripe_api: StripeHttpServer, served_before: Counter[str], over_before: Counter[str]
) -> int:
    """Print the requests each endpoint served since the counts given; returns the 429s."""
    served, over_limit = stripe_counts(stripe_api)
    served -= served_before
    over_limit -= over_before
    per_endpoint = ", ".join(
        f"{path} {n:,} ({over_limit[path]} over)" for path, n in sorted(served.items())
    )
    print(f"stripe requests:       {per_endpoint}")
    return sum(over_limit.values())


async def run_webhooks(
    args: argparse.Namespace,
    account: SyntheticAccount,
    database_url: str,
    api_port: int,
    sync: SyncFigures,
    stripe_api: StripeHttpServer,
) -> None:
    customers = min(args.webhook_customers, account.customers)
    bodies, target = webhook_sample(account, customers)
    served_before, over_before = stripe_counts(stripe_api)
    sender = WebhookSender(api_port, SECRET)
    try:
        started = time.perf_counter()
        ack_seconds, acks = await closed_loop(bodies, args.concurrency, sender.post)
        await wait_delivered(database_url)
        delivered_seconds = time.perf_counter() - started
        found, absorbed = await wait_totals(
            database_url, WEBHOOK_PREFIX, target, args.settle_timeout
        )
    finally:
        await sender.close()
    applied_seconds = absorbed - started
    events = len(bodies)
    applied_rate = events / applied_seconds
    sync_events_rate = sync.progress.events_delivered / sync.absorbed_seconds
    customers_rate = customers / applied_seconds
    sync_customers_rate = account.customers / sync.absorbed_seconds
    print(
        f"webhooks:              {events:,} events creating {customers:,} customers' data "
        f"(customer, card, subscription, {account.invoices_per_customer} invoices and "
        f"charges each), concurrency {args.concurrency}"
    )
    print(f"acked:                 {events / ack_seconds:8.1f} events/s, ack {latency(acks)}")
    print(
        f"delivered:             {events / delivered_seconds:8.1f} events/s "
        f"({delivered_seconds:.1f}s)"
    )
    print(
        f"applied:               {applied_rate:8.1f} events/s  = "
        f"{applied_rate / sync_events_rate:.2f}x the sync's {sync_events_rate:.1f} backfill "
        f"events/s (start to absorbed)"
    )
    print(
        f"customers:             {customers_rate:8.1f} customers/s = "
        f"{customers_rate / sync_customers_rate:.2f}x the sync's {sync_customers_rate:.1f} "
        "(start to absorbed)"
    )
    print(f"absorbed:              the customers table {verdict(found, target)} the sample's")
    print(f"  expected:            {target.describe()}")
    print(f"  found:               {found.describe()}")
    # What the customer workflows read from Stripe while applying the webhooks (the
    # backfill's events read nothing).
    over_limit = report_requests(stripe_api, served_before, over_before)
    print(f"over the limit:        {over_limit} answered 429 (target 0)")


async def main(args: argparse.Namespace) -> None:
    account = SyntheticAccount(
        customers=args.customers, invoices_per_customer=args.invoices_per_customer
    )
    expected = account.expected()
    bound = listing_bound(account, args.endpoint_rate, args.read_rate)
    stripe_state = StripeState(synthetic=account, endpoint_rate=args.endpoint_rate)
    with serving(StripeHttpServer(stripe_state)) as stripe_api:
        settings = {
            "LIFECYCLE_STRIPE_WEBHOOK_SECRET": SECRET,
            "LIFECYCLE_STRIPE_API_KEY": STRIPE_API_KEY,
            "LIFECYCLE_STRIPE_API_BASE": stripe_api.url,
            "LIFECYCLE_STRIPE_READ_RATE": str(args.read_rate),
        }
        async with dev_stack("sync", postgres=not args.sqlite, settings=settings) as stack:
            await run(args, account, expected, bound, stripe_api, stack)


async def run(
    args: argparse.Namespace,
    account: SyntheticAccount,
    expected: SyncTotals,
    bound: Bound,
    stripe_api: StripeHttpServer,
    stack: Stack,
) -> None:
    client, task_queue, database_url = stack.client, stack.task_queue, stack.database_url
    worker = stack.spawn("worker")
    queues = [task_queue, contract.stripe_reads_queue(task_queue)]
    await wait_polling(client, queues, worker)
    print(
        f"bench: sync of {account.customers:,} customers ({account.invoices_per_customer}"
        f" invoices each) from the local Stripe at {args.endpoint_rate:g} requests/s "
        f"per endpoint, reads capped at {args.read_rate:g}/s, {stack.describe()}",
        flush=True,
    )
    with RssSampler(worker.pid) as worker_rss:
        figures = await run_sync(
            client,
            task_queue,
            database_url,
            expected,
            bound,
            stripe_api,
            worker_rss,
            args.settle_timeout,
        )
    report_sync(figures, bound, account, stripe_api)
    print(f"worker RSS:            {worker_rss.describe()}", flush=True)
    if args.skip_webhooks:
        return
    api = stack.spawn("api")
    await wait_http(f"http://127.0.0.1:{stack.env['LIFECYCLE_API_PORT']}/readyz", api)
    with RssSampler(worker.pid) as worker_rss, RssSampler(api.pid) as api_rss:
        await run_webhooks(
            args, account, database_url, int(stack.env["LIFECYCLE_API_PORT"]), figures, stripe_api
        )
    print(f"API RSS:               {api_rss.describe()}")
    print(f"worker RSS (webhooks): {worker_rss.describe()}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--invoices-per-customer", type=int, default=12)
    parser.add_argument(
        "--endpoint-rate", type=float, default=25.0, help="the local Stripe's requests/s limit"
    )
    parser.add_argument(
        "--read-rate", type=float, default=25.0, help="LIFECYCLE_STRIPE_READ_RATE of the worker"
    )
    parser.add_argument(
        "--sqlite", action="store_true", help="database on SQLite instead of PostgreSQL"
    )
    parser.add_argument("--skip-webhooks", action="store_true")
    parser.add_argument(
        "--webhook-customers",
        type=int,
        default=2000,
        help="customers whose creating events go through the webhook path",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="webhooks in flight")
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=1800.0,
        help="seconds to wait for the customers table to reach the totals",
    )
    return parser.parse_args()


if __name__ == "__main__":
    run_benchmark(main(parse_args()))
