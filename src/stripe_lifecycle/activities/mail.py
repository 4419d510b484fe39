"""Render and send lifecycle email, recording every message before it is sent.

Before a step's email goes out it must pass, in this order: an address, the test-mode
allow-list, the suppression list (what Postmark's webhooks reported), the customer's mail
preferences (unsubscribe), and for marketing mail the frequency cap. Anything stopped is
recorded with the reason (`suppressed`, or `deferred` with when the cap frees), never
silently dropped.

Team notices (`notify_team`) go to LIFECYCLE_TEAM_EMAIL and, when it is set, to Slack
through LIFECYCLE_TEAM_SLACK_WEBHOOK. Each channel has its own row in the customer's log
(template `team/notice`; the Slack one's send key ends in `/slack`), so each is sent once
however often the activity is retried, and one failing does not fail the other.
"""

import hashlib
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from typing import NoReturn

import httpx
from jinja2 import TemplateError
from pydantic import SecretStr
from sqlalchemy import false, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col
from temporalio import activity
from temporalio.exceptions import ApplicationError

from stripe_lifecycle.activities.http_log import log_origins_only
from stripe_lifecycle.activities.interface import Mail, SendEmailInput, SendEmailResult, TeamNotice
from stripe_lifecycle.activities.liveness import heartbeating
from stripe_lifecycle.domain.attribution import NOT_TOUCHES
from stripe_lifecycle.mail.compose import (
    SignedLinks,
    compose_email,
    mail_category,
    unsubscribable,
)
from stripe_lifecycle.mail.templates import TemplateNotFound, TemplateRenderer
from stripe_lifecycle.mail.transports import (
    LooksUpSends,
    MailTransport,
    OutgoingEmail,
    PermanentSendError,
    SentQuery,
    TemporarySendError,
    UncertainSendError,
)
from stripe_lifecycle.storage.db import SessionMaker, insert_for
from stripe_lifecycle.storage.models import (
    LIFECYCLE_CATEGORIES,
    Customer,
    MailCategory,
    MailPreference,
    Message,
    MessageStatus,
    Suppression,
    SuppressionScope,
)

# A message in one of these states is settled: a retried activity returns it as it is.
SETTLED = frozenset(
    {
        MessageStatus.SENT,
        MessageStatus.RECORDED,
        MessageStatus.SUPPRESSED,
        MessageStatus.FAILED,
        MessageStatus.UNKNOWN,
        MessageStatus.DELIVERED,
        MessageStatus.BOUNCED,
    }
)
# Marketing messages that take a place under the frequency cap: gone out, or on the way.
CAPPED = (
    MessageStatus.PENDING,
    MessageStatus.RETRYING,
    MessageStatus.SENT,
    MessageStatus.RECORDED,
    MessageStatus.UNKNOWN,
    MessageStatus.DELIVERED,
    MessageStatus.BOUNCED,
)
IN_FLIGHT = (MessageStatus.PENDING, MessageStatus.RETRYING)
# How long a send in doubt is looked for at the provider before it is taken as never
# accepted and sent again. Postmark lists a message it took within seconds, and no request
# is still on its way after minutes: the client gives up after LIFECYCLE_MAIL_TIMEOUT
# (under 120 s), and a worker killed mid-send took its connection with it.
DOUBT_GRACE = timedelta(minutes=10)
ONE_CLICK = {"List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}

# The transport (and `to`) of a team notice's Slack row; its send key is the notice's + this.
SLACK = "slack"
SLACK_KEY_SUFFIX = "/slack"
SLACK_TIMEOUT_SECONDS = 10.0


def default_slack_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=SLACK_TIMEOUT_SECONDS, follow_redirects=False)


class SendInDoubt(ApplicationError):
    """A send that may have gone out, which the provider does not list (yet): retried, so
    the next attempt asks it again."""

    def __init__(self, message: str) -> None:
        super().__init__(message, type="SendInDoubt")


