"""Shared by the report, dashboard and delivery tests: dunning emails and paid invoices
recorded by the worker's real mail and conversion activities in the API's database, clicks
through the API's real tracking redirect, and a dunning started by signed webhooks."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Self

import httpx
from fastapi import FastAPI
from temporalio.testing import ActivityEnvironment

from stripe_lifecycle.activities.conversions import ConversionActivities
from stripe_lifecycle.activities.interface import ConversionInput, SendEmailInput
from stripe_lifecycle.activities.mail import MailActivities
from stripe_lifecycle.domain.attribution import Policy
from stripe_lifecycle.domain.conversions import RECOVERED
from stripe_lifecycle.domain.lifecycles import Lifecycle
from stripe_lifecycle.mail.templates import Brand
from stripe_lifecycle.mail.transports import OutboxTransport
from stripe_lifecycle.settings import Settings
from stripe_lifecycle.storage.db import SessionMaker
from stripe_lifecycle.storage.models import Message

from . import corpus, delivery_helpers
from .conftest import app_settings, free_port, running_api
from .delivery_helpers import CUSTOMER, INVOICE
from .events import customer_event, subscription_event, unique_customer_id
from .signing import signed

PAYMENT_FAILED, REMINDER = "dunning/payment-failed", "dunning/reminder"
T0 = 1_790_000_000


def invoice() -> str:
    """A new invoice id; each invoice has a dunning of its own, `dunning-{invoice_id}`."""
    return f"in_{uuid.uuid4().hex[:12]}"


def step_key(index: int, template: str) -> str:
    """The dunning's step that sends `template` as its `index`th email."""
    return f"{index}-{template.replace('/', '-')}"


def mail_activities(settings: Settings, sessionmaker: SessionMaker) -> MailActivities:
    """The mail activities, branded and linking as the API's `settings` say, recording
    emails without sending them (outbox)."""
    return delivery_helpers.mail_activities(
        OutboxTransport(),
        sessionmaker,
        brand=Brand.from_settings(settings),
        public_url=settings.public_url,
    )


@dataclass
class DunningRig:
    """The API (`http`), and the worker's real mail and conversion activities writing to
    the API's database."""

    http: httpx.AsyncClient
    settings: Settings
    sessionmaker: SessionMaker
    mail: MailActivities
    app: FastAPI | None = None

    @classmethod
    @asynccontextmanager
    async def running(cls, database_url: str, task_queue: str) -> AsyncIterator[Self]:
        """The rig on the API serving `database_url`. No Temporal behind it: the app's
        client is lazy, so an unused port will do."""
        settings = app_settings(database_url, f"127.0.0.1:{free_port()}", task_queue)
        async with running_api(settings) as (app, http):
            sessionmaker: SessionMaker = app.state.lifecycle.sessionmaker
            yield cls(http, settings, sessionmaker, mail_activities(settings, sessionmaker), app)

    async def send(
        self, invoice_id: str, index: int, template: str, currency: str = "usd"
    ) -> Message:
        """One email of the invoice's dunning, recorded (not sent: the outbox)."""
        request = SendEmailInput(
            workflow_id=f"dunning-{invoice_id}",
            step=step_key(index, template),
            customer_id=f"cus_{invoice_id}",
            lifecycle=Lifecycle.DUNNING,
            automation="dunning-default",
            template=template,
            to="ada@example.com",
            livemode=False,
            context={
                "customer": CUSTOMER,
                "invoice": {**INVOICE, "currency": currency, "next_payment_attempt": None},
            },
            destinations={"update_payment": "https://invoice.stripe.com/i/acct_1/test"},
        )
        return await self._recorded(request)

    async def click(self, message: Message) -> None:
        """Follows the email's tracked link, as the reader does."""
        [link] = [url for url in message.links if "/t/" in url]
        response = await self.http.get("/t/" + link.partition("/t/")[2])
        assert response.status_code == 302, response.text

    async def send_trial_welcome(self, invoice_id: str) -> Message:
        """The trial welcome of the customer whose first invoice is `invoice_id` (the trial
        `trial-sub_{invoice_id}`), recorded (not sent: the outbox)."""
        request = delivery_helpers.step_email(
            Lifecycle.TRIAL, customer_id=f"cus_{invoice_id}", workflow_id=trial_of(invoice_id)
        )
        return await self._recorded(request)

    async def _recorded(self, request: SendEmailInput) -> Message:
        """The email the real send_email activity records for `request`."""
        result = await ActivityEnvironment().run(self.mail.send_email, request)
        async with self.sessionmaker() as session:
            message = await session.get(Message, result.message_id)
        assert message is not None and message.status == "recorded"
        return message

    async def record(self, conversion: ConversionInput, policy: Policy | None = None) -> str | None:
        """`conversion` recorded by the real conversion activity; the id of the email
        credited most, if any."""
        activities = ConversionActivities(self.sessionmaker, policy or Policy())
        credited: str | None = await ActivityEnvironment().run(
            activities.record_conversion, conversion
        )
        return credited

    async def recover(
        self,
        invoice_id: str,
        at: int,
        amount: int = 4900,
        currency: str = "usd",
        *,
        policy: Policy | None = None,
    ) -> str | None:
        """The invoice paid at `at` (unix time), `amount` being the MRR it wins back too,
        recorded by the real conversion activity; the id of the email credited, if any."""
        return await self.record(paid(invoice_id, at, amount, currency), policy)


def trial_of(invoice_id: str) -> str:
    """The trial whose first invoice is `invoice_id`."""
    return f"trial-sub_{invoice_id}"


def paid(
    invoice_id: str,
    at: int,
    amount: int = 4900,
    currency: str = "usd",
    *,
    kind: str = RECOVERED,
    lifecycle: Lifecycle = Lifecycle.DUNNING,
    uncredited_reason: str | None = None,
) -> ConversionInput:
    """The conversion `lifecycle` records for the `invoice.paid` of `invoice_id` at `at`:
    one Stripe event (`evt_paid_{invoice_id}`), whichever lifecycles it converts. `amount`
    is the MRR it wins back too."""
    return ConversionInput(
        stripe_event_id=f"evt_paid_{invoice_id}",
        kind=kind,
        customer_id=f"cus_{invoice_id}",
        lifecycle=lifecycle,
        workflow_id=trial_of(invoice_id)
        if lifecycle == Lifecycle.TRIAL
        else f"{lifecycle}-{invoice_id}",
        automation=f"{lifecycle}-default",
        invoice_id=invoice_id,
        subscription_id=f"sub_{invoice_id}",
        amount_cents=amount,
        mrr_delta_cents=amount,
        currency=currency,
        occurred_at=at,
        uncredited_reason=uncredited_reason,
    )


async def start_dunning(http: httpx.AsyncClient, email: str) -> tuple[str, str]:
    """A customer whose invoice payment failed, through signed webhooks: (customer id,
    dunning workflow id)."""
    cus, invoice_id = unique_customer_id(), f"in_{uuid.uuid4().hex[:14]}"
    events: list[dict[str, Any]] = [
        customer_event(cus, email, created=T0, type_="customer.created"),
        subscription_event(cus, created=T0 + 1, status="past_due"),
        corpus.event(
            "invoice.payment_failed",
            "legacy",
            cus,
            created=T0 + 2,
            id=invoice_id,
            subscription="sub_T1",
            billing_reason="subscription_cycle",
            amount_due=4900,
        ),
    ]
    for event in events:
        body, headers = signed(event)
        response = await http.post("/webhooks/stripe", content=body, headers=headers)
        assert response.status_code == 200, response.text
    return cus, f"dunning-{invoice_id}"
