"""Every lifecycle workflow: one type per lifecycle, all on the one engine (`engine.py`).

DunningWorkflow (`dunning-{invoice_id}`), PaymentActionWorkflow
(`payment-action-{invoice_id}`), TrialWorkflow (`trial-{sub_id}`), WinbackWorkflow
(`winback-{cus_id}-{sub_id}`), ScheduledCancelWorkflow (`scheduled-cancel-{sub_id}`),
RenewalWorkflow (`renewal-{sub_id}-{period_end}`), CardExpiringWorkflow
(`card-expiring-{pm}-{yyyymm}`), PlanChangeWorkflow (`plan-change-{sub_id}-{created}`),
UpgradeWorkflow (`upgrade-{cus_id}-{automation}-{n}`), InvoiceDueWorkflow
(`invoice-due-{in_id}`), InvoiceOverdueWorkflow (`invoice-overdue-{in_id}`),
InvoiceFinalizedWorkflow (`invoice-finalized-{in_id}`), QuoteExpiringWorkflow
(`quote-expiring-{qt_id}`) and EventSequenceWorkflow (`event-{automation}-{evt_id}`).

Each takes a `LifecycleInput` and returns a `LifecycleResult`. Signals:
`lifecycle_update(LifecycleUpdate)` (and, for the invoice lifecycles,
`invoice_update(InvoiceUpdate)`); update: `cancel(CancelRequest) -> CancelResult`;
query: `state() -> LifecycleState`.
"""

from collections.abc import Mapping
from datetime import timedelta
from types import MappingProxyType

from temporalio import workflow

from stripe_lifecycle.domain.lifecycles import Lifecycle
from stripe_lifecycle.workflows.engine import (
    InvoiceLifecycleWorkflow,
    LifecycleInput,
    LifecycleResult,
    LifecycleWorkflow,
)

DAY = timedelta(days=1)


@workflow.defn(name="DunningWorkflow")
class DunningWorkflow(InvoiceLifecycleWorkflow):
    """A failed payment: the failed-payment email, reminders along Stripe's retries, a
    final notice and action; ends when the invoice is paid (recovered), voided, marked
    uncollectible, its subscription deleted, or after the last step."""

    lifecycle = Lifecycle.DUNNING
    title = "Dunning"

    @workflow.run
    async def run(self, input: LifecycleInput) -> LifecycleResult:
        return await super().run(input)


@workflow.defn(name="PaymentActionWorkflow")
class PaymentActionWorkflow(InvoiceLifecycleWorkflow):
    """The customer's bank wants a 3-D Secure confirmation: ask, remind, until paid. A
    failure of the same invoice ends it: dunning takes over from there."""

    lifecycle = Lifecycle.PAYMENT_ACTION
    title = "Payment confirmation"

    @workflow.run
    async def run(self, input: LifecycleInput) -> LifecycleResult:
        return await super().run(input)


@workflow.defn(name="TrialWorkflow")
class TrialWorkflow(LifecycleWorkflow):
    """A trial: welcome, reminders before `trial_end`; ends converted (first paid
    invoice), expired, payment failed (dunning takes over) or subscription deleted."""

    lifecycle = Lifecycle.TRIAL
    title = "Trial"
    # Stripe charges about an hour after the trial ends and retries a failed first charge.
    linger = 2 * DAY

    @workflow.run
    async def run(self, input: LifecycleInput) -> LifecycleResult:
        return await super().run(input)


@workflow.defn(name="WinbackWorkflow")
class WinbackWorkflow(LifecycleWorkflow):
    """After a cancellation: confirmation with a survey, then offers; ends reactivated
    (a new active subscription) or after its last step and a week's wait."""

    lifecycle = Lifecycle.WINBACK
    title = "Win-back"
    linger = 7 * DAY

    @workflow.run
    async def run(self, input: LifecycleInput) -> LifecycleResult:
        return await super().run(input)


@workflow.defn(name="ScheduledCancelWorkflow")
class ScheduledCancelWorkflow(LifecycleWorkflow):
    """A subscription set to cancel: save offers before it ends; ends saved (un-cancelled)
    or cancelled at period end (win-back takes over)."""

    lifecycle = Lifecycle.SCHEDULED_CANCEL
    title = "Scheduled cancellation"
    linger = DAY

    @workflow.run
    async def run(self, input: LifecycleInput) -> LifecycleResult:
        return await super().run(input)


@workflow.defn(name="RenewalWorkflow")
class RenewalWorkflow(LifecycleWorkflow):
    """Reminders before a subscription renews; ends when the renewal is paid, fails
    (dunning takes over), is cancelled or the subscription is deleted."""

    lifecycle = Lifecycle.RENEWAL
    title = "Renewal"
    linger = 2 * DAY

    @workflow.run
    async def run(self, input: LifecycleInput) -> LifecycleResult:
        return await super().run(input)


