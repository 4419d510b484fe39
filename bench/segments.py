"""Segments benchmark: membership of 50,000 synthetic customers in 20 segments, evaluated
incrementally (one customer per change) and swept for the segments that turn with time.

    make bench-segments            # or: .venv/bin/python -m bench.segments --customers 2000

Builds 20 segments (a YAML text, parsed as a segments file is) over plans, statuses, MRR
and LTV per currency, seat usage, metadata, usage metrics and running lifecycles, four of
them with time conditions; and the customers' billing snapshots from a seeded RNG, whose
facts come from `billing_facts` as in the customer workflow. Usage and clicks go into the
database, where the evaluating activity reads them. The database is a throwaway one on
PostgreSQL at 127.0.0.1:5432; the sweep signals through its own Temporal dev server.
Every activity runs in this process as a real activity (`ActivityEnvironment`). Prints:
- seeding: the customers evaluated through `evaluate_segments` (first sight) and its
  rate; the rest written in bulk with the same rows `evaluate` gives (faster);
- incremental: --changes customers each change one fact (a plan change or a usage report)
  and are evaluated again through `evaluate_segments`: p50/p99 and changes/s, against the
  cost of one change in a design without incremental evaluation (every customer's every
  segment evaluated again, pure `evaluate` in this process: a lower bound on that design);
- sweep: `sweep_segments` a day later over the stored facts: customers checked/s, the
  customers it signalled against those `evaluate` says turn, and its time against a pure
  loop over all segments of all customers (what a sweep not limited to time segments would
  spend on evaluation alone);
- the process's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update
from sqlmodel import col
from temporalio.client import (
    Client,
    Interceptor,
    OutboundInterceptor,
    SignalWorkflowInput,
)
from temporalio.testing import ActivityEnvironment

from bench.harness import create_pg_database, free_port, latency, tear_down
from stripe_lifecycle.activities.interface import EvaluateSegments, SweepRequest
from stripe_lifecycle.activities.segments import (
    SWEEP_PAGE,
    SegmentActivities,
    SegmentSweepActivities,
)
from stripe_lifecycle.domain import ids
from stripe_lifecycle.domain.events import SubscriptionInfo, SubscriptionItemInfo
from stripe_lifecycle.domain.ledger import BillingSnapshot, SubscriptionState
from stripe_lifecycle.domain.segments import (
    DAY,
    Facts,
    Segment,
    SegmentsConfig,
    billing_facts,
    evaluate,
    parse_segments,
    why_changed,
)
from stripe_lifecycle.storage.db import SessionMaker, create_engine, create_sessionmaker
from stripe_lifecycle.storage.migrate import upgrade
from stripe_lifecycle.storage.models import (
    CustomerSegmentFacts,
    CustomerUsage,
    Message,
    MessageClick,
    SegmentChange,
    SegmentEvent,
    SegmentMember,
)
from stripe_lifecycle.storage.segments import record_usage
from stripe_lifecycle.temporal_setup import start_dev_server, wait_for_server

# A fixed clock: the same seed gives the same customers, memberships and turns every run.
T0 = int(datetime(2026, 6, 1, tzinfo=UTC).timestamp())
# The incremental changes come an hour after the seed, the sweep a day after it.
CHANGES_AT = T0 + 3600
SWEEP_AT = T0 + DAY
INSERT_CHUNK = 5000
MIB = 1024
# Workflows the sweep may signal are started on a queue no worker polls: a signal to them
# is recorded by the server and nothing runs.
IDLE_QUEUE = "bench-segments-idle"
IDLE_WORKFLOW = "BenchSegmentsCustomer"

SEGMENTS_YAML = """
seat_usage:
  limit_metadata_key: seats
  used: quantity

