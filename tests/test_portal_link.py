"""The dunning email's "fix your card" link makes a Customer Portal session when clicked,
through the real stripe library against a local server that answers like Stripe's API;
if Stripe refuses, the invoice's hosted page is the fallback. Links of the other
lifecycles stored as `portal:` do the same with LIFECYCLE_BILLING_URL as the fallback;
`hosted:survey` leads to the survey page."""

from collections.abc import Iterator
from typing import Any

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
from .fakes import PORTAL_URL, STRIPE_API_KEY, StripeHttpServer, StripeState, serving

HOSTED = "https://invoice.stripe.com/i/acct_1/test_hosted"


@pytest.fixture
def stripe_api() -> Iterator[StripeHttpServer]:
    with serving(StripeHttpServer(StripeState())) as server:
        yield server


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
    stripe_account: str | None = None,
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
            stripe_account=stripe_account,
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
        ("cus_Portal", "dunning", PORTAL_URL, True),
        ("cus_NoPortal", "dunning", HOSTED, True),  # Stripe refused: the fallback
        ("cus_3ds", "payment_action", HOSTED, False),  # 3-D Secure is confirmed on the invoice
    ],
)
async def test_fix_card_link_opens_a_fresh_portal_session(
    dev_env: WorkflowEnvironment,
    sqlite_url: str,
    task_queue: str,
    stripe_api: StripeHttpServer,
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
        stripe_api_key=STRIPE_API_KEY,
        stripe_api_base=stripe_api.url,
    )
    async with running_api(settings) as (_, http):
        click = await http.get(path)
    assert (click.status_code, click.headers["location"]) == (302, expected)
    if portal_asked:
        [asked] = stripe_api.state.requests
        assert (asked.method, asked.path) == ("POST", "/v1/billing_portal/sessions")
        assert asked.form == {"customer": customer_id, "return_url": HOSTED}
        assert asked.api_key == STRIPE_API_KEY
    else:
        assert stripe_api.state.requests == []


@pytest.mark.parametrize(
    ("customer_id", "account", "form"),
    [
        # A connected account's customer: the session is made on that account.
        ("cus_Portal", "acct_Seller1", {"customer": "cus_Portal", "return_url": HOSTED}),
        # A customer kept as an Accounts v2 account is named as one.
        ("acct_BuyerV2", None, {"customer_account": "acct_BuyerV2", "return_url": HOSTED}),
    ],
)
async def test_portal_sessions_for_connected_accounts_and_accounts_v2_customers(
    dev_env: WorkflowEnvironment,
    sqlite_url: str,
    task_queue: str,
    stripe_api: StripeHttpServer,
    customer_id: str,
    account: str | None,
    form: dict[str, str],
) -> None:
    stripe_api.state.connected["acct_Seller1"] = StripeState()
    path = await sent_link(sqlite_url, customer_id, "dunning", stripe_account=account)
    settings = app_settings(
        sqlite_url,
        temporal_address(dev_env),
        task_queue,
        stripe_api_key=STRIPE_API_KEY,
        stripe_api_base=stripe_api.url,
    )
    async with running_api(settings) as (_, http):
        click = await http.get(path)
    assert (click.status_code, click.headers["location"]) == (302, PORTAL_URL)
    [asked] = stripe_api.state.requests
    assert (asked.path, asked.form, asked.account) == ("/v1/billing_portal/sessions", form, account)


BILLING = "https://app.acme.test/billing"


@pytest.mark.parametrize(
    ("customer_id", "api_key", "billing_url", "status", "expected", "return_url"),
    [
        ("cus_Portal", True, BILLING, 302, PORTAL_URL, BILLING),
        ("cus_Portal", True, None, 302, PORTAL_URL, None),  # the dashboard's default return
        ("cus_NoPortal", True, BILLING, 302, BILLING, BILLING),  # Stripe refused
        ("cus_Portal", False, BILLING, 302, BILLING, None),  # no API key: billing page
        ("cus_Portal", False, None, 503, None, None),  # nowhere to send them
    ],
)
async def test_portal_marker_links_of_other_lifecycles(
    dev_env: WorkflowEnvironment,
    sqlite_url: str,
    task_queue: str,
    stripe_api: StripeHttpServer,
    customer_id: str,
    api_key: bool,
    billing_url: str | None,
    status: int,
    expected: str | None,
    return_url: str | None,
) -> None:
    path = await sent_link(
        sqlite_url,
        customer_id,
        "trial",
        template="trial/ending",
        context=SUBSCRIPTION_CONTEXT,
        destinations={"update_payment": "portal:"},
    )
    keys: dict[str, Any] = {"stripe_api_key": STRIPE_API_KEY} if api_key else {}
    settings = app_settings(
        sqlite_url,
        temporal_address(dev_env),
        task_queue,
        stripe_api_base=stripe_api.url,
        billing_url=billing_url,
        **keys,
    )
    async with running_api(settings) as (_, http):
        click = await http.get(path)
    assert click.status_code == status
    assert click.headers.get("location") == expected
    if api_key:
        [asked] = stripe_api.state.requests
        assert asked.form.get("return_url") == return_url
    else:
        assert stripe_api.state.requests == []


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
