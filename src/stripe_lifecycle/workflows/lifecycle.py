"""Subscription and card lifecycles: one workflow type per lifecycle, one engine.

TrialWorkflow (`trial-{sub_id}`), WinbackWorkflow (`winback-{cus_id}-{sub_id}`),
ScheduledCancelWorkflow (`scheduled-cancel-{sub_id}`), RenewalWorkflow
(`renewal-{sub_id}-{period_end}`), CardExpiringWorkflow (`card-expiring-{pm}-{yyyymm}`)
and PlanChangeWorkflow (`plan-change-{sub_id}-{created}`) each run one automation for one
subject on durable timers. Steps count `after` the start or `before` the anchor date
(trial end, period end, card expiry), and a moved anchor re-times the steps not yet run.

The customer workflow decides what Stripe's events mean (see `lifecycle_rules`) and tells
an instance by signal: a new anchor, or the outcome it ends with. Conversions are
recorded by the customer workflow, which also sees those that come after an instance
ended.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from stripe_lifecycle.domain.automations import Automation, Step
    from stripe_lifecycle.domain.links import HOSTED_SURVEY, PORTAL
    from stripe_lifecycle.domain.template_context import with_customer_and_offer
    from stripe_lifecycle.workflows.dunning import (
        NOT_SENT,
        LifecycleHandlers,
        StepRecord,
    )

DAY = timedelta(days=1)


@dataclass
class LifecycleInput:
    customer_id: str
    automation: Automation
    # The subscription or card the instance is about.
    subject_id: str
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


@dataclass
class LifecycleUpdate:
    """Signal from the customer workflow: what a Stripe event means for this instance."""

    event_id: str
    created: int
    outcome: str | None = None
    anchor: int | None = None
    # Fresher template objects (an upcoming invoice's amount, a renamed plan).
    context: dict[str, Any] | None = None


@dataclass
class LifecycleState:
    lifecycle: str
    subject_id: str
    automation: str
    outcome: str | None
    anchor: datetime | None
    steps_done: list[StepRecord] = field(default_factory=list)
    next_step: str | None = None
    next_at: datetime | None = None


@dataclass
class LifecycleResult:
    outcome: str
    steps_done: int


class SequenceWorkflow(LifecycleHandlers):
    """The engine; subclasses name the lifecycle and how long to wait for its outcome.

    Signals: `lifecycle_update(LifecycleUpdate)`. Updates: `cancel(CancelRequest)`.
    Queries: `state() -> LifecycleState`.
    """

    lifecycle = ""
    title = ""
    # Links the lifecycle's templates use, by name (see mail/templates.py).
    links: tuple[str, ...] = ()
    # After the last step (and the anchor), how long the instance still waits for the
    # outcome it exists for (a payment at trial end, a resubscription after the offers).
    linger = timedelta(0)
    finished = "sequence_finished"

    @workflow.init
    def __init__(self, input: LifecycleInput) -> None:
        self._input = input
        self._anchor = input.anchor
        self._context = dict(input.context)
        self._outcome: str | None = None
        self._changed = False
        self._done: list[StepRecord] = []
        self._handled: set[int] = set()
        self._next: tuple[Step, datetime] | None = None
        self._started = workflow.now()

    async def _run(self, input: LifecycleInput) -> LifecycleResult:
        workflow.logger.info(
            "%s of %s runs %s", self.lifecycle, input.subject_id, input.automation.name
        )
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
        self._describe()
        await self._tell_customer_workflow()
        return LifecycleResult(outcome=self._outcome, steps_done=len(self._done))

    @workflow.signal
    def lifecycle_update(self, update: LifecycleUpdate) -> None:
        if self._outcome is not None:
            return
        if update.context:
            self._context.update(update.context)
        if update.anchor is not None and update.anchor != self._anchor:
            self._anchor = update.anchor
            self._changed = True
        if update.outcome is not None:
            self._outcome = update.outcome

    @workflow.query
    def state(self) -> LifecycleState:
        return LifecycleState(
            lifecycle=self.lifecycle,
            subject_id=self._input.subject_id,
            automation=self._input.automation.name,
            outcome=self._outcome,
            anchor=_at(self._anchor),
            steps_done=list(self._done),
            next_step=self._next[0].key if self._next else None,
            next_at=self._next[1] if self._next else None,
        )

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
            target = step.send or step.action or ""
            kind = "send" if step.send else "action"
            self._done.append(StepRecord(step.key, kind, target, why, now))

    def _upcoming(self) -> tuple[Step, datetime] | None:
        pending = self._pending()
        return (pending[0], self._due(pending[0])) if pending else None

    def _deadline(self) -> datetime:
        last = max((self._due(s) for s in self._input.automation.steps), default=self._started)
        return max(last, _at(self._anchor) or last) + self.linger

    async def _run_step(self, step: Step) -> None:
        self._handled.add(step.index)
        info = workflow.info()
        automation = self._input.automation
        if step.send is not None:
            sent = await self._send_email(
                {
                    "workflow_id": info.workflow_id,
                    "step": step.key,
                    "customer_id": self._input.customer_id,
                    "lifecycle": self.lifecycle,
                    "automation": automation.name,
                    "template": step.send,
                    "to": self._input.customer_email,
                    "livemode": self._input.livemode,
                    "context": self._template_context(),
                    "destinations": self._destinations(),
                },
                automation.send_window,
                self._input.customer_timezone,
                self._input.customer_country,
            )
            status = str(sent.get("status")) if sent is not None else NOT_SENT
            record = StepRecord(step.key, "send", step.send, status, workflow.now())
        else:
            status = await self._notify_team(
                step.key,
                self._input.customer_id,
                automation.name,
                f"{self.title}: customer {self._input.customer_id}",
                f"Automation {automation.name} ({self.lifecycle}) reached step {step.key} "
                f"for customer {self._input.customer_id}, {self._input.subject_id}.",
            )
            record = StepRecord(step.key, "action", "notify_team", status, workflow.now())
        self._done.append(record)

    def _template_context(self) -> dict[str, Any]:
        return with_customer_and_offer(
            self._context,
            self._input.customer_email,
            self._input.customer_name,
            self._input.automation.offer,
        )

    def _destinations(self) -> dict[str, str]:
        # Markers the tracking endpoint resolves at click time: a fresh Customer Portal
        # session (they expire within minutes) and the hosted cancellation survey.
        offer = self._input.automation.offer
        targets = {
            "update_payment": PORTAL,
            "survey": HOSTED_SURVEY,
            "offer": offer.url if offer is not None and offer.url else PORTAL,
        }
        return {name: targets[name] for name in self.links}

    def _describe(self) -> None:
        automation = self._input.automation
        head = (
            f"**{self.title}** of {self._input.subject_id} · automation `{automation.name}`"
            f" · {len(self._done)}/{len(automation.steps)} steps done"
        )
        anchor = _at(self._anchor)
        if anchor is not None:
            head += f" · date {anchor.isoformat(timespec='minutes')}"
        if self._outcome is not None:
            workflow.set_current_details(f"{head}  \n**Ended:** {self._outcome}")
        elif self._next is not None:
            step, due = self._next
            what = step.send or step.action
            workflow.set_current_details(
                f"{head}  \n**Next:** {what} at {due.isoformat(timespec='minutes')}"
            )
        else:
            workflow.set_current_details(
                f"{head}  \n**Waiting** for the outcome until "
                f"{self._deadline().isoformat(timespec='minutes')}"
            )


def _at(epoch: int | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


@workflow.defn(name="TrialWorkflow")
class TrialWorkflow(SequenceWorkflow):
    """A trial: welcome, reminders before `trial_end`; ends converted (first paid
    invoice), expired, payment failed (dunning takes over) or subscription deleted."""

    lifecycle = "trial"
    title = "Trial"
    links = ("update_payment",)
    # Stripe charges about an hour after the trial ends and retries a failed first charge.
    linger = 2 * DAY

    @workflow.run
    async def run(self, input: LifecycleInput) -> LifecycleResult:
        return await self._run(input)


@workflow.defn(name="WinbackWorkflow")
class WinbackWorkflow(SequenceWorkflow):
    """After a cancellation: confirmation with a survey, then offers; ends reactivated
    (a new active subscription) or after its last step and a week's wait."""

    lifecycle = "winback"
    title = "Win-back"
    links = ("survey", "offer")
    linger = 7 * DAY

    @workflow.run
    async def run(self, input: LifecycleInput) -> LifecycleResult:
        return await self._run(input)


