"""The Temporal server dies while Stripe's webhooks keep arriving, then comes back.

A real dev server (its state in a SQLite file, so it survives the restart) is SIGKILLed
in the middle of a stream of signed webhooks for several customers, and started again on
the same port and file. The API keeps acknowledging every webhook (each is stored in the
inbox first), the forwarder keeps retrying, and the API's and the worker's clients find
the server again by themselves. Afterwards every event has reached its customer's
workflow once, in the order Stripe sent that customer's events.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlmodel import col
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from stripe_lifecycle.domain import contract, ids
from stripe_lifecycle.domain.events import BillingEvents
from stripe_lifecycle.storage.db import SessionMaker
from stripe_lifecycle.storage.models import Customer, InboxStatus, WebhookEvent
from stripe_lifecycle.temporal_setup import start_dev_server, stop_process, wait_for_server
from stripe_lifecycle.workflows.customer import CustomerWorkflow

from .conftest import app_settings, free_port, running_api, workers
from .events import customer_event, unique_customer_id
from .signing import signed
from .workflow_helpers import eventually

T0 = 1_790_000_000
CUSTOMERS = 4
ROUNDS = 12
# Rounds before the kill, up to the restart (while the server is down), and after it.
KILLED_AFTER = 3
RESTARTED_AFTER = 8


class DevServer:
    """`temporal server start-dev` on a fixed port and database file: killed and started
    again as the same server."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self._ui_port = free_port()
        self._data_dir = data_dir
        self.log = data_dir / "temporal.log"
        self._process = self._start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _start(self) -> subprocess.Popen[bytes]:
        return start_dev_server(self._data_dir, self.port, self._ui_port, "default", self.log)

    async def ready(self) -> Client:
        return await wait_for_server(self.address, "default", self._process)

    def sigkill(self) -> None:
        assert self._process.poll() is None, self.log.read_text()
        self._process.send_signal(signal.SIGKILL)
        assert self._process.wait(timeout=10) == -signal.SIGKILL

    def restart(self) -> None:
        self._process = self._start()

    def stop(self) -> None:
        stop_process(self._process)


@contextlib.contextmanager
def dev_server(data_dir: Path) -> Iterator[DevServer]:
    server = DevServer(data_dir)
    try:
        yield server
    finally:
        server.stop()


class Sender:
    """Stripe's side: each round, one `customer.updated` per customer (a new email each
    time), signed and posted in turn; every answer kept."""

    def __init__(self, http: httpx.AsyncClient, customers: list[str]) -> None:
        self._http = http
        self.customers = customers
        self.sent: dict[str, list[dict[str, Any]]] = {c: [] for c in customers}
        self.answers: list[tuple[int, dict[str, Any]]] = []
        self.rounds_sent = 0
        self._go_on_to = 0
        self._more = asyncio.Event()

    def send_until(self, rounds: int) -> None:
        self._go_on_to = rounds
        self._more.set()

    async def reached(self, rounds: int) -> None:
        async def sent() -> bool:
            return self.rounds_sent >= rounds

        await eventually(sent, f"{rounds} rounds of webhooks sent", timeout=30.0)

    async def run(self) -> None:
        for round_ in range(ROUNDS):
            while round_ >= self._go_on_to:
                self._more.clear()
                await self._more.wait()
            for customer in self.customers:
                event = customer_event(
                    customer, email_of(customer, round_), created=T0 + round_ * 60
                )
                body, headers = signed(event)
                response = await self._http.post("/webhooks/stripe", content=body, headers=headers)
                self.answers.append((response.status_code, response.json()))
                self.sent[customer].append(event)
                # Webhooks trickle in: the kill lands between and during deliveries.
                await asyncio.sleep(0.02)
            self.rounds_sent = round_ + 1


def email_of(customer: str, round_: int) -> str:
    return f"{customer.lower()}-{round_}@example.com"


