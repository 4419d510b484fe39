"""Database tables (SQLModel). Schema changes go through Alembic (`migrations/`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ColumnElement,
    DateTime,
    Index,
    Integer,
    TypeDecorator,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlmodel import Column, Field, SQLModel, col

from stripe_lifecycle.domain.lifecycles import Lifecycle


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on PostgreSQL and SQLite alike.

    SQLite has no timezone type and hands back naive values; we only ever store UTC,
    so the value read is re-labelled as UTC instead of leaking naive datetimes.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        if value is not None and dialect.name == "sqlite":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(
        self,
        value: datetime | None,
        dialect: Dialect,  # noqa: ARG002 (the signature is SQLAlchemy's)
    ) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


JSONType = JSON().with_variant(JSONB(), "postgresql")
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class InboxStatus:
    PENDING = "pending"
    FORWARDED = "forwarded"
    # Recorded and acknowledged but not for a customer workflow (no customer on the event).
    IGNORED = "ignored"
    # Cannot be delivered, ever (an id longer than Stripe's, a payload over Temporal's
    # limits): kept out of the forwarder with the reason in `last_error` until an admin
    # retries it (back to pending) or drops it (`intake/forwarder.py`, `api/inbox.py`).
    QUARANTINED = "quarantined"
    # Quarantined, then dropped by an admin (who: `support_actions`); kept for audit.
    DROPPED = "dropped"
    # Validly signed but not readable (a field of the wrong type or out of range, nesting
    # too deep): recorded with the reason in `last_error`, acknowledged, never delivered.
    UNREADABLE = "unreadable"


class WebhookEventBase(SQLModel):
    event_id: str = Field(max_length=255, unique=True)
    type: str = Field(max_length=255)
    livemode: bool
    api_version: str | None = Field(default=None, max_length=64)
    customer_id: str | None = Field(default=None, max_length=255)
    created: datetime = Field(sa_type=UTCDateTime)


class WebhookEvent(WebhookEventBase, table=True):
    """The webhook inbox: every verified Stripe event, stored before it is acknowledged.

    The unique `event_id` is the deduplication truth: Stripe retries and duplicate
    deliveries collapse onto one row.
    """

    __tablename__ = "webhook_inbox"
    __table_args__ = (
        Index("ix_webhook_inbox_pending", "status", "id"),
        Index("ix_webhook_inbox_customer_id", "customer_id"),
    )

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    payload: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    received_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    status: str = Field(default=InboxStatus.PENDING, max_length=16)
    forwarded_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    attempts: int = 0
    last_error: str | None = None


class CustomerBase(SQLModel):
    email: str | None = Field(default=None, max_length=512)
    name: str | None = Field(default=None, max_length=512)
    status: str = Field(default="none", max_length=32)
    plan: str | None = Field(default=None, max_length=255)
    mrr_cents: int = Field(default=0, sa_type=BigInteger)
    currency: str | None = Field(default=None, max_length=3)
    ltv_cents: int = Field(default=0, sa_type=BigInteger)
    customer_since: datetime | None = Field(default=None, sa_type=UTCDateTime)
    livemode: bool = False
    deleted: bool = False
    # False while some counted subscription could not be valued exactly (README: "What we
    # count"); `mrr_cents` is then the best reading of what is known.
    mrr_exact: bool = True


class Customer(CustomerBase, table=True):
    """The billing snapshot of one customer, written by the customer workflow."""

    __tablename__ = "customers"
    # Support finds customers by email ignoring case (`storage/lookup.py`).
    __table_args__ = (Index("ix_customers_email_lower", func.lower(text("email"))),)

    customer_id: str = Field(primary_key=True, max_length=255)
    # Monotonic count of events applied by the workflow: a retried or late activity
    # carrying an older snapshot must not overwrite a newer one.
    snapshot_version: int = Field(default=0, sa_type=BigInteger)
    subscriptions: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSONType, nullable=False)
    )
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # Per currency ({"usd": 4900}), minor units: MRR, LTV net of refunds, and the refunds.
    mrr: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSONType, nullable=False))
    ltv: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSONType, nullable=False))
    refunded: dict[str, int] = Field(
        default_factory=dict, sa_column=Column(JSONType, nullable=False)
    )


class LifecyclePublic(SQLModel):
    workflow_id: str
    lifecycle: str
    automation: str | None = None
    # Temporal's status (running, completed, ...) and the business outcome it ended with
    # (recovered, converted, saved, ..., "running" while it runs; None if unknown).
    status: str
    outcome: str | None = None


class CustomerPublic(CustomerBase):
    customer_id: str
    subscriptions: list[dict[str, Any]]
    updated_at: datetime
    mrr: dict[str, int] = {}
    ltv: dict[str, int] = {}
    refunded: dict[str, int] = {}
    lifecycles: list[LifecyclePublic] = []


class MessageStatus:
    # Recorded, send in progress. A row still pending when its activity is retried means
    # the earlier attempt died mid-send: through Postmark, whose message search can tell,
    # it is looked up (`in_doubt_since`); otherwise the outcome is unknown and it is not
    # sent again.
    PENDING = "pending"
    SENT = "sent"
    # Recorded only: the outbox transport, or a test-mode event to a non-allowed domain.
    RECORDED = "recorded"
    SUPPRESSED = "suppressed"
    # The transport refused it for good (e.g. invalid address): not retried.
    FAILED = "failed"
    # A temporary transport failure: the activity retries and may send it.
    RETRYING = "retrying"
    UNKNOWN = "unknown"
    # Reported by Postmark's webhooks after the send: the receiving server took it, or
    # refused it (the error says the bounce type).
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    # Held back by the marketing frequency cap; not settled: sending the step again
    # re-evaluates it.
    DEFERRED = "deferred"


# Mail that reached (or went to) the customer: what can earn a conversion. A bounce went
# out but was never read; reports count it as sent, attribution does not credit it.
CREDITABLE_STATUSES = (MessageStatus.SENT, MessageStatus.RECORDED, MessageStatus.DELIVERED)
SENT_STATUSES = (*CREDITABLE_STATUSES, MessageStatus.BOUNCED)


class MessageBase(SQLModel):
    customer_id: str = Field(max_length=255, index=True)
    workflow_id: str = Field(max_length=255)
    lifecycle: str = Field(max_length=32)
    automation: str = Field(max_length=255)
    step: str = Field(max_length=255)
    template: str = Field(max_length=255)
    to: str = Field(max_length=512)
    subject: str = ""
    status: str = Field(default=MessageStatus.PENDING, max_length=16)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Message(MessageBase, table=True):
    """Every email a lifecycle sent or decided not to send, recorded before the send.

    `send_key` (workflow id + step) is unique: a retried activity finds its row and
    never sends twice.
    """

    __tablename__ = "messages"

    id: str = Field(primary_key=True, max_length=36)
    send_key: str = Field(max_length=512, unique=True)
    html: str = ""
    text: str = ""
    links: list[str] = Field(default_factory=list, sa_column=Column(JSONType, nullable=False))
    # Link name -> real URL: the only places this message's tracked links lead to.
    destinations: dict[str, str] = Field(
        default_factory=dict, sa_column=Column(JSONType, nullable=False)
    )
    # The subscription the email is about, as the lifecycle knew it (the survey records
    # it with the answer); None where the email is about none.
    subscription_id: str | None = Field(default=None, max_length=255)
    # The connected account the customer belongs to (Stripe Connect), if any: Stripe
    # calls about this message (a portal session at click time) are made on it.
    stripe_account: str | None = Field(default=None, max_length=255)
    transport: str = Field(max_length=16)
    # Indexed: Postmark's webhooks name the message by it.
    provider_message_id: str | None = Field(default=None, max_length=255, index=True)
    error: str | None = None
    livemode: bool = False
    # When the send fell in doubt (the worker died mid-send, or the provider's answer never
    # came), on Temporal's clock: a transport that can look the message up keeps asking
    # the provider until a grace period has passed, then sends it again.
    in_doubt_since: datetime | None = Field(default=None, sa_type=UTCDateTime)


def sent_time() -> ColumnElement[datetime]:
    """When a message went out: `sent_at`, else (rows from before it was kept) recorded."""
    return func.coalesce(col(Message.sent_at), col(Message.created_at))


class MessagePublic(MessageBase):
    id: str


class MessageDetail(MessagePublic):
    html: str
    text: str
    links: list[str]
    error: str | None


class MessageClick(SQLModel, table=True):
    """One click on a tracked link: what attribution credits a conversion to."""

    __tablename__ = "message_clicks"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    message_id: str = Field(max_length=36, index=True)
    link: str = Field(max_length=64)
    clicked_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


# What makes a conversion one: each lifecycle's conversion of each kind from a Stripe event.
CONVERSION_KEY = ("stripe_event_id", "lifecycle", "kind")


class Conversion(SQLModel, table=True):
    """A Stripe fact with money (a recovered invoice, a converted trial, ...), recorded once
    per Stripe event, lifecycle and kind, and credited to the message that earned it, if any.

    One event can be two conversions: the `invoice.paid` that recovers a trial's failed
    first charge also converts the trial, each lifecycle's its own row. Reports count the
    money of one event once (storage/reports.py)."""

    __tablename__ = "conversions"
    __table_args__ = (
        UniqueConstraint(*CONVERSION_KEY, name="uq_conversions_event_lifecycle_kind"),
    )

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    stripe_event_id: str = Field(max_length=255)
    kind: str = Field(max_length=32)
    customer_id: str = Field(max_length=255, index=True)
    lifecycle: str = Field(max_length=32)
    workflow_id: str = Field(max_length=255)
    automation: str = Field(max_length=255)
    invoice_id: str | None = Field(default=None, max_length=255)
    subscription_id: str | None = Field(default=None, max_length=255)
    amount_cents: int = Field(default=0, sa_type=BigInteger)
    mrr_delta_cents: int = Field(default=0, sa_type=BigInteger)
    currency: str | None = Field(default=None, max_length=3)
    occurred_at: datetime = Field(sa_type=UTCDateTime)
    # The message credited, and how: "last_click" or "last_send"; None when no message
    # of the lifecycle was clicked or sent inside the window.
    message_id: str | None = Field(default=None, max_length=36)
    attribution: str | None = Field(default=None, max_length=16)
    # Why no message was credited although some may have touched the customer (an invoice
    # paid out of band); None for a conversion credited by the attribution model.
    uncredited_reason: str | None = Field(default=None, max_length=255)
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class SupportAction(SQLModel, table=True):
    """Audit of what support did through the API: who, why, and what it stopped."""

    __tablename__ = "support_actions"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    customer_id: str = Field(max_length=255, index=True)
    action: str = Field(max_length=64)
    actor: str = Field(max_length=255)
    reason: str
    workflow_ids: list[str] = Field(
        default_factory=list, sa_column=Column(JSONType, nullable=False)
    )
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class AuditEntry(SQLModel, table=True):
    """One mutating call to `/v1` or a dashboard form by an identified key: who (the key's
    role and fingerprint, never the key), what (method, route template and the ids in its
    path; never the raw path or the body), when, and how it was answered (refusals too)."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"),)

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    actor_role: str = Field(max_length=16)
    actor_key_id: str = Field(max_length=16)
    # "api" for a Bearer key, "dashboard" for a signed-in session or the login form.
    via: str = Field(max_length=16)
    method: str = Field(max_length=8)
    # `/v1/customers/{customer_id}/usage`; None when no route matched (a 404).
    route: str | None = Field(default=None, max_length=255)
    path_ids: dict[str, str] = Field(
        default_factory=dict, sa_column=Column(JSONType, nullable=False)
    )
    customer_id: str | None = Field(default=None, max_length=255, index=True)
    status_code: int