segments:
  - name: starter-3-months
    description: Starter customers active for 3 months or more
    where:
      all:
        - {field: plan, in: [Starter]}
        - {field: status, eq: active}
        - {field: subscription_age_days, gte: 90}
  - name: seats-near-limit
    description: Active customers using 90% or more of their plan's seats
    where:
      all:
        - {field: status, eq: active}
        - {field: seat_usage, gte: 0.9}
  - name: high-ltv
    description: Customers who have paid 1,000 or more in dollars, euros or pounds
    where:
      any:
        - {field: ltv_cents, currency: usd, gte: 100000}
        - {field: ltv_cents, currency: eur, gte: 100000}
        - {field: ltv_cents, currency: gbp, gte: 100000}
  - name: trialing
    description: Customers on a trial
    where: {field: status, eq: trialing}
  - name: past-due
    description: Customers whose latest payment failed
    where: {field: status, in: [past_due, unpaid]}
  - name: heavy-free-users
    description: Customers without a paid plan who use the product heavily
    where:
      all:
        - any:
            - {field: status, in: [none, canceled, incomplete_expired]}
            - all:
                - {field: status, eq: active}
                - {field: mrr_cents, eq: 0}
        - {field: usage.seats_used, gte: 3}
  - name: engaged
    description: Customers who clicked a link in one of our emails in the last 14 days
    where: {field: clicked_within_days, lt: 14}
  - name: new-customers
    description: Customers for less than 30 days
    where: {field: customer_age_days, lt: 30}
  - name: stale-plan
    description: Active customers below Enterprise on the same plan for a year or more
    where:
      all:
        - {field: status, eq: active}
        - {field: days_on_plan, gte: 365}
        - not: {field: plan, eq: Enterprise}
  - name: annual
    description: Customers billed yearly
    where:
      all:
        - {field: status, in: [active, past_due]}
        - {field: interval, eq: year}
  - name: pro-monthly
    description: Pro customers billed monthly
    where:
      all:
        - {field: plan, eq: Pro}
        - {field: interval, eq: month}
  - name: enterprise
    description: Enterprise customers, whatever their status
    where: {field: product, eq: prod_enterprise}
  - name: high-mrr-usd
    description: Paying 500 dollars a month or more
    where: {field: mrr_cents, currency: usd, gte: 50000}
  - name: mid-market
    description: MRR between 100 and 500 in the customer's own currency
    where: {field: mrr_cents, between: [10000, 50000]}
  - name: europe
    description: Billed in euros or pounds
    where: {field: currency, in: [eur, gbp]}
  - name: churned
    description: Customers whose subscription was canceled
    where: {field: status, eq: canceled}
  - name: in-dunning
    description: Customers a dunning lifecycle is running for
    where: {field: in_lifecycle, eq: dunning}
  - name: partner-referred
    description: Customers a partner brought, with a region set
    where:
      all:
        - {field: metadata.source, eq: partner}
        - {field: metadata.region, exists: true}
  - name: big-teams
    description: Twenty seats or more, or twenty active users reported
    where:
      any:
        - {field: quantity, gte: 20}
        - {field: usage.seats_used, gte: 20}
  - name: api-heavy
    description: Not on Enterprise with 100,000 API calls or more this month
    where:
      all:
        - {field: usage.api_calls, gte: 100000}
        - {field: plan, not_in: [Enterprise]}
