"""Subscription and card lifecycles started, fed and ended by the customer workflow, on the
dev server (search attributes registered), with the packaged automations, the real
activities and SQLite.

The dev server keeps real time, so these check what starts, what ends and what is
recorded; the timing of steps is tested on the time-skipping server
(test_sequence_workflows.py)."""

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import col
from temporalio.worker import Worker

from stripe_lifecycle.domain import contract, ids
from stripe_lifecycle.domain.ledger import LifecycleRef
from stripe_lifecycle.intake.forwarder import ForwarderConfig, temporal_delivery
from stripe_lifecycle.intake.normalise import normalise_event
from stripe_lifecycle.storage.models import Conversion, Message
from stripe_lifecycle.workflows.customer import CustomerWorkflow
from stripe_lifecycle.workflows.engine import ADDRESS_PATCH

from . import corpus
from .conftest import WorkerRig
from .events import customer_event, subscription_event, unique_customer_id
from .workflow_helpers import DAY, eventually, lifecycles_of, wait_for_lifecycle


@pytest.fixture(autouse=True)
async def worker(dev_rig: WorkerRig) -> AsyncIterator[Worker]:
    async with dev_rig.worker() as w:
        yield w


class Customer:
    """One test customer: send it events, read what its workflow started."""

    def __init__(self, rig: WorkerRig) -> None:
        self.id = unique_customer_id()
        # Workflow ids name subscriptions and cards, so each test needs its own.
        self.sub = f"sub_{self.id[4:]}"
        self.pm = f"pm_{self.id[4:]}"
        self.client = rig.env.client
        self.rig = rig
        self._deliver = temporal_delivery(self.client, ForwarderConfig(task_queue=rig.task_queue))
        self.handle = self.client.get_workflow_handle_for(
            CustomerWorkflow.run, ids.customer_workflow_id(self.id)
        )

    async def send(self, *events: dict[str, Any]) -> None:
        for raw in events:
            event = normalise_event(raw)
            assert event is not None
            await self._deliver(event.customer_id, [event])

    async def lifecycles(self) -> dict[str, LifecycleRef]:
        """The latest instance under each workflow id."""
        return await lifecycles_of(self.handle)

    async def wait_for(self, workflow_id: str, status: str = "running") -> LifecycleRef:
        return await wait_for_lifecycle(self.handle, workflow_id, status)

    async def settled(self, events: int) -> None:
        async def applied() -> bool:
            state = await self.handle.query(CustomerWorkflow.state)
            return state.events_applied >= events

        await eventually(applied, f"{events} events applied")

    async def acted_on(self, events: int) -> None:
        """Until the workflow has acted on its first `events` events: started, fed or
        ended the lifecycles they call for. It counts a batch of events as it applies
        them, before acting on them, so `settled` alone comes too early; it takes the next
        batch only once it has acted on the last. So a harmless event sent once those are
        counted, and counted in turn, means they have been acted on."""
        await self.settled(events)
        await self.send(customer_event(self.id, "ada@example.com", created=int(time.time())))
        await self.settled(events + 1)

    def subscription_event(self, *, created: int, **fields: Any) -> dict[str, Any]:
        """A subscription event of this customer: by default about its subscription `sub`."""
        return subscription_event(self.id, created=created, **({"sub_id": self.sub} | fields))

    async def messages(self, workflow_id: str) -> list[Message]:
        return await self.rig.messages(workflow_id)

    async def conversions(self) -> list[Conversion]:
        async with self.rig.sessionmaker() as session:
            rows = await session.execute(
                select(Conversion)
                .where(col(Conversion.customer_id) == self.id)
                .order_by(col(Conversion.id))
            )
            return list(rows.scalars())


@pytest.fixture
def customer(dev_rig: WorkerRig) -> Customer:
    return Customer(dev_rig)


def paid_invoice(
    cus: str, created: int, amount: int, *, sub_id: str, reason: str = "subscription_cycle"
) -> dict[str, Any]:
    return corpus.event(
        "invoice.paid",
        "legacy",
        cus,
        created=created,
        id=f"in_T{created}{amount}",
        subscription=sub_id,
        billing_reason=reason,
        amount_due=amount,
        amount_paid=amount,
    )


