"""The marketing frequency cap across lifecycles: at most N win-back and upgrade emails per
customer in any window; one more is not sent but deferred, recorded under its send key with
when the cap frees (on SQLite and PostgreSQL, through a real SMTP server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import col
from temporalio.testing import ActivityEnvironment

from stripe_lifecycle.activities.interface import SendEmailInput, SendEmailResult
from stripe_lifecycle.activities.mail import MailActivities
from stripe_lifecycle.mail.transports import SmtpTransport
from stripe_lifecycle.storage.db import SessionMaker, create_engine, create_sessionmaker
from stripe_lifecycle.storage.models import MailPreference, Message, MessageStatus

from .delivery_helpers import SmtpInbox, mail_activities, message_rows, running_smtp, step_email


@pytest.fixture
def inbox() -> Iterator[SmtpInbox]:
    yield from running_smtp()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[SessionMaker]:
    engine = create_engine(database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


def capped(inbox: SmtpInbox, db: SessionMaker, **options: Any) -> MailActivities:
    return mail_activities(SmtpTransport("127.0.0.1", inbox.port), db, **options)


async def send(mail: MailActivities, request: SendEmailInput) -> SendEmailResult:
    return await ActivityEnvironment().run(mail.send_email, request)


async def age(db: SessionMaker, message_id: str, by: timedelta) -> datetime:
    """Pretend the message went out `by` earlier; returns its new sent time."""
    async with db() as session:
        row = await session.get(Message, message_id)
        assert row is not None and row.sent_at is not None
        sent_at = row.sent_at - by
        await session.execute(
            update(Message).where(col(Message.id) == message_id).values(sent_at=sent_at)
        )
        await session.commit()
    return sent_at


async def sent_at(db: SessionMaker, message_id: str) -> datetime:
    async with db() as session:
        row = await session.get(Message, message_id)
        assert row is not None and row.sent_at is not None
        return row.sent_at


async def test_a_second_campaign_email_waits_until_the_first_leaves_the_window(
    inbox: SmtpInbox, db: SessionMaker
) -> None:
    mail = capped(inbox, db)
    winback = await send(mail, step_email("winback"))
    upgrade_step = step_email("upgrade", step="0-upgrade-offer")

    deferred = await send(mail, upgrade_step)

    assert winback.status == MessageStatus.SENT
    assert deferred.status == MessageStatus.DEFERRED
    expected = await sent_at(db, winback.message_id) + timedelta(hours=24)
    assert deferred.retry_at == expected.isoformat()
    assert datetime.fromisoformat(deferred.retry_at).utcoffset() == timedelta(0)
    assert len(inbox.received) == 1
    # The log shows it, under the step's send key, with the reason.
    rows = {r.send_key: r for r in await message_rows(db)}
    row = rows[upgrade_step.send_key]
    assert (row.id, row.status) == (deferred.message_id, MessageStatus.DEFERRED)
    assert row.error == deferred.error
    assert deferred.error is not None and deferred.error.startswith(
        "frequency cap: 1 marketing email(s) in the last 24 h (cap 1)"
    )

    # Asking again too early changes nothing.
    early = await send(mail, upgrade_step)
    assert (early.status, early.retry_at) == (MessageStatus.DEFERRED, deferred.retry_at)

    # A day later the same step goes out, as the same message.
    await age(db, winback.message_id, timedelta(hours=24, seconds=1))
    later = await send(mail, upgrade_step)
    assert (later.status, later.message_id, later.retry_at) == (
        MessageStatus.SENT,
        deferred.message_id,
        None,
    )
    assert len(inbox.received) == 2 and len(await message_rows(db)) == 2
    assert (await send(mail, upgrade_step)).status == MessageStatus.SENT
    assert len(inbox.received) == 2


async def test_billing_and_product_mail_are_neither_capped_nor_counted(
    inbox: SmtpInbox, db: SessionMaker
) -> None:
    mail = capped(inbox, db)

    results = [
        await send(mail, step_email("dunning")),
        await send(mail, step_email("trial")),
        await send(mail, step_email("winback")),
        await send(mail, step_email("dunning", step="1-reminder")),
        await send(mail, step_email("trial", step="1-ending")),
    ]

    assert [r.status for r in results] == [MessageStatus.SENT] * 5
    assert len(inbox.received) == 5


async def test_cap_and_window_are_configurable(inbox: SmtpInbox, db: SessionMaker) -> None:
    mail = capped(inbox, db, marketing_cap=2, marketing_cap_hours=1.5)

    first = await send(mail, step_email("winback"))
    second = await send(mail, step_email("upgrade"))
    third = await send(mail, step_email("winback", step="1-offer"))

    assert (first.status, second.status) == (MessageStatus.SENT, MessageStatus.SENT)
    assert third.status == MessageStatus.DEFERRED
    # The cap frees when the older of the two leaves the window.
    expected = await sent_at(db, first.message_id) + timedelta(hours=1.5)
    assert third.retry_at == expected.isoformat()
    assert (
        third.error is not None and "2 marketing email(s) in the last 1.5 h (cap 2)" in third.error
    )


async def test_mail_that_did_not_go_out_takes_no_place(inbox: SmtpInbox, db: SessionMaker) -> None:
    mail = capped(inbox, db)
    # Suppressed (test mode, a domain not allowed), so not a marketing email received.
    test_mode = step_email("winback", to="ada@gmail.com")
    test_mode.livemode = False

    suppressed = await send(mail, test_mode)
    upgrade = await send(mail, step_email("upgrade"))

    assert suppressed.status == MessageStatus.SUPPRESSED
    assert upgrade.status == MessageStatus.SENT


async def test_each_customer_has_their_own_cap(inbox: SmtpInbox, db: SessionMaker) -> None:
    mail = capped(inbox, db)

    ada = await send(mail, step_email("winback", customer_id="cus_Ada"))
    bob = await send(mail, step_email("winback", customer_id="cus_Bob"))

    assert (ada.status, bob.status) == (MessageStatus.SENT, MessageStatus.SENT)


async def test_campaign_steps_due_at_once_cannot_both_take_the_last_place(
    inbox: SmtpInbox, db: SessionMaker
) -> None:
    mail = capped(inbox, db)

    results = await asyncio.gather(
        send(mail, step_email("winback")),
        send(mail, step_email("upgrade")),
        send(mail, step_email("winback", workflow_id="winback-cus_Deliver1-2")),
    )

    assert sorted(r.status for r in results) == [
        MessageStatus.DEFERRED,
        MessageStatus.DEFERRED,
        MessageStatus.SENT,
    ]
    assert len(inbox.received) == 1


async def test_a_deferred_email_is_judged_again_when_retried(
    inbox: SmtpInbox, db: SessionMaker
) -> None:
    mail = capped(inbox, db)
    winback = await send(mail, step_email("winback"))
    upgrade_step = step_email("upgrade")
    assert (await send(mail, upgrade_step)).status == MessageStatus.DEFERRED

    # The customer unsubscribed from marketing while the email waited.
    async with db() as session:
        session.add(
            MailPreference(
                customer_id="cus_Deliver1",
                category="marketing",
                subscribed=False,
                source="one-click",
                updated_at=datetime.now(UTC),
            )
        )
        await session.commit()
    await age(db, winback.message_id, timedelta(days=2))

    retried = await send(mail, upgrade_step)
    assert (retried.status, retried.error) == (
        MessageStatus.SUPPRESSED,
        "unsubscribed from marketing",
    )
    assert len(inbox.received) == 1