class FeedbackSource:
    # The survey page behind the cancellation email's "Tell us why" button.
    EMAIL = "email"
    # The product's own cancel flow, through the API.
    API = "api"


class CancellationFeedbackBase(SQLModel):
    customer_id: str = Field(max_length=255, index=True)
    subscription_id: str | None = Field(default=None, max_length=255)
    # The email answered; unique, so answering the same email again replaces the answer.
    message_id: str | None = Field(default=None, max_length=36, unique=True)
    workflow_id: str | None = Field(default=None, max_length=255)
    # One of Stripe's `cancellation_details.feedback` values.
    reason: str = Field(max_length=32)
    comment: str | None = None
    source: str = Field(max_length=16)
    # Who recorded it through the API (the caller's role and key fingerprint).
    actor: str | None = Field(default=None, max_length=255)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class CancellationFeedback(CancellationFeedbackBase, table=True):
    """Why a customer cancelled, in their words: what the win-back lifecycle learns from."""

    __tablename__ = "cancellation_feedback"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)


class CancellationFeedbackPublic(CancellationFeedbackBase):
    id: int


class ConversionCredit(SQLModel, table=True):
    """A message's share of a conversion (one row per credited message; none when the
    conversion is unattributed). Written with the conversion, in the same transaction."""

    __tablename__ = "conversion_credits"
    __table_args__ = (UniqueConstraint("conversion_id", "message_id"),)

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    conversion_id: int = Field(sa_type=BigInteger, foreign_key="conversions.id", index=True)
    message_id: str = Field(max_length=36, index=True)
    # "last_click", "last_send", "first_touch" or "linear" (see attribution.py).
    rule: str = Field(max_length=16)
    # Basis points: the shares of one conversion add up to 10 000.
    share_bp: int
    # The conversion's MRR delta and amount split by share (minor units, the conversion's
    # currency); the parts add up to exactly the conversion's figures.
    mrr_delta_cents: int = Field(default=0, sa_type=BigInteger)
    amount_cents: int = Field(default=0, sa_type=BigInteger)