@contextlib.asynccontextmanager
async def sending(sender: Sender) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(sender.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def inbox(sessionmaker: SessionMaker) -> list[WebhookEvent]:
    async with sessionmaker() as session:
        rows = await session.execute(select(WebhookEvent).order_by(col(WebhookEvent.id)))
        return list(rows.scalars())


async def signalled_event_ids(client: Client, customer: str) -> list[str]:
    """The event ids the customer's workflow received, in the order of its history."""
    handle = client.get_workflow_handle(ids.customer_workflow_id(customer))
    history = await handle.fetch_history()
    received: list[str] = []
    for event in history.events:
        if event.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            continue
        attributes = event.workflow_execution_signaled_event_attributes
        assert attributes.signal_name == contract.BILLING_EVENTS_SIGNAL
        [batch] = await client.data_converter.decode(attributes.input.payloads, [BillingEvents])
        received += [e.event_id for e in batch.events]
    return received


async def test_temporal_killed_while_webhooks_arrive_loses_and_doubles_nothing(
    sqlite_url: str, sessionmaker: SessionMaker, task_queue: str, tmp_path: Path
) -> None:
    customers = [unique_customer_id() for _ in range(CUSTOMERS)]
    with dev_server(tmp_path / "temporal") as server:
        worker_client = await server.ready()
        settings = app_settings(sqlite_url, server.address, task_queue)
        async with (
            workers(worker_client, settings, sessionmaker),
            running_api(settings) as (app, http),
        ):
            forwarder = app.state.lifecycle.forwarder
            sender = Sender(http, customers)
            async with sending(sender) as stream:
                sender.send_until(RESTARTED_AFTER)
                await sender.reached(KILLED_AFTER)
                server.sigkill()

                async def delivery_failed() -> bool:
                    return any(row.attempts and row.last_error for row in await inbox(sessionmaker))

                # The forwarder saw the server gone, while webhooks went on arriving.
                # (The client's own retries of a call come first, for some seconds.)
                await eventually(delivery_failed, "a failed delivery", timeout=45.0)
                await sender.reached(RESTARTED_AFTER)
                assert (await http.get("/readyz")).json()["checks"]["temporal"] != "ok"
                server.restart()
                await server.ready()
                # The rest arrive while the backlog is still going out.
                sender.send_until(ROUNDS)
                await stream
            await asyncio.wait_for(forwarder.drained(), 30.0)

            # Every webhook was acknowledged as stored, the server up or down.
            assert len(sender.answers) == CUSTOMERS * ROUNDS
            assert {(code, body["status"]) for code, body in sender.answers} == {(200, "pending")}
            rows = await inbox(sessionmaker)
            assert len(rows) == CUSTOMERS * ROUNDS
            assert {row.status for row in rows} == {InboxStatus.FORWARDED}
            assert any(row.attempts > 1 for row in rows)

            for customer in customers:
                handle = worker_client.get_workflow_handle_for(
                    CustomerWorkflow.run, ids.customer_workflow_id(customer)
                )

                async def applied(handle: Any = handle) -> bool:
                    snapshot = await handle.query(CustomerWorkflow.state)
                    return bool(snapshot.events_applied >= ROUNDS)

                await eventually(applied, f"{customer}'s events applied", timeout=30.0)
                snapshot = await handle.query(CustomerWorkflow.state)
                # Each event applied once: a redelivered one is recognised by its id.
                assert snapshot.events_applied == ROUNDS
                assert snapshot.email == email_of(customer, ROUNDS - 1)
                assert snapshot.last_event_created == T0 + (ROUNDS - 1) * 60
                received = await signalled_event_ids(worker_client, customer)
                sent = [event["id"] for event in sender.sent[customer]]
                # Every event reached the workflow, in the order Stripe sent them; a
                # delivery the kill interrupted may have reached it and been sent again.
                assert list(dict.fromkeys(received)) == sent, server.log.read_text()[-4000:]

            async def persisted() -> bool:
                async with sessionmaker() as session:
                    stored = (await session.execute(select(Customer))).scalars().all()
                return sorted((c.customer_id, c.snapshot_version) for c in stored) == sorted(
                    (c, ROUNDS) for c in customers
                )

            # The worker's snapshot writes went on after the restart.
            await eventually(persisted, "every snapshot stored", timeout=20.0)
            assert (await http.get("/readyz")).status_code == 200