async def test_trial_starts_sends_welcome_and_converts_once_whatever_the_order(
    customer: Customer,
) -> None:
    now = int(time.time())
    cus, sub = customer.id, customer.sub
    await customer.send(
        customer_event(cus, "ada@example.com", created=now - 10, type_="customer.created"),
        customer.subscription_event(
            created=now - 9,
            status="trialing",
            type_="customer.subscription.created",
            trial_end=now + 14 * DAY,
        ),
    )
    ref = await customer.wait_for(f"trial-{sub}")
    assert (ref.lifecycle, ref.automation, ref.anchor) == ("trial", "trial-default", now + 14 * DAY)
    child = await customer.client.get_workflow_handle(f"trial-{sub}").describe()
    assert child.workflow_type == "TrialWorkflow"
    assert child.typed_search_attributes.get(contract.LIFECYCLE) == "trial"
    assert child.typed_search_attributes.get(contract.AUTOMATION) == "trial-default"
    assert child.typed_search_attributes.get(contract.CUSTOMER_ID) == cus

    async def welcomed() -> bool:
        return [m.template for m in await customer.messages(f"trial-{sub}")] == ["trial/welcome"]

    await eventually(welcomed, "the welcome email")

    # Stripe's trial-end pair, within a second, delivered newest first; then the
    # duplicate payment event Stripe sends for the same invoice. (After the welcome was
    # recorded, so it falls in the attribution window.)
    later = int(time.time()) + 2
    paid = paid_invoice(cus, later + 1, 4900, sub_id=sub)
    await customer.send(
        paid,
        customer.subscription_event(created=later, status="active"),
        {**paid, "id": paid["id"] + "x", "type": "invoice.payment_succeeded"},
    )
    ref = await customer.wait_for(f"trial-{sub}", "converted")
    snapshot = await customer.handle.query(CustomerWorkflow.state)
    assert [(r.workflow_id, r.status) for r in snapshot.lifecycles] == [
        (f"trial-{sub}", "converted")
    ]
    conversions = await customer.conversions()
    assert [
        (c.kind, c.lifecycle, c.automation, c.mrr_delta_cents, c.amount_cents) for c in conversions
    ] == [("trial_converted", "trial", "trial-default", 4900, 4900)]
    # Attributed to the welcome email, the last one sent within the window.
    assert conversions[0].message_id == (await customer.messages(f"trial-{sub}"))[0].id
    assert ref.converted


async def test_a_trial_begun_before_its_customer_is_known_welcomes_them_once_known(
    customer: Customer,
) -> None:
    """Stripe sends `customer.created` and the subscription's events in no set order (the
    replay corpus found it): the welcome waits for the address, which the customer
    workflow passes on when the customer's own event arrives."""
    now = int(time.time())
    cus, sub = customer.id, customer.sub
    await customer.send(
        customer.subscription_event(
            created=now - 9,
            status="trialing",
            type_="customer.subscription.created",
            trial_end=now + 14 * DAY,
        )
    )
    await customer.wait_for(f"trial-{sub}")
    trial = customer.client.get_workflow_handle(f"trial-{sub}")

    async def waiting_for_the_address() -> bool:
        history = await trial.fetch_history()
        # The patch's marker: the step found no address and waits for one.
        return any(
            ADDRESS_PATCH.encode() in e.marker_recorded_event_attributes.SerializeToString()
            for e in history.events
            if e.HasField("marker_recorded_event_attributes")
        )

    await eventually(waiting_for_the_address, "the welcome step waiting for an address")
    assert await customer.messages(f"trial-{sub}") == []
    await customer.send(
        customer_event(cus, "grace@example.com", created=now - 10, type_="customer.created")
    )

    async def welcomed() -> bool:
        return bool(await customer.messages(f"trial-{sub}"))

    await eventually(welcomed, "the welcome email")
    [welcome] = await customer.messages(f"trial-{sub}")
    assert (welcome.template, welcome.to, welcome.status) == (
        "trial/welcome",
        "grace@example.com",
        "recorded",
    )


