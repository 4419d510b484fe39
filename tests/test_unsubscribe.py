"""One-click unsubscribe (RFC 8058) and the preferences page, from the headers of mail
received by a real SMTP server to what later sends do (on SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from temporalio.testing import ActivityEnvironment

from stripe_lifecycle.activities.interface import SendEmailInput, SendEmailResult
from stripe_lifecycle.activities.mail import MailActivities
from stripe_lifecycle.domain.links import make_token, make_unsubscribe_token, read_unsubscribe_token
from stripe_lifecycle.mail.transports import SmtpTransport
from stripe_lifecycle.storage.models import MessageStatus

from .conftest import LINK_SECRET, app_settings, free_port, running_api
from .delivery_helpers import (
    BRAND,
    PUBLIC_URL,
    mail_activities,
    step_email,
)
from .fakes import SmtpInbox, running_smtp

# Unsubscribe tokens never expire: any issue time does.
NOW = datetime.now(UTC)
ONE_CLICK_BODY = {"List-Unsubscribe": "One-Click"}


class PreferencesForm(HTMLParser):
    """What a reader sees: the category checkboxes (and which are checked), the forms."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.boxes: list[str] = []
        self.checked: list[str] = []
        self.actions: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "input" and values.get("type") == "checkbox":
            self.boxes.append(values["name"] or "")
            if "checked" in values:
                self.checked.append(values["name"] or "")
        elif tag == "form":
            self.actions.append(values.get("action") or "")


@dataclass
class Rig:
    app: FastAPI
    http: httpx.AsyncClient
    inbox: SmtpInbox
    mail: MailActivities

    async def send(self, request: SendEmailInput) -> SendEmailResult:
        return await ActivityEnvironment().run(self.mail.send_email, request)

    def last_unsubscribe_path(self) -> str:
        """The path of the List-Unsubscribe URL of the last email received."""
        header = self.inbox.received[-1]["List-Unsubscribe"]
        assert header is not None
        url = str(header).strip()
        assert url.startswith(f"<{PUBLIC_URL}/u/") and url.endswith(">"), url
        return url[1:-1].removeprefix(PUBLIC_URL)


@pytest.fixture
def inbox() -> Iterator[SmtpInbox]:
    yield from running_smtp()


async def make_rig(database_url: str, inbox: SmtpInbox, **options: Any) -> AsyncIterator[Rig]:
    # Temporal is not needed here: the app's client is lazy, so an unused port will do.
    settings = app_settings(
        database_url,
        f"127.0.0.1:{free_port()}",
        "tq-unsubscribe",
        public_url=PUBLIC_URL,
        brand_name=BRAND.name,
        **options,
    )
    async with running_api(settings) as (app, http):
        mail = mail_activities(
            SmtpTransport("127.0.0.1", inbox.port),
            app.state.lifecycle.sessionmaker,
            unsubscribe_billing=settings.unsubscribe_billing,
            # Several marketing emails in a row here; the cap has its own tests.
            marketing_cap=10,
        )
        yield Rig(app, http, inbox, mail)


@pytest.fixture
async def rig(database_url: str, inbox: SmtpInbox) -> AsyncIterator[Rig]:
    async for made in make_rig(database_url, inbox):
        yield made


@pytest.fixture
async def billing_rig(sqlite_url: str, inbox: SmtpInbox) -> AsyncIterator[Rig]:
    """With LIFECYCLE_UNSUBSCRIBE_BILLING=true."""
    async for made in make_rig(sqlite_url, inbox, unsubscribe_billing=True):
        yield made


