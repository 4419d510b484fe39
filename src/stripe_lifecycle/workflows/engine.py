"""The one step engine every lifecycle workflow runs on.

An instance runs one automation for one subject (an invoice, a subscription, a card) on
durable timers. Steps count `after` the start or `before` the anchor date (trial end,
period end, card expiry), and a moved anchor re-times the steps not yet run. A step sends
an email (held to the customer's send window and the marketing frequency cap), tells the
team, or acts in Stripe.

The customer workflow decides what Stripe's events mean (`domain/rules.py`) and tells an
instance by the `lifecycle_update` signal: a new anchor, fresher template data, or the
outcome it ends with. It also records the conversions. A lifecycle is a subclass naming
its key, title and how long it waits for its outcome (`workflows/lifecycles.py`); its
links are data (`domain/lifecycles.py`).
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

from stripe_lifecycle.activities.interface import (
    Automations,
    ConversionInput,
    Conversions,
    Mail,
    Outbound,
    SendEmailInput,
    SendEmailResult,
    SendTimeRequest,
    StripeActionInput,
    StripeActions,
    TeamNotice,
    WebhookRequest,
)
from stripe_lifecycle.domain import contract, outbound, rules
from stripe_lifecycle.domain.automations import Automation, Step
from stripe_lifecycle.domain.conversions import RECOVERED
from stripe_lifecycle.domain.events import InvoiceInfo
from stripe_lifecycle.domain.lifecycles import LINKS, Lifecycle
from stripe_lifecycle.domain.template_context import step_context, step_destinations


@dataclass
class LifecycleInput:
    customer_id: str
    automation: Automation
    # The invoice, subscription or card the instance is about (for invoice lifecycles
    # started before this field existed: the invoice's id).
    subject_id: str = ""
    subscription_id: str | None = None
    # Epoch seconds that `before:` steps count back from.
    anchor: int | None = None
    customer_email: str | None = None
    customer_name: str | None = None
    livemode: bool = False
    # Template objects (customer, subscription, payment_method, invoice), JSON values.
    context: dict[str, Any] = field(default_factory=dict)
    # Where the customer's send window is measured: Stripe `timezone` metadata, country.
    customer_timezone: str | None = None
    customer_country: str | None = None
    # Invoice lifecycles (dunning, payment action): the invoice, as Stripe last told it.
    invoice: InvoiceInfo | None = None
    # The subscription's MRR when the instance started: the revenue a recovery keeps, for
    # instances that record their recovery themselves (see `invoice_update`).
    mrr_cents: int = 0
    # The connected account the customer belongs to (Stripe Connect), if any.
    stripe_account: str | None = None
    # Started by a historical sync for a situation already under way: when it began
    # (epoch seconds). `after:` steps count from then, and every step already due is
    # skipped, so the instance goes on from its current step.
    since: int | None = None
    # The customer is in the automation's holdout group: every email step is recorded as
    # held out and not sent, so its conversions measure what happens without the mail.
    held_out: bool = False


@dataclass
class LifecycleUpdate:
    """Signal from the customer workflow: what a Stripe event means for this instance."""

    event_id: str
    created: int
    outcome: str | None = None
    anchor: int | None = None
    # Fresher template objects (an upcoming invoice's amount, a renamed plan).
    context: dict[str, Any] | None = None
    # The invoice as Stripe tells it now (a later failure: attempt count, next retry).
    invoice: InvoiceInfo | None = None
    # The customer's address and name, learned (or changed) after the instance started.
    customer_email: str | None = None
    customer_name: str | None = None


@dataclass
class InvoiceUpdate:
    """Signal from customer workflow runs that began before `lifecycle_update` told
    invoice lifecycles their outcome: the Stripe event itself, read here."""

    event_id: str
    event_type: str
    created: int
    invoice: InvoiceInfo | None = None
    mrr_cents: int | None = None


@dataclass
class CancelRequest:
    reason: str
    actor: str


@dataclass
class CancelResult:
    workflow_id: str
    cancelled: bool


@dataclass
class StepRecord:
    step: str
    kind: str
    target: str
    status: str
    at: datetime


@dataclass
class LifecycleState:
    lifecycle: Lifecycle
    subject_id: str
    automation: str
    outcome: str | None
    anchor: datetime | None
    steps_done: list[StepRecord] = field(default_factory=list)
    next_step: str | None = None
    next_at: datetime | None = None
    invoice_id: str | None = None


@dataclass
class LifecycleResult:
    outcome: str
    steps_done: int


@dataclass
class LifecycleFinished:
    """Signal to the customer workflow when a lifecycle ends."""

    workflow_id: str
    outcome: str


class LifecycleParent:
    """What a lifecycle tells the workflow that started it (the customer workflow)."""

    @workflow.signal
    def lifecycle_finished(self, finished: LifecycleFinished) -> None:
        raise NotImplementedError


# An email step of a customer in the automation's holdout group: not sent.
HELD_OUT = "held_out"
# The step's mail waited for the send window (or the frequency cap) and the lifecycle
# ended first.
NOT_SENT = "not sent: ended while waiting for its send window"
SEQUENCE_FINISHED = "sequence_finished"
# Instances that began before dunning's final notice waited for Stripe's last retry
# replay without the wait.
FINAL_NOTICE_PATCH = "final-notice-after-the-last-retry"
# How long after a scheduled retry its outcome (paid, or failed with the next date)
# has reached the instance.
RETRY_SETTLES = timedelta(hours=1)
DONE = "done"
# Instances started since wait a while for an address that has not reached them before
# an email step records "no address": Stripe sends `customer.created` and the events of
# the subscription created with it in no set order, so a trial can begin before the
# customer it welcomes is known. The customer workflow tells them the address when its
# event arrives (`ADDRESS_PATCH` there). Instances recorded before replay without the wait.
ADDRESS_PATCH = "wait-for-the-address"
ADDRESS_WAIT = timedelta(hours=1)

MAIL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=10)
)
# Sends, team notices and Stripe actions heartbeat while they wait on the remote call: a
# worker that dies mid-call falls silent, and its attempt is retried after this rather than
# after the whole start-to-close timeout.
CALL_HEARTBEAT = timedelta(seconds=20)
# A team notice is a courtesy: while Slack or the mail provider stays down it is retried for
# this long (a short outage passes), then the step ends failed and the instance moves on.
TEAM_NOTICE_GIVE_UP = timedelta(hours=1)
DB_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))
# The business's endpoint may be down for a while: back off to an hourly attempt, and give
# up after a day (`outbound.WEBHOOK_GIVE_UP`; the step then shows as failed).
WEBHOOK_RETRY = RetryPolicy(
    initial_interval=outbound.WEBHOOK_RETRY_INITIAL,
    backoff_coefficient=outbound.WEBHOOK_RETRY_BACKOFF,
    maximum_interval=outbound.WEBHOOK_RETRY_MAX_INTERVAL,
)


class LifecycleWorkflow:
    """The engine; subclasses name the lifecycle and how long to wait for its outcome.

    Signals: `lifecycle_update(LifecycleUpdate)`. Updates: `cancel(CancelRequest) ->
    CancelResult` (support stops the instance). Queries: `state() -> LifecycleState`.
    """

    lifecycle: ClassVar[Lifecycle]
    title: ClassVar[str]
    # After the last step (and the anchor), how long the instance still waits for the
    # outcome it exists for (a payment at trial end, a resubscription after the offers).
    linger: ClassVar[timedelta] = timedelta(0)
    finished: ClassVar[str] = SEQUENCE_FINISHED

    @workflow.init
    def __init__(self, input: LifecycleInput) -> None:
        self._input = input
        self._invoice = input.invoice
        self._subject = input.subject_id or (input.invoice.id or "" if input.invoice else "")
        self._subscription_id = input.subscription_id or (
            input.invoice.subscription_id if input.invoice else None
        )
        self._anchor = input.anchor
        self._context = dict(input.context)
        # Who the mail goes to: as the instance started, or as the customer workflow told
        # it since (`lifecycle_update`).
        self._address = input.customer_email
        self._name = input.customer_name
        self._outcome: str | None = None
        self._changed = False
        self._done: list[StepRecord] = []
        self._handled: set[int] = set()
        self._next: tuple[Step, datetime] | None = None
        # Instances without `since` (all recorded so far) count from their start, as
        # before, so their histories replay unchanged.
        self._started = _at(input.since) or workflow.now()

    async def run(self, input: LifecycleInput) -> LifecycleResult:
        """The steps until the outcome. Each lifecycle type decorates its own `run`
        (`@workflow.run` must be on the type itself) and calls this one."""
        workflow.logger.info(
            "%s of %s runs %s", self.lifecycle, self._subject, input.automation.name
        )
        if input.since is not None:
            self._skip_before_sync()
        while self._outcome is None:
            self._skip_missed()
            upcoming = self._upcoming()
            self._next = upcoming
            deadline = upcoming[1] if upcoming else self._deadline()
            self._describe()
            self._changed = False
            try:
                await workflow.wait_condition(
                    lambda: self._outcome is not None or self._changed,
                    timeout=max(timedelta(0), deadline - workflow.now()),
                )
            except TimeoutError:
                pass
            if self._outcome is not None or self._changed:
                continue
            if upcoming is None:
                self._outcome = self.finished
                break
            await self._run_step(upcoming[0])
        self._next = None
        indexed = workflow.info().typed_search_attributes.search_attributes
        email_indexed = any(pair.key.name == contract.CUSTOMER_EMAIL.name for pair in indexed)
        if self._outcome == rules.CUSTOMER_DELETED and email_indexed:
            # The customer was deleted (their data may be erased next): this instance's
            # visibility record stops naming their address now, not when it is deleted.
            workflow.upsert_search_attributes([contract.CUSTOMER_EMAIL.value_unset()])
        await self._on_end()
        self._describe()
        await self._tell_customer_workflow()
        return LifecycleResult(outcome=self._outcome, steps_done=len(self._done))

    @workflow.signal
    def lifecycle_update(self, update: LifecycleUpdate) -> None:
        if self._outcome is not None:
            return
        if update.context:
            self._context.update(update.context)
        if update.invoice is not None:
            self._invoice = update.invoice
        if update.customer_email is not None:
            self._address = update.customer_email
            self._name = update.customer_name
        if update.anchor is not None and update.anchor != self._anchor:
            self._anchor = update.anchor
            self._changed = True
        if update.outcome is not None:
            self._outcome = update.outcome

    @workflow.update
    def cancel(self, request: CancelRequest) -> CancelResult:
        workflow.logger.info(
            "%s cancelled by %s: %s", self.lifecycle, request.actor, request.reason
        )
        self._outcome = "cancelled"
        return CancelResult(workflow_id=workflow.info().workflow_id, cancelled=True)

    @cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        if self._outcome is not None:
            raise ApplicationError(f"this {self.lifecycle} has already ended ({self._outcome})")
        if not request.reason.strip():
            raise ApplicationError("a reason is required")

    @workflow.query
    def state(self) -> LifecycleState:
        return LifecycleState(
            lifecycle=self.lifecycle,
            subject_id=self._subject,
            automation=self._input.automation.name,
            outcome=self._outcome,
            anchor=_at(self._anchor),
            steps_done=list(self._done),
            next_step=self._next[0].key if self._next else None,
            next_at=self._next[1] if self._next else None,
            invoice_id=self._invoice.id if self._invoice else None,
        )

    async def _on_end(self) -> None:
        """What a lifecycle does once its outcome is known, before it reports it."""

    def _due(self, step: Step) -> datetime:
        if step.before_seconds is not None and self._anchor is not None:
            return _at(self._anchor - step.before_seconds) or self._started
        return self._started + timedelta(seconds=step.after_seconds or 0)

    def _pending(self) -> list[Step]:
        steps = [s for s in self._input.automation.steps if s.index not in self._handled]
        return sorted(steps, key=lambda s: (self._due(s), s.index))

    def _skip_missed(self) -> None:
        """Reminders counted back from a date that cannot run at their moment are skipped.

        One due before the instance began never had its moment (a 5-day trial has no
        "7 days left"); of those that came due while nothing ran (a worker down for a
        week, a date moved earlier) only the latest runs, so nobody gets two reminders at
        once; and once the date itself has passed, none of them makes sense any more.
        """
        now = workflow.now()
        overdue = [
            s for s in self._pending() if s.before_seconds is not None and self._due(s) <= now
        ]
        anchor_passed = self._anchor is not None and (_at(self._anchor) or now) <= now
        # Once the date moved, every overdue reminder had its moment while this instance
        # ran (the latest one still goes out); before that, only those due since the start.
        moved = self._anchor != self._input.anchor
        in_time = [s for s in overdue if moved or self._due(s) >= self._started]
        keep = None if anchor_passed or not in_time else in_time[-1]
        for step in overdue:
            if step is keep:
                continue
            self._handled.add(step.index)
            why = "skipped: due before this instance started"
            if step in in_time:
                why = "skipped: too late"
            self._done.append(StepRecord(step.key, _kind(step), _target(step), why, now))

    def _skip_before_sync(self) -> None:
        """A sync started this instance for a situation already under way: the steps whose
        moment passed before it ran are not sent late, all at once."""
        now = workflow.now()
        for step in self._pending():
            if self._due(step) <= now:
                self._handled.add(step.index)
                self._done.append(
                    StepRecord(
                        step.key, _kind(step), _target(step), "skipped: due before the sync", now
                    )
                )

    def _upcoming(self) -> tuple[Step, datetime] | None:
        pending = self._pending()
        return (pending[0], self._due(pending[0])) if pending else None

    def _deadline(self) -> datetime:
        last = max((self._due(s) for s in self._input.automation.steps), default=self._started)
        return max(last, _at(self._anchor) or last) + self.linger

    async def _run_step(self, step: Step) -> None:
        self._handled.add(step.index)
        while (held := self._retry_pending(step)) is not None and workflow.patched(
            FINAL_NOTICE_PATCH
        ):
            if not await self._hold_until(held):
                return
        if step.send is not None and self._input.held_out:
            status = HELD_OUT
        elif step.send is not None:
            sent = await self._send_email(step, step.send)
            status = sent.status if sent is not None else NOT_SENT
        elif step.webhook_url is not None:
            status = await self._send_webhook(step, step.webhook_url, step.webhook_event or "")
        elif step.action == "notify_team":
            status = await self._notify_team(step)
        else:
            status = await self._stripe_action(step, step.action or "")
        self._done.append(StepRecord(step.key, _kind(step), _target(step), status, workflow.now()))

    def _retry_pending(self, step: Step) -> datetime | None:  # noqa: ARG002 (a hook)
        """Until when `step` waits for a payment retry Stripe has scheduled; None: it runs."""
        return None

    async def _send_email(self, step: Step, template: str) -> SendEmailResult | None:
        """The step's email, held to the customer's send window and past the marketing
        frequency cap; None when the lifecycle ended while the mail waited."""
        window = self._input.automation.send_window
        if window is not None:
            at = await workflow.execute_local_activity_method(
                Automations.send_time,
                SendTimeRequest(
                    due=workflow.now(),
                    window=window,
                    timezone=self._input.customer_timezone,
                    country=self._input.customer_country,
                ),
                start_to_close_timeout=timedelta(seconds=10),
            )
            if not await self._hold_until(datetime.fromisoformat(at)):
                return None
        if self._address is None and workflow.patched(ADDRESS_PATCH):
            if not await self._await_address():
                return None
        request = SendEmailInput(
            workflow_id=workflow.info().workflow_id,
            step=step.key,
            customer_id=self._input.customer_id,
            lifecycle=self.lifecycle,
            automation=self._input.automation.name,
            template=template,
            to=self._address,
            livemode=self._input.livemode,
            context=self._template_context(),
            destinations=self._destinations(),
            subscription_id=self._subscription_id,
            stripe_account=self._input.stripe_account,
        )
        while True:
            result = await workflow.execute_activity_method(
                Mail.send_email,
                request,
                start_to_close_timeout=timedelta(minutes=2),
                heartbeat_timeout=CALL_HEARTBEAT,
                retry_policy=MAIL_RETRY,
            )
            if result.status != "deferred" or not result.retry_at:
                return result
            # Over the cap on marketing mail: the same step asks again once it frees. A
            # time not ahead of this workflow's clock would only ask again at once.
            free = datetime.fromisoformat(result.retry_at)
            if free <= workflow.now():
                return result
            if not await self._hold_until(free):
                return None

    async def _notify_team(self, step: Step) -> str:
        """The `notify_team` action: a notice to LIFECYCLE_TEAM_EMAIL, sent once."""
        workflow_id = workflow.info().workflow_id
        subject, text = self._team_notice(step)
        try:
            result = await workflow.execute_activity_method(
                Mail.notify_team,
                TeamNotice(
                    key=f"{workflow_id}/{step.key}",
                    customer_id=self._input.customer_id,
                    workflow_id=workflow_id,
                    subject=subject,
                    text=text,
                    lifecycle=self.lifecycle,
                    automation=self._input.automation.name,
                ),
                start_to_close_timeout=timedelta(minutes=2),
                schedule_to_close_timeout=TEAM_NOTICE_GIVE_UP,
                heartbeat_timeout=CALL_HEARTBEAT,
                retry_policy=MAIL_RETRY,
            )
        except ActivityError as exc:
            # Given up (TEAM_NOTICE_GIVE_UP): the notice is not worth stopping the instance
            # for. Without a give-up time every error was retried and the call never failed,
            # so recorded histories replay alike.
            cause = exc.cause.message if isinstance(exc.cause, FailureError) else str(exc)
            return f"failed: {cause}"
        return result.status

    async def _send_webhook(self, step: Step, url: str, event: str) -> str:
        """The `webhook` step: a signed event to the business's endpoint, retried with
        backoff for up to a day while it is down; a refusal (4xx) ends the step failed."""
        workflow_id = workflow.info().workflow_id
        try:
            result = await workflow.execute_activity_method(
                Outbound.send_webhook,
                WebhookRequest(
                    url=url,
                    event=event,
                    idempotency_key=f"{workflow_id}/{step.key}",
                    payload=self._webhook_payload(step),
                ),
                start_to_close_timeout=outbound.WEBHOOK_ATTEMPT_TIMEOUT,
                schedule_to_close_timeout=outbound.WEBHOOK_GIVE_UP,
                retry_policy=WEBHOOK_RETRY,
            )
        except ActivityError as exc:
            cause = exc.cause.message if isinstance(exc.cause, FailureError) else str(exc)
            return f"failed: {cause}"
        return result.status if result.status == outbound.DELIVERED else f"failed: {result.detail}"

    def _webhook_payload(self, step: Step) -> dict[str, Any]:
        """What the business's endpoint is told: the step, the automation, the customer
        and the object's ids and amounts (no email address or name)."""
        payload: dict[str, Any] = {
            "lifecycle": str(self.lifecycle),
            "automation": self._input.automation.name,
            "step": step.key,
            "workflow_id": workflow.info().workflow_id,
            "customer": {"id": self._input.customer_id},
            "subject_id": self._subject,
            "subscription_id": self._subscription_id,
        }
        if self._invoice is not None:
            invoice = self._invoice
            payload["invoice"] = {
                "id": invoice.id,
                "number": invoice.number,
                "status": invoice.status,
                "amount_due": invoice.amount_due,
                "amount_paid": invoice.amount_paid,
                "amount_remaining": invoice.amount_remaining,
                "currency": invoice.currency,
                "due_date": invoice.due_date,
                "hosted_invoice_url": invoice.hosted_invoice_url,
            }
        for key in ("quote", "event"):
            if key in self._context:
                payload[key] = self._context[key]
        return payload

    async def _stripe_action(self, step: Step, action: str) -> str:
        result = await workflow.execute_activity_method(
            StripeActions.stripe_action,
            StripeActionInput(
                action=action,
                invoice_id=self._invoice.id if self._invoice else None,
                subscription_id=self._subscription_id,
                # Stripe answers a repeated request once: retries cannot act twice.
                idempotency_key=f"{workflow.info().workflow_id}/{step.key}",
                stripe_account=self._input.stripe_account,
            ),
            start_to_close_timeout=timedelta(minutes=1),
            heartbeat_timeout=CALL_HEARTBEAT,
            retry_policy=MAIL_RETRY,
        )
        # A payment retried says how it went (paid, the decline code) even when done.
        if result.status == DONE and action != "retry_payment":
            return DONE
        return f"{result.status}: {result.detail}"

    def _team_notice(self, step: Step) -> tuple[str, str]:
        """Subject and text of a `notify_team` step."""
        customer = self._input.customer_id
        return (
            f"{self.title}: customer {customer}",
            f"Automation {self._input.automation.name} ({self.lifecycle}) reached step "
            f"{step.key} for customer {customer}, {self._subject}.",
        )

    def _template_context(self) -> dict[str, Any]:
        return step_context(
            self._context,
            self._invoice,
            self._address,
            self._name,
            self._input.automation.offer,
            now=int(workflow.now().timestamp()),
        )

    def _destinations(self) -> dict[str, str]:
        return step_destinations(LINKS[self.lifecycle], self._input.automation.offer, self._invoice)

    def _describe(self) -> None:
        automation = self._input.automation
        head = (
            f"**{self.title}** of {self._subject} · automation `{automation.name}`"
            f" · {len(self._done)}/{len(automation.steps)} steps done"
        )
        if self._input.held_out:
            head += " · holdout group (no email)"
        anchor = _at(self._anchor)
        if anchor is not None:
            head += f" · date {anchor.isoformat(timespec='minutes')}"
        if self._invoice is not None and self._invoice.attempt_count:
            head += f" · {self._invoice.attempt_count} payment attempts"
        if self._outcome is not None:
            workflow.set_current_details(f"{head}  \n**Ended:** {self._outcome}")
        elif self._next is not None:
            step, due = self._next
            workflow.set_current_details(
                f"{head}  \n**Next:** {_target(step)} at {due.isoformat(timespec='minutes')}"
            )
        else:
            workflow.set_current_details(
                f"{head}  \n**Waiting** for the outcome until "
                f"{self._deadline().isoformat(timespec='minutes')}"
            )

    async def _await_address(self) -> bool:
        """Wait up to `ADDRESS_WAIT` for the customer's address; False if the lifecycle
        ended meanwhile. Without one by then the email is recorded as having none."""
        try:
            await workflow.wait_condition(
                lambda: self._address is not None or self._outcome is not None,
                timeout=ADDRESS_WAIT,
            )
        except TimeoutError:
            pass
        return self._outcome is None

    async def _hold_until(self, at: datetime) -> bool:
        """Wait until `at`; False if the lifecycle ended meanwhile."""
        wait = at - workflow.now()
        if wait > timedelta(0):
            try:
                await workflow.wait_condition(lambda: self._outcome is not None, timeout=wait)
            except TimeoutError:
                pass
        return self._outcome is None

    async def _tell_customer_workflow(self) -> None:
        parent = workflow.info().parent
        if parent is None or self._outcome is None:
            return  # started on its own (tests, or by hand): nobody to tell
        try:
            await workflow.get_external_workflow_handle(parent.workflow_id).signal(
                LifecycleParent.lifecycle_finished,
                LifecycleFinished(workflow.info().workflow_id, self._outcome),
            )
        except Exception:
            # The customer workflow is gone (terminated by hand): the outcome is still in
            # this workflow's result and history.
            workflow.logger.warning(
                "could not tell %s that this lifecycle ended", parent.workflow_id
            )


