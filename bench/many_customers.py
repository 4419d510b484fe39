"""Many customers: open trials for --customers customers on the dev server, the worker's
memory with its default cache, and how late the reminders go out when --due of them fall
due in the same minute.

    make bench-scale                # or: .venv/bin/python -m bench.many_customers --customers 2000

Starts a local Postmark-speaking server (tests/fakes.py) that records when each email
arrives, its own Temporal dev server (SQLite file, WAL) and one `lifecycle worker` process
with the default settings (workflow cache, concurrency) sending through that Postmark; the
database on PostgreSQL at 127.0.0.1:5432 (a throwaway database) unless --sqlite is given.
Each customer's `customer.created` and `customer.subscription.created` (trialing) reach
its `customer-{cus_id}` workflow through the forwarder's own signal-with-start, which
starts the shipped `trial-default` automation: a welcome at once, reminders 7 and 2 days
before the trial ends. Prints:
- start: the customers signalled (calls/s) and settled (every trial started and its welcome
  received), first the background customers (trials ending in 14 days: their reminders
  stay open timers), then the --due customers whose trials end 2 days and one minute after
  a coming minute, spread over --spread seconds,
- the worker's RSS (its children included): peak, and at rest with every workflow open,
- timer lag of the 2-days-before reminders: p50/p99/max of the Postmark receipt time
  minus the step's due time (target p99 <= 1 s), and duplicates per send key (target 0).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from bench.harness import (
    MIB,
    RssSampler,
    Stack,
    closed_loop,
    dev_stack,
    percentile,
    run_benchmark,
    wait_polling,
)
from stripe_lifecycle.domain import ids
from stripe_lifecycle.intake.forwarder import ForwarderConfig, temporal_delivery
from stripe_lifecycle.intake.normalise import normalise_event
from tests.events import customer_event, subscription_event
from tests.fakes import POSTMARK_TOKEN, PostmarkHttpServer, PostmarkRequest, PostmarkState, serving

DAY = 86_400
# The reminder whose lag is measured: `trial-default`'s third step, 2 days before the end.
REMINDER_BEFORE = 2 * DAY
REMINDER_STEP = "2-trial-ending"
WELCOME = "trial/welcome"
# Background trials end far enough out that none of their reminders falls due meanwhile.
BACKGROUND_TRIAL = 14 * DAY
PROGRESS_SECONDS = 10.0


@dataclass(frozen=True)
class Customer:
    customer_id: str
    # The trial reminder's due time (epoch seconds), for the customers it is measured on.
    reminder_due: float | None

    @property
    def subscription_id(self) -> str:
        return f"sub_{self.customer_id.removeprefix('cus_')}"


def trial_events(customer: Customer, n: int, trial_end: int) -> list[dict[str, Any]]:
    """What Stripe sends when a customer signs up for a trial: the customer, then its
    trialing subscription (one batch, as the forwarder delivers a burst)."""
    now = int(time.time())
    return [
        customer_event(
            customer.customer_id, f"c{n}@example.com", created=now - 1, type_="customer.created"
        ),
        subscription_event(
            customer.customer_id,
            created=now,
            status="trialing",
            sub_id=customer.subscription_id,
            type_="customer.subscription.created",
            trial_end=trial_end,
        ),
    ]


async def start_customers(
    stack: Stack, batches: list[list[dict[str, Any]]], concurrency: int
) -> float:
    """Signal-with-start every customer's workflow with its batch; returns seconds."""
    deliver = temporal_delivery(stack.client, ForwarderConfig(task_queue=stack.task_queue))

    async def call(batch: list[dict[str, Any]]) -> None:
        events = [normalise_event(raw) for raw in batch]
        billing = [event for event in events if event is not None]
        await deliver(billing[0].customer_id, billing)

    seconds, _ = await closed_loop(batches, concurrency, call)
    return seconds


def received(postmark: PostmarkHttpServer, tag: str) -> list[PostmarkRequest]:
    return [r for r in list(postmark.state.requests) if r.body.get("Tag") == tag]


async def wait_emails(
    postmark: PostmarkHttpServer, tag: str, count: int, rss: RssSampler, timeout: float
) -> float:
    """Until Postmark has received `count` emails tagged `tag`; returns seconds."""
    started = time.perf_counter()
    next_report = started + PROGRESS_SECONDS
    while (have := len(received(postmark, tag))) < count:
        now = time.perf_counter()
        if now - started > timeout:
            raise RuntimeError(f"{have} of {count} {tag} emails after {timeout:.0f}s")
        if now >= next_report:
            print(
                f"  [{now - started:6.0f}s] {have:,}/{count:,} {tag} emails, "
                f"worker RSS {rss.last_kib / MIB:.0f} MiB",
                flush=True,
            )
            next_report += PROGRESS_SECONDS
        await asyncio.sleep(0.25)
    return time.perf_counter() - started


def make_customers(count: int, tag: str, reminder_due: list[int] | None) -> list[Customer]:
    return [
        Customer(f"cus_{tag}{uuid.uuid4().hex[:12]}", reminder_due[n] if reminder_due else None)
        for n in range(count)
    ]


