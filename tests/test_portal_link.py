"""The dunning email's "fix your card" link makes a Customer Portal session when clicked,
through the real stripe library against a local server that answers like Stripe's API;
if Stripe refuses, the invoice's hosted page is the fallback."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from stripe_lifecycle.activities.mail import MailActivities, SendEmailInput
from stripe_lifecycle.db import create_engine, create_sessionmaker
from stripe_lifecycle.mail.templates import Brand, TemplateRenderer
from stripe_lifecycle.mail.transports import OutboxTransport
from stripe_lifecycle.models import Customer, Message

from .conftest import LINK_SECRET, app_settings, running_api, temporal_address

HOSTED = "https://invoice.stripe.com/i/acct_1/test_hosted"
PORTAL = "https://billing.stripe.com/p/session/test_portal_1"


class FakeStripe(BaseHTTPRequestHandler):
    requests: list[tuple[str, dict[str, list[str]], str]] = []

    def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
        body = self.rfile.read(int(self.headers["Content-Length"] or 0)).decode()
        form = parse_qs(body)
        FakeStripe.requests.append((self.path, form, self.headers.get("Authorization", "")))
        status: int
        payload: dict[str, Any]
        if form.get("customer") == ["cus_NoPortal"]:
            status, payload = (
                400,
                {
                    "error": {
                        "type": "invalid_request_error",
                        "message": "No configuration provided and your test mode default "
                        "configuration has not been created.",
                    }
                },
            )
        else:
            status, payload = (
                200,
                {"id": "bps_1", "object": "billing_portal.session", "url": PORTAL},
            )
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stripe_api() -> Iterator[str]:
    FakeStripe.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeStripe)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


async def sent_link(sqlite_url: str, customer_id: str, lifecycle: str) -> str:
    engine = create_engine(sqlite_url)
    sessionmaker = create_sessionmaker(engine)
    async with sessionmaker() as session:
        session.add(Customer(customer_id=customer_id, email="ada@example.com"))
        await session.commit()
    mail = MailActivities(
        OutboxTransport(),
        TemplateRenderer(Brand("Acme", None, None, "#635bff", None)),
        sessionmaker,
        sender="billing@acme.test",
        test_mode_allowed_domains=frozenset({"example.com"}),
        public_url="http://api.test",
        link_secret=LINK_SECRET.encode(),
    )
    template = "dunning/payment-failed" if lifecycle == "dunning" else "payment_action/confirm"
    result = await ActivityEnvironment().run(
        mail.send_email,
        SendEmailInput(
            workflow_id=f"{lifecycle}-in_1",
            step="0-x",
            customer_id=customer_id,
            lifecycle=lifecycle,
            automation="a",
            template=template,
            to="ada@example.com",
            livemode=False,
            context={
                "customer": {"email": "ada@example.com", "name": None},
                "invoice": {
                    "number": "INV-1",
                    "amount_due": 4900,
                    "currency": "usd",
                    "hosted_invoice_url": HOSTED,
                    "next_payment_attempt": None,
                    "attempt_count": 1,
                },
            },
            destinations={"update_payment": HOSTED},
        ),
    )
    async with sessionmaker() as session:
        message = await session.get(Message, result.message_id)
        assert message is not None
        link = message.links[0]
    await engine.dispose()
    return link.removeprefix("http://api.test")


@pytest.mark.parametrize(
    ("customer_id", "lifecycle", "expected", "portal_asked"),
    [
        ("cus_Portal", "dunning", PORTAL, True),
        ("cus_NoPortal", "dunning", HOSTED, True),  # Stripe refused: the fallback
        ("cus_3ds", "payment_action", HOSTED, False),  # 3-D Secure is confirmed on the invoice
    ],
)
async def test_fix_card_link_opens_a_fresh_portal_session(
    dev_env: WorkflowEnvironment,
    sqlite_url: str,
    task_queue: str,
    stripe_api: str,
    customer_id: str,
    lifecycle: str,
    expected: str,
    portal_asked: bool,
) -> None:
    path = await sent_link(sqlite_url, customer_id, lifecycle)
    settings = app_settings(
        sqlite_url,
        temporal_address(dev_env),
        task_queue,
        stripe_api_key="sk_test_portal",
        stripe_api_base=stripe_api,
    )
    async with running_api(settings) as (_, http):
        click = await http.get(path)
    assert (click.status_code, click.headers["location"]) == (302, expected)
    if portal_asked:
        [(endpoint, form, auth)] = FakeStripe.requests
        assert endpoint == "/v1/billing_portal/sessions"
        assert form == {"customer": [customer_id], "return_url": [HOSTED]}
        assert auth == "Bearer sk_test_portal"
    else:
        assert FakeStripe.requests == []
