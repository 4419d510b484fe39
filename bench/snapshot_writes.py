"""Snapshot writes: the worker's CPU per stored snapshot, written one transaction each and
through the group-committing writer (`activities/snapshots.py`), as ratios of an empty
transaction's, measured in the same process.

    make bench-snapshots    # or: .venv/bin/python -m bench.snapshot_writes --snapshots 3000

Every customer workflow stores its snapshot after each batch of events, so this write is
on the path of every event the worker applies. On a throwaway PostgreSQL database at
127.0.0.1:5432 (`--sqlite`: the embedded default), updating the rows of `--snapshots`
customers, each phase twice, interleaved, it prints the CPU milliseconds per snapshot of:
- empty transaction (the baseline): a session, `SELECT 1`, commit, one after another;
- alone: `upsert_snapshot` in a transaction of its own, one after another (one
  `persist_snapshot` while nothing else writes);
- group commit: `SnapshotWriter.write`, `--concurrency` at a time (many customer workflows
  persisting at once, as under load), with the snapshots per transaction it reached.
CPU is this process's (`time.process_time`): the database server's is not the worker's.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy import event, text

from bench.harness import drop_pg_database, migrated_database, run_benchmark
from stripe_lifecycle.activities.snapshots import SnapshotWriter, upsert_snapshot
from stripe_lifecycle.domain.ledger import BillingSnapshot, SubscriptionState
from stripe_lifecycle.storage.db import SessionMaker, create_engine, create_sessionmaker


def snapshot(customer: int, version: int) -> BillingSnapshot:
    """A customer on one monthly subscription, as a customer workflow stores it."""
    subscription = SubscriptionState(
        id=f"sub_{customer}",
        status="active",
        plan="Pro",
        price_id="price_pro",
        product_id="prod_pro",
        interval="month",
        quantity=1 + customer % 5,
        mrr_cents=4900 * (1 + customer % 5),
        currency="usd",
        current_period_end=1_790_000_000 + 30 * 86_400,
        trial_end=None,
        cancel_at_period_end=False,
        version=version,
        billing_periods=["month"],
    )
    return BillingSnapshot(
        customer_id=f"cus_bench{customer:06d}",
        email=f"customer{customer}@example.com",
        name=f"Customer {customer}",
        status="active",
        plan="Pro",
        mrr_cents=subscription.mrr_cents,
        currency="usd",
        ltv_cents=4900 * version,
        customer_since=1_760_000_000,
        subscriptions={subscription.id: subscription},
        events_applied=version,
        mrr={"usd": subscription.mrr_cents},
        ltv={"usd": 4900 * version},
    )


async def cpu_per_item(items: int, work: Callable[[], Awaitable[None]]) -> float:
    """This process's CPU milliseconds per item for `work`."""
    started = time.process_time()
    await work()
    return (time.process_time() - started) * 1000 / items


async def main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="lifecycle-bench-snapshots-"))
    url, pg_name = await migrated_database(workdir, postgres=not args.sqlite)
    engine = create_engine(url)
    commits: list[int] = []
    event.listen(engine.sync_engine, "commit", lambda _connection: commits.append(1))
    sessionmaker = create_sessionmaker(engine)
    count = args.snapshots
    version = 1
    try:
        writer = SnapshotWriter(sessionmaker)
        # The rows exist: the phases measure the steady state, an update per batch.
        await asyncio.gather(*(writer.write(snapshot(n, version)) for n in range(count)))

        async def empty() -> None:
            for _ in range(count):
                async with sessionmaker() as session:
                    await session.execute(text("SELECT 1"))
                    await session.commit()

        async def alone() -> None:
            for n in range(count):
                await one_transaction(sessionmaker, snapshot(n, version))

        async def grouped() -> None:
            gate = asyncio.Semaphore(args.concurrency)

            async def write(n: int) -> None:
                async with gate:
                    await writer.write(snapshot(n, version))

            await asyncio.gather(*(write(n) for n in range(count)))

        print(
            f"snapshot writes: {count} customers on "
            f"{'SQLite' if args.sqlite else 'PostgreSQL'}, group commit at concurrency "
            f"{args.concurrency}; CPU ms per snapshot (x the empty transaction's)"
        )
        for run in (1, 2):
            version += 1
            baseline = await cpu_per_item(count, empty)
            version += 1
            single = await cpu_per_item(count, alone)
            version += 1
            commits.clear()
            group = await cpu_per_item(count, grouped)
            per_commit = count / max(len(commits), 1)
            print(
                f"  run {run}: empty transaction {baseline:.3f} ms; "
                f"alone {single:.3f} ms ({single / baseline:.2f}x); "
                f"group commit {group:.3f} ms ({group / baseline:.2f}x), "
                f"{per_commit:.1f} snapshots per transaction"
            )
        await check_stored(sessionmaker, count, version)
    finally:
        await engine.dispose()
        if pg_name is not None:
            await drop_pg_database(pg_name)


async def one_transaction(sessionmaker: SessionMaker, stored: BillingSnapshot) -> None:
    async with sessionmaker() as session:
        await upsert_snapshot(session, stored)
        await session.commit()


async def check_stored(sessionmaker: SessionMaker, count: int, version: int) -> None:
    """Every customer's row holds the last version written (else the figures are wrong)."""
    async with sessionmaker() as session:
        rows = await session.execute(
            text("SELECT count(*) FROM customers WHERE snapshot_version = :v"), {"v": version}
        )
        stored: int = rows.scalar_one()
    if stored != count:
        raise RuntimeError(f"{stored} of {count} snapshots at version {version}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--snapshots", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    return parser.parse_args()


if __name__ == "__main__":
    run_benchmark(main(parse_args()))