def lag_line(name: str, lags: list[float]) -> str:
    return (
        f"{name}p50 {percentile(lags, 50):.3f} s, p99 {percentile(lags, 99):.3f} s, "
        f"max {max(lags):.3f} s"
    )


async def run(args: argparse.Namespace, stack: Stack, postmark: PostmarkHttpServer) -> None:
    worker = stack.spawn("worker")
    await wait_polling(stack.client, [stack.task_queue], worker)
    background = args.customers - args.due
    print(
        f"bench: {args.customers:,} customers in trial ({args.due:,} of them with a reminder "
        f"due within the same {args.spread:g}s), concurrency {args.concurrency}, "
        f"worker with default settings, {stack.describe()}",
        flush=True,
    )
    with RssSampler(worker.pid) as rss:
        trial_end = int(time.time()) + BACKGROUND_TRIAL
        first = make_customers(background, "bg", None)
        signalled = await start_customers(
            stack,
            [trial_events(c, n, trial_end) for n, c in enumerate(first)],
            args.concurrency,
        )
        settled = signalled + await wait_emails(
            postmark, WELCOME, background, rss, args.settle_timeout
        )
        print(
            f"background start:      {background:,} signalled in {signalled:.1f}s "
            f"({background / signalled:.1f}/s); settled in {settled:.1f}s "
            f"({background / settled:.1f}/s)",
            flush=True,
        )
        # The measured customers start last, their reminders falling due in the first
        # minute that leaves them 1.5 times the time the background took per customer.
        margin = args.due * settled / max(background, 1) * 1.5 + 30
        due_start = math.ceil((time.time() + margin) / 60) * 60
        # Whole seconds: a trial ends on a whole second, and so is its reminder due (lag
        # measured from a fraction of a second later would read up to 1 s short).
        dues = [due_start + int(n * args.spread / args.due) for n in range(args.due)]
        measured = make_customers(args.due, "due", dues)
        started = time.perf_counter()
        signalled_due = await start_customers(
            stack,
            [
                trial_events(c, background + n, dues[n] + REMINDER_BEFORE)
                for n, c in enumerate(measured)
            ],
            args.concurrency,
        )
        await wait_emails(postmark, WELCOME, args.customers, rss, args.settle_timeout)
        settled_due = time.perf_counter() - started
        print(
            f"measured start:        {args.due:,} signalled in {signalled_due:.1f}s, settled "
            f"in {settled_due:.1f}s; {due_start - time.time():.0f}s left before the due minute",
            flush=True,
        )
        print(
            f"start, all:            {args.customers:,} customers signalled at "
            f"{args.customers / (signalled + signalled_due):.1f}/s, settled at "
            f"{args.customers / (settled + settled_due):.1f}/s",
            flush=True,
        )
        if time.time() < due_start - 2:
            await asyncio.sleep(due_start - 2 - time.time())
        at_rest = rss.last_kib
        await wait_emails(
            postmark,
            "trial/ending",
            args.due,
            rss,
            due_start + args.spread + args.lag_timeout - time.time(),
        )
    due_of = {ids.trial_id(c.subscription_id): c.reminder_due for c in measured if c.reminder_due}
    lags = [
        r.received_at - due_of[r.body["Metadata"]["workflow_id"]]
        for r in received(postmark, "trial/ending")
        if r.body["Metadata"]["step"] == REMINDER_STEP
    ]
    keys = Counter(
        (r.body["Metadata"]["workflow_id"], r.body["Metadata"]["step"])
        for r in postmark.state.requests
    )
    duplicates = sum(count - 1 for count in keys.values())
    print(
        f"worker RSS:            {rss.describe()}; at rest before the due minute "
        f"{at_rest / MIB:.0f} MiB"
    )
    print(lag_line(f"timer lag ({len(lags):,}):".ljust(23), lags) + " (target p99 <= 1 s)")
    print(f"duplicates:            {duplicates} of {len(keys):,} send keys (target 0)")


async def main(args: argparse.Namespace) -> None:
    with serving(PostmarkHttpServer(PostmarkState(token=POSTMARK_TOKEN))) as postmark:
        settings = {
            "LIFECYCLE_MAIL_TRANSPORT": "postmark",
            "LIFECYCLE_POSTMARK_SERVER_TOKEN": POSTMARK_TOKEN,
            "LIFECYCLE_POSTMARK_API_URL": postmark.url,
        }
        async with dev_stack("many", postgres=not args.sqlite, settings=settings) as stack:
            await run(args, stack, postmark)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument(
        "--due", type=int, default=1000, help="customers whose reminders fall due together"
    )
    parser.add_argument(
        "--spread", type=float, default=60.0, help="seconds the due reminders spread over"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="starts in flight")
    parser.add_argument(
        "--sqlite", action="store_true", help="database on SQLite instead of PostgreSQL"
    )
    parser.add_argument(
        "--settle-timeout", type=float, default=7200.0, help="seconds to wait for the starts"
    )
    parser.add_argument(
        "--lag-timeout",
        type=float,
        default=600.0,
        help="seconds past the due minute to wait for the reminders",
    )
    args = parser.parse_args()
    if not 0 < args.due <= args.customers:
        parser.error("--due must be between 1 and --customers")
    return args


if __name__ == "__main__":
    run_benchmark(main(parse_args()))