class MailCategory:
    """What a customer can opt out of: each lifecycle's mail belongs to one category."""

    # Win-back and upgrade campaigns: Postmark's broadcast stream, frequency-capped.
    MARKETING = "marketing"
    # Trial, plan change and scheduled-cancellation mail about the product.
    PRODUCT = "product"
    # Recovery of money owed: stays deliverable after an unsubscribe unless
    # LIFECYCLE_UNSUBSCRIBE_BILLING is true.
    BILLING = "billing"
    ALL = (MARKETING, PRODUCT, BILLING)


# Lifecycle key -> mail category (an unknown lifecycle counts as product mail).
LIFECYCLE_CATEGORIES: dict[str, str] = {
    Lifecycle.WINBACK: MailCategory.MARKETING,
    Lifecycle.UPGRADE: MailCategory.MARKETING,
    Lifecycle.TRIAL: MailCategory.PRODUCT,
    Lifecycle.PLAN_CHANGE: MailCategory.PRODUCT,
    Lifecycle.SCHEDULED_CANCEL: MailCategory.PRODUCT,
    Lifecycle.DUNNING: MailCategory.BILLING,
    Lifecycle.PAYMENT_ACTION: MailCategory.BILLING,
    Lifecycle.CARD_EXPIRING: MailCategory.BILLING,
    Lifecycle.RENEWAL: MailCategory.BILLING,
    Lifecycle.INVOICE_DUE: MailCategory.BILLING,
    Lifecycle.INVOICE_OVERDUE: MailCategory.BILLING,
    Lifecycle.INVOICE_FINALIZED: MailCategory.BILLING,
    Lifecycle.QUOTE_EXPIRING: MailCategory.PRODUCT,
    Lifecycle.EVENT: MailCategory.PRODUCT,
}


