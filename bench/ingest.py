"""Webhook ingest benchmark: signed webhooks through the real API into the dev server,
against the same number of raw SDK signal-with-start calls on the same server.

    make bench                      # or: .venv/bin/python -m bench.ingest --events 3000

Starts its own Temporal dev server (SQLite, WAL), the API and the worker as separate
`lifecycle` processes, with the inbox on PostgreSQL at 127.0.0.1:5432 (a throwaway
database) unless --sqlite is given. Prints:
- raw: signal-with-start calls/s straight from the SDK (the ceiling),
- full load: webhooks acknowledged/s, ack p50/p99, and delivered/s (stored → signalled),
  delivered as a ratio of the raw rate; and for both, applied/s: until the customer
  workflows have absorbed every event (the sustained rate, with the worker keeping up),
- half load: ack p50/p99 with webhooks arriving at half the raw applied (sustained) rate.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import asyncpg
import httpx
from temporalio.common import WorkflowIDConflictPolicy

from stripe_lifecycle.domain import contract, ids
from stripe_lifecycle.domain.events import BillingEvents
from stripe_lifecycle.intake.normalise import normalise_event
from stripe_lifecycle.storage.migrate import upgrade
from stripe_lifecycle.temporal_setup import start_dev_server, stop_process, wait_for_server
from stripe_lifecycle.workflows.customer import CustomerWorkflow, CustomerWorkflowInput

SECRET = "whsec_bench_0123456789"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_event(customer_id: str, n: int) -> dict[str, Any]:
    now = int(time.time())
    return {
        "id": f"evt_bench_{uuid.uuid4().hex}",
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": now + n,
        "livemode": False,
        "type": "customer.subscription.updated",
        "data": {
            "object": {
                "id": f"sub_{customer_id}",
                "object": "subscription",
                "customer": customer_id,
                "status": "active",
                "currency": "usd",
                "items": {
                    "data": [
                        {
                            "id": "si_1",
                            "quantity": 1 + n % 5,
                            "current_period_end": now + 30 * 86_400,
                            "price": {
                                "id": "price_pro",
                                "nickname": "Pro",
                                "product": "prod_pro",
                                "unit_amount": 4900,
                                "currency": "usd",
                                "recurring": {"interval": "month", "interval_count": 1},
                            },
                        }
                    ]
                },
            }
        },
    }


def sign(body: bytes) -> str:
    ts = int(time.time())
    digest = hmac.new(SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={digest}"


def workload(events: int, customers: int, tag: str) -> list[dict[str, Any]]:
    ids = [f"cus_{tag}{uuid.uuid4().hex[:10]}" for _ in range(customers)]
    return [make_event(ids[n % customers], n) for n in range(events)]


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def latency(samples: list[float]) -> str:
    return (
        f"p50 {percentile(samples, 50) * 1000:.1f} ms, p99 {percentile(samples, 99) * 1000:.1f} ms"
    )


async def closed_loop(
    items: list[Any], concurrency: int, call: Callable[[Any], Awaitable[None]]
) -> tuple[float, list[float]]:
    """Run `call` over items with `concurrency` in flight; returns (seconds, latencies)."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    latencies: list[float] = []

    async def runner() -> None:
        while not queue.empty():
            item = queue.get_nowait()
            started = time.perf_counter()
            await call(item)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(runner() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


async def open_loop(
    items: list[Any], rate: float, call: Callable[[Any], Awaitable[None]]
) -> list[float]:
    """Send at a fixed arrival rate regardless of answers (what Stripe does)."""
    latencies: list[float] = []

    async def one(item: Any) -> None:
        started = time.perf_counter()
        await call(item)
        latencies.append(time.perf_counter() - started)

    tasks = []
    start = time.perf_counter()
    for n, item in enumerate(items):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(item)))
    await asyncio.gather(*tasks)
    return latencies


async def scalar(database_url: str, query: str) -> int:
    if database_url.startswith("postgresql"):
        conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            value = await conn.fetchval(query)
        finally:
            await conn.close()
        return int(value)
    path = database_url.split("///", 1)[1]
    with sqlite3.connect(path) as db:
        return int(db.execute(query).fetchone()[0])


async def wait_delivered(database_url: str) -> None:
    """Until every stored event has been signalled to its workflow."""
    query = "SELECT count(*) FROM webhook_inbox WHERE status = 'pending'"
    while await scalar(database_url, query) > 0:
        await asyncio.sleep(0.02)


async def wait_applied(database_url: str, events: int) -> None:
    """Until the worker has applied `events` events in all, so one phase's workflow
    tasks do not spill into the next phase's measurement."""
    query = "SELECT coalesce(sum(snapshot_version), 0) FROM customers"
    while await scalar(database_url, query) < events:
        await asyncio.sleep(0.1)


async def wait_http(url: str, process: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(400):
            if process.poll() is not None:
                raise RuntimeError("the API exited during start-up")
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} never became ready")


async def create_pg_database() -> str:
    name = f"lifecycle_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    return name


