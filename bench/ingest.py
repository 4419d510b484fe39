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
- half load: ack p50/p99 with webhooks arriving at half the raw applied (sustained) rate,
- floor: the same signal-with-start calls into a no-op workflow (`bench/noop.py`) on its
  own task queue and worker process, on the same server; and into one that also runs a
  local activity doing nothing per batch (what a durable write per batch costs at least);
  and into the no-op workflow in a sandbox that passes its module through, as the worker
  passes ours (what the SDK costs in the customer worker's configuration),
- per phase, the CPU seconds per 1,000 events of each process: the API (with its
  forwarder), the worker (or the no-op worker), the Temporal dev server and PostgreSQL
  (this database's backends and the cluster's WAL writer, background writer and
  checkpointer; SQLite runs inside the API and worker); and the load generator's own;
- with --rounds N, N-1 further rounds of the no-op floor and the full load back to back,
  each round's worker CPU per event against the no-op's just before it, and the median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from bench.harness import (
    BIN,
    LINK_SECRET,
    closed_loop,
    free_port,
    latency,
    migrated_database,
    tear_down,
    wait_http,
)
from bench.noop import NoopWorkflow, NoopWriteWorkflow
from bench.webhooks import WebhookSender
from stripe_lifecycle.domain import contract
from stripe_lifecycle.domain.events import BillingEvents, lean
from stripe_lifecycle.intake.forwarder import ForwarderConfig, temporal_delivery
from stripe_lifecycle.intake.normalise import normalise_event
from stripe_lifecycle.temporal_setup import start_dev_server, wait_for_server

SECRET = "whsec_bench_0123456789"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# PostgreSQL's own processes that work for every database (WAL, dirty pages).
PG_SHARED = ("walwriter", "background writer", "checkpointer")


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


def workload(events: int, customers: int, tag: str) -> list[dict[str, Any]]:
    ids = [f"cus_{tag}{uuid.uuid4().hex[:10]}" for _ in range(customers)]
    return [make_event(ids[n % customers], n) for n in range(events)]


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


class Inbox:
    """The benchmark's one connection to the app's database, to watch progress (a
    connection per poll would cost PostgreSQL a fork each time, charged to the run)."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._pg: asyncpg.Connection | None = None
        # The progress polls and the CPU meter's samples share the connection.
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        if self._url.startswith("postgresql"):
            self._pg = await asyncpg.connect(self._url.replace("postgresql+asyncpg", "postgresql"))

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()

    async def scalar(self, query: str) -> int:
        if self._pg is not None:
            async with self._lock:
                return int(await self._pg.fetchval(query))
        with sqlite3.connect(self._url.split("///", 1)[1]) as db:
            return int(db.execute(query).fetchone()[0])

    async def postgres_pids(self) -> list[int]:
        """This database's backends but ours, and the cluster's shared writers."""
        if self._pg is None:
            return []
        async with self._lock:
            rows = await self._pg.fetch(
                "SELECT pid FROM pg_stat_activity WHERE (datname = current_database()"
                " AND pid <> pg_backend_pid()) OR backend_type = ANY($1::text[])",
                list(PG_SHARED),
            )
        return [int(row["pid"]) for row in rows]

    async def wait_delivered(self) -> None:
        """Until every stored event has been signalled to its workflow."""
        query = "SELECT count(*) FROM webhook_inbox WHERE status = 'pending'"
        while await self.scalar(query) > 0:
            await asyncio.sleep(0.02)

    async def wait_applied(self, events: int) -> None:
        """Until the worker has applied `events` events in all, so one phase's workflow
        tasks do not spill into the next phase's measurement."""
        query = "SELECT coalesce(sum(snapshot_version), 0) FROM customers"
        while await self.scalar(query) < events:
            await asyncio.sleep(0.1)


async def wait_delivered(database_url: str) -> None:
    """Until every stored event has been signalled to its workflow (a one-off watch)."""
    inbox = Inbox(database_url)
    await inbox.open()
    try:
        await inbox.wait_delivered()
    finally:
        await inbox.close()


def cpu_seconds(pid: int, *, children: bool = True) -> float:
    """User and system CPU of a process, with that of its children it has waited for;
    0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # Fields 14-17 of proc(5): utime, stime, cutime, cstime; the split starts at field 3.
    used = int(fields[11]) + int(fields[12])
    if children:
        used += int(fields[13]) + int(fields[14])
    return used / CLOCK_TICKS


class CpuMeter:
    """CPU seconds each process spends over a phase. PostgreSQL's backends come and go,
    so they are sampled while the phase runs and each counted at its last reading."""

    def __init__(self, inbox: Inbox, processes: dict[str, int]) -> None:
        self._inbox = inbox
        self._processes = processes
        self._start: dict[str, float] = {}
        self._pg_start: dict[int, float] = {}
        self._pg_seen: dict[int, float] = {}
        self._sampler: asyncio.Task[None] | None = None

    async def begin(self) -> None:
        self._start = self._read()
        self._pg_seen = {}
        await self._sample_pg()
        self._pg_start = dict(self._pg_seen)
        self._sampler = asyncio.create_task(self._sample_loop())

    async def end(self) -> dict[str, float]:
        assert self._sampler is not None
        self._sampler.cancel()
        await self._sample_pg()
        used = {name: value - self._start[name] for name, value in self._read().items()}
        if self._pg_seen:
            used["postgres"] = sum(
                seen - self._pg_start.get(pid, 0.0) for pid, seen in self._pg_seen.items()
            )
        return used

    def _read(self) -> dict[str, float]:
        times = os.times()
        return {
            **{name: cpu_seconds(pid) for name, pid in self._processes.items()},
            "load generator": times.user + times.system,
        }

    async def _sample_pg(self) -> None:
        for pid in await self._inbox.postgres_pids():
            # A backend's CPU only grows; a pid gone (0) keeps its last reading.
            self._pg_seen[pid] = max(self._pg_seen.get(pid, 0.0), cpu_seconds(pid))

    async def _sample_loop(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            await self._sample_pg()


def per_thousand(used: dict[str, float], events: int) -> str:
    return ", ".join(f"{name} {seconds * 1000 / events:.2f}" for name, seconds in used.items())


async def main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="lifecycle-bench-"))
    database_url, pg_name = await migrated_database(workdir, postgres=not args.sqlite)

    temporal_port, api_port = free_port(), free_port()
    address = f"127.0.0.1:{temporal_port}"
    task_queue = f"bench-{uuid.uuid4().hex[:8]}"
    server = start_dev_server(
        workdir, temporal_port, free_port(), "default", workdir / "temporal.log"
    )
    env = {
        # The image's `pip install` compiles the package's bytecode; a checkout with
        # PYTHONDONTWRITEBYTECODE set has none, and the workflow sandbox would then compile
        # the workflow modules from source for every workflow it loads.
        **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        "LIFECYCLE_DATABASE_URL": database_url,
        "LIFECYCLE_TEMPORAL_ADDRESS": address,
        "LIFECYCLE_TASK_QUEUE": task_queue,
        "LIFECYCLE_API_PORT": str(api_port),
        "LIFECYCLE_STRIPE_WEBHOOK_SECRET": SECRET,
        "LIFECYCLE_FORWARDER_LANES": str(args.lanes),
        "LIFECYCLE_LINK_SECRET": LINK_SECRET,
    }
    logs = (workdir / "app.log").open("wb")
    processes: list[subprocess.Popen[bytes]] = []
    inbox = Inbox(database_url)
    try:
        client = await wait_for_server(address, "default", server)
        for command in ("worker", "api"):
            processes.append(
                subprocess.Popen(
                    [str(BIN / "lifecycle"), command], env=env, stdout=logs, stderr=logs
                )
            )
        noop_queue = f"{task_queue}-noop"
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "bench.noop", address, noop_queue],
                stdout=logs,
                stderr=logs,
            )
        )
        worker, api, noop = (process.pid for process in processes)
        await wait_http(f"http://127.0.0.1:{api_port}/readyz", api_process := processes[1])
        assert api_process.pid == api
        await inbox.open()
        meter = CpuMeter(inbox, {"api": api, "worker": worker, "temporal": server.pid})
        noop_meter = CpuMeter(inbox, {"no-op worker": noop, "temporal": server.pid})
        print(
            f"bench: {args.events} events over {args.customers} customers, concurrency "
            f"{args.concurrency}, inbox on {'SQLite' if args.sqlite else 'PostgreSQL'}, "
            f"dev server SQLite WAL, {os.cpu_count()} cores; pids: worker {worker}, "
            f"api {api}, temporal {server.pid}, no-op worker {noop}"
        )

        # The forwarder's own delivery, straight from the SDK: no API, no inbox.
        deliver = temporal_delivery(client, ForwarderConfig(task_queue=task_queue))

        async def raw_call(event: dict[str, Any]) -> None:
            billing = normalise_event(event)
            assert billing is not None
            await deliver(billing.customer_id, [billing])

        def floor_call(
            kind: type[NoopWorkflow], prefix: str, queue: str
        ) -> Callable[[dict[str, Any]], Awaitable[None]]:
            async def call(event: dict[str, Any]) -> None:
                billing = normalise_event(event)
                assert billing is not None
                await client.start_workflow(
                    kind.run,
                    None,
                    id=f"{prefix}-{billing.customer_id}",
                    task_queue=queue,
                    start_signal=contract.BILLING_EVENTS_SIGNAL,
                    start_signal_args=[lean(BillingEvents(events=[billing]))],
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                )

            return call

        async def floor(
            kind: type[NoopWorkflow], prefix: str, queue: str = noop_queue
        ) -> tuple[float, float, dict[str, float]]:
            """The floor's calls/s, applied events/s and CPU, into workflows of `kind`."""
            events = workload(args.events, args.customers, prefix)
            started = time.perf_counter()
            await noop_meter.begin()
            seconds, _ = await closed_loop(
                events, args.concurrency, floor_call(kind, prefix, queue)
            )
            done = await wait_idle(noop)
            used = await noop_meter.end()
            await check_noop(client, events, kind, prefix)
            return args.events / seconds, args.events / (done - started), used

        # The floors first: the same calls and payloads into workflows that do nothing.
        noop_rate, noop_applied, noop_used = await floor(NoopWorkflow, "noop")
        write_rate, write_applied, write_used = await floor(NoopWriteWorkflow, "noopwrite")
        through_rate, through_applied, through_used = await floor(
            NoopWorkflow, "noopthrough", f"{noop_queue}-through"
        )

        raw_events = workload(args.events, args.customers, "raw")
        started = time.perf_counter()
        await meter.begin()
        raw_seconds, _ = await closed_loop(raw_events, args.concurrency, raw_call)
        await inbox.wait_applied(args.events)
        raw_used = await meter.end()
        raw_applied = args.events / (time.perf_counter() - started)
        raw_rate = args.events / raw_seconds
        print(
            f"floor, no-op workflow:  {noop_rate:8.1f} calls/s, applied {noop_applied:.1f} events/s"
        )
        print(
            f"floor + local activity: {write_rate:8.1f} calls/s, "
            f"applied {write_applied:.1f} events/s"
        )
        print(
            f"floor, no-op passed through: {through_rate:8.1f} calls/s, "
            f"applied {through_applied:.1f} events/s"
        )
        print(
            f"raw signal-with-start:  {raw_rate:8.1f} calls/s ({raw_seconds:.2f}s), "
            f"applied by the workflows {raw_applied:.1f} events/s"
        )
        print("CPU seconds per 1,000 events (until applied):")
        print(f"  floor, no-op workflow:  {per_thousand(noop_used, args.events)}")
        print(f"  floor + local activity: {per_thousand(write_used, args.events)}")
        print(f"  floor, no-op passed through: {per_thousand(through_used, args.events)}")
        print(
            "  no-op + local activity: "
            f"{write_used['no-op worker'] / noop_used['no-op worker']:.2f}x the no-op workflow's"
        )
        print(f"  raw signal-with-start:  {per_thousand(raw_used, args.events)}")
        print(
            "  worker CPU per applied event, raw: "
            f"{raw_used['worker'] / noop_used['no-op worker']:.2f}x the no-op workflow's, "
            f"{raw_used['worker'] / write_used['no-op worker']:.2f}x the no-op + local activity's"
        )

        sender = WebhookSender(api_port, SECRET)
        try:

            async def post(event: dict[str, Any]) -> None:
                await sender.post(json.dumps(event).encode())

            full_events = workload(args.events, args.customers, "api")
            profilers = start_profilers(args.py_spy, {"worker": worker, "api": api})
            started = time.perf_counter()
            await meter.begin()
            ack_seconds, acks = await closed_loop(full_events, args.concurrency, post)
            await inbox.wait_delivered()
            delivered_seconds = time.perf_counter() - started
            delivered_rate = args.events / delivered_seconds
            await inbox.wait_applied(2 * args.events)
            full_used = await meter.end()
            applied_rate = args.events / (time.perf_counter() - started)
            stop_profilers(profilers)
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
            print(f"  CPU s/1,000, full load: {per_thousand(full_used, args.events)}")
            print(
                "  worker CPU per applied event, full load: "
                f"{full_used['worker'] / noop_used['no-op worker']:.2f}x the no-op workflow's, "
                f"{full_used['worker'] / write_used['no-op worker']:.2f}x "
                "the no-op + local activity's, "
                f"{full_used['worker'] / through_used['no-op worker']:.2f}x "
                "the no-op passed through's"
            )

            # Half of what the system sustains end to end (raw calls outrun the worker).
            half_rate = raw_applied / 2
            half_events = workload(args.events, args.customers, "half")
            started = time.perf_counter()
            half_acks = await open_loop(half_events, half_rate, post)
            await inbox.wait_delivered()
            half_seconds = time.perf_counter() - started
            print(
                f"webhooks, half load:    {half_rate:8.1f} offered/s, ack {latency(half_acks)}, "
                f"all delivered in {half_seconds:.2f}s"
            )

            # The machine's speed per CPU second drifts over a run (a shared host): each
            # further round measures the no-op floor and then the full load, back to back.
            applied = 3 * args.events
            ratios = []
            if args.rounds > 1:
                await inbox.wait_applied(applied)
            for round_ in range(2, args.rounds + 1):
                _, _, round_noop = await floor(NoopWorkflow, f"noop{round_}x")
                round_events = workload(args.events, args.customers, f"api{round_}x")
                await meter.begin()
                await closed_loop(round_events, args.concurrency, post)
                applied += args.events
                await inbox.wait_applied(applied)
                round_used = await meter.end()
                noop_cpu, worker_cpu = round_noop["no-op worker"], round_used["worker"]
                ratios.append(worker_cpu / noop_cpu)
                print(
                    f"round {round_}: no-op worker {noop_cpu * 1000 / args.events:.2f}, "
                    f"worker {worker_cpu * 1000 / args.events:.2f} CPU s/1,000 events "
                    f"= {ratios[-1]:.2f}x"
                )
            if ratios:
                print(
                    f"worker CPU per applied event, rounds 2-{args.rounds} (each against the "
                    f"no-op just before it): median {statistics.median(ratios):.2f}x, "
                    f"{min(ratios):.2f}-{max(ratios):.2f}x"
                )
        finally:
            await sender.close()
    finally:
        await inbox.close()
        await tear_down(processes, server, logs, pg_name)


async def wait_idle(pid: int, quiet: float = 1.0) -> float:
    """When a worker went idle: the first moment its CPU stayed still for `quiet` seconds
    (a worker at rest long-polls in Rust and spends next to nothing)."""
    last, last_busy = cpu_seconds(pid), time.perf_counter()
    while time.perf_counter() - last_busy < quiet:
        await asyncio.sleep(0.1)
        now = cpu_seconds(pid)
        if now - last > 0.02:
            last, last_busy = now, time.perf_counter()
    return last_busy


async def check_noop(
    client: Client,
    events: list[dict[str, Any]],
    kind: type[NoopWorkflow],
    prefix: str,
) -> None:
    """Every floor workflow took every event signalled to it (else the floor is wrong)."""
    expected: dict[str, int] = {}
    for event in events:
        customer = event["data"]["object"]["customer"]
        expected[customer] = expected.get(customer, 0) + 1
    for customer, count in expected.items():
        handle = client.get_workflow_handle(f"{prefix}-{customer}")
        got = await handle.query(kind.events)
        if got != count:
            raise RuntimeError(f"no-op workflow of {customer} took {got} of {count} events")


def start_profilers(directory: Path | None, pids: dict[str, int]) -> list[subprocess.Popen[bytes]]:
    """py-spy (not a dependency: `pip install py-spy`) recording each process for the
    full-load phase, as speedscope files. Only the thread holding the GIL is sampled:
    where a process's Python CPU goes, not its threads waiting for the GIL or for work."""
    if directory is None:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [
                str(BIN / "py-spy"),
                "record",
                "--pid",
                str(pid),
                "--rate",
                "50",
                "--gil",
                "--format",
                "speedscope",
                "--output",
                str(directory / f"{name}.speedscope.json"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    ]


def stop_profilers(profilers: list[subprocess.Popen[bytes]]) -> None:
    for profiler in profilers:
        profiler.send_signal(signal.SIGINT)
    for profiler in profilers:
        profiler.wait(60)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--customers", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--lanes", type=int, default=64)
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="record the worker and the API with py-spy over the full-load phase",
    )
    parser.add_argument(
        "--sqlite", action="store_true", help="inbox on SQLite instead of PostgreSQL"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="after the phases above, measure the no-op floor and the full load back to "
        "back in each further round, and print the median ratio",
    )
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
