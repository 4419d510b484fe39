"""The dunning email's "fix your card" link makes a Customer Portal session when clicked,
through the real stripe library against a local server that answers like Stripe's API;
if Stripe refuses, the invoice's hosted page is the fallback. Links of the other
lifecycles stored as `portal:` do the same with LIFECYCLE_BILLING_URL as the fallback;
`hosted:survey` leads to the survey page."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from stripe_lifecycle.activities.interface import SendEmailInput
from stripe_lifecycle.activities.mail import MailActivities
from stripe_lifecycle.domain.lifecycles import Lifecycle
from stripe_lifecycle.mail.templates import Brand, TemplateRenderer
from stripe_lifecycle.mail.transports import OutboxTransport
from stripe_lifecycle.storage.db import create_engine, create_sessionmaker
from stripe_lifecycle.storage.models import Customer, Message

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


INVOICE_CONTEXT = {
    "customer": {"email": "ada@example.com", "name": None},
    "invoice": {
        "number": "INV-1",
        "amount_due": 4900,
        "currency": "usd",
        "hosted_invoice_url": HOSTED,
        "next_payment_attempt": None,
        "attempt_count": 1,
    },
}
SUBSCRIPTION_CONTEXT = {
    "customer": {"email": "ada@example.com", "name": None},
    "subscription": {
        "plan": "Pro",
        "amount": 4900,
        "currency": "usd",
        "current_period_end": 1_800_000_000,
        "trial_end": 1_800_000_000,
        "cancel_at": None,
    },
    "payment_method": None,
}


async def sent_link(
    sqlite_url: str,
    customer_id: str,
    lifecycle: str,
    *,
    template: str | None = None,
    context: dict[str, Any] = INVOICE_CONTEXT,
    destinations: dict[str, str] | None = None,
) -> str:
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
    if template is None:
        template = "dunning/payment-failed" if lifecycle == "dunning" else "payment_action/confirm"
    result = await ActivityEnvironment().run(
        mail.send_email,
        SendEmailInput(
            workflow_id=f"{lifecycle}-in_1",
            step="0-x",
            customer_id=customer_id,
            lifecycle=Lifecycle(lifecycle),
            automation="a",
            template=template,
            to="ada@example.com",
            livemode=False,
            context=context,
            destinations=destinations or {"update_payment": HOSTED},
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


BILLING = "https://app.acme.test/billing"


@pytest.mark.parametrize(
    ("customer_id", "api_key", "billing_url", "status", "expected", "return_url"),
    [
        ("cus_Portal", True, BILLING, 302, PORTAL, [BILLING]),
        ("cus_Portal", True, None, 302, PORTAL, None),  # the dashboard's default return
        ("cus_NoPortal", True, BILLING, 302, BILLING, [BILLING]),  # Stripe refused
        ("cus_Portal", False, BILLING, 302, BILLING, None),  # no API key: billing page
        ("cus_Portal", False, None, 503, None, None),  # nowhere to send them
    ],
)
async def test_portal_marker_links_of_other_lifecycles(
    dev_env: WorkflowEnvironment,
    sqlite_url: str,
    task_queue: str,
    stripe_api: str,
    customer_id: str,
    api_key: bool,
    billing_url: str | None,
    status: int,
    expected: str | None,
    return_url: list[str] | None,
) -> None:
    path = await sent_link(
        sqlite_url,
        customer_id,
        "trial",
        template="trial/ending",
        context=SUBSCRIPTION_CONTEXT,
        destinations={"update_payment": "portal:"},
    )
    keys: dict[str, Any] = {"stripe_api_key": "sk_test_portal"} if api_key else {}
    settings = app_settings(
        sqlite_url,
        temporal_address(dev_env),
        task_queue,
        stripe_api_base=stripe_api,
        billing_url=billing_url,
        **keys,
    )
    async with running_api(settings) as (_, http):
        click = await http.get(path)
    assert click.status_code == status
    assert click.headers.get("location") == expected
    if api_key:
        [(_, form, _)] = FakeStripe.requests
        assert form.get("return_url") == return_url
    else:
        assert FakeStripe.requests == []


async def test_survey_marker_leads_to_the_survey_page_of_the_same_token(
    dev_env: WorkflowEnvironment, sqlite_url: str, task_queue: str
) -> None:
    path = await sent_link(
        sqlite_url,
        "cus_Survey",
        "winback",
        template="winback/cancelled",
        context=SUBSCRIPTION_CONTEXT,
        destinations={"survey": "hosted:survey"},
    )
    settings = app_settings(sqlite_url, temporal_address(dev_env), task_queue)
    async with running_api(settings) as (_, http):
        click = await http.get(path)
        assert click.status_code == 302
        token = path.removeprefix("/t/")
        assert click.headers["location"] == f"{settings.public_url}/survey/{token}"
        page = await http.get(f"/survey/{token}")
    assert page.status_code == 200
    assert "<h1>Why did you cancel?</h1>" in page.text
