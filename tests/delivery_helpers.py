"""Shared by the delivery tests: a real SMTP server (aiosmtpd) and a local HTTP server
speaking Postmark's email API, the mail activities wired to them, and one step's email of
each kind of lifecycle."""

from __future__ import annotations

import email
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import select
from sqlmodel import col

from stripe_lifecycle.activities.interface import SendEmailInput
from stripe_lifecycle.activities.mail import MailActivities
from stripe_lifecycle.domain.lifecycles import Lifecycle
from stripe_lifecycle.mail.templates import Brand, TemplateRenderer
from stripe_lifecycle.mail.transports import MailTransport, PostmarkTransport
from stripe_lifecycle.storage.db import SessionMaker
from stripe_lifecycle.storage.models import Message

from .conftest import LINK_SECRET, free_port
from .test_transports import TOKEN, PostmarkHttpServer, PostmarkState, serving

PUBLIC_URL = "https://billing.acme.test"
TRANSACTIONAL_STREAM = "outbound"
BROADCAST_STREAM = "acme-campaigns"

BRAND = Brand(
    name="Acme Analytics",
    logo_url=None,
    support_email="help@acme.test",
    primary_color="#635bff",
    address="1 Main St",
)

CUSTOMER = {"email": "ada@example.com", "name": "Ada"}
SUBSCRIPTION = {
    "plan": "Pro",
    "amount": 4900,
    "currency": "usd",
    "current_period_end": 1_790_259_200,
    "trial_end": 1_790_259_200,
    "cancel_at": None,
}
OFFER = {"code": "COMEBACK30", "description": "30% off for 3 months"}
INVOICE = {
    "number": "INV-0042",
    "amount_due": 4900,
    "currency": "usd",
    "hosted_invoice_url": "https://invoice.stripe.com/i/acct_1/test",
    "next_payment_attempt": 1_790_259_200,
    "attempt_count": 1,
}

# One template per lifecycle used here: (workflow id prefix, template, context, link).
KINDS: dict[str, tuple[str, dict[str, Any], str]] = {
    "winback": ("winback/offer", {"customer": CUSTOMER, "offer": OFFER}, "offer"),
    "upgrade": (
        "upgrade/offer",
        {"customer": CUSTOMER, "subscription": SUBSCRIPTION, "offer": OFFER},
        "offer",
    ),
    "trial": (
        "trial/welcome",
        {"customer": CUSTOMER, "subscription": SUBSCRIPTION},
        "update_payment",
    ),
    "dunning": (
        "dunning/payment-failed",
        {"customer": CUSTOMER, "invoice": INVOICE},
        "update_payment",
    ),
}


def step_email(
    lifecycle: str,
    *,
    customer_id: str = "cus_Deliver1",
    workflow_id: str | None = None,
    step: str = "0-send",
    to: str | None = "ada@example.com",
) -> SendEmailInput:
    """One step's email of `lifecycle` (winback, upgrade, trial or dunning), live mode."""
    template, context, link = KINDS[lifecycle]
    return SendEmailInput(
        workflow_id=workflow_id or f"{lifecycle}-{customer_id}-1",
        step=step,
        customer_id=customer_id,
        lifecycle=Lifecycle(lifecycle),
        automation=f"{lifecycle}-default",
        template=template,
        to=to,
        livemode=True,
        context=context,
        destinations={link: "https://app.acme.test/billing"},
    )


def mail_activities(
    transport: MailTransport,
    sessionmaker: SessionMaker,
    *,
    brand: Brand = BRAND,
    public_url: str = PUBLIC_URL,
    **options: Any,
) -> MailActivities:
    """The worker's mail activities as the tests wire them: test mode lets mail to
    example.com through, links are signed with the tests' `LINK_SECRET`."""
    return MailActivities(
        transport,
        TemplateRenderer(brand),
        sessionmaker,
        sender="billing@acme.test",
        test_mode_allowed_domains=frozenset({"example.com"}),
        public_url=public_url,
        link_secret=LINK_SECRET.encode(),
        **options,
    )


async def message_rows(sessionmaker: SessionMaker) -> list[Message]:
    """Every recorded message, oldest first."""
    async with sessionmaker() as session:
        rows = await session.execute(select(Message).order_by(col(Message.created_at)))
        return list(rows.scalars())


# --- SMTP -------------------------------------------------------------------------------


@dataclass
class SmtpInbox:
    """A real SMTP server's handler that keeps what it received."""

    port: int = 0
    received: list[EmailMessage] = field(default_factory=list)

    async def handle_DATA(self, _server: SMTP, _session: Session, envelope: Envelope) -> str:  # noqa: N802
        assert isinstance(envelope.content, bytes)
        message = email.message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(message)
        return "250 OK"


def running_smtp() -> Iterator[SmtpInbox]:
    inbox = SmtpInbox(port=free_port())
    controller = Controller(inbox, hostname="127.0.0.1", port=inbox.port)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()


# --- Postmark ---------------------------------------------------------------------------


def running_postmark() -> Iterator[PostmarkHttpServer]:
    with serving(PostmarkHttpServer(PostmarkState(token=TOKEN))) as server:
        yield server


def postmark_transport(server: PostmarkHttpServer) -> PostmarkTransport:
    return PostmarkTransport(
        TOKEN,
        api_url=server.url,
        message_stream=TRANSACTIONAL_STREAM,
        broadcast_stream=BROADCAST_STREAM,
        timeout=5,
    )
