"""The boundary between workflows and activities: each activity's name and its one
dataclass in and one out.

Workflows call activities through these definitions
(`workflow.execute_activity_method(Mail.send_email, SendEmailInput(...), ...)`), so mypy
checks both sides; the classes beside this module implement them with real clients
(`MailActivities(Mail)`), wired in `worker.py`. This module imports nothing with I/O, so
workflow code can import it.

Results that recorded histories hold as plain values (`send_time`'s ISO time,
`record_conversion`'s message id) keep that shape: replays decode them with these types.
"""

# No `from __future__ import annotations`: Temporal's data converter resolves these types
# for every payload.

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from temporalio import activity

from stripe_lifecycle.domain.automations import Automation
from stripe_lifecycle.domain.ledger import BillingSnapshot
from stripe_lifecycle.domain.lifecycles import Lifecycle
from stripe_lifecycle.domain.send_windows import SendWindow
from stripe_lifecycle.domain.stripe_reads import StripeReadAnswer, StripeReadRequest


@dataclass
class SendEmailInput:
    workflow_id: str
    step: str
    customer_id: str
    lifecycle: Lifecycle
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
    # The subscription the email is about, kept with the message (the survey reads it).
    subscription_id: str | None = None
    # The connected account of the customer (Stripe Connect), kept with the message.
    stripe_account: str | None = None

    @property
    def send_key(self) -> str:
        return f"{self.workflow_id}/{self.step}"


@dataclass
class SendEmailResult:
    message_id: str
    status: str
    error: str | None = None
    # With status "deferred": when the frequency cap frees (ISO-8601, UTC). Sending the
    # same step again from then on sends it.
    retry_at: str | None = None


@dataclass
class TeamNotice:
    """A plain notice to the business's own team (the `notify_team` action)."""

    key: str
    customer_id: str
    workflow_id: str
    subject: str
    text: str
    lifecycle: Lifecycle = Lifecycle.DUNNING
    automation: str = ""


@dataclass
class StripeActionInput:
    # cancel_subscription | mark_uncollectible | void_invoice | pause_collection | retry_payment
    action: str
    invoice_id: str | None
    subscription_id: str | None
    # Built by the workflow from workflow id + step: a retried activity repeats the request
    # and Stripe answers it once.
    idempotency_key: str
    # The connected account the customer belongs to (Stripe Connect): the call is made on
    # it, not on the platform's own account.
    stripe_account: str | None = None


@dataclass
class WebhookRequest:
    """One `webhook` step: POST `payload` as the event `event` to the business's `url`,
    signed, once per `idempotency_key` (workflow id + step) however often it is retried."""

    url: str
    event: str
    idempotency_key: str
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass
class WebhookResult:
    # "delivered", or "failed" (a 4xx answer, or a URL whose host is not allowed)
    status: str
    detail: str
    http_status: int | None = None


@dataclass
class StripeActionResult:
    action: str
    # "done" or "failed"; a retry_payment also "declined" (detail: the decline code first)
    # or "processing" (accepted, not settled yet)
    status: str
    detail: str  # what happened, for the workflow's details and the log (ids only, no PII)


@dataclass
class ChooseAutomation:
    lifecycle: Lifecycle
    livemode: bool = False
    # The billing period of each item of the subscription (`ledger.billing_period`).
    subscription_periods: list[str] = field(default_factory=list)
    invoice_amount: int | None = None
    currency: str | None = None
    product_ids: list[str] = field(default_factory=list)
    price_ids: list[str] = field(default_factory=list)
    plan: str | None = None
    cancellation_reason: str | None = None
    customer_metadata: dict[str, str] = field(default_factory=dict)
    invoice_metadata: dict[str, str] = field(default_factory=dict)
    # The segments the customer is in (`filters: {segment: ...}`).
    segments: list[str] = field(default_factory=list)
    # An upgrade campaign's trigger: the segment entered; `existing`: the customer was in
    # it already (only `enter_existing` campaigns act on that).
    segment: str | None = None
    existing: bool = False
    # An `event` sequence's trigger: the Stripe event's type.
    event_type: str | None = None
    collection_method: str | None = None


@dataclass
class EventTriggersRequest:
    """Which event types start an `event` sequence (nothing to ask yet but that)."""


@dataclass
class EventTriggers:
    event_types: list[str] = field(default_factory=list)