class SuppressionScope:
    # Every email to the address (a hard bounce, a complaint about transactional mail).
    ALL = "all"
    # Marketing mail only: Postmark suppressed the address on the broadcast stream.
    MARKETING = "marketing"


class Suppression(SQLModel, table=True):
    """An address not to mail, learnt from Postmark's webhooks: one row per address and
    Postmark message stream, mirroring that stream's suppression list, so reactivating the
    address on the stream lifts exactly what it put here."""

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("email", "stream"),)

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    # Lower-cased.
    email: str = Field(max_length=512)
    stream: str = Field(max_length=64)
    scope: str = Field(max_length=16)
    # Postmark's word for it: HardBounce, SpamComplaint, ManualSuppression (an unsubscribe
    # handled by Postmark), ...
    reason: str = Field(max_length=64)
    # Our message that caused it, when Postmark names one.
    message_id: str | None = Field(default=None, max_length=36)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class LinkRevocation(SQLModel, table=True):
    """Email links support revoked: every tracked link of one message (`message_id` set),
    or of every message of a customer issued up to `revoked_at` (`message_id` None), so
    mail sent after a customer-wide revocation works again. A revoked link answers like an
    expired one. Unsubscribe links are never revoked: an opt-out must always work."""

    __tablename__ = "link_revocations"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    customer_id: str = Field(max_length=255, index=True)
    message_id: str | None = Field(default=None, max_length=36, index=True)
    reason: str
    actor: str = Field(max_length=255)
    revoked_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class DashboardLogout(SQLModel, table=True):
    """A dashboard sign-out. Sessions are signed cookies that carry their own expiry, so a
    sign-out is remembered here until every session it ends would have expired anyway: one
    session (`session_id` set), or every session of the key (its fingerprint) signed in up
    to `at` (`session_id` None: "sign out everywhere")."""

    __tablename__ = "dashboard_logouts"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    key_id: str = Field(max_length=64, index=True)
    session_id: str | None = Field(default=None, max_length=64)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class MailPreference(SQLModel, table=True):
    """A customer's choice for one category of mail; no row means subscribed."""

    __tablename__ = "mail_preferences"
    __table_args__ = (UniqueConstraint("customer_id", "category"),)

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    customer_id: str = Field(max_length=255)
    category: str = Field(max_length=16)
    subscribed: bool
    # How it was last set: "one-click" (the List-Unsubscribe POST) or "preferences" (the page).
    source: str = Field(max_length=16)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class MessageEvent(SQLModel, table=True):
    """What Postmark's webhooks reported (Delivery, Bounce, SpamComplaint, Open, Click,
    SubscriptionChange), stored once: the unique `event_key` (a digest of the fields that
    identify the event) makes a redelivered webhook change nothing."""

    __tablename__ = "message_events"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    event_key: str = Field(max_length=64, unique=True)
    # Our message, when the webhook could be matched to one.
    message_id: str | None = Field(default=None, max_length=36, index=True)
    record_type: str = Field(max_length=32)
    email: str | None = Field(default=None, max_length=512)
    occurred_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    payload: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    received_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ReconciliationPass(SQLModel, table=True):
    """A finished reconciliation pass (`StripeReconcileWorkflow`): /readyz shows the last."""

    __tablename__ = "reconciliation_passes"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    finished_at: datetime = Field(sa_type=UTCDateTime, index=True)
    lookback_seconds: int
    events_seen: int
    # Events Stripe had and the inbox lacked: webhooks that never arrived.
    events_recovered: int