def text_part(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert isinstance(part, EmailMessage)
    return str(part.get_content())


def html_part(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert isinstance(part, EmailMessage)
    return str(part.get_content())


async def test_marketing_mail_carries_one_click_headers_and_the_same_footer_link(
    rig: Rig,
) -> None:
    await rig.send(step_email("winback"))

    [received] = rig.inbox.received
    path = rig.last_unsubscribe_path()
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = f"{PUBLIC_URL}{path}"
    assert f'href="{url}"' in html_part(received)
    assert url in text_part(received)
    token = path.removeprefix("/u/")
    found = read_unsubscribe_token(LINK_SECRET.encode(), token)
    assert found is not None and (found.first, found.second) == ("cus_Deliver1", "marketing")
    # Issued when the email was composed.
    assert found.issued_at is not None


async def test_billing_mail_has_no_unsubscribe_by_default(rig: Rig) -> None:
    await rig.send(step_email("dunning"))

    [received] = rig.inbox.received
    assert received["List-Unsubscribe"] is None and received["List-Unsubscribe-Post"] is None
    assert "/u/" not in html_part(received) and "Unsubscribe" not in text_part(received)


async def test_one_click_unsubscribes_from_that_category_only(rig: Rig) -> None:
    await rig.send(step_email("winback"))
    path = rig.last_unsubscribe_path()

    # What Gmail and others send: a form POST, no cookies, no other credentials.
    response = await rig.http.post(path, data=ONE_CLICK_BODY)

    assert response.status_code == 200
    assert "unsubscribed from offers emails" in response.text
    upgrade = await rig.send(step_email("upgrade"))
    assert (upgrade.status, upgrade.error) == (
        MessageStatus.SUPPRESSED,
        "unsubscribed from marketing",
    )
    # Product and billing mail keep coming.
    assert (await rig.send(step_email("trial"))).status == MessageStatus.SENT
    assert (await rig.send(step_email("dunning"))).status == MessageStatus.SENT
    assert len(rig.inbox.received) == 3
    # Clicking twice is fine and changes nothing more.
    assert (await rig.http.post(path, data=ONE_CLICK_BODY)).status_code == 200
    assert (
        await rig.send(step_email("winback", step="1-again"))
    ).status == MessageStatus.SUPPRESSED


async def test_one_click_from_product_mail_stops_product_mail(rig: Rig) -> None:
    await rig.send(step_email("trial"))

    await rig.http.post(rig.last_unsubscribe_path(), data=ONE_CLICK_BODY)

    later = await rig.send(step_email("trial", step="1-ending"))
    assert (later.status, later.error) == (MessageStatus.SUPPRESSED, "unsubscribed from product")
    assert (await rig.send(step_email("winback"))).status == MessageStatus.SENT


async def test_preferences_page_shows_choices_and_changes_nothing(rig: Rig) -> None:
    await rig.send(step_email("winback"))
    path = rig.last_unsubscribe_path()

    page = await rig.http.get(path)
    again = await rig.http.get(path)

    assert page.status_code == again.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    form = PreferencesForm(page.text)
    # Billing is not a choice by default: the page says those emails are always sent.
    assert form.boxes == form.checked == ["marketing", "product"]
    assert "always" in page.text and BRAND.name in page.text
    assert form.actions == [path, f"{path}/preferences"]
    # Looking is not unsubscribing (link scanners fetch every link).
    assert (await rig.send(step_email("upgrade"))).status == MessageStatus.SENT


async def test_preferences_form_unsubscribes_and_resubscribes(rig: Rig) -> None:
    await rig.send(step_email("winback"))
    path = rig.last_unsubscribe_path()
    await rig.http.post(path, data=ONE_CLICK_BODY)

    # Back to marketing, away from product mail.
    saved = await rig.http.post(f"{path}/preferences", data={"marketing": "yes"})

    assert saved.status_code == 200 and "saved" in saved.text
    assert PreferencesForm(saved.text).checked == ["marketing"]
    assert (await rig.send(step_email("upgrade"))).status == MessageStatus.SENT
    trial = await rig.send(step_email("trial"))
    assert (trial.status, trial.error) == (MessageStatus.SUPPRESSED, "unsubscribed from product")
    # Unchecking everything cannot stop billing mail while it is not a choice.
    await rig.http.post(f"{path}/preferences", data={"billing": ""})
    assert (await rig.send(step_email("dunning"))).status == MessageStatus.SENT
    page = PreferencesForm((await rig.http.get(path)).text)
    assert page.checked == []


async def test_billing_mail_is_unsubscribable_when_configured(billing_rig: Rig) -> None:
    rig = billing_rig
    await rig.send(step_email("dunning"))
    [received] = rig.inbox.received
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    path = rig.last_unsubscribe_path()
    assert PreferencesForm((await rig.http.get(path)).text).boxes == [
        "marketing",
        "product",
        "billing",
    ]

    await rig.http.post(path, data=ONE_CLICK_BODY)

    later = await rig.send(step_email("dunning", step="1-reminder"))
    assert (later.status, later.error) == (MessageStatus.SUPPRESSED, "unsubscribed from billing")
    assert len(rig.inbox.received) == 1


async def test_billing_opt_out_is_kept_but_not_applied_by_default(rig: Rig) -> None:
    # A billing link from mail sent while LIFECYCLE_UNSUBSCRIBE_BILLING was true.
    token = make_unsubscribe_token(LINK_SECRET.encode(), "cus_Deliver1", "billing", NOW)

    response = await rig.http.post(f"/u/{token}", data=ONE_CLICK_BODY)

    assert response.status_code == 200 and "still sent" in response.text
    assert (await rig.send(step_email("dunning"))).status == MessageStatus.SENT


async def test_forged_and_foreign_tokens_are_not_found(rig: Rig) -> None:
    secret = LINK_SECRET.encode()
    genuine = make_unsubscribe_token(secret, "cus_Deliver1", "marketing", NOW)
    forged = genuine[:-2] + ("AA" if not genuine.endswith("AA") else "BB")
    other_secret = make_unsubscribe_token(b"another secret", "cus_Deliver1", "marketing", NOW)
    # A tracked-link token is signed with the same secret but is not an unsubscribe token.
    link_token = make_token(secret, "cus_Deliver1", "marketing", NOW)
    unknown_category = make_unsubscribe_token(secret, "cus_Deliver1", "everything", NOW)

    for bad in (forged, other_secret, link_token, unknown_category, "garbage", "a.b"):
        assert (await rig.http.get(f"/u/{bad}")).status_code == 404, bad
        assert (await rig.http.post(f"/u/{bad}", data=ONE_CLICK_BODY)).status_code == 404, bad
        assert (await rig.http.post(f"/u/{bad}/preferences", data={})).status_code == 404, bad
    assert (await rig.send(step_email("winback"))).status == MessageStatus.SENT
