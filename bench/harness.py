"""What the end-to-end benchmarks share: a throwaway stack (database, Temporal dev server,
`lifecycle` processes), its primitives (free ports, the PostgreSQL database, waiting for
an HTTP server, tear-down), a closed-loop load driver with its percentiles, and the
worker's memory as the kernel counts it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import asyncpg
import httpx
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from stripe_lifecycle.storage.migrate import upgrade
from stripe_lifecycle.temporal_setup import start_dev_server, stop_process, wait_for_server

MIB = 1024
# Long enough for the API's and worker's start checks (at least 32 characters).
LINK_SECRET = "bench-link-secret-Jx4Rw8Nq2Vt6Mz9Kp3"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
BIN = Path(sys.executable).parent


def run_benchmark(main: Coroutine[Any, Any, None]) -> None:
    """`asyncio.run`, with SIGTERM (a `timeout`, a cancelled job) stopping the benchmark as
    Ctrl-C does: the stack is torn down rather than its server and worker left running."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    asyncio.run(main)


@dataclass
class Stack:
    """One benchmark's database, dev server (SQLite file, WAL) and `lifecycle` processes,
    all configured by `env`."""

    workdir: Path
    database_url: str
    postgres: bool
    client: Client
    task_queue: str
    env: dict[str, str]
    logs: IO[bytes]
    processes: list[subprocess.Popen[bytes]]

    def spawn(self, command: str) -> subprocess.Popen[bytes]:
        """A `lifecycle <command>` process on this stack, stopped with it."""
        process = subprocess.Popen(
            [str(BIN / "lifecycle"), command], env=self.env, stdout=self.logs, stderr=self.logs
        )
        self.processes.append(process)
        return process

    def describe(self) -> str:
        database = "PostgreSQL" if self.postgres else "SQLite"
        return (
            f"database on {database}, dev server SQLite WAL, {os.cpu_count()} cores; "
            f"logs in {self.workdir}"
        )


@asynccontextmanager
async def dev_stack(
    prefix: str, *, postgres: bool, settings: dict[str, str]
) -> AsyncIterator[Stack]:
    """A migrated database (a throwaway PostgreSQL database at 127.0.0.1:5432, else a
    SQLite file), a dev server and the environment of `lifecycle` processes on them
    (`settings` added to it); everything stopped and dropped on the way out."""
    workdir = Path(tempfile.mkdtemp(prefix=f"lifecycle-bench-{prefix}-"))
    database_url, pg_name = await migrated_database(workdir, postgres=postgres)
    temporal_port = free_port()
    address = f"127.0.0.1:{temporal_port}"
    task_queue = f"bench-{uuid.uuid4().hex[:8]}"
    server = start_dev_server(
        workdir, temporal_port, free_port(), "default", workdir / "temporal.log"
    )
    logs = (workdir / "app.log").open("wb")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        client = await wait_for_server(address, "default", server)
        env = {
            **os.environ,
            "LIFECYCLE_DATABASE_URL": database_url,
            "LIFECYCLE_TEMPORAL_ADDRESS": address,
            "LIFECYCLE_TASK_QUEUE": task_queue,
            "LIFECYCLE_API_PORT": str(free_port()),
            "LIFECYCLE_LINK_SECRET": LINK_SECRET,
            **settings,
        }
        yield Stack(workdir, database_url, postgres, client, task_queue, env, logs, processes)
    finally:
        await tear_down(processes, server, logs, pg_name)


async def wait_polling(client: Client, queues: list[str], worker: subprocess.Popen[bytes]) -> None:
    """Until the worker polls each queue, so its start-up is not timed as the benchmark's."""
    for queue in queues:
        while True:
            if worker.poll() is not None:
                raise RuntimeError("the worker exited during start-up")
            answer = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=client.namespace,
                    task_queue=TaskQueue(name=queue),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
                )
            )
            if answer.pollers:
                break
            await asyncio.sleep(0.2)


class RssSampler:
    """Peak and latest VmRSS of a process and its descendants, sampled every half second
    on a thread of its own (the event loop is busy with the benchmark)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self.last_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            kib = tree_rss_kib(self.pid)
            if kib:
                self.last_kib = kib
                self.peak_kib = max(self.peak_kib, kib)
            if self._stop.wait(0.5):
                return

    def describe(self) -> str:
        return f"peak {self.peak_kib / MIB:.0f} MiB, last {self.last_kib / MIB:.0f} MiB"


def tree_rss_kib(pid: int) -> int:
    """VmRSS of `pid` and every descendant, KiB; 0 once the process has gone."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        proc = Path(f"/proc/{current}")
        try:
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in (proc / "task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            # Exited between listing and reading: it holds no memory any more.
            continue
    return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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


async def wait_http(url: str, process: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as http:
        # Two minutes: on two busy cores the API's imports alone can take most of one.
        for _ in range(1200):
            if process.poll() is not None:
                raise RuntimeError("the API exited during start-up")
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} never became ready")


async def migrated_database(workdir: Path, *, postgres: bool) -> tuple[str, str | None]:
    """A migrated database for a benchmark: a throwaway PostgreSQL database at
    127.0.0.1:5432 (its URL and name, to drop), else a SQLite file in `workdir`."""
    pg_name = None
    if postgres:
        pg_name = await create_pg_database()
        database_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{pg_name}"
    else:
        database_url = f"sqlite+aiosqlite:///{workdir / 'lifecycle.db'}"
    await upgrade(database_url)
    return database_url, pg_name


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
