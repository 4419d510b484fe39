"""Nothing is lost when Temporal is down: events wait in the inbox and reach the workflow
once Temporal is back, in order, including across an API restart."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

from sqlalchemy import select
from sqlmodel import col
from temporalio.testing import WorkflowEnvironment

from stripe_lifecycle.domain import contract, ids
from stripe_lifecycle.storage.db import create_engine, create_sessionmaker
from stripe_lifecycle.storage.models import InboxStatus, WebhookEvent
from stripe_lifecycle.workflows.customer import CustomerWorkflow

from .conftest import app_settings, free_port, running_api, workers
from .events import customer_event, subscription_event, unique_customer_id
from .signing import signed
from .workflow_helpers import eventually

T0 = 1_790_000_000
TEMPORAL_CLI = str(Path(sysconfig.get_path("scripts")) / "temporal")


async def inbox_rows(database_url: str) -> list[WebhookEvent]:
    engine = create_engine(database_url)
    async with create_sessionmaker(engine)() as session:
        rows = list(
            (await session.execute(select(WebhookEvent).order_by(col(WebhookEvent.id)))).scalars()
        )
    await engine.dispose()
    return rows


async def start_temporal_on(port: int) -> WorkflowEnvironment:
    return await WorkflowEnvironment.start_local(
        port=port,
        dev_server_existing_path=TEMPORAL_CLI,
        search_attributes=contract.SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
    )


async def test_temporal_down_then_up_delivers_the_stored_event(
    database_url: str, task_queue: str
) -> None:
    port = free_port()
    settings = app_settings(database_url, f"127.0.0.1:{port}", task_queue)
    cus = unique_customer_id()
    event = customer_event(cus, "noor@example.com", created=T0)
    async with running_api(settings) as (app, http):
        body, headers = signed(event)
        response = await http.post("/webhooks/stripe", content=body, headers=headers)
        assert response.status_code == 200
        assert (await http.get("/readyz")).status_code == 503

        async def failed_once() -> bool:
            rows = await inbox_rows(database_url)
            return rows[0].attempts >= 1 and rows[0].last_error is not None

        await eventually(failed_once, "a recorded delivery failure", timeout=20.0)
        [row] = await inbox_rows(database_url)
        assert row.status == InboxStatus.PENDING

        env = await start_temporal_on(port)
        async with env:
            engine = create_engine(database_url)
            async with workers(env.client, settings, create_sessionmaker(engine)):
                await app.state.lifecycle.forwarder.drained()
                [row] = await inbox_rows(database_url)
                assert row.status == InboxStatus.FORWARDED
                handle = env.client.get_workflow_handle_for(
                    CustomerWorkflow.run, ids.customer_workflow_id(cus)
                )

                async def applied() -> bool:
                    snap = await handle.query(CustomerWorkflow.state)
                    return snap.email == "noor@example.com"

                await eventually(applied, "the event to reach the workflow", timeout=20.0)
                assert (await http.get("/readyz")).status_code == 200
            await engine.dispose()


async def test_events_stored_before_a_restart_are_delivered_in_order_after_it(
    database_url: str, task_queue: str
) -> None:
    port = free_port()
    settings = app_settings(database_url, f"127.0.0.1:{port}", task_queue)
    cus = unique_customer_id()
    events = [
        subscription_event(cus, created=T0, status="trialing"),
        subscription_event(cus, created=T0 + 10, status="active"),
        subscription_event(cus, created=T0 + 20, status="past_due"),
    ]
    async with running_api(settings) as (_, http):
        for event in events:
            body, headers = signed(event)
            assert (
                await http.post("/webhooks/stripe", content=body, headers=headers)
            ).status_code == 200
    # The API process is gone; its undelivered events are only in the database now.
    assert [r.status for r in await inbox_rows(database_url)] == [InboxStatus.PENDING] * 3

    env = await start_temporal_on(port)
    async with env:
        engine = create_engine(database_url)
        async with workers(env.client, settings, create_sessionmaker(engine)):
            async with running_api(settings) as (app, _):
                await app.state.lifecycle.forwarder.drained()
                rows = await inbox_rows(database_url)
                assert [r.status for r in rows] == [InboxStatus.FORWARDED] * 3
                handle = env.client.get_workflow_handle_for(
                    CustomerWorkflow.run, ids.customer_workflow_id(cus)
                )

                async def all_applied() -> bool:
                    snap = await handle.query(CustomerWorkflow.state)
                    return snap.events_applied == 3

                await eventually(all_applied, "all three events", timeout=20.0)
                snap = await handle.query(CustomerWorkflow.state)
                assert snap.status == "past_due"
                history = await handle.fetch_history()
                signals = [
                    json.loads(
                        e.workflow_execution_signaled_event_attributes.input.payloads[0].data
                    )
                    for e in history.events
                    if e.HasField("workflow_execution_signaled_event_attributes")
                ]
                delivered = [event["event_id"] for signal in signals for event in signal["events"]]
                # The backlog of one customer goes out as one signal, each event once, in
                # the order Stripe sent them.
                assert len(signals) == 1
                assert delivered == [e["id"] for e in events]
        await engine.dispose()