async def drop_pg_database(name: str) -> None:
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="lifecycle-bench-"))
    pg_name = None
    if args.sqlite:
        database_url = f"sqlite+aiosqlite:///{workdir / 'lifecycle.db'}"
    else:
        pg_name = await create_pg_database()
        database_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{pg_name}"
    await upgrade(database_url)

    temporal_port, api_port = free_port(), free_port()
    address = f"127.0.0.1:{temporal_port}"
    task_queue = f"bench-{uuid.uuid4().hex[:8]}"
    server = start_dev_server(
        workdir, temporal_port, free_port(), "default", workdir / "temporal.log"
    )
    env = {
        **os.environ,
        "LIFECYCLE_DATABASE_URL": database_url,
        "LIFECYCLE_TEMPORAL_ADDRESS": address,
        "LIFECYCLE_TASK_QUEUE": task_queue,
        "LIFECYCLE_API_PORT": str(api_port),
        "LIFECYCLE_STRIPE_WEBHOOK_SECRET": SECRET,
        "LIFECYCLE_FORWARDER_LANES": str(args.lanes),
        "LIFECYCLE_LINK_SECRET": "bench-link-secret-Jx4Rw8Nq2Vt6Mz9Kp3",
    }
    logs = (workdir / "app.log").open("wb")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        client = await wait_for_server(address, "default", server)
        for command in ("worker", "api"):
            processes.append(
                subprocess.Popen(
                    [str(BIN / "lifecycle"), command], env=env, stdout=logs, stderr=logs
                )
            )
        await wait_http(f"http://127.0.0.1:{api_port}/readyz", processes[-1])
        print(
            f"bench: {args.events} events over {args.customers} customers, concurrency "
            f"{args.concurrency}, inbox on {'SQLite' if args.sqlite else 'PostgreSQL'}, "
            f"dev server SQLite WAL, {os.cpu_count()} cores"
        )

        async def raw_call(event: dict[str, Any]) -> None:
            billing = normalise_event(event)
            assert billing is not None
            await client.start_workflow(
                CustomerWorkflow.run,
                CustomerWorkflowInput(customer_id=billing.customer_id),
                id=ids.customer_workflow_id(billing.customer_id),
                task_queue=task_queue,
                start_signal=contract.BILLING_EVENTS_SIGNAL,
                start_signal_args=[BillingEvents(events=[billing])],
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            )

        raw_events = workload(args.events, args.customers, "raw")
        started = time.perf_counter()
        raw_seconds, _ = await closed_loop(raw_events, args.concurrency, raw_call)
        await wait_applied(database_url, args.events)
        raw_applied = args.events / (time.perf_counter() - started)
        raw_rate = args.events / raw_seconds
        print(
            f"raw signal-with-start:  {raw_rate:8.1f} calls/s ({raw_seconds:.2f}s), "
            f"applied by the workflows {raw_applied:.1f} events/s"
        )

        limits = httpx.Limits(max_connections=args.concurrency * 2)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{api_port}", limits=limits, timeout=30
        ) as http:

            async def post(event: dict[str, Any]) -> None:
                body = json.dumps(event).encode()
                response = await http.post(
                    "/webhooks/stripe",
                    content=body,
                    headers={"Stripe-Signature": sign(body), "Content-Type": "application/json"},
                )
                response.raise_for_status()

            full_events = workload(args.events, args.customers, "api")
            started = time.perf_counter()
            ack_seconds, acks = await closed_loop(full_events, args.concurrency, post)
            await wait_delivered(database_url)
            delivered_seconds = time.perf_counter() - started
            delivered_rate = args.events / delivered_seconds
            await wait_applied(database_url, 2 * args.events)
            applied_rate = args.events / (time.perf_counter() - started)
            print(
                f"webhooks, full load:    {args.events / ack_seconds:8.1f} acks/s, "
                f"ack {latency(acks)}"
            )
            print(
                f"delivered, full load:   {delivered_rate:8.1f} events/s ({delivered_seconds:.2f}s)"
                f"  = {delivered_rate / raw_rate:.2f}x raw calls"
            )
            print(
                f"applied, full load:     {applied_rate:8.1f} events/s"
                f"  = {applied_rate / raw_applied:.2f}x raw applied"
            )

            # Half of what the system sustains end to end (raw calls outrun the worker).
            half_rate = raw_applied / 2
            half_events = workload(args.events, args.customers, "half")
            started = time.perf_counter()
            half_acks = await open_loop(half_events, half_rate, post)
            await wait_delivered(database_url)
            half_seconds = time.perf_counter() - started
            print(
                f"webhooks, half load:    {half_rate:8.1f} offered/s, ack {latency(half_acks)}, "
                f"all delivered in {half_seconds:.2f}s"
            )
    finally:
        await tear_down(processes, server, logs, pg_name)


async def tear_down(
    processes: list[subprocess.Popen[bytes]],
    server: subprocess.Popen[bytes],
    logs: IO[bytes],
    pg_name: str | None,
) -> None:
    """Stop what a benchmark started: its `lifecycle` processes, then the dev server; and
    drop its throwaway database."""
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(30)
    stop_process(server)
    logs.close()
    if pg_name is not None:
        await drop_pg_database(pg_name)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--customers", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--lanes", type=int, default=64)
    parser.add_argument(
        "--sqlite", action="store_true", help="inbox on SQLite instead of PostgreSQL"
    )
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