class SyncedObject(SQLModel, table=True):
    """What a historical sync read of one Stripe object (`StripeSyncWorkflow`): its
    content's digest, and the backfill event until it is delivered to the customer
    workflow. A sync that reads the object unchanged changes nothing; a changed object is
    delivered again."""

    __tablename__ = "stripe_sync_objects"
    __table_args__ = (
        UniqueConstraint("account", "object_id", name="uq_stripe_sync_objects_object"),
        Index("ix_stripe_sync_objects_undelivered", "account", "delivered", "customer_id"),
    )

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    # The connected account the object lives on, or "" for the platform's own.
    account: str = Field(max_length=255)
    object_id: str = Field(max_length=255)
    resource: str = Field(max_length=32)
    customer_id: str = Field(max_length=255)
    digest: str = Field(max_length=64)
    # The normalised backfill event (`BillingEvent`), dropped once delivered.
    event: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType))
    delivered: bool = False
    synced_at: datetime = Field(sa_type=UTCDateTime)


class CustomerUsage(SQLModel, table=True):
    """Product usage the business's app reports (`POST /v1/customers/{id}/usage`): the
    latest value of each metric, segmentable as `usage.<metric>`."""

    __tablename__ = "customer_usage"
    __table_args__ = (UniqueConstraint("customer_id", "metric", name="uq_customer_usage_metric"),)

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    customer_id: str = Field(max_length=255, index=True)
    metric: str = Field(max_length=64)
    value: float
    reported_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class CustomerSegmentFacts(SQLModel, table=True):
    """What a customer's segments were last evaluated on (`domain/segments.py` facts), so
    the periodic sweep can re-evaluate conditions that turn with time alone without the
    customer workflow; and the segments the customer was in then."""

    __tablename__ = "customer_segment_facts"

    customer_id: str = Field(primary_key=True, max_length=255)
    facts: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONType, nullable=False))
    segments: list[str] = Field(default_factory=list, sa_column=Column(JSONType, nullable=False))
    evaluated_at: datetime = Field(sa_type=UTCDateTime)