"""


@dataclass(frozen=True)
class Plan:
    name: str
    product: str
    unit_cents: int  # per seat and month
    seats: int  # the limit kept in the price's metadata
    upgrade: str | None


PLANS = {
    "Starter": Plan("Starter", "prod_starter", 1500, 3, "Pro"),
    "Pro": Plan("Pro", "prod_pro", 4900, 10, "Business"),
    "Business": Plan("Business", "prod_business", 9900, 25, "Enterprise"),
    "Enterprise": Plan("Enterprise", "prod_enterprise", 19900, 100, None),
}
PLAN_WEIGHTS = {"Starter": 40, "Pro": 30, "Business": 15, "Enterprise": 5, None: 10}
CURRENCIES = {"usd": 60, "eur": 25, "gbp": 15}
STATUSES = {"active": 70, "trialing": 8, "past_due": 6, "canceled": 10, "unpaid": 2, "paused": 4}
SOURCES = {"organic": 60, "ads": 25, "partner": 15}


def pick(rng: random.Random, weights: dict[Any, int]) -> Any:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


@dataclass
class Customer:
    """A synthetic customer: the snapshot its workflow would hold, the lifecycles running
    for it, and what the database holds (usage, the last click)."""

    id: str
    snapshot: BillingSnapshot
    lifecycles: list[str]
    usage: dict[str, int]
    last_click_at: int | None
    # The full facts (billing, usage, last click) and when they were last evaluated.
    facts: Facts = field(default_factory=dict)
    evaluated_at: int = T0
    segments: list[str] = field(default_factory=list)


def subscription(
    customer_id: str,
    plan: Plan,
    currency: str,
    status: str,
    interval: str,
    quantity: int,
    started: int,
    plan_since: int,
) -> SubscriptionState:
    """One subscription of one licensed item, its seat limit in the price's metadata."""
    monthly = plan.unit_cents * quantity
    mrr = 0 if status in ("canceled", "trialing", "paused") else monthly
    price = f"price_{plan.name.lower()}_{interval}_{currency}"
    item = SubscriptionItemInfo(
        id=f"si_{customer_id}",
        price_id=price,
        product_id=plan.product,
        nickname=plan.name,
        unit_amount=plan.unit_cents * (12 if interval == "year" else 1),
        currency=currency,
        interval=interval,
        quantity=quantity,
        mrr_cents=mrr,
        price_metadata={"seats": str(plan.seats)},
    )
    info = SubscriptionInfo(
        id=f"sub_{customer_id}",
        customer_id=customer_id,
        status=status,
        currency=currency,
        created=started,
        items=[item],
        mrr_cents=mrr,
    )
    return SubscriptionState(
        id=info.id,
        status=status,
        plan=plan.name,
        price_id=price,
        product_id=plan.product,
        interval=interval,
        quantity=quantity,
        mrr_cents=mrr,
        currency=currency,
        current_period_end=T0 + 15 * DAY,
        trial_end=None,
        cancel_at_period_end=False,
        version=1,
        billing_periods=[interval],
        subscription=info,
        started=started,
        plan_since=plan_since,
    )


def synthetic_customer(rng: random.Random, n: int) -> Customer:
    customer_id = f"cus_seg{n:06d}"
    currency = pick(rng, CURRENCIES)
    # Ages in seconds, not whole days: a day later, the customers within a day of a
    # threshold cross it.
    since = T0 - rng.randint(0, 1500 * DAY)
    plan_name = pick(rng, PLAN_WEIGHTS)
    subscriptions: dict[str, SubscriptionState] = {}
    ltv = mrr = 0
    lifecycles: list[str] = []
    if plan_name is not None:
        plan = PLANS[plan_name]
        status = pick(rng, STATUSES)
        interval = "year" if rng.random() < 0.25 else "month"
        quantity = max(1, min(plan.seats + 5, round(rng.gauss(plan.seats * 0.6, plan.seats / 3))))
        started = rng.randint(since, T0)
        plan_since = rng.randint(started, T0)
        sub = subscription(
            customer_id, plan, currency, status, interval, quantity, started, plan_since
        )
        subscriptions[sub.id] = sub
        mrr = sub.mrr_cents
        months = (T0 - started) // (30 * DAY)
        ltv = plan.unit_cents * quantity * months
        if status in ("past_due", "unpaid"):
            lifecycles.append("dunning")
        elif status == "trialing" and rng.random() < 0.8:
            lifecycles.append("trial")
        elif rng.random() < 0.03:
            lifecycles.append("card_expiring")
    status_now = next(iter(subscriptions.values())).status if subscriptions else "none"
    metadata = {"source": pick(rng, SOURCES)}
    if rng.random() < 0.7:
        metadata["region"] = rng.choice(["na", "emea", "apac"])
    snapshot = BillingSnapshot(
        customer_id=customer_id,
        status=status_now or "none",
        plan=plan_name,
        mrr_cents=mrr,
        currency=currency,
        ltv_cents=ltv,
        customer_since=since,
        subscriptions=subscriptions,
        metadata=metadata,
        mrr={currency: mrr} if mrr else {},
        ltv={currency: ltv} if ltv else {},
    )
    usage: dict[str, int] = {}
    if rng.random() < 0.5:
        usage["seats_used"] = rng.randint(0, 30)
        usage["api_calls"] = int(rng.expovariate(1 / 30_000))
    clicked = T0 - rng.randint(0, 90 * DAY) if rng.random() < 0.2 else None
    return Customer(customer_id, snapshot, lifecycles, usage, clicked)