@workflow.defn(name="CardExpiringWorkflow")
class CardExpiringWorkflow(LifecycleWorkflow):
    """The card being billed expires: reminders before the end of its expiry month; ends
    when it is replaced or the network updates it, or with the card expired."""

    lifecycle = Lifecycle.CARD_EXPIRING
    title = "Card expiring"
    finished = "card_expired"

    @workflow.run
    async def run(self, input: LifecycleInput) -> LifecycleResult:
        return await super().run(input)


@workflow.defn(name="PlanChangeWorkflow")
class PlanChangeWorkflow(LifecycleWorkflow):
    """A downgrade: a check-in asking what made the customer change."""

    lifecycle = Lifecycle.PLAN_CHANGE
    title = "Plan change"

    @workflow.run
    async def run(self, input: LifecycleInput) -> LifecycleResult:
        return await super().run(input)


@workflow.defn(name="UpgradeWorkflow")
class UpgradeWorkflow(LifecycleWorkflow):
    """An upgrade campaign, started when the customer entered a segment: upgrade offers;
    ends upgraded (an expansion, credited to its emails), when the customer leaves the
    segment (unless `exit_on_leave: false`), or after its last step."""

    lifecycle = Lifecycle.UPGRADE
    title = "Upgrade campaign"

    @workflow.run
    async def run(self, input: LifecycleInput) -> LifecycleResult:
        return await super().run(input)


@workflow.defn(name="InvoiceDueWorkflow")
class InvoiceDueWorkflow(InvoiceLifecycleWorkflow):
    """An invoice the customer pays by hand (`send_invoice`), open with a due date:
    reminders before it is due (re-timed when the due date moves); ends paid, voided,
    uncollectible, or overdue (`invoice_overdue` takes over)."""

    lifecycle = Lifecycle.INVOICE_DUE
    title = "Invoice due"

    @workflow.run
    async def run(self, input: LifecycleInput) -> LifecycleResult:
        return await super().run(input)


@workflow.defn(name="InvoiceOverdueWorkflow")
class InvoiceOverdueWorkflow(InvoiceLifecycleWorkflow):
    """An invoice paid by hand whose due date passed unpaid: reminders and actions after
    it; ends paid (recovered), voided or uncollectible."""

    lifecycle = Lifecycle.INVOICE_OVERDUE
    title = "Invoice overdue"

    @workflow.run
    async def run(self, input: LifecycleInput) -> LifecycleResult:
        return await super().run(input)


@workflow.defn(name="InvoiceFinalizedWorkflow")
class InvoiceFinalizedWorkflow(InvoiceLifecycleWorkflow):
    """Any finalized invoice (filtered by amount, currency, metadata, product, collection
    method): its steps; ends paid, voided or uncollectible."""

    lifecycle = Lifecycle.INVOICE_FINALIZED
    title = "Invoice finalized"

    @workflow.run
    async def run(self, input: LifecycleInput) -> LifecycleResult:
        return await super().run(input)


@workflow.defn(name="QuoteExpiringWorkflow")
class QuoteExpiringWorkflow(LifecycleWorkflow):
    """An open quote with an expiry: reminders before it expires (re-timed when it
    moves); ends accepted (a conversion with its amount), canceled, or at its expiry."""

    lifecycle = Lifecycle.QUOTE_EXPIRING
    title = "Quote expiring"

    @workflow.run
    async def run(self, input: LifecycleInput) -> LifecycleResult:
        return await super().run(input)


@workflow.defn(name="EventSequenceWorkflow")
class EventSequenceWorkflow(LifecycleWorkflow):
    """A one-off sequence for one Stripe event of the type its automation is triggered
    by (a dispute, a completed checkout, a new customer...): its steps, then done."""

    lifecycle = Lifecycle.EVENT
    title = "Event sequence"

    @workflow.run
    async def run(self, input: LifecycleInput) -> LifecycleResult:
        return await super().run(input)


# Read-only: every run of every workflow shares this module (`worker.sandbox_runner`).
LIFECYCLE_WORKFLOWS: Mapping[Lifecycle, type[LifecycleWorkflow]] = MappingProxyType(
    {
        w.lifecycle: w
        for w in (
            DunningWorkflow,
            PaymentActionWorkflow,
            TrialWorkflow,
            WinbackWorkflow,
            ScheduledCancelWorkflow,
            RenewalWorkflow,
            CardExpiringWorkflow,
            PlanChangeWorkflow,
            UpgradeWorkflow,
            InvoiceDueWorkflow,
            InvoiceOverdueWorkflow,
            InvoiceFinalizedWorkflow,
            QuoteExpiringWorkflow,
            EventSequenceWorkflow,
        )
    }
)