@workflow.defn(name="ScheduledCancelWorkflow")
class ScheduledCancelWorkflow(SequenceWorkflow):
    """A subscription set to cancel: save offers before it ends; ends saved (un-cancelled)
    or cancelled at period end (win-back takes over)."""

    lifecycle = "scheduled_cancel"
    title = "Scheduled cancellation"
    links = ("offer", "update_payment")
    linger = DAY

    @workflow.run
    async def run(self, input: LifecycleInput) -> LifecycleResult:
        return await self._run(input)


@workflow.defn(name="RenewalWorkflow")
class RenewalWorkflow(SequenceWorkflow):
    """Reminders before a subscription renews; ends when the renewal is paid, fails
    (dunning takes over), is cancelled or the subscription is deleted."""

    lifecycle = "renewal"
    title = "Renewal"
    links = ("update_payment",)
    linger = 2 * DAY

    @workflow.run
    async def run(self, input: LifecycleInput) -> LifecycleResult:
        return await self._run(input)


@workflow.defn(name="CardExpiringWorkflow")
class CardExpiringWorkflow(SequenceWorkflow):
    """The card being billed expires: reminders before the end of its expiry month; ends
    when it is replaced or the network updates it, or with the card expired."""

    lifecycle = "card_expiring"
    title = "Card expiring"
    links = ("update_payment",)
    finished = "card_expired"

    @workflow.run
    async def run(self, input: LifecycleInput) -> LifecycleResult:
        return await self._run(input)


@workflow.defn(name="PlanChangeWorkflow")
class PlanChangeWorkflow(SequenceWorkflow):
    """A downgrade: a check-in asking what made the customer change."""

    lifecycle = "plan_change"
    title = "Plan change"
    links = ("survey",)

    @workflow.run
    async def run(self, input: LifecycleInput) -> LifecycleResult:
        return await self._run(input)


SEQUENCE_WORKFLOWS: dict[str, type[SequenceWorkflow]] = {
    w.lifecycle: w
    for w in (
        TrialWorkflow,
        WinbackWorkflow,
        ScheduledCancelWorkflow,
        RenewalWorkflow,
        CardExpiringWorkflow,
        PlanChangeWorkflow,
    )
}
