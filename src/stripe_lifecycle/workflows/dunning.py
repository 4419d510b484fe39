"""Invoice lifecycles: DunningWorkflow (`dunning-{invoice_id}`, a failed payment) and
PaymentActionWorkflow (`payment-action-{invoice_id}`, 3-D Secure confirmation needed).

Both run one automation for one invoice, step by step on durable timers, and end when
Stripe reports the invoice settled; they differ in their trigger and their words."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from stripe_lifecycle.domain.automations import Automation, Step
    from stripe_lifecycle.domain.events import InvoiceInfo
    from stripe_lifecycle.domain.links import PORTAL
    from stripe_lifecycle.domain.send_windows import SendWindow


@dataclass
class DunningInput:
    customer_id: str
    invoice: InvoiceInfo
    automation: Automation
    customer_email: str | None = None
    customer_name: str | None = None
    livemode: bool = False
    # The subscription's MRR, recorded as the revenue a recovery keeps.
    mrr_cents: int = 0
    # Where the customer's send window is measured: Stripe `timezone` metadata, country.
    customer_timezone: str | None = None
    customer_country: str | None = None


@dataclass
class InvoiceUpdate:
    """Signal from the customer workflow: what Stripe says about this invoice now."""

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
class DunningState:
    invoice_id: str
    automation: str
    outcome: str | None
    steps_done: list[StepRecord] = field(default_factory=list)
    next_step: str | None = None
    next_at: datetime | None = None


@dataclass
class DunningResult:
    outcome: str
    steps_done: int


@dataclass
class ConversionInput:
    stripe_event_id: str
    kind: str
    customer_id: str
    lifecycle: str
    workflow_id: str
    automation: str
    invoice_id: str | None
    subscription_id: str | None
    amount_cents: int
    mrr_delta_cents: int
    currency: str | None
    occurred_at: int


# Outcomes; "recovered" is the one that earns revenue.
RECOVERED = "recovered"
ENDING_EVENTS = {
    "invoice.paid": RECOVERED,
    "invoice.payment_succeeded": RECOVERED,
    "invoice.voided": "voided",
    "invoice.marked_uncollectible": "uncollectible",
    "customer.subscription.deleted": "subscription_deleted",
}

# The step's mail waited for the send window (or the frequency cap) and the lifecycle
# ended first.
NOT_SENT = "not sent: ended while waiting for its send window"

MAIL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=10)
)
DB_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))


class LifecycleHandlers:
    """What every lifecycle workflow shares: support can stop it, and it tells the
    customer workflow that started it how it ended."""

    lifecycle = ""
    _outcome: str | None

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

    async def _send_email(
        self,
        request: dict[str, Any],
        window: SendWindow | None,
        timezone: str | None,
        country: str | None,
    ) -> dict[str, Any] | None:
        """send_email, held to the customer's send window and past the marketing
        frequency cap; None when the lifecycle ended while the mail waited."""
        if window is not None:
            at = await workflow.execute_local_activity(
                "send_time",
                {"due": workflow.now(), "window": window, "timezone": timezone, "country": country},
                start_to_close_timeout=timedelta(seconds=10),
                result_type=str,
            )
            if not await self._hold_until(datetime.fromisoformat(at)):
                return None
        while True:
            result: dict[str, Any] = await workflow.execute_activity(
                "send_email",
                request,
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=MAIL_RETRY,
                result_type=dict,
            )
            retry_at = result.get("retry_at")
            if result.get("status") != "deferred" or not retry_at:
                return result
            # Over the cap on marketing mail: the same step asks again once it frees. A
            # time not ahead of this workflow's clock would only ask again at once.
            free = datetime.fromisoformat(str(retry_at))
            if free <= workflow.now():
                return result
            if not await self._hold_until(free):
                return None

    async def _notify_team(
        self, step_key: str, customer_id: str, automation: str, subject: str, text: str
    ) -> str:
        """The `notify_team` action: a notice to LIFECYCLE_TEAM_EMAIL, sent once; its status."""
        workflow_id = workflow.info().workflow_id
        result: dict[str, Any] = await workflow.execute_activity(
            "notify_team",
            {
                "key": f"{workflow_id}/{step_key}",
                "customer_id": customer_id,
                "workflow_id": workflow_id,
                "lifecycle": self.lifecycle,
                "automation": automation,
                "subject": subject,
                "text": text,
            },
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=MAIL_RETRY,
            result_type=dict,
        )
        return str(result.get("status"))

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
        if parent is None:
            return  # started on its own (tests, or by hand): nobody to tell
        try:
            await workflow.get_external_workflow_handle(parent.workflow_id).signal(
                "lifecycle_finished",
                {"workflow_id": workflow.info().workflow_id, "outcome": self._outcome},
            )
        except Exception:
            # The customer workflow is gone (terminated by hand): the outcome is still in
            # this workflow's result and history.
            workflow.logger.warning(
                "could not tell %s that this lifecycle ended", parent.workflow_id
            )


@workflow.defn(name="DunningWorkflow")
class DunningWorkflow(LifecycleHandlers):
    """Runs one dunning automation for one failed invoice, step by step on durable timers.

    PaymentActionWorkflow is the same sequence for an invoice awaiting the customer's
    3-D Secure confirmation; the handlers below are shared.

    Signals: `invoice_update(InvoiceUpdate)` — later failures refresh the invoice (attempt
    count, next retry) for the copy; paid, voided, uncollectible or subscription deleted
    end the sequence (paid records a `recovered` conversion).
    Updates: `cancel(CancelRequest) -> CancelResult` — support stops the sequence.
    Queries: `state() -> DunningState`.
    """

    lifecycle = "dunning"
    title = "Dunning"
    # The event that starts an instance; its repeats refresh the invoice (attempt count,
    # next retry) for the copy.
    trigger = "invoice.payment_failed"
    endings = ENDING_EVENTS

    @workflow.init
    def __init__(self, input: DunningInput) -> None:
        self._input = input
        self._invoice = input.invoice
        self._outcome: str | None = None
        self._ending: InvoiceUpdate | None = None
        self._done: list[StepRecord] = []
        self._next: tuple[Step, datetime] | None = None

    @workflow.run
    async def run(self, input: DunningInput) -> DunningResult:
        started = workflow.now()
        steps = sorted(input.automation.steps, key=lambda s: s.after_seconds or 0)
        for step in steps:
            due = started + timedelta(seconds=step.after_seconds or 0)
            self._next = (step, due)
            self._describe()
            wait = max(timedelta(0), due - workflow.now())
            try:
                await workflow.wait_condition(lambda: self._outcome is not None, timeout=wait)
            except TimeoutError:
                pass
            if self._outcome is not None:
                break
            await self._run_step(step)
        self._next = None
        if self._outcome is None:
            self._outcome = "sequence_finished"
        if self._outcome == RECOVERED and self._ending is not None:
            await self._record_recovery(self._ending)
        self._describe()
        await self._tell_customer_workflow()
        return DunningResult(outcome=self._outcome, steps_done=len(self._done))

    @workflow.signal
    def invoice_update(self, update: InvoiceUpdate) -> None:
        if self._outcome is not None:
            return
        if update.invoice is not None and update.event_type == self.trigger:
            self._invoice = update.invoice
        ending = self.endings.get(update.event_type)
        if ending is not None:
            self._outcome = ending
            self._ending = update

    @workflow.query
    def state(self) -> DunningState:
        return DunningState(
            invoice_id=self._input.invoice.id or "",
            automation=self._input.automation.name,
            outcome=self._outcome,
            steps_done=list(self._done),
            next_step=self._next[0].key if self._next else None,
            next_at=self._next[1] if self._next else None,
        )

    async def _run_step(self, step: Step) -> None:
        info = workflow.info()
        if step.send is not None:
            sent = await self._send_email(
                send_request(self._input, self._invoice, step, info.workflow_id, self.lifecycle),
                self._input.automation.send_window,
                self._input.customer_timezone,
                self._input.customer_country,
            )
            status = str(sent.get("status")) if sent is not None else NOT_SENT
            target = step.send
        elif step.action == "notify_team":
            status = await self._notify_team(
                step.key,
                self._input.customer_id,
                self._input.automation.name,
                f"{self.title} of invoice {self._invoice.id} reached its end",
                f"Automation {self._input.automation.name} finished its sequence for "
                f"invoice {self._invoice.id} (customer {self._input.customer_id}, "
                f"{self._invoice.attempt_count} payment attempts) without a payment.",
            )
            target = "notify_team"
        else:
            result = await workflow.execute_activity(
                "stripe_action",
                {
                    "action": step.action,
                    "invoice_id": self._invoice.id,
                    "subscription_id": self._invoice.subscription_id,
                    # Stripe answers a repeated request once: retries cannot act twice.
                    "idempotency_key": f"{info.workflow_id}/{step.key}",
                },
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=MAIL_RETRY,
                result_type=dict,
            )
            status = str(result.get("status"))
            if status != "done":
                status = f"{status}: {result.get('detail')}"
            target = step.action or ""
        kind = "send" if step.send else "action"
        self._done.append(StepRecord(step.key, kind, target, status, workflow.now()))

    async def _record_recovery(self, update: InvoiceUpdate) -> None:
        invoice = update.invoice or self._invoice
        await workflow.execute_activity(
            "record_conversion",
            ConversionInput(
                stripe_event_id=update.event_id,
                kind="recovered",
                customer_id=self._input.customer_id,
                lifecycle=self.lifecycle,
                workflow_id=workflow.info().workflow_id,
                automation=self._input.automation.name,
                invoice_id=invoice.id,
                subscription_id=invoice.subscription_id,
                amount_cents=invoice.amount_paid or invoice.amount_due,
                mrr_delta_cents=update.mrr_cents
                if update.mrr_cents is not None
                else self._input.mrr_cents,
                currency=invoice.currency,
                occurred_at=update.created,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=DB_RETRY,
        )

    def _describe(self) -> None:
        done = len(self._done)
        total = len(self._input.automation.steps)
        automation = self._input.automation.name
        head = f"**{self.title}** · automation `{automation}` · {done}/{total} steps done"
        if self._outcome is not None:
            workflow.set_current_details(f"{head}  \n**Ended:** {self._outcome}")
        elif self._next is not None:
            step, due = self._next
            what = step.send or step.action
            workflow.set_current_details(
                f"{head}  \n**Next:** {what} at {due.isoformat(timespec='minutes')}"
                f" · attempt {self._invoice.attempt_count}"
            )


def send_request(
    input: DunningInput, invoice: InvoiceInfo, step: Step, workflow_id: str, lifecycle: str
) -> dict[str, object]:
    """The send_email activity's input (a dict: workflows do not import the activities)."""
    # An invoice without a hosted page (not finalized yet, or sent by hand) still gets a
    # way to pay: the Customer Portal, made when the link is clicked.
    destinations = {"update_payment": invoice.hosted_invoice_url or PORTAL}
    return {
        "workflow_id": workflow_id,
        "step": step.key,
        "customer_id": input.customer_id,
        "lifecycle": lifecycle,
        "automation": input.automation.name,
        "template": step.send,
        "to": input.customer_email,
        "livemode": input.livemode,
        "context": {
            "customer": {"email": input.customer_email, "name": input.customer_name},
            "invoice": {
                "number": invoice.number,
                "amount_due": invoice.amount_due,
                "currency": invoice.currency or "usd",
                "hosted_invoice_url": invoice.hosted_invoice_url,
                "next_payment_attempt": invoice.next_payment_attempt,
                "attempt_count": invoice.attempt_count,
            },
        },
        "destinations": destinations,
    }


@workflow.defn(name="PaymentActionWorkflow")
class PaymentActionWorkflow(DunningWorkflow):
    """The customer's bank wants a 3-D Secure confirmation: ask, remind, until paid.

    Signals, updates and queries as DunningWorkflow's. A failure of the same invoice ends
    it: dunning takes over from there.
    """

    lifecycle = "payment_action"
    title = "Payment confirmation"
    trigger = "invoice.payment_action_required"
    endings = {**ENDING_EVENTS, "invoice.payment_failed": "payment_failed"}

    @workflow.run
    async def run(self, input: DunningInput) -> DunningResult:
        return await super().run(input)