@dataclass
class SendTimeRequest:
    due: datetime
    window: SendWindow
    timezone: str | None = None
    country: str | None = None


@dataclass
class ConversionInput:
    stripe_event_id: str
    kind: str
    customer_id: str
    lifecycle: Lifecycle
    workflow_id: str
    automation: str
    invoice_id: str | None
    subscription_id: str | None
    amount_cents: int
    mrr_delta_cents: int
    currency: str | None
    occurred_at: int
    # Recorded, but credited to no email, and why (an invoice paid out of band).
    uncredited_reason: str | None = None


class Mail:
    @activity.defn(name="send_email")
    async def send_email(self, request: SendEmailInput) -> SendEmailResult:
        """Send one step's email at most once (the send key is workflow id + step)."""
        raise NotImplementedError

    @activity.defn(name="notify_team")
    async def notify_team(self, notice: TeamNotice) -> SendEmailResult:
        """Tell the team (LIFECYCLE_TEAM_EMAIL), recorded in the customer's log, once."""
        raise NotImplementedError


class Automations:
    @activity.defn(name="choose_automation")
    async def choose_automation(self, trigger: ChooseAutomation) -> Automation | None:
        """The automation a trigger runs, as a snapshot the instance keeps for its life."""
        raise NotImplementedError

    @activity.defn(name="send_time")
    async def send_time(self, request: SendTimeRequest) -> str:
        """When (ISO 8601) mail due at `due` may go out in the customer's zone."""
        raise NotImplementedError

    @activity.defn(name="event_triggers")
    async def event_triggers(self, request: EventTriggersRequest) -> EventTriggers:
        """The Stripe event types an enabled `event` automation is triggered by."""
        raise NotImplementedError


class Conversions:
    @activity.defn(name="record_conversion")
    async def record_conversion(self, conversion: ConversionInput) -> str | None:
        """Record a conversion once, with its credits; the message credited most."""
        raise NotImplementedError


class Snapshots:
    @activity.defn(name="persist_snapshot")
    async def persist_snapshot(self, snapshot: BillingSnapshot) -> None:
        """Store the billing snapshot the API answers from; older versions never win."""
        raise NotImplementedError


class Outbound:
    @activity.defn(name="send_webhook")
    async def send_webhook(self, request: WebhookRequest) -> WebhookResult:
        """POST one signed event to the business's endpoint; raises (to be retried) on a
        5xx or timeout, answers "failed" on a 4xx."""
        raise NotImplementedError


class StripeActions:
    @activity.defn(name="stripe_action")
    async def stripe_action(self, request: StripeActionInput) -> StripeActionResult:
        """Apply one automation action in Stripe, at most once per idempotency key."""
        raise NotImplementedError


class StripeReads:
    @activity.defn(name="read_stripe")
    async def read_stripe(self, request: StripeReadRequest) -> StripeReadAnswer:
        """Read what events left out (coupons, discounts, price tiers and currency amounts,
        invoice payments) on the request's account; unknown without an API key."""
        raise NotImplementedError


@dataclass
class EventsPageRequest:
    """One page of `GET /v1/events`: newest first, from `starting_after` on (the first
    page without it)."""

    created_gte: int
    types: list[str]
    starting_after: str | None = None


@dataclass
class EventsPageResult:
    events_seen: int
    # Events the inbox lacked, now stored there for the forwarder.
    events_recovered: int
    # The cursor of the next page; None when this was the last.
    next_starting_after: str | None


@dataclass
class ReconciliationRecord:
    finished_at: datetime
    lookback_seconds: int
    events_seen: int
    events_recovered: int


@dataclass
class GapRequest:
    before: datetime


class Reconciliation:
    @activity.defn(name="reconcile_events_page")
    async def reconcile_events_page(self, request: EventsPageRequest) -> EventsPageResult:
        """Read one page of Stripe's events and store those the webhook inbox lacks."""
        raise NotImplementedError

    @activity.defn(name="record_reconciliation")
    async def record_reconciliation(self, record: ReconciliationRecord) -> None:
        """Keep a finished pass, for /readyz."""
        raise NotImplementedError

    @activity.defn(name="reconciliation_gap")
    async def reconciliation_gap(self, request: GapRequest) -> datetime | None:
        """When the last pass finished, if that is before `request.before`; None if it is
        not, or if no pass ever finished (a new install syncs by hand)."""
        raise NotImplementedError