class SegmentMember(SQLModel, table=True):
    """A customer in a segment now (one row per membership; removed on exit)."""

    __tablename__ = "segment_members"

    segment: str = Field(primary_key=True, max_length=128)
    # Indexed on its own too: each evaluation reads one customer's memberships, which
    # the (segment, customer) key cannot find without scanning every segment's members.
    customer_id: str = Field(primary_key=True, max_length=255, index=True)
    entered_at: datetime = Field(sa_type=UTCDateTime)


class SegmentChange:
    ENTERED = "entered"
    EXITED = "exited"


class SegmentEvent(SQLModel, table=True):
    """One entry into or exit from a segment, with when and why: the membership history."""

    __tablename__ = "segment_events"
    __table_args__ = (Index("ix_segment_events_segment_at", "segment", "at"),)

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    customer_id: str = Field(max_length=255, index=True)
    segment: str = Field(max_length=128)
    change: str = Field(max_length=8)
    at: datetime = Field(sa_type=UTCDateTime)
    # Which condition changed, old → new value ("subscription_age_days 89 → 90 (gte 90)").
    reason: str = Field(max_length=2000)
    # The customer was already in the segment when it was first evaluated for them (a new
    # segments file, a customer first seen by a sync): not news for a campaign to act on.
    initial: bool = False


class LifecycleInstance(SQLModel, table=True):
    """Every lifecycle instance started, and whether its customer is held out of its
    automation's mail: the population the lift report compares."""

    __tablename__ = "lifecycle_instances"
    __table_args__ = (
        Index("ix_lifecycle_instances_automation_started", "automation", "started_at"),
    )

    workflow_id: str = Field(primary_key=True, max_length=255)
    customer_id: str = Field(max_length=255, index=True)
    lifecycle: str = Field(max_length=32)
    automation: str = Field(max_length=255)
    held_out: bool = False
    started_at: datetime = Field(sa_type=UTCDateTime)
    # The customer's MRR and its currency when the instance started.
    mrr_cents: int = Field(default=0, sa_type=BigInteger)
    currency: str | None = Field(default=None, max_length=3)