def full_facts(customer: Customer) -> Facts:
    """What the evaluating activity evaluates: the workflow's billing facts with the usage
    and last click the database holds."""
    return {
        **billing_facts(customer.snapshot, customer.lifecycles),
        "usage": dict(customer.usage),
        "last_click_at": customer.last_click_at,
    }


def members(config: SegmentsConfig, facts: Facts, at: int) -> list[str]:
    return [s.name for s in config.segments if evaluate(s, facts, at, config.seats)]


def aware(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def activities(
    sessionmaker: SessionMaker, config: SegmentsConfig, client: Client | None = None
) -> tuple[SegmentActivities, SegmentSweepActivities | None]:
    evaluator = SegmentActivities(sessionmaker, config, [])
    sweeper = None if client is None else SegmentSweepActivities(client, sessionmaker, config, [])
    return evaluator, sweeper


# --- seeding -------------------------------------------------------------------------


async def seed_db_inputs(sessionmaker: SessionMaker, customers: Sequence[Customer]) -> None:
    """What only the database knows and the activity reads: reported usage, and one
    clicked message for each customer who clicked."""
    usage: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    clicks: list[dict[str, Any]] = []
    for c in customers:
        usage += [
            {"customer_id": c.id, "metric": m, "value": v, "reported_at": aware(T0)}
            for m, v in c.usage.items()
        ]
        if c.last_click_at is not None:
            message_id = str(uuid.uuid5(uuid.NAMESPACE_URL, c.id))
            messages.append(
                {
                    "id": message_id,
                    "send_key": f"customer-{c.id}/bench",
                    "customer_id": c.id,
                    "workflow_id": f"winback-{c.id}",
                    "lifecycle": "winback",
                    "automation": "winback",
                    "step": "first",
                    "template": "winback/first",
                    "to": f"{c.id}@example.com",
                    "subject": "We miss you",
                    "status": "sent",
                    "created_at": aware(c.last_click_at - 3600),
                    "sent_at": aware(c.last_click_at - 3600),
                    "html": "",
                    "text": "",
                    "links": ["return"],
                    "destinations": {"return": "https://example.com/"},
                    "transport": "outbox",
                }
            )
            clicks.append(
                {"message_id": message_id, "link": "return", "clicked_at": aware(c.last_click_at)}
            )
    await bulk_insert(sessionmaker, CustomerUsage, usage)
    await bulk_insert(sessionmaker, Message, messages)
    await bulk_insert(sessionmaker, MessageClick, clicks)


async def bulk_insert(sessionmaker: SessionMaker, model: Any, rows: list[dict[str, Any]]) -> None:
    async with sessionmaker() as session:
        for start in range(0, len(rows), INSERT_CHUNK):
            await session.execute(insert(model), rows[start : start + INSERT_CHUNK])
        await session.commit()


def first_request(customer: Customer) -> EvaluateSegments:
    return EvaluateSegments(
        customer_id=customer.id,
        facts=billing_facts(customer.snapshot, customer.lifecycles),
        now=aware(T0),
    )


async def seed_through_activity(
    evaluator: SegmentActivities, customers: Sequence[Customer], concurrency: int
) -> float:
    """Each customer's first evaluation through the real activity; seconds taken."""
    env = ActivityEnvironment()
    queue = list(customers)
    started = time.perf_counter()

    total = len(queue)

    async def runner() -> None:
        while queue:
            customer = queue.pop()
            result = await env.run(evaluator.evaluate_segments, first_request(customer))
            customer.segments = result.segments

    async def progress() -> None:
        # The seed takes minutes at the default size: say how far it is.
        while queue:
            await asyncio.sleep(10)
            done = total - len(queue)
            print(f"  seeding: {done:,} / {total:,} customers evaluated", flush=True)

    reporter = asyncio.create_task(progress())
    await asyncio.gather(*(runner() for _ in range(concurrency)))
    reporter.cancel()
    return time.perf_counter() - started


async def seed_in_bulk(
    sessionmaker: SessionMaker, config: SegmentsConfig, customers: Sequence[Customer]
) -> float:
    """The rows a first evaluation through the activity writes, computed with `evaluate`
    and `why_changed` and inserted in bulk; seconds taken."""
    started = time.perf_counter()
    facts_rows: list[dict[str, Any]] = []
    member_rows: list[dict[str, Any]] = []
    event_rows: list[dict[str, Any]] = []
    at = aware(T0)
    for c in customers:
        c.segments = members(config, c.facts, T0)
        facts_rows.append(
            {"customer_id": c.id, "facts": c.facts, "segments": c.segments, "evaluated_at": at}
        )
        created = c.facts.get("customer_created")
        # As the activity decides it: old customers were in their segments before anyone
        # looked; a customer created within a day entered them just now.
        initial = not (isinstance(created, int) and T0 - created <= DAY)
        for name in c.segments:
            segment = config.get(name)
            assert segment is not None
            member_rows.append({"segment": name, "customer_id": c.id, "entered_at": at})
            event_rows.append(
                {
                    "customer_id": c.id,
                    "segment": name,
                    "change": SegmentChange.ENTERED,
                    "at": at,
                    "reason": why_changed(segment, None, None, c.facts, T0, config.seats)[:2000],
                    "initial": initial,
                }
            )
    await bulk_insert(sessionmaker, CustomerSegmentFacts, facts_rows)
    await bulk_insert(sessionmaker, SegmentMember, member_rows)
    await bulk_insert(sessionmaker, SegmentEvent, event_rows)
    return time.perf_counter() - started


async def stored_rows(
    sessionmaker: SessionMaker, customer_ids: list[str]
) -> dict[str, CustomerSegmentFacts]:
    found: dict[str, CustomerSegmentFacts] = {}
    async with sessionmaker() as session:
        for start in range(0, len(customer_ids), INSERT_CHUNK):
            chunk = customer_ids[start : start + INSERT_CHUNK]
            rows = await session.execute(
                select(CustomerSegmentFacts).where(col(CustomerSegmentFacts.customer_id).in_(chunk))
            )
            found.update((r.customer_id, r) for r in rows.scalars())
    return found


# --- incremental ---------------------------------------------------------------------


def change_plan(customer: Customer) -> str:
    """Up a plan (Enterprise customers and those with no plan: a seat more or a first
    Starter subscription), as the customer workflow's snapshot would show it."""
    snapshot = customer.snapshot
    sub = next(iter(snapshot.subscriptions.values()), None)
    if sub is None or sub.plan is None:
        plan, quantity, status, interval = PLANS["Starter"], 1, "active", "month"
        currency = snapshot.currency or "usd"
        started = CHANGES_AT
        what = "first subscription: Starter"
    else:
        current = PLANS[sub.plan]
        plan = PLANS[current.upgrade] if current.upgrade else current
        quantity = sub.quantity + (0 if current.upgrade else 1)
        status, interval = sub.status or "active", sub.interval or "month"
        currency = sub.currency or "usd"
        started = sub.started or CHANGES_AT
        what = f"{current.name} -> {plan.name}" if current.upgrade else "one more seat"
    new = subscription(customer.id, plan, currency, status, interval, quantity, started, CHANGES_AT)
    customer.snapshot = replace(
        snapshot,
        status=status,
        plan=plan.name,
        mrr_cents=new.mrr_cents,
        currency=currency,
        subscriptions={new.id: new},
        mrr={currency: new.mrr_cents} if new.mrr_cents else {},
    )
    return what


@dataclass(frozen=True)
class Incremental:
    seconds: list[float]
    plan_changes: int
    usage_reports: int
    entered: int
    exited: int
    mismatches: int


async def run_incremental(
    sessionmaker: SessionMaker,
    evaluator: SegmentActivities,
    config: SegmentsConfig,
    customers: Sequence[Customer],
) -> Incremental:
    """Each customer changes one fact, then is evaluated again through the activity (the
    evaluation alone is timed: the usage report's own write is the usage API's)."""
    env = ActivityEnvironment()
    names = config.names
    seconds: list[float] = []
    plans = reports = entered = exited = mismatches = 0
    for n, customer in enumerate(customers):
        if n % 2 == 0:
            change_plan(customer)
            plans += 1
        else:
            value = customer.usage.get("seats_used", 0) + 5
            customer.usage["seats_used"] = value
            async with sessionmaker() as session:
                await record_usage(session, customer.id, "seats_used", value)
                # The usage API dates the report now; this run's clock is simulated, and
                # the report comes before the evaluation at CHANGES_AT, as it would live
                # (else the sweep rightly tells the customer of usage it never read).
                await session.execute(
                    update(CustomerUsage)
                    .where(col(CustomerUsage.customer_id) == customer.id)
                    .values(reported_at=aware(CHANGES_AT - 1))
                )
                await session.commit()
            reports += 1
        request = EvaluateSegments(
            customer_id=customer.id,
            facts=billing_facts(customer.snapshot, customer.lifecycles),
            now=aware(CHANGES_AT),
            previous=list(customer.segments),
            known=names,
            evaluated_before=True,
            first_evaluated=T0,
        )
        started = time.perf_counter()
        result = await env.run(evaluator.evaluate_segments, request)
        seconds.append(time.perf_counter() - started)
        customer.facts = full_facts(customer)
        customer.evaluated_at = CHANGES_AT
        expected = members(config, customer.facts, CHANGES_AT)
        mismatches += expected != result.segments
        entered += len(result.entered)
        exited += len(result.exited)
        customer.segments = result.segments
    return Incremental(seconds, plans, reports, entered, exited, mismatches)


def full_pass(config: SegmentsConfig, customers: Sequence[Customer], at: int) -> float:
    """Every segment of every customer, pure `evaluate`; seconds taken."""
    started = time.perf_counter()
    for c in customers:
        for s in config.segments:
            evaluate(s, c.facts, at, config.seats)
    return time.perf_counter() - started


# --- sweep ---------------------------------------------------------------------------


class SignalRecorder(Interceptor):
    """Records the workflow id of every signal the client sends (delivered or not)."""

    def __init__(self) -> None:
        self.signalled: list[str] = []

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _Recording(next, self.signalled)


class _Recording(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, signalled: list[str]) -> None:
        super().__init__(next)
        self._signalled = signalled

    async def signal_workflow(self, input: SignalWorkflowInput) -> None:
        self._signalled.append(input.id)
        await super().signal_workflow(input)


def turning(
    timed: Sequence[Segment], config: SegmentsConfig, customers: Sequence[Customer]
) -> set[str]:
    """The customers whose membership of a time segment differs at the sweep from their
    last evaluation: computed from the bench's own facts, not the database's."""
    return {
        c.id
        for c in customers
        if any(
            evaluate(s, c.facts, SWEEP_AT, config.seats)
            != evaluate(s, c.facts, c.evaluated_at, config.seats)
            for s in timed
        )
    }


async def start_idle(client: Client, customer_ids: Sequence[str]) -> None:
    async def one(customer_id: str) -> None:
        await client.start_workflow(
            IDLE_WORKFLOW,
            id=ids.customer_workflow_id(customer_id),
            task_queue=IDLE_QUEUE,
        )

    for start in range(0, len(customer_ids), 50):
        await asyncio.gather(*(one(c) for c in customer_ids[start : start + 50]))


async def read_all_facts(sessionmaker: SessionMaker, page_size: int) -> tuple[int, float]:
    """Page through the stored facts as the sweep does, evaluating nothing: (rows, seconds)."""
    started = time.perf_counter()
    after, rows = "", 0
    while True:
        async with sessionmaker() as session:
            page = list(
                (
                    await session.execute(
                        select(CustomerSegmentFacts)
                        .where(col(CustomerSegmentFacts.customer_id) > after)
                        .order_by(col(CustomerSegmentFacts.customer_id))
                        .limit(page_size)
                    )
                ).scalars()
            )
        if not page:
            return rows, time.perf_counter() - started
        rows += len(page)
        after = page[-1].customer_id


# --- the run -------------------------------------------------------------------------


def rate(count: float, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s" if seconds > 0 else "n/a"


def peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / MIB


async def main(args: argparse.Namespace) -> None:
    defined = parse_segments(SEGMENTS_YAML, "bench/segments.py")
    if not 1 <= args.segments <= len(defined.segments):
        raise SystemExit(f"--segments: 1 to {len(defined.segments)} (the set defined here)")
    config = SegmentsConfig(segments=defined.segments[: args.segments], seats=defined.seats)
    timed = [s for s in config.segments if s.time_based]
    rng = random.Random(args.seed)
    made = time.perf_counter()
    customers = [synthetic_customer(rng, n) for n in range(args.customers)]
    for c in customers:
        c.facts = full_facts(c)
    made = time.perf_counter() - made
    through_activity = (
        len(customers)
        if args.seed_through_activity is None
        else min(args.seed_through_activity, len(customers))
    )
    print(
        f"bench: {len(customers):,} customers x {len(config.segments)} segments "
        f"({len(timed)} with time conditions: {', '.join(s.name for s in timed)}); "
        f"facts built in {made:.1f}s; database on PostgreSQL",
        flush=True,
    )

    workdir = Path(tempfile.mkdtemp(prefix="lifecycle-bench-segments-"))
    pg_name = await create_pg_database()
    database_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{pg_name}"
    temporal_port = free_port()
    server = start_dev_server(
        workdir, temporal_port, free_port(), "default", workdir / "temporal.log"
    )
    logs = (workdir / "bench.log").open("wb")
    engine = create_engine(database_url)
    try:
        await upgrade(database_url)
        sessionmaker = create_sessionmaker(engine)
        evaluator, _ = activities(sessionmaker, config)

        # --- seeding
        started = time.perf_counter()
        await seed_db_inputs(sessionmaker, customers)
        inputs_seconds = time.perf_counter() - started
        sample, rest = customers[:through_activity], customers[through_activity:]
        activity_seconds = await seed_through_activity(evaluator, sample, args.concurrency)
        bulk_seconds = await seed_in_bulk(sessionmaker, config, rest)
        stored = await stored_rows(sessionmaker, [c.id for c in sample])
        disagree = sum(
            stored[c.id].segments != members(config, c.facts, T0) or stored[c.id].facts != c.facts
            for c in sample
        )
        memberships = sum(len(c.segments) for c in customers)
        print(
            f"seed inputs:           {inputs_seconds:8.1f}s (usage of "
            f"{sum(bool(c.usage) for c in customers):,} customers, clicks of "
            f"{sum(c.last_click_at is not None for c in customers):,})"
        )
        print(
            f"seed, activity:        {activity_seconds:8.1f}s for {len(sample):,} customers "
            f"through evaluate_segments, {args.concurrency} at once = "
            f"{rate(len(sample), activity_seconds)} "
            f"(all {len(customers):,} would take "
            f"{len(customers) * activity_seconds / max(1, len(sample)):,.0f}s); "
            f"{disagree} disagree with evaluate"
        )
        if rest:
            print(
                f"seed, bulk:            {bulk_seconds:8.1f}s for {len(rest):,} customers "
                f"(evaluate + the same rows inserted in bulk) = {rate(len(rest), bulk_seconds)}"
            )
        print(f"memberships:           {memberships:,} in all after the seed")

        # --- incremental
        changing = random.Random(args.seed + 1).sample(customers, min(args.changes, len(customers)))
        inc = await run_incremental(sessionmaker, evaluator, config, changing)
        full_seconds = full_pass(config, customers, CHANGES_AT)
        evaluations = len(customers) * len(config.segments)
        mean = statistics.fmean(inc.seconds)
        print(
            f"incremental:           {len(inc.seconds):,} changes ({inc.plan_changes} plan "
            f"changes, {inc.usage_reports} usage reports) through evaluate_segments: "
            f"{latency(inc.seconds)}, mean {mean * 1000:.1f} ms = "
            f"{rate(len(inc.seconds), sum(inc.seconds))} changes "
            f"= {rate(len(inc.seconds) * len(config.segments), sum(inc.seconds))} evaluations; "
            f"{inc.entered} entries, {inc.exited} exits; {inc.mismatches} disagree with evaluate"
        )
        print(
            f"full re-evaluation:    {full_seconds * 1000:8.0f} ms for {evaluations:,} "
            f"evaluations (pure evaluate, no DB) = {rate(evaluations, full_seconds)}"
        )
        print(
            f"incremental vs full:   {full_seconds / mean:,.0f}x less time per change "
            f"({mean * 1000:.1f} ms against {full_seconds * 1000:,.0f} ms)"
        )

        # --- sweep
        expected = turning(timed, config, customers)
        not_turning = sorted({c.id for c in customers} - expected)
        controls = random.Random(args.seed + 2).sample(
            not_turning, min(len(expected), len(not_turning))
        )
        base = await wait_for_server(f"127.0.0.1:{temporal_port}", "default", server)
        recorder = SignalRecorder()
        client = Client(base.service_client, namespace="default", interceptors=[recorder])
        await start_idle(client, sorted(expected) + controls)
        _, sweeper = activities(sessionmaker, config, client)
        assert sweeper is not None
        # The same pages read first, evaluating nothing: what the sweep's reading costs (and
        # the sweep then finds the table as warm as a periodic sweep would).
        read_rows, read_seconds = await read_all_facts(sessionmaker, SWEEP_PAGE)
        started = time.perf_counter()
        swept = await ActivityEnvironment().run(
            sweeper.sweep_segments, SweepRequest(now=aware(SWEEP_AT))
        )
        sweep_seconds = time.perf_counter() - started
        all_seconds = full_pass(config, customers, SWEEP_AT)
        timed_config = SegmentsConfig(segments=timed, seats=config.seats)
        timed_seconds = full_pass(timed_config, customers, SWEEP_AT)
        signalled = {wid.removeprefix("customer-") for wid in recorder.signalled}
        verdict = (
            "matches"
            if swept.changed == len(expected) and signalled == expected
            else "DOES NOT match"
        )
        print(
            f"sweep:                 {sweep_seconds:8.2f}s for {swept.customers:,} customers "
            f"= {rate(swept.customers, sweep_seconds)} checked; {swept.changed} turned and "
            f"signalled, {len(signalled)} signals sent; evaluate says {len(expected)} turn: "
            f"{verdict} ({len(controls)} idle control workflows not turning were not signalled: "
            f"{not (signalled & set(controls))})"
        )
        print(
            f"sweep vs all segments: {sweep_seconds / all_seconds:.2f}x the time of a pure loop "
            f"over all {len(config.segments)} segments ({all_seconds:.2f}s); the time segments "
            f"alone, pure: {timed_seconds:.2f}s = {timed_seconds / all_seconds:.2f}x; segments "
            f"touched {len(timed)}/{len(config.segments)} = "
            f"{len(timed) / len(config.segments):.2f}"
        )
        print(
            f"sweep's reads alone:   {read_seconds:8.2f}s to page through {read_rows:,} stored "
            f"facts rows ({SWEEP_PAGE} a page, nothing evaluated) = "
            f"{read_seconds / sweep_seconds:.2f} of the sweep"
        )
        print(f"peak RSS:              {peak_rss_mib():,.0f} MiB (this process)")
    finally:
        await engine.dispose()
        await tear_down([], server, logs, pg_name)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument(
        "--segments", type=int, default=20, help="the first N of the 20 segments defined here"
    )
    parser.add_argument("--changes", type=int, default=500, help="incremental changes timed")
    parser.add_argument(
        "--seed-through-activity",
        type=int,
        default=None,
        help="customers seeded through evaluate_segments, the rest in bulk (default: all)",
    )
    parser.add_argument("--concurrency", type=int, default=8, help="seeding evaluations at once")
    parser.add_argument("--seed", type=int, default=12)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
