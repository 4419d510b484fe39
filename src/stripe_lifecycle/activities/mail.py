"""Render and send lifecycle email, recording every message before it is sent."""

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jinja2 import TemplateError
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col
from temporalio import activity
from temporalio.exceptions import ApplicationError

from stripe_lifecycle.db import SessionMaker
from stripe_lifecycle.links import tracked_url
from stripe_lifecycle.mail.templates import TemplateNotFound, TemplateRenderer
from stripe_lifecycle.mail.transports import (
    MailTransport,
    OutgoingEmail,
    PermanentSendError,
    TemporarySendError,
    UncertainSendError,
)
from stripe_lifecycle.models import Message, MessageStatus

# A message in one of these states is settled: a retried activity returns it as it is.
SETTLED = frozenset(
    {
        MessageStatus.SENT,
        MessageStatus.RECORDED,
        MessageStatus.SUPPRESSED,
        MessageStatus.FAILED,
        MessageStatus.UNKNOWN,
    }
)


@dataclass
class SendEmailInput:
    workflow_id: str
    step: str
    customer_id: str
    lifecycle: str
    automation: str
    template: str
    to: str | None
    livemode: bool
    # The template context (customer, invoice, subscription, ...), JSON values only; the
    # activity adds `links`.
    context: dict[str, Any] = field(default_factory=dict)
    # Link name (update_payment, survey, offer, ...) -> where it really leads. The email
    # carries signed tracked links to these instead.
    destinations: dict[str, str] = field(default_factory=dict)

    @property
    def send_key(self) -> str:
        return f"{self.workflow_id}/{self.step}"


@dataclass
class TeamNotice:
    """A plain notice to the business's own team (the `notify_team` action)."""

    key: str
    customer_id: str
    workflow_id: str
    subject: str
    text: str
    lifecycle: str = "dunning"
    automation: str = ""


@dataclass
class SendEmailResult:
    message_id: str
    status: str
    error: str | None = None