class InvoiceLifecycleWorkflow(LifecycleWorkflow):
    """An invoice lifecycle (dunning, payment action): the invoice's own page is where it
    is paid, and its attempts are what the team hears about.

    Signals, besides the engine's: `invoice_update(InvoiceUpdate)`, from customer workflow
    runs that began before invoice outcomes were decided there: this instance then reads
    the event and records its own recovery.
    """

    @workflow.init
    def __init__(self, input: LifecycleInput) -> None:
        super().__init__(input)
        self._legacy_ending: InvoiceUpdate | None = None

    @workflow.signal
    def invoice_update(self, update: InvoiceUpdate) -> None:
        if self._outcome is not None:
            return
        if update.invoice is not None and update.event_type == rules.INVOICE_TRIGGERS.get(
            self.lifecycle
        ):
            self._invoice = update.invoice
        endings = (
            rules.PAYMENT_ACTION_ENDINGS
            if self.lifecycle == Lifecycle.PAYMENT_ACTION
            else rules.INVOICE_ENDINGS
        )
        ending = endings.get(update.event_type)
        if update.event_type == rules.DELETED:
            ending = "subscription_deleted"
        if ending is not None:
            self._outcome = ending
            self._legacy_ending = update

    async def _on_end(self) -> None:
        update = self._legacy_ending
        if self._outcome != RECOVERED or update is None:
            return
        invoice = update.invoice or self._invoice
        await workflow.execute_activity_method(
            Conversions.record_conversion,
            ConversionInput(
                stripe_event_id=update.event_id,
                kind=RECOVERED,
                customer_id=self._input.customer_id,
                lifecycle=self.lifecycle,
                workflow_id=workflow.info().workflow_id,
                automation=self._input.automation.name,
                invoice_id=invoice.id if invoice else None,
                subscription_id=self._subscription_id,
                amount_cents=(invoice.amount_paid or invoice.amount_due) if invoice else 0,
                mrr_delta_cents=update.mrr_cents
                if update.mrr_cents is not None
                else self._input.mrr_cents,
                currency=invoice.currency if invoice else None,
                occurred_at=update.created,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=DB_RETRY,
        )

    def _retry_pending(self, step: Step) -> datetime | None:
        """Dunning's final notice is the last word: while Stripe still has a retry
        scheduled, it waits for that retry (which pays the invoice, or fails and says
        whether another one comes)."""
        sends = [s for s in self._input.automation.steps if s.send is not None]
        final = max(sends, key=lambda s: (self._due(s), s.index), default=None)
        retry = self._invoice.next_payment_attempt if self._invoice else None
        if self.lifecycle != Lifecycle.DUNNING or step is not final or retry is None:
            return None
        settled = datetime.fromtimestamp(retry, UTC) + RETRY_SETTLES
        return settled if settled > workflow.now() else None

    def _team_notice(self, step: Step) -> tuple[str, str]:
        invoice_id = self._subject
        attempts = self._invoice.attempt_count if self._invoice else 0
        return (
            f"{self.title} of invoice {invoice_id} reached its end",
            f"Automation {self._input.automation.name} reached step {step.key} for invoice "
            f"{invoice_id} (customer {self._input.customer_id}, {attempts} payment attempts) "
            "without a payment.",
        )


def _kind(step: Step) -> str:
    if step.send:
        return "send"
    return "webhook" if step.webhook_url else "action"


def _target(step: Step) -> str:
    return step.what


def _at(epoch: int | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)