async def test_trial_extended_is_retimed_and_a_lapsed_trial_expires(customer: Customer) -> None:
    now = int(time.time())
    sub = customer.sub
    await customer.send(
        customer.subscription_event(
            created=now - 9,
            trial_end=now + 7 * DAY,
            status="trialing",
            type_="customer.subscription.created",
        )
    )
    await customer.wait_for(f"trial-{sub}")
    await customer.send(
        customer.subscription_event(created=now - 8, status="trialing", trial_end=now + 21 * DAY)
    )

    async def retimed() -> bool:
        state = await customer.client.get_workflow_handle(f"trial-{sub}").query("state")
        return bool(state["anchor"]) and datetime.fromisoformat(
            state["anchor"]
        ) == datetime.fromtimestamp(now + 21 * DAY, UTC)

    await eventually(retimed, "the trial's new end date")
    await customer.send(customer.subscription_event(created=now - 7, status="paused"))
    await customer.wait_for(f"trial-{sub}", "expired")
    assert await customer.conversions() == []


async def test_scheduled_cancel_saved_then_cancelled_hands_over_to_winback_and_reactivation(
    customer: Customer,
) -> None:
    now = int(time.time())
    cus, sub = customer.id, customer.sub
    await customer.send(
        customer_event(cus, "ada@example.com", created=now - 20),
        customer.subscription_event(created=now - 19, type_="customer.subscription.created"),
        customer.subscription_event(
            created=now - 18,
            cancel_at_period_end=True,
            previous_attributes={"cancel_at_period_end": False},
        ),
    )
    first = await customer.wait_for(f"scheduled-cancel-{sub}")
    assert first.anchor == now - 18 + 30 * DAY  # the period end
    await customer.send(customer.subscription_event(created=now - 17, cancel_at_period_end=False))
    await customer.wait_for(f"scheduled-cancel-{sub}", "saved")
    saved = await customer.conversions()
    assert [(c.kind, c.mrr_delta_cents) for c in saved] == [("saved", 4900)]

    # Cancelled again (the id comes back for a new instance), and this time it ends.
    await customer.send(customer.subscription_event(created=now - 16, cancel_at_period_end=True))
    await customer.wait_for(f"scheduled-cancel-{sub}")
    await customer.send(
        customer.subscription_event(
            created=now - 15,
            status="canceled",
            type_="customer.subscription.deleted",
            cancel_at_period_end=True,
            cancellation_details={"reason": "cancellation_requested"},
        )
    )
    await customer.wait_for(f"scheduled-cancel-{sub}", "cancelled")
    winback = await customer.wait_for(f"winback-{cus}-{sub}")
    assert winback.automation == "winback-voluntary"

    async def confirmation_sent() -> bool:
        sent = await customer.messages(winback.workflow_id)
        return [m.template for m in sent] == ["winback/cancelled"]

    await eventually(confirmation_sent, "the cancellation confirmation")
    survey = (await customer.messages(winback.workflow_id))[0]
    assert survey.destinations == {"survey": "hosted:survey", "offer": "portal:"}

    # They come back on a new subscription.
    await customer.send(
        customer.subscription_event(
            created=now - 5,
            sub_id=f"{sub}2",
            unit_amount=9900,
            type_="customer.subscription.created",
        )
    )
    await customer.wait_for(winback.workflow_id, "reactivated")
    kinds = [(c.kind, c.subscription_id, c.mrr_delta_cents) for c in await customer.conversions()]
    assert kinds == [("saved", sub, 4900), ("reactivated", f"{sub}2", 9900)]


async def test_involuntary_churn_runs_its_own_winback_and_partial_cancel_is_not_churn(
    customer: Customer,
) -> None:
    now = int(time.time())
    cus, sub = customer.id, customer.sub
    await customer.send(
        customer.subscription_event(created=now - 20, type_="customer.subscription.created"),
        customer.subscription_event(
            created=now - 19, sub_id=f"{sub}2", type_="customer.subscription.created"
        ),
        customer.subscription_event(
            created=now - 18,
            sub_id=f"{sub}2",
            status="canceled",
            type_="customer.subscription.deleted",
        ),
    )
    await customer.settled(3)
    # The customer still pays for the other subscription: not churn, no win-back.
    assert f"winback-{cus}-{sub}2" not in await customer.lifecycles()
    await customer.send(
        customer.subscription_event(
            created=now - 17,
            status="canceled",
            type_="customer.subscription.deleted",
            cancellation_details={"reason": "payment_failed"},
        )
    )
    winback = await customer.wait_for(f"winback-{cus}-{sub}")
    assert winback.automation == "winback-involuntary"