def slack_escape(text: str) -> str:
    """Text as Slack mrkdwn shows it literally (Slack's three control characters)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(subject: str, text: str, customer_id: str, customer_url: str) -> str:
    """A team notice as Slack mrkdwn: the subject in bold, the text, the customer's link."""
    return (
        f"*{slack_escape(subject)}*\n{slack_escape(text)}\n"
        f"<{customer_url}|Customer {slack_escape(customer_id)}>"
    )


class MailActivities(Mail):
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
        team_slack_webhook: SecretStr | None = None,
        slack_client: Callable[[], httpx.AsyncClient] = default_slack_client,
        unsubscribe_billing: bool = False,
        marketing_cap: int = 1,
        marketing_cap_hours: float = 24.0,
    ) -> None:
        if marketing_cap < 1 or marketing_cap_hours <= 0:
            raise ValueError("the marketing cap must allow at least one email in a window")
        self._transport = transport
        self._renderer = renderer
        self._sessionmaker = sessionmaker
        self._sender = sender
        self._allowed_domains = test_mode_allowed_domains
        self._public_url = public_url
        self._link_secret = link_secret
        self._team_email = team_email
        # The incoming-webhook URL is Slack's only credential: never logged.
        self._slack_webhook = team_slack_webhook
        self._slack_client = slack_client
        log_origins_only()
        self._unsubscribe_billing = unsubscribe_billing
        self._marketing_cap = marketing_cap
        self._marketing_cap_window = timedelta(hours=marketing_cap_hours)

    @activity.defn(name="send_email")
    async def send_email(self, request: SendEmailInput) -> SendEmailResult:
        """Send one step's email at most once (the send key is workflow id + step)."""
        async with heartbeating():
            return await self._send_email(request)

    async def _send_email(self, request: SendEmailInput) -> SendEmailResult:
        existing = await self._existing(request.send_key)
        if existing is not None and existing.status in SETTLED:
            return SendEmailResult(existing.id, existing.status, existing.error)
        if existing is not None and existing.status == MessageStatus.PENDING:
            # An earlier attempt died between recording and finishing the send, or its
            # answer never came: it may have gone out. Never risk a second copy: ask the
            # provider, or show the doubt; send again only once the provider says it has
            # not had it for a while.
            marketing = mail_category(existing.lifecycle) == MailCategory.MARKETING
            settled = await self._settle_doubt(existing, broadcast=marketing)
            if settled is not None:
                return settled

        message_id = existing.id if existing is not None else str(uuid.uuid4())
        addresses = SignedLinks(
            self._public_url, self._link_secret, message_id, request.customer_id, datetime.now(UTC)
        )
        try:
            composed = compose_email(
                self._renderer,
                request.template,
                request.lifecycle,
                request.context,
                request.destinations,
                addresses,
                unsubscribe_billing=self._unsubscribe_billing,
            )
        except (TemplateNotFound, TemplateError, ValueError) as exc:
            raise ApplicationError(
                f"template {request.template} could not be rendered: {exc}",
                type="TemplateError",
                non_retryable=True,
            ) from exc

        category, rendered = composed.category, composed.rendered
        unsubscribe = composed.links.unsubscribe
        suppressed = self._suppression(request) or await self._stopped(request, category)
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
            # The unsubscribe link is the customer's, not this message's: not a tracked link.
            links=list(composed.links.tracked.values()),
            destinations=dict(request.destinations),
            subscription_id=request.subscription_id,
            stripe_account=request.stripe_account,
            transport=self._transport.name,
            livemode=request.livemode,
            status=MessageStatus.SUPPRESSED if suppressed else MessageStatus.PENDING,
            error=suppressed,
        )
        if suppressed or category != MailCategory.MARKETING:
            await self._record(row)
        else:
            retry_at = await self._record_under_cap(row)
            if retry_at is not None:
                activity.logger.info("message %s deferred: %s", message_id, row.error)
                return SendEmailResult(
                    message_id, MessageStatus.DEFERRED, row.error, retry_at.isoformat()
                )
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
            headers={"List-Unsubscribe": f"<{unsubscribe}>", **ONE_CLICK} if unsubscribe else {},
            metadata={
                "workflow_id": request.workflow_id,
                "step": request.step,
                "message_id": message_id,
            },
            tag=request.template,
            broadcast=category == MailCategory.MARKETING,
        )
        return await self._deliver(message_id, email)

    async def _settle_doubt(self, message: Message, *, broadcast: bool) -> SendEmailResult | None:
        """The outcome of a send in doubt: `sent` when the provider has the message,
        `unknown` when it cannot be asked (SMTP); None, to send it again, once the provider
        has not had it for `DOUBT_GRACE`. Until then, fails the attempt for a retry.
        `broadcast`: it went out as marketing mail (Postmark's broadcast stream)."""
        transport = self._transport
        reason = message.error or "send interrupted"
        if not isinstance(transport, LooksUpSends) or message.transport != transport.name:
            await self._finish(message.id, MessageStatus.UNKNOWN, error=reason)
            return SendEmailResult(message.id, MessageStatus.UNKNOWN, reason)
        # When this attempt started, on Temporal's clock (which a test server skips): not
        # when it was scheduled, which a backlogged task queue can hold back for minutes.
        now = activity.info().started_time
        since = message.in_doubt_since or now
        if message.in_doubt_since is None:
            await self._doubt(message.id, since, reason)
        found = await transport.find_sent(
            SentQuery(
                message_id=message.id,
                to=message.to,
                tag=message.template,
                broadcast=broadcast,
            )
        )
        if found is not None:
            await self._finish(
                message.id,
                MessageStatus.SENT,
                sent_at=found.accepted_at or datetime.now(UTC),
                provider_id=found.provider_message_id,
            )
            activity.logger.info("message %s in doubt was sent: the provider has it", message.id)
            return SendEmailResult(message.id, MessageStatus.SENT)
        if now - since < DOUBT_GRACE:
            raise SendInDoubt(
                f"message {message.id} may have gone out ({reason}); the provider does not "
                f"list it yet: asked again until {(since + DOUBT_GRACE).isoformat()}"
            )
        activity.logger.warning(
            "message %s in doubt since %s is not at the provider: sending it again",
            message.id,
            since.isoformat(),
        )
        return None

    @activity.defn(name="notify_team")
    async def notify_team(self, notice: TeamNotice) -> SendEmailResult:
        """Tell the team (LIFECYCLE_TEAM_EMAIL, and Slack when LIFECYCLE_TEAM_SLACK_WEBHOOK
        is set); recorded in the customer's log, sent once on each.

        Answers the email's result; with Slack alone, Slack's. Without either, the notice
        is recorded as failed, naming LIFECYCLE_TEAM_EMAIL. A channel still unavailable
        on the last attempt the workflow's give-up time allows is recorded as failed."""
        began = time.monotonic()
        async with heartbeating():
            try:
                return await self._notify_team(notice)
            except (TemporarySendError, ApplicationError) as exc:
                if _retried_again(time.monotonic() - began):
                    raise
                return await self._give_up(notice, exc)

    async def _give_up(self, notice: TeamNotice, exc: Exception) -> SendEmailResult:
        """Settles the notice's rows still waiting for a retry that will not come, so the
        customer's log does not show them waiting for ever: failed, or unknown for one
        whose send is in doubt (it may have gone out)."""
        given_up = f"given up after {activity.info().attempt} attempts"
        waiting = [
            message
            for key in (notice.key, notice.key + SLACK_KEY_SUFFIX)
            if (message := await self._existing(key)) is not None and message.status in IN_FLIGHT
        ]
        results = [
            SendEmailResult(
                message.id,
                MessageStatus.UNKNOWN
                if message.status == MessageStatus.PENDING
                else MessageStatus.FAILED,
                f"{given_up}: {message.error}",
            )
            for message in waiting
        ]
        for result in results:
            await self._finish(result.message_id, result.status, error=result.error)
        activity.logger.warning("team notice %s %s: %s", notice.key, given_up, exc)
        if not results:
            return SendEmailResult("", MessageStatus.FAILED, f"{given_up}: {exc}")
        return results[0]

    async def _notify_team(self, notice: TeamNotice) -> SendEmailResult:
        email_retry: TemporarySendError | SendInDoubt | None = None
        email_result: SendEmailResult | None = None
        if self._team_email is not None or self._slack_webhook is None:
            try:
                email_result = await self._team_email_notice(notice)
            except (TemporarySendError, SendInDoubt) as exc:
                if self._slack_webhook is None:
                    raise
                # Post to Slack first: the retry then finds it posted and sends the email
                # (or asks the provider whether it has it).
                email_retry = exc
        slack_result = await self._team_slack_notice(notice) if self._slack_webhook else None
        if email_retry is not None:
            raise email_retry
        result = email_result or slack_result
        assert result is not None  # one of the two ran
        return result

    async def _team_email_notice(self, notice: TeamNotice) -> SendEmailResult:
        existing = await self._existing(notice.key)
        if existing is not None and existing.status in SETTLED:
            return SendEmailResult(existing.id, existing.status, existing.error)
        if existing is not None and existing.status == MessageStatus.PENDING:
            # As for the customer's mail: an earlier attempt may have sent it.
            settled = await self._settle_doubt(existing, broadcast=False)
            if settled is not None:
                return settled
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

    async def _team_slack_notice(self, notice: TeamNotice) -> SendEmailResult:
        """Post the notice to Slack's incoming webhook once: recorded first under the
        notice's key + `/slack`; a 5xx, 429 or a connection refused raises for a retry,
        another refusal is recorded as failed, and a post whose answer never came is
        recorded as unknown and not repeated."""
        assert self._slack_webhook is not None
        key = notice.key + SLACK_KEY_SUFFIX
        existing = await self._existing(key)
        if existing is not None and existing.status in SETTLED:
            return SendEmailResult(existing.id, existing.status, existing.error)
        if existing is not None and existing.status == MessageStatus.PENDING:
            await self._finish(existing.id, MessageStatus.UNKNOWN, error="post interrupted")
            return SendEmailResult(existing.id, MessageStatus.UNKNOWN, "post interrupted")
        message_id = existing.id if existing is not None else str(uuid.uuid4())
        customer_url = f"{self._public_url}/v1/customers/{notice.customer_id}"
        text = slack_text(notice.subject, notice.text, notice.customer_id, customer_url)
        await self._record(
            Message(
                id=message_id,
                send_key=key,
                customer_id=notice.customer_id,
                workflow_id=notice.workflow_id,
                lifecycle=notice.lifecycle,
                automation=notice.automation,
                step=notice.key.rpartition("/")[2],
                template="team/notice",
                to=SLACK,
                subject=notice.subject,
                text=text,
                transport=SLACK,
                livemode=True,
                status=MessageStatus.PENDING,
            )
        )
        try:
            async with self._slack_client() as client:
                response = await client.post(
                    self._slack_webhook.get_secret_value(), json={"text": text}
                )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            # Nothing reached Slack: the retry may post it.
            await self._slack_retry(message_id, f"Slack unreachable ({type(exc).__name__})")
        except httpx.TransportError as exc:
            # The post may have arrived (the answer did not): never risk a second copy.
            error = f"no answer from Slack ({type(exc).__name__})"
            await self._finish(message_id, MessageStatus.UNKNOWN, error=error)
            return SendEmailResult(message_id, MessageStatus.UNKNOWN, error)
        code = response.status_code
        if 200 <= code < 300:
            await self._finish(message_id, MessageStatus.SENT, sent_at=datetime.now(UTC))
            return SendEmailResult(message_id, MessageStatus.SENT)
        if code >= 500 or code == 429:
            await self._slack_retry(message_id, f"Slack answered {code}")
        # Slack names the refusal in the body (invalid_payload, channel_not_found, ...).
        error = f"Slack answered {code}: {response.text[:200]}"
        activity.logger.warning("team notice %s not posted to Slack: %s", notice.key, error)
        await self._finish(message_id, MessageStatus.FAILED, error=error)
        return SendEmailResult(message_id, MessageStatus.FAILED, error)

    async def _slack_retry(self, message_id: str, error: str) -> NoReturn:
        await self._finish(message_id, MessageStatus.RETRYING, error=error)
        raise ApplicationError(error, type="SlackUnavailable")

    def _suppression(self, request: SendEmailInput) -> str | None:
        if not request.to:
            return "the customer has no email address"
        domain = request.to.rpartition("@")[2].lower()
        if not request.livemode and domain not in self._allowed_domains:
            return f"test mode: {domain} is not in LIFECYCLE_TEST_MODE_ALLOWED_DOMAINS"
        return None

    async def _stopped(self, request: SendEmailInput, category: str) -> str | None:
        """Why the customer's deletion, the suppression list or the customer's preferences
        stop this email, if so."""
        address = parseaddr(request.to or "")[1].lower()
        scopes = [SuppressionScope.ALL]
        if category == MailCategory.MARKETING:
            scopes.append(SuppressionScope.MARKETING)
        async with self._sessionmaker() as session:
            customer = await session.get(Customer, request.customer_id)
            if customer is not None and customer.deleted:
                # A deleted customer (often a data-erasure request) gets no mail again,
                # also from a step already under way when the deletion arrived.
                return "the customer was deleted in Stripe"
            listed = (
                await session.execute(
                    select(Suppression)
                    .where(col(Suppression.email) == address)
                    .where(col(Suppression.scope).in_(scopes))
                    .order_by(col(Suppression.created_at))
                    .limit(1)
                )
            ).scalar_one_or_none()
            if listed is not None:
                return (
                    f"{address} is on the suppression list: {listed.reason} "
                    f"(Postmark stream {listed.stream})"
                )
            if not unsubscribable(category, self._unsubscribe_billing):
                return None
            opted_out = await session.scalar(
                select(func.count())
                .select_from(MailPreference)
                .where(col(MailPreference.customer_id) == request.customer_id)
                .where(col(MailPreference.category) == category)
                .where(col(MailPreference.subscribed) == false())
            )
        return f"unsubscribed from {category}" if opted_out else None

    async def _record_under_cap(self, row: Message) -> datetime | None:
        """Record a marketing message as pending, or as deferred when the customer already
        had their share of marketing mail in the window; returns when the cap frees."""
        now = datetime.now(UTC)
        since = now - self._marketing_cap_window
        async with self._sessionmaker() as session:
            # Two campaigns' steps may come due at once: count and record under a lock per
            # customer, so both cannot see the same free place.
            await _lock_customer(session, row.customer_id)
            taken = await session.execute(
                select(col(Message.status), col(Message.sent_at), col(Message.created_at))
                .where(col(Message.customer_id) == row.customer_id)
                .where(col(Message.lifecycle).in_(_MARKETING_LIFECYCLES))
                # Notices to the team are not mail to the customer.
                .where(col(Message.template).not_in(NOT_TOUCHES))
                .where(col(Message.status).in_(CAPPED))
                .where(col(Message.id) != row.id)
                .where(
                    or_(
                        col(Message.sent_at) >= since,
                        col(Message.sent_at).is_(None)
                        & (col(Message.status).in_(IN_FLIGHT) | (col(Message.created_at) >= since)),
                    )
                )
            )
            # When each took its place: sent, else now for one being sent, else recorded.
            times = sorted(
                sent_at or (now if status in IN_FLIGHT else created_at)
                for status, sent_at, created_at in taken
            )
            retry_at = (
                times[len(times) - self._marketing_cap] + self._marketing_cap_window
                if len(times) >= self._marketing_cap
                else None
            )
            if retry_at is not None:
                row.status = MessageStatus.DEFERRED
                row.error = (
                    f"frequency cap: {len(times)} marketing email(s) in the last "
                    f"{self._marketing_cap_window.total_seconds() / 3600:g} h "
                    f"(cap {self._marketing_cap}); "
                    f"retry at {retry_at.isoformat()}"
                )
            await _upsert(session, row)
            await session.commit()
        return retry_at

    async def _deliver(self, message_id: str, email: OutgoingEmail) -> SendEmailResult:
        """Send the recorded message. A send in doubt stays pending and fails the attempt,
        for the retry to ask the provider (`_settle_doubt`), where the transport can; else
        it is unknown."""
        try:
            result = await self._transport.send(email)
        except PermanentSendError as exc:
            await self._finish(message_id, MessageStatus.FAILED, error=str(exc))
            return SendEmailResult(message_id, MessageStatus.FAILED, str(exc))
        except UncertainSendError as exc:
            # It may have gone out (e.g. the connection dropped after the request was
            # sent): never risk a second copy.
            if isinstance(self._transport, LooksUpSends):
                await self._doubt(message_id, activity.info().started_time, str(exc))
                raise SendInDoubt(
                    f"message {message_id} may have gone out: {exc}; the provider is asked "
                    "on the retry"
                ) from exc
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
        async with self._sessionmaker() as session:
            await _upsert(session, message)
            await session.commit()

    async def _doubt(self, message_id: str, since: datetime, reason: str) -> None:
        """Mark a pending message's send in doubt since `since`, saying why."""
        async with self._sessionmaker() as session:
            await session.execute(
                update(Message)
                .where(col(Message.id) == message_id)
                .values(in_doubt_since=since, error=reason)
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


def _retried_again(elapsed_seconds: float) -> bool:
    """Whether Temporal retries this activity attempt, which failed `elapsed_seconds`
    after it started: not past the retry policy's maximum attempts, nor when the next
    attempt would begin after the call's schedule-to-close deadline (Temporal's own rule,
    reckoned in the server's times)."""
    info = activity.info()
    policy = info.retry_policy
    if policy is None:
        # Not told (Temporal's test server, an activity test environment): Temporal
        # decides alone, and the workflow records the failed step.
        return True
    if policy.maximum_attempts and info.attempt >= policy.maximum_attempts:
        return False
    if info.schedule_to_close_timeout is None:
        return True
    backoff = policy.initial_interval * policy.backoff_coefficient ** (info.attempt - 1)
    if policy.maximum_interval is not None:
        backoff = min(backoff, policy.maximum_interval)
    failed_at = info.started_time + timedelta(seconds=elapsed_seconds)
    return failed_at + backoff <= info.scheduled_time + info.schedule_to_close_timeout


_MARKETING_LIFECYCLES = tuple(
    lifecycle
    for lifecycle, category in LIFECYCLE_CATEGORIES.items()
    if category == MailCategory.MARKETING
)


async def _upsert(session: AsyncSession, message: Message) -> None:
    """Insert the message, or refresh a retried one's row (same send key)."""
    row = message.model_dump()
    insert = insert_for(session.get_bind().dialect.name)
    await session.execute(
        insert(Message)
        .values(**row)
        .on_conflict_do_update(
            index_elements=["send_key"],
            set_={k: v for k, v in row.items() if k not in ("id", "send_key", "created_at")},
        )
    )


async def _lock_customer(session: AsyncSession, customer_id: str) -> None:
    """Hold a lock on the customer's marketing mail until the session's transaction ends."""
    if session.get_bind().dialect.name == "postgresql":
        digest = hashlib.sha256(f"marketing-cap:{customer_id}".encode()).digest()
        await session.execute(
            select(func.pg_advisory_xact_lock(int.from_bytes(digest[:8], "big", signed=True)))
        )
    else:
        # SQLite has one writer at a time: a write, even one touching no row, takes the
        # write lock now, before the count, and keeps it until commit.
        await session.execute(
            update(Message)
            .where(false())
            .values(status=col(Message.status))
            .execution_options(synchronize_session=False)
        )