@dataclass
class SyncAccountRequest:
    # The connected account to sync (Stripe Connect), or None for the key's own.
    account: str | None = None


@dataclass
class SyncAccountInfo:
    # When the Stripe account was created (`GET /v1/account`): how far back lists reach,
    # for the progress estimate. None when the key may not read the account.
    created: int | None = None
    rate_limited: int = 0


@dataclass
class SyncPageRequest:
    """One page of a list endpoint (`resource`), newest first, of the objects created up
    to `until` (at most the sync's start: what is created after it comes by webhook) and
    from `since` on (a window of the list; None: from the start), from `starting_after`
    on."""

    resource: str
    until: int
    account: str | None = None
    starting_after: str | None = None
    since: int | None = None


@dataclass
class SyncPageResult:
    # Objects listed, and of those the ones new or changed since the last sync.
    read: int
    changed: int
    # The cursor of the next page; None when this was the last.
    next_starting_after: str | None
    # `created` of the oldest object on the page: how far back the list has been read.
    oldest_created: int | None = None
    # 429s Stripe answered (and the activity waited out) before the page came.
    rate_limited: int = 0
    # Objects whose shape could not be read (logged, skipped).
    unreadable: int = 0


@dataclass
class DeliverRequest:
    """Deliver the stored backfill of up to `limit` customers, in id order after
    `after_customer`."""

    account: str | None
    limit: int
    start_lifecycles: bool
    after_customer: str | None = None


@dataclass
class DeliverResult:
    customers: int
    events: int
    # The cursor of the next call; None when every customer's backfill is delivered.
    last_customer: str | None


class StripeSync:
    """A historical sync's activities. The list reads run on the Stripe reads task queue
    (`contract.stripe_reads_queue`), whose rate Temporal caps for every worker at once."""

    @activity.defn(name="sync_account_info")
    async def sync_account_info(self, request: SyncAccountRequest) -> SyncAccountInfo:
        """When the Stripe account began (`GET /v1/account`)."""
        raise NotImplementedError

    @activity.defn(name="sync_list_page")
    async def sync_list_page(self, request: SyncPageRequest) -> SyncPageResult:
        """List one page and store what is new or changed of it as backfill."""
        raise NotImplementedError

    @activity.defn(name="sync_deliver")
    async def sync_deliver(self, request: DeliverRequest) -> DeliverResult:
        """Signal the stored backfill of the next customers to their customer workflows."""
        raise NotImplementedError


@dataclass
class SegmentsChanged:
    """The `segments_changed` signal: what a customer's segments read outside Stripe
    changed (usage reported, time passed); the customer workflow evaluates them again.
    `offer_existing`: segments the customer is in whose `enter_existing` campaigns may not
    have been offered to them yet."""

    reason: str
    offer_existing: list[str] = field(default_factory=list)


@dataclass
class EvaluateSegments:
    """Evaluate a customer's segments on the facts the workflow knows (`segments.
    billing_facts`) and those the DB holds (usage, clicks), at `now`. `previous`, `known`
    and `evaluated_before` are the workflow's own record of the last evaluation: what this
    one changes is measured against them, so a retried evaluation answers the same."""

    customer_id: str
    facts: dict[str, Any]
    now: datetime
    previous: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    evaluated_before: bool = False
    # When the customer's segments were first evaluated (epoch seconds), if ever.
    first_evaluated: int | None = None


@dataclass
class SegmentChangeInfo:
    segment: str
    # Which condition changed, old → new value.
    reason: str
    # Already in the segment when first evaluated against it: not news for a campaign.
    initial: bool = False


@dataclass
class SegmentsEvaluation:
    segments: list[str]
    # Every segment name defined now.
    known: list[str]
    entered: list[SegmentChangeInfo] = field(default_factory=list)
    exited: list[SegmentChangeInfo] = field(default_factory=list)
    # Of `segments`, those an enabled upgrade campaign is triggered by.
    campaign_segments: list[str] = field(default_factory=list)
    # What an upgrade offer names: the usage reported and the seat usage (JSON values).
    usage: dict[str, Any] = field(default_factory=dict)


@dataclass
class InstanceRecord:
    """A lifecycle instance started, with its holdout group (`lifecycle_instances`)."""

    workflow_id: str
    customer_id: str
    lifecycle: Lifecycle
    automation: str
    held_out: bool
    started_at: datetime
    mrr_cents: int = 0
    currency: str | None = None