async def test_plan_changes_record_expansion_and_start_a_downgrade_check_in(
    customer: Customer,
) -> None:
    now = int(time.time())
    sub = customer.sub
    changed: dict[str, Any] = {"items": {"data": []}}
    await customer.send(
        customer.subscription_event(created=now - 20, type_="customer.subscription.created"),
        customer.subscription_event(
            created=now - 19, unit_amount=9900, previous_attributes=changed
        ),
    )

    async def expanded() -> bool:
        return [(c.kind, c.mrr_delta_cents) for c in await customer.conversions()] == [
            ("expansion", 5000)
        ]

    await eventually(expanded, "an expansion conversion")
    expansion = (await customer.conversions())[0]
    assert (expansion.lifecycle, expansion.message_id, expansion.attribution) == (
        "upgrade",
        None,
        None,
    )
    await customer.send(
        customer.subscription_event(created=now - 18, unit_amount=1900, previous_attributes=changed)
    )
    ref = await customer.wait_for(f"plan-change-{sub}-{now - 18}")
    assert ref.automation == "plan-change-downgrade"


async def test_annual_renewal_reminder_runs_until_the_renewal_is_paid(customer: Customer) -> None:
    now = int(time.time())
    cus, sub = customer.id, customer.sub
    await customer.send(
        customer.subscription_event(
            created=now - 20,
            interval="year",
            type_="customer.subscription.created",
        )
    )
    # The helper's period is 30 days whatever the interval; the anchor is what Stripe says.
    renewal = f"renewal-{sub}-{now - 20 + 30 * DAY}"
    ref = await customer.wait_for(renewal)
    assert ref.automation == "renewal-annual"
    # An invoice of an earlier cycle is not this renewal's; the one billed at the period
    # end is.
    await customer.send(paid_invoice(cus, now - 10, 49_000, sub_id=sub))
    await customer.settled(2)
    assert (await customer.lifecycles())[renewal].status == "running"
    await customer.send(paid_invoice(cus, now - 20 + 30 * DAY, 49_000, sub_id=sub))
    await customer.wait_for(renewal, "renewed")
    # A monthly plan matches no renewal automation: nothing runs for it.
    await customer.send(
        customer.subscription_event(
            created=now - 5, sub_id=f"{sub}3", type_="customer.subscription.created"
        )
    )
    await customer.acted_on(4)
    assert not any(w.startswith(f"renewal-{sub}3") for w in await customer.lifecycles())


async def test_expiring_default_card_is_tracked_until_the_network_updates_it(
    customer: Customer,
) -> None:
    now = int(time.time())
    cus = customer.id
    soon = datetime.fromtimestamp(now + 40 * DAY, UTC)
    card = {"brand": "visa", "last4": "4242", "exp_month": soon.month, "exp_year": soon.year}
    attached = corpus.event(
        "payment_method.attached", "clover", cus, created=now - 20, id=customer.pm
    )
    attached["data"]["object"]["card"].update(card)
    await customer.send(
        customer.subscription_event(
            created=now - 21,
            type_="customer.subscription.created",
            default_payment_method=customer.pm,
        ),
        attached,
    )
    expiring = f"card-expiring-{customer.pm}-{soon.year:04d}{soon.month:02d}"
    ref = await customer.wait_for(expiring)
    assert ref.automation == "card-expiring-default"

    updated = corpus.event(
        "payment_method.attached", "clover", cus, created=now - 10, id=customer.pm
    )
    updated["type"] = "payment_method.automatically_updated"
    updated["data"]["object"]["card"].update({**card, "exp_year": soon.year + 3})
    await customer.send(updated)
    await customer.wait_for(expiring, "card_updated")
    renewed = f"card-expiring-{customer.pm}-{soon.year + 3:04d}{soon.month:02d}"
    await customer.wait_for(renewed)
