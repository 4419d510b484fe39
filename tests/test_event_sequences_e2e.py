"""`event` automations end to end: a signed `charge.dispute.created` through the real API
(its customer read from the local Stripe-speaking server), the customer workflow choosing
the dispute automation, and its steps: the team told by email and on a local
Slack-speaking server, and the business's own endpoint sent a signed event it verifies,
once, though the worker is restarted between the steps."""

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import col
from temporalio.testing import WorkflowEnvironment

from stripe_lifecycle.domain import ids
from stripe_lifecycle.settings import Settings
from stripe_lifecycle.storage.db import SessionMaker
from stripe_lifecycle.storage.models import Message
from stripe_lifecycle.workflows.customer import CustomerWorkflow

from .conftest import app_settings, running_api, temporal_address, workers
from .events import customer_event, unique_customer_id
from .fakes import STRIPE_API_KEY, StripeHttpServer, StripeState, serving
from .payment_events import charge_object, dispute_event
from .signing import signed
from .webhook_receivers import (
    OUTBOUND_SECRET,
    ReceiverServer,
    SlackServer,
    running_receiver,
    running_slack,
)
from .workflow_helpers import eventually, lifecycles_of, wait_for_lifecycle

AUTOMATIONS = """\
automations:
  - name: dispute-alert
    lifecycle: event
    trigger: {event: charge.dispute.created}
    steps:
      - {after: 0s, webhook: {url: "RECEIVER/hooks/billing", event: dispute.opened}}
      - {after: 3s, action: notify_team}
"""


@pytest.fixture
def stripe_api() -> Iterator[StripeHttpServer]:
    with serving(StripeHttpServer(StripeState())) as server:
        yield server


@pytest.fixture
def receiver() -> Iterator[ReceiverServer]:
    yield from running_receiver()


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    yield from running_slack()


async def test_a_dispute_tells_the_team_and_the_business_endpoint_once(
    dev_env: WorkflowEnvironment,
    sqlite_url: str,
    sessionmaker: SessionMaker,
    task_queue: str,
    tmp_path: Path,
    stripe_api: StripeHttpServer,
    receiver: ReceiverServer,
    slack: SlackServer,
) -> None:
    automations = tmp_path / "automations.yaml"
    automations.write_text(AUTOMATIONS.replace("RECEIVER", receiver.url))
    settings = app_settings(
        sqlite_url,
        temporal_address(dev_env),
        task_queue,
        automations=automations,
        stripe_api_key=STRIPE_API_KEY,
        stripe_api_base=stripe_api.url,
        team_email="team@example.com",
        team_slack_webhook=slack.webhook_url,
        outbound_webhook_secret=OUTBOUND_SECRET,
        outbound_webhook_hosts=receiver.host,
    )
    customer = unique_customer_id()
    charge = f"ch_T{customer[5:]}"
    stripe_api.state.charges[charge] = charge_object(charge, customer)
    handle = dev_env.client.get_workflow_handle_for(
        CustomerWorkflow.run, ids.customer_workflow_id(customer)
    )
    now = int(time.time())
    dispute = dispute_event(charge, created=now)
    sequence = ids.event_sequence_id("dispute-alert", dispute["id"])
    async with running_api(settings) as (_, http):

        async def post(event: dict[str, Any]) -> None:
            body, headers = signed(event)
            answer = await http.post("/webhooks/stripe", content=body, headers=headers)
            assert answer.status_code == 200, answer.text

        async with workers(dev_env.client, settings, sessionmaker):
            await post(
                customer_event(
                    customer, "ada@example.com", created=now - 60, type_="customer.created"
                )
            )
            await post(dispute)
            ref = await wait_for_lifecycle(handle, sequence)
            assert (ref.lifecycle, ref.automation) == ("event", "dispute-alert")

            async def posted() -> bool:
                return len(receiver.state.received) == 1

            await eventually(posted, "the business's endpoint told")
        # The worker stops before the team is told, and a new one (replaying the
        # history) carries the sequence on: the endpoint is not told again.
        async with workers(dev_env.client, _fresh(settings), sessionmaker):
            await wait_for_lifecycle(handle, sequence, "sequence_finished")
            # Nothing else started for a dispute.
            started = {r.lifecycle for r in (await lifecycles_of(handle)).values()}
    assert started == {"event"}
    [hook] = receiver.state.received
    assert hook.verified
    body = hook.json()
    assert (body["type"], body["id"]) == ("dispute.opened", f"{sequence}/0-webhook-dispute.opened")
    data = body["data"]
    assert (data["automation"], data["lifecycle"], data["customer"]) == (
        "dispute-alert",
        "event",
        {"id": customer},
    )
    assert data["event"]["type"] == "charge.dispute.created"
    assert data["event"]["object"]["type"] == "dispute"
    assert data["event"]["object"]["amount"] == 4900
    assert data["event"]["object"]["related"]["charge"] == charge
    assert "ada@example.com" not in hook.body.decode()
    # The team: one email, one Slack message naming the customer.
    async with sessionmaker() as session:
        rows = await session.execute(select(Message).where(col(Message.customer_id) == customer))
        notices = [(m.template, m.to) for m in rows.scalars()]
    assert sorted(notices) == [("team/notice", "slack"), ("team/notice", "team@example.com")]
    [message] = slack.state.bodies
    assert customer in message["text"]


def _fresh(settings: Settings) -> Settings:
    """The same settings, for a worker that caches no workflow: every task replays."""
    return settings.model_copy(update={"worker_max_cached_workflows": 0})