@dataclass
class InstancesMrr:
    """The customer's MRR for instances recorded before it was known: their subscription's
    first event came after them (`Segments.record_instances_mrr`)."""

    workflow_ids: list[str]
    mrr_cents: int
    currency: str | None


@dataclass
class PersistAndEvaluate:
    """A batch's snapshot to store and the segment evaluation it calls for, in one local
    activity (`Segments.persist_and_evaluate`)."""

    snapshot: BillingSnapshot
    evaluation: EvaluateSegments


@dataclass
class StoreBatch:
    """A batch's snapshot to store, in one local activity that also says which event
    types start an `event` sequence now, and which automation each of the batch's
    lifecycle starts runs (`Segments.store_batch`).

    `choose`: the triggers of the batch's starts, each answered as
    `Automations.choose_automation` answers it.
    `quiet_unless`: given for a batch that starts, tells and ends nothing unless one of
    these event types starts a sequence or one of `choose` chooses an automation; if
    none does, the batch is quiet and `evaluation` (given when the billing facts changed)
    is made in the same transaction."""

    snapshot: BillingSnapshot
    quiet_unless: list[str] | None = None
    evaluation: EvaluateSegments | None = None
    choose: list[ChooseAutomation] = field(default_factory=list)


@dataclass
class StoredBatch:
    # The event types enabled `event` automations start on (`Automations.event_triggers`).
    event_triggers: list[str]
    # The batch was quiet (`StoreBatch.quiet_unless`): nothing is left to carry out.
    quiet: bool = False
    # The evaluation asked for, made because the batch was quiet.
    evaluation: SegmentsEvaluation | None = None
    # The automation each of `StoreBatch.choose` runs, in its order; None: none matches.
    chosen: list[Automation | None] = field(default_factory=list)


class Segments:
    @activity.defn(name="evaluate_segments")
    async def evaluate_segments(self, request: EvaluateSegments) -> SegmentsEvaluation:
        """Evaluate every segment for one customer and record each entry and exit."""
        raise NotImplementedError

    @activity.defn(name="persist_and_evaluate_segments")
    async def persist_and_evaluate(self, request: PersistAndEvaluate) -> SegmentsEvaluation:
        """`Snapshots.persist_snapshot`, then `evaluate_segments`: what a batch that
        starts, tells and ends nothing needs, for one workflow round trip instead of two."""
        raise NotImplementedError

    @activity.defn(name="store_batch")
    async def store_batch(self, request: StoreBatch) -> StoredBatch:
        """`Snapshots.persist_snapshot` answering `Automations.event_triggers`, and for a
        batch that proves quiet, `persist_and_evaluate`: one round trip for what was up to
        three."""
        raise NotImplementedError

    @activity.defn(name="record_instance")
    async def record_instance(self, record: InstanceRecord) -> None:
        """Keep a started lifecycle instance and its holdout group, for the lift report."""
        raise NotImplementedError

    @activity.defn(name="record_instances_mrr")
    async def record_instances_mrr(self, mrr: InstancesMrr) -> None:
        """Fill in the MRR of instances recorded before it was known."""
        raise NotImplementedError


@dataclass
class SweepRequest:
    now: datetime


@dataclass
class SweepResult:
    customers: int
    # Customers whose membership of a segment with a time condition turns, and those in
    # an `enter_existing` campaign's segment it has not been offered to: each signalled.
    changed: int
    offered: int
    # Customers with a billing snapshot never evaluated (their workflows began before
    # segments existed): each signalled, which starts their evaluations.
    first: int = 0
    # Customers whose usage was reported after their last evaluation (the usage API
    # could not tell their workflow): each signalled.
    usage: int = 0


class SegmentSweep:
    @activity.defn(name="sweep_segments")
    async def sweep_segments(self, request: SweepRequest) -> SweepResult:
        """Find the customers whose segments turn with time alone, and tell each."""
        raise NotImplementedError


# Every activity the worker must register, by the definition workflows call.
DEFINITIONS: tuple[type, ...] = (
    Mail,
    Automations,
    Conversions,
    Snapshots,
    StripeActions,
    StripeReads,
    Reconciliation,
    StripeSync,
    Segments,
    SegmentSweep,
    Outbound,
)