class MailActivities:
    def __init__(
        self,
        transport: MailTransport,
        renderer: TemplateRenderer,
        sessionmaker: SessionMaker,
        *,
        sender: str,
        test_mode_allowed_domains: frozenset[str],
        public_url: str,
        link_secret: bytes,
        team_email: str | None = None,
    ) -> None:
        self._transport = transport
        self._renderer = renderer
        self._sessionmaker = sessionmaker
        self._sender = sender
        self._allowed_domains = test_mode_allowed_domains
        self._public_url = public_url
        self._link_secret = link_secret
        self._team_email = team_email

    @activity.defn(name="send_email")
    async def send_email(self, request: SendEmailInput) -> SendEmailResult:
        """Send one step's email at most once (the send key is workflow id + step)."""
        existing = await self._existing(request.send_key)
        if existing is not None and existing.status in SETTLED:
            return SendEmailResult(existing.id, existing.status, existing.error)
        if existing is not None and existing.status == MessageStatus.PENDING:
            # An earlier attempt died between recording and finishing the send: it may
            # have gone out. Never risk a second copy; show the doubt instead.
            await self._finish(existing.id, MessageStatus.UNKNOWN, error="send interrupted")
            return SendEmailResult(existing.id, MessageStatus.UNKNOWN, "send interrupted")

        message_id = existing.id if existing is not None else str(uuid.uuid4())
        links: dict[str, str | None] = {"unsubscribe": None}
        links.update(
            (name, tracked_url(self._public_url, self._link_secret, message_id, name))
            for name in request.destinations
        )
        try:
            rendered = self._renderer.render(request.template, {**request.context, "links": links})
        except (TemplateNotFound, TemplateError, ValueError) as exc:
            raise ApplicationError(
                f"template {request.template} could not be rendered: {exc}",
                type="TemplateError",
                non_retryable=True,
            ) from exc

        suppressed = self._suppression(request)
        row = Message(
            id=message_id,
            send_key=request.send_key,
            customer_id=request.customer_id,
            workflow_id=request.workflow_id,
            lifecycle=request.lifecycle,
            automation=request.automation,
            step=request.step,
            template=request.template,
            to=request.to or "",
            subject=rendered.subject,
            html=rendered.html,
            text=rendered.text,
            links=[url for url in links.values() if url is not None],
            destinations=dict(request.destinations),
            transport=self._transport.name,
            livemode=request.livemode,
            status=MessageStatus.SUPPRESSED if suppressed else MessageStatus.PENDING,
            error=suppressed,
        )
        await self._record(row)
        if suppressed:
            activity.logger.info("message %s suppressed: %s", message_id, suppressed)
            return SendEmailResult(message_id, MessageStatus.SUPPRESSED, suppressed)

        assert request.to is not None  # a missing address is a suppression reason
        email = OutgoingEmail(
            to=request.to,
            sender=self._sender,
            subject=rendered.subject,
            html=rendered.html,
            text=rendered.text,
            metadata={
                "workflow_id": request.workflow_id,
                "step": request.step,
                "message_id": message_id,
            },
            tag=request.template,
        )
        return await self._deliver(message_id, email)

    @activity.defn(name="notify_team")
    async def notify_team(self, notice: TeamNotice) -> SendEmailResult:
        """Tell the team (LIFECYCLE_TEAM_EMAIL); recorded in the customer's log, sent once."""
        existing = await self._existing(notice.key)
        if existing is not None and existing.status in SETTLED:
            return SendEmailResult(existing.id, existing.status, existing.error)
        message_id = existing.id if existing is not None else str(uuid.uuid4())
        missing = None if self._team_email else "LIFECYCLE_TEAM_EMAIL is not set"
        await self._record(
            Message(
                id=message_id,
                send_key=notice.key,
                customer_id=notice.customer_id,
                workflow_id=notice.workflow_id,
                lifecycle=notice.lifecycle,
                automation=notice.automation,
                step=notice.key.rpartition("/")[2],
                template="team/notice",
                to=self._team_email or "",
                subject=notice.subject,
                text=notice.text,
                transport=self._transport.name,
                livemode=True,
                status=MessageStatus.FAILED if missing else MessageStatus.PENDING,
                error=missing,
            )
        )
        if self._team_email is None:
            return SendEmailResult(message_id, MessageStatus.FAILED, missing)
        email = OutgoingEmail(
            to=self._team_email,
            sender=self._sender,
            subject=notice.subject,
            html="",
            text=notice.text,
            metadata={"workflow_id": notice.workflow_id, "message_id": message_id},
            tag="team/notice",
        )
        return await self._deliver(message_id, email)

    def _suppression(self, request: SendEmailInput) -> str | None:
        if not request.to:
            return "the customer has no email address"
        domain = request.to.rpartition("@")[2].lower()
        if not request.livemode and domain not in self._allowed_domains:
            return f"test mode: {domain} is not in LIFECYCLE_TEST_MODE_ALLOWED_DOMAINS"
        return None

    async def _deliver(self, message_id: str, email: OutgoingEmail) -> SendEmailResult:
        try:
            result = await self._transport.send(email)
        except PermanentSendError as exc:
            await self._finish(message_id, MessageStatus.FAILED, error=str(exc))
            return SendEmailResult(message_id, MessageStatus.FAILED, str(exc))
        except UncertainSendError as exc:
            # It may have gone out (e.g. the connection dropped after the request was
            # sent): never risk a second copy.
            await self._finish(message_id, MessageStatus.UNKNOWN, error=str(exc))
            return SendEmailResult(message_id, MessageStatus.UNKNOWN, str(exc))
        except TemporarySendError as exc:
            # Known not delivered: the retry may send it.
            await self._finish(message_id, MessageStatus.RETRYING, error=str(exc))
            raise
        status = MessageStatus.RECORDED if self._transport.name == "outbox" else MessageStatus.SENT
        await self._finish(
            message_id, status, sent_at=datetime.now(UTC), provider_id=result.provider_message_id
        )
        return SendEmailResult(message_id, status)

    async def _existing(self, send_key: str) -> Message | None:
        async with self._sessionmaker() as session:
            result = await session.execute(select(Message).where(col(Message.send_key) == send_key))
            return result.scalar_one_or_none()

    async def _record(self, message: Message) -> None:
        """Insert the message, or refresh a retried one's row (same send key)."""
        row = message.model_dump()
        async with self._sessionmaker() as session:
            dialect = session.get_bind().dialect.name
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            await session.execute(
                insert(Message)
                .values(**row)
                .on_conflict_do_update(
                    index_elements=["send_key"],
                    set_={
                        k: v for k, v in row.items() if k not in ("id", "send_key", "created_at")
                    },
                )
            )
            await session.commit()

    async def _finish(
        self,
        message_id: str,
        status: str,
        *,
        error: str | None = None,
        sent_at: datetime | None = None,
        provider_id: str | None = None,
    ) -> None:
        async with self._sessionmaker() as session:
            await session.execute(
                update(Message)
                .where(col(Message.id) == message_id)
                .values(
                    status=status, error=error, sent_at=sent_at, provider_message_id=provider_id
                )
            )
            await session.commit()
