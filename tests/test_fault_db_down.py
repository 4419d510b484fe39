"""The database goes away on the webhook path, then comes back.

PostgreSQL is reached through a TCP proxy the test cuts (new connections refused, the
pooled ones reset), as when the database host goes down; the shared server itself runs
on. While it is down a webhook cannot be stored, so it is not acknowledged: the API
answers 503 with Retry-After, and Stripe retries it later. `/readyz` says the database is
unreachable. A worker that must write a snapshot meanwhile retries the write. Once the
database is back, every process recovers without a restart: Stripe's retries of the
refused events are stored and delivered once each, the snapshot is written, and `/readyz`
is green again.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlmodel import col
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from stripe_lifecycle.domain import contract, ids
from stripe_lifecycle.domain.events import BillingEvents
from stripe_lifecycle.storage.db import (
    SessionMaker,
    create_engine,
    create_sessionmaker,
    database_unavailable,
)
from stripe_lifecycle.storage.models import Customer, InboxStatus, WebhookEvent
from stripe_lifecycle.workflows.customer import CustomerWorkflow

from .conftest import app_settings, running_api, temporal_address, workers
from .events import customer_event, unique_customer_id
from .signing import signed
from .tcp_proxy import TcpProxy, tcp_proxy
from .workflow_helpers import eventually

T0 = 1_790_000_000


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    async with tcp_proxy("127.0.0.1", 5432) as running:
        yield running


# The local activities a customer workflow writes its snapshot in.
SNAPSHOT_WRITES = ("persist_snapshot", "store_batch", "persist_and_evaluate_segments")


@contextlib.asynccontextmanager
async def restored_after(proxy: TcpProxy) -> AsyncIterator[None]:
    """The database back before the workers inside stop, if a check failed while it was
    cut: stopping, they would retry their writes against it until the test times out."""
    try:
        yield
    finally:
        if not proxy.up:
            await proxy.restore()


@pytest.fixture
async def direct(postgresql_url: str) -> AsyncIterator[SessionMaker]:
    """Sessions on the test's database that bypass the proxy: what is really stored."""
    engine = create_engine(postgresql_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


def event_of(customer: str, round_: int) -> dict[str, Any]:
    return customer_event(customer, f"round-{round_}@example.com", created=T0 + round_ * 60)


async def post(http: httpx.AsyncClient, event: dict[str, Any]) -> httpx.Response:
    # Signed afresh each time, as Stripe signs each retry.
    body, headers = signed(event)
    return await http.post("/webhooks/stripe", content=body, headers=headers)


async def stored_ids(direct: SessionMaker) -> list[str]:
    async with direct() as session:
        rows = await session.execute(
            select(col(WebhookEvent.event_id)).order_by(col(WebhookEvent.id))
        )
        return list(rows.scalars())


async def snapshot_versions(direct: SessionMaker) -> dict[str, int]:
    """Each stored customer snapshot's version: the events its workflow had applied."""
    async with direct() as session:
        rows = await session.execute(select(Customer))
        return {c.customer_id: c.snapshot_version for c in rows.scalars()}


async def signalled_event_ids(client: Client, customer: str) -> list[str]:
    handle = client.get_workflow_handle(ids.customer_workflow_id(customer))
    received: list[str] = []
    for event in (await handle.fetch_history()).events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            attributes = event.workflow_execution_signaled_event_attributes
            assert attributes.signal_name == contract.BILLING_EVENTS_SIGNAL
            [batch] = await client.data_converter.decode(attributes.input.payloads, [BillingEvents])
            received += [e.event_id for e in batch.events]
    return received


async def test_database_down_refuses_webhooks_and_everything_recovers(
    dev_env: WorkflowEnvironment,
    postgresql_url: str,
    direct: SessionMaker,
    proxy: TcpProxy,
    task_queue: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxied = make_url(postgresql_url).set(port=proxy.port).render_as_string(hide_password=False)
    settings = app_settings(proxied, temporal_address(dev_env), task_queue)
    # The workers' engine, as `lifecycle worker` makes it: no ping before each transaction,
    # so the connections the cut leaves dead in its pool fail once and are replaced.
    engine = create_engine(proxied, ping=False)
    sessionmaker = create_sessionmaker(engine)
    ada, bo = unique_customer_id(), unique_customer_id()
    first, second, refused_ada, refused_bo = (
        event_of(ada, 0),
        event_of(bo, 0),
        event_of(ada, 1),
        event_of(bo, 1),
    )
    try:
        async with running_api(settings) as (app, http):
            forwarder = app.state.lifecycle.forwarder
            async with workers(dev_env.client, settings, sessionmaker):
                assert (await post(http, first)).status_code == 200

                async def first_written() -> bool:
                    return (await snapshot_versions(direct)).get(ada) == 1

                await eventually(first_written, "the first snapshot written", timeout=20.0)
            # With the worker stopped, Bo's first event reaches Temporal and waits there.
            assert (await post(http, second)).status_code == 200
            await forwarder.drained()

            await proxy.cut()
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"].startswith("unreachable")
            # Nothing acknowledged that was not stored: Stripe keeps these and retries.
            for event in (refused_ada, refused_bo):
                refused = await post(http, event)
                assert refused.status_code == 503, refused.text
                assert int(refused.headers["Retry-After"]) > 0
            assert await stored_ids(direct) == [first["id"], second["id"]]

            caplog.set_level(logging.WARNING, logger="temporalio.activity")
            async with workers(dev_env.client, settings, sessionmaker), restored_after(proxy):

                async def snapshot_write_failed() -> bool:
                    return any(
                        kind in r.getMessage()
                        for r in caplog.records
                        if r.name == "temporalio.activity"
                        for kind in SNAPSHOT_WRITES
                    )

                # The worker applied Bo's first event and could not write the snapshot.
                await eventually(snapshot_write_failed, "a failed snapshot write", timeout=20.0)
                assert await snapshot_versions(direct) == {ada: 1}

                await proxy.restore()

                async def ready_again() -> bool:
                    return (await http.get("/readyz")).status_code == 200

                await eventually(ready_again, "/readyz to recover", timeout=20.0)
                # Stripe's retries of the refused events, accepted now.
                for event in (refused_ada, refused_bo):
                    retried = await post(http, event)
                    assert retried.status_code == 200, retried.text
                    assert retried.json()["duplicate"] is False
                await forwarder.drained()

                async def all_written() -> bool:
                    return await snapshot_versions(direct) == {ada: 2, bo: 2}

                await eventually(all_written, "every snapshot written", timeout=30.0)
                state = await dev_env.client.get_workflow_handle_for(
                    CustomerWorkflow.run, ids.customer_workflow_id(ada)
                ).query(CustomerWorkflow.state)
                assert (state.events_applied, state.email) == (2, "round-1@example.com")

            sent = [first, second, refused_ada, refused_bo]
            assert await stored_ids(direct) == [e["id"] for e in sent]
            async with direct() as session:
                rows = (await session.execute(select(WebhookEvent))).scalars().all()
            assert {row.status for row in rows} == {InboxStatus.FORWARDED}
            # Each event reached its workflow once, in order.
            assert await signalled_event_ids(dev_env.client, ada) == [
                first["id"],
                refused_ada["id"],
            ]
            assert await signalled_event_ids(dev_env.client, bo) == [
                second["id"],
                refused_bo["id"],
            ]
    finally:
        await engine.dispose()


async def test_the_api_starts_while_the_database_is_down_and_delivers_once_it_is_back(
    dev_env: WorkflowEnvironment,
    postgresql_url: str,
    direct: SessionMaker,
    proxy: TcpProxy,
    task_queue: str,
) -> None:
    """An API process (re)started during the outage serves at once: 503s that Stripe
    retries, and `/readyz` red. When the database returns it stores the retries and
    delivers them, and an event stored before the outage but never delivered, without a
    restart."""
    proxied = make_url(postgresql_url).set(port=proxy.port).render_as_string(hide_password=False)
    settings = app_settings(proxied, temporal_address(dev_env), task_queue)
    engine = create_engine(proxied)
    ada = unique_customer_id()
    stored_before, retried = event_of(ada, 0), event_of(ada, 1)
    async with direct() as session:
        # Stored by an API process that stopped before it delivered it.
        session.add(
            WebhookEvent(
                event_id=stored_before["id"],
                type=stored_before["type"],
                livemode=False,
                customer_id=ada,
                created=datetime.fromtimestamp(stored_before["created"], UTC),
                payload=stored_before,
                received_at=datetime.now(UTC) - timedelta(minutes=5),
            )
        )
        await session.commit()
    await proxy.cut()
    try:
        async with running_api(settings) as (_, http):
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"].startswith("unreachable")
            refused = await post(http, retried)
            assert refused.status_code == 503, refused.text

            await proxy.restore()
            async with workers(dev_env.client, settings, create_sessionmaker(engine)):
                accepted = await post(http, retried)
                assert accepted.status_code == 200, accepted.text

                async def both_applied() -> bool:
                    return (await snapshot_versions(direct)).get(ada) == 2

                await eventually(both_applied, "both events applied", timeout=30.0)
            assert (await http.get("/readyz")).status_code == 200

            async def all_forwarded() -> bool:
                async with direct() as session:
                    rows = (await session.execute(select(WebhookEvent))).scalars().all()
                return {row.status for row in rows} == {InboxStatus.FORWARDED}

            # The forwarder marks a row forwarded after its signal lands, and the workflow
            # may apply the event before the mark commits: waited for while the API runs.
            await eventually(all_forwarded, "every stored event marked forwarded", timeout=30.0)
        assert sorted(await signalled_event_ids(dev_env.client, ada)) == sorted(
            [stored_before["id"], retried["id"]]
        )
    finally:
        await engine.dispose()


class _ServerError(Exception):
    """A driver error as asyncpg's adapter gives it: with the server's SQLSTATE."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"SQLSTATE {sqlstate}")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (ConnectionRefusedError(111, "Connect call failed"), True),
        (ConnectionResetError(104, "Connection reset by peer"), True),
        (TimeoutError(), True),
        (socket.gaierror(-2, "Name or service not known"), True),
        (OSError(errno.EHOSTUNREACH, "No route to host"), True),
        (FileNotFoundError(2, "No such file or directory"), False),
        (sa_exc.TimeoutError("QueuePool limit reached"), True),
        (
            sa_exc.DBAPIError("SELECT 1", None, _ServerError("XX000"), connection_invalidated=True),
            True,
        ),
        # Refused at login: `ALTER DATABASE ... ALLOW_CONNECTIONS false`.
        (sa_exc.DBAPIError(None, None, _ServerError("55000")), True),
        # Terminated by an administrator, the server shutting down, too many connections.
        (sa_exc.DBAPIError("SELECT 1", None, _ServerError("57P01")), True),
        (sa_exc.DBAPIError("SELECT 1", None, _ServerError("57P03")), True),
        (sa_exc.DBAPIError("SELECT 1", None, _ServerError("53300")), True),
        # The statement's own faults: retrying the request changes nothing.
        (sa_exc.IntegrityError("INSERT", None, _ServerError("23505")), False),
        (sa_exc.DBAPIError("SELECT", None, _ServerError("42P01")), False),
        (sa_exc.OperationalError("SELECT", None, Exception("no such table: customer")), False),
        (ValueError("not a database error"), False),
    ],
)
def test_which_errors_are_an_unavailable_database(error: BaseException, unavailable: bool) -> None:
    assert database_unavailable(error) is unavailable
