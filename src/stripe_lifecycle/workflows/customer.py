"""The customer entity workflow: one long-lived `customer-{cus_id}` per Stripe customer."""

import dataclasses
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import (
    RetryPolicy,
    SearchAttributePair,
    SearchAttributeUpdate,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from stripe_lifecycle.domain import contract, rules
    from stripe_lifecycle.domain.automations import Automation
    from stripe_lifecycle.domain.events import BillingEvent, BillingEvents, InvoiceInfo
    from stripe_lifecycle.domain.ledger import (
        BillingSnapshot,
        CustomerLedger,
        CustomerState,
        LifecycleRef,
        SubscriptionState,
        new_state,
    )
    from stripe_lifecycle.domain.template_context import subscription_context
    from stripe_lifecycle.workflows.dunning import (
        ENDING_EVENTS,
        RECOVERED,
        ConversionInput,
        DunningInput,
        DunningWorkflow,
        InvoiceUpdate,
        PaymentActionWorkflow,
    )
    from stripe_lifecycle.workflows.lifecycle import (
        SEQUENCE_WORKFLOWS,
        LifecycleInput,
        LifecycleUpdate,
    )


@dataclass
class CustomerWorkflowInput:
    customer_id: str
    # Search attributes are stored unencrypted; operators may keep emails out of them.
    index_email: bool = True
    state: CustomerState | None = None
    # Continue as new past this many history events even if the SDK has not suggested it
    # yet: a short history keeps replays on a cold worker cheap. None: only when suggested.
    max_history_events: int | None = 10_000
    pending: list[BillingEvent] = field(default_factory=list)


@dataclass
class LifecycleFinished:
    """Signal from a lifecycle child when it ends."""

    workflow_id: str
    outcome: str


@dataclass(frozen=True)
class InvoiceLifecycle:
    lifecycle: str
    prefix: str
    trigger: str
    workflow: type[DunningWorkflow]
    subscriptions_only: bool

    def workflow_id(self, invoice_id: str) -> str:
        return f"{self.prefix}-{invoice_id}"


INVOICE_LIFECYCLES = (
    InvoiceLifecycle("dunning", "dunning", "invoice.payment_failed", DunningWorkflow, True),
    InvoiceLifecycle(
        "payment_action",
        "payment-action",
        "invoice.payment_action_required",
        PaymentActionWorkflow,
        False,
    ),
)

# Finished lifecycles kept in the entity's state (running ones are always kept).
FINISHED_LIFECYCLES_KEPT = 50

# Runs recorded before the subscription and card lifecycles existed replay without them;
# runs started since (continue-as-new included) take the new branch.
SEQUENCES_PATCH = "subscription-and-card-lifecycles"

# The DB may be down for a while; keep trying rather than drop a snapshot.
PERSIST_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
)


@workflow.defn(name="CustomerWorkflow")
class CustomerWorkflow:
    """Holds one customer's billing snapshot, fed by Stripe events.

    Signals: `billing_events(BillingEvents)` — normalised Stripe events of this customer;
    duplicates (by event id) are ignored, and an event older than what is known about the
    same object does not overwrite it.
    `lifecycle_finished(LifecycleFinished)` — a lifecycle child ended.
    Queries: `state() -> BillingSnapshot`, `lifecycles() -> list[LifecycleRef]`.
    Starts one DunningWorkflow per failed subscription invoice (`dunning-{invoice_id}`)
    and one PaymentActionWorkflow per invoice awaiting 3-D Secure
    (`payment-action-{invoice_id}`), and forwards each invoice's later events to them.
    Never completes on its own: a late event must find this run and its state, not start
    an empty one. Continues as new when the SDK suggests it, carrying the state.
    """

    @workflow.init
    def __init__(self, input: CustomerWorkflowInput) -> None:
        self._input = input
        self._ledger = CustomerLedger(input.state or new_state(input.customer_id))
        self._pending: list[BillingEvent] = list(input.pending)
        self._sequences = False
        # Search attributes survive continue-as-new; start from what the run already has.
        current = workflow.info().typed_search_attributes
        self._indexed: dict[str, Any] = {
            key.name: current.get(key)
            for key in contract.SEARCH_ATTRIBUTES
            if current.get(key) is not None
        }

    @workflow.run
    async def run(self, input: CustomerWorkflowInput) -> None:
        # Decided once, in the run's first workflow task: a patch asked for later, after a
        # local activity, can land in a different task on replay than it did live.
        self._sequences = workflow.patched(SEQUENCES_PATCH)
        self._set_details()
        while True:
            await workflow.wait_condition(lambda: bool(self._pending) or self._history_full())
            if self._pending:
                await self._apply_pending()
            if self._history_full():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    CustomerWorkflowInput(
                        customer_id=input.customer_id,
                        index_email=input.index_email,
                        max_history_events=input.max_history_events,
                        state=self._ledger.export(),
                        pending=self._pending,
                    )
                )

    def _history_full(self) -> bool:
        info = workflow.info()
        limit = self._input.max_history_events
        return info.is_continue_as_new_suggested() or (
            limit is not None and info.get_current_history_length() >= limit
        )

    @workflow.signal(name=contract.BILLING_EVENTS_SIGNAL)
    def billing_events(self, batch: BillingEvents) -> None:
        self._pending.extend(batch.events)

    @workflow.signal
    def lifecycle_finished(self, finished: LifecycleFinished) -> None:
        for ref in self._ledger.state.lifecycles:
            # A scheduled cancellation's id comes back: only the running one has ended.
            if ref.workflow_id == finished.workflow_id and ref.status == "running":
                ref.status = finished.outcome
        running = [r for r in self._ledger.state.lifecycles if r.status == "running"]
        ended = [r for r in self._ledger.state.lifecycles if r.status != "running"]
        self._ledger.state.lifecycles = ended[-FINISHED_LIFECYCLES_KEPT:] + running

    @workflow.query
    def state(self) -> BillingSnapshot:
        """The snapshot with every lifecycle instance it started, running and ended."""
        return dataclasses.replace(
            self._ledger.snapshot, lifecycles=list(self._ledger.state.lifecycles)
        )

    @workflow.query
    def lifecycles(self) -> list[LifecycleRef]:
        return list(self._ledger.state.lifecycles)

    async def _apply_pending(self) -> None:
        # Apply in Stripe's order; sort is stable so same-second events keep arrival order.
        batch = sorted(self._pending, key=lambda e: e.created)
        self._pending = []
        # Each applied event with its subscription as it was before: lifecycles start on
        # changes (a cancellation scheduled, a plan made cheaper), not on states.
        applied: list[tuple[BillingEvent, SubscriptionState | None]] = []
        for event in batch:
            before = self._ledger.subscription(rules.subscription_of(event))
            if self._ledger.apply(event):
                applied.append((event, before))
        if not applied:
            return
        self._index()
        self._set_details()
        # A local activity: a short idempotent DB write needs no task queue round trip,
        # which would cost the server three history events and a dispatch per batch.
        await workflow.execute_local_activity(
            "persist_snapshot",
            self._ledger.snapshot,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=PERSIST_RETRY,
        )
        paid_now = {
            e.invoice.id
            for e in batch
            if e.invoice is not None and ENDING_EVENTS.get(e.type) == RECOVERED
        }
        for event, before in applied:
            await self._route(event, paid_now)
            if self._sequences:
                for decision in rules.decide(event, before, self._ledger):
                    await self._carry_out(decision, event)
        self._set_details()

    async def _route(self, event: BillingEvent, paid_now: set[str | None]) -> None:
        """Start or feed the invoice lifecycles (dunning, payment action) this event concerns."""
        invoice = event.invoice
        running = {r.workflow_id: r for r in self._ledger.state.lifecycles if r.status == "running"}
        if invoice is not None and invoice.id is not None:
            for kind in INVOICE_LIFECYCLES:
                workflow_id = kind.workflow_id(invoice.id)
                if workflow_id in running:
                    await self._update_lifecycle(workflow_id, event)
                elif event.type == kind.trigger and self._should_start(kind, invoice, paid_now):
                    await self._start_invoice_lifecycle(kind, event, workflow_id)
            return
        if event.type == "customer.subscription.deleted" and event.subscription is not None:
            for ref in running.values():
                if ref.invoice_id is not None and ref.subscription_id == event.subscription.id:
                    await self._update_lifecycle(ref.workflow_id, event)

    def _should_start(
        self, kind: InvoiceLifecycle, invoice: InvoiceInfo, paid_now: set[str | None]
    ) -> bool:
        # Dunning is for subscription invoices; and a payment Stripe already reports as
        # made (events arriving out of order) needs neither lifecycle.
        if kind.subscriptions_only and not invoice.subscription_id:
            return False
        return invoice.id not in paid_now and not self._ledger.is_paid(invoice.id or "")

    async def _update_lifecycle(self, workflow_id: str, event: BillingEvent) -> None:
        sub_id = event.invoice.subscription_id if event.invoice else None
        sub = self._ledger.snapshot.subscriptions.get(sub_id or "")
        await workflow.get_external_workflow_handle(workflow_id).signal(
            DunningWorkflow.invoice_update,
            InvoiceUpdate(
                event_id=event.event_id,
                event_type=event.type,
                created=event.created,
                invoice=event.invoice,
                mrr_cents=sub.mrr_cents if sub else None,
            ),
        )

    async def _start_invoice_lifecycle(
        self, kind: InvoiceLifecycle, event: BillingEvent, workflow_id: str
    ) -> None:
        invoice = event.invoice
        assert invoice is not None
        snap = self._ledger.snapshot
        sub = snap.subscriptions.get(invoice.subscription_id or "")
        automation = await self._choose_automation(
            kind.lifecycle,
            workflow_id,
            event,
            subscription_interval=sub.interval if sub else None,
            invoice_amount=invoice.amount_due,
            currency=invoice.currency,
            product_ids=invoice.product_ids,
            price_ids=invoice.price_ids,
            plan=snap.plan,
            invoice_metadata=invoice.metadata,
        )
        if automation is None:
            return
        await self._start_child(
            kind.workflow.run,
            DunningInput(
                customer_id=snap.customer_id,
                invoice=invoice,
                automation=automation,
                customer_email=snap.email,
                customer_name=snap.name,
                livemode=event.livemode,
                mrr_cents=sub.mrr_cents if sub else 0,
                customer_timezone=self._ledger.timezone,
                customer_country=snap.country,
            ),
            LifecycleRef(
                workflow_id=workflow_id,
                lifecycle=kind.lifecycle,
                automation=automation.name,
                invoice_id=invoice.id,
                subscription_id=invoice.subscription_id,
            ),
            event,
            # One dunning per invoice ever: a later failure of an invoice whose dunning
            # support stopped must not start it again.
            reusable=False,
            summary=f"{kind.workflow.title} of invoice {invoice.id} ({automation.name})",
        )

    async def _carry_out(self, decision: rules.Decision, event: BillingEvent) -> None:
        if isinstance(decision, rules.Start):
            await self._start_sequence(decision, event)
        elif isinstance(decision, rules.Convert):
            await self._record_conversion(decision, event)
        else:
            ref = self._running_ref(decision.workflow_id)
            if ref is None:
                return
            update = LifecycleUpdate(event_id=event.event_id, created=event.created)
            if isinstance(decision, rules.Retime):
                ref.anchor = update.anchor = decision.anchor
                update.context = subscription_context(self._ledger, ref.subscription_id)
            else:
                update.outcome = decision.outcome
                # Ended now, not when the child's report arrives: an event right behind
                # this one (a cancellation scheduled again) must find it ended.
                ref.status = decision.outcome
            await workflow.get_external_workflow_handle(decision.workflow_id).signal(
                "lifecycle_update", update
            )

    def _running_ref(self, workflow_id: str) -> LifecycleRef | None:
        for ref in self._ledger.state.lifecycles:
            if ref.workflow_id == workflow_id and ref.status == "running":
                return ref
        return None

    async def _start_sequence(self, start: rules.Start, event: BillingEvent) -> None:
        if self._running_ref(start.workflow_id) is not None:
            return
        if not start.reusable:
            self._ledger.decide_start(start.workflow_id)
        snap = self._ledger.snapshot
        sub = snap.subscriptions.get(start.subscription_id or "")
        automation = await self._choose_automation(
            start.lifecycle,
            start.workflow_id,
            event,
            subscription_interval=sub.interval if sub else None,
            invoice_amount=sub.amount_cents if sub else None,
            currency=sub.currency if sub else snap.currency,
            product_ids=[sub.product_id] if sub and sub.product_id else [],
            price_ids=[sub.price_id] if sub and sub.price_id else [],
            plan=sub.plan if sub else snap.plan,
            cancellation_reason=sub.cancellation_reason if sub else None,
            invoice_metadata=sub.metadata if sub else {},
        )
        if automation is None:
            return
        kind = SEQUENCE_WORKFLOWS[start.lifecycle]
        await self._start_child(
            kind.run,  # type: ignore[attr-defined]
            LifecycleInput(
                customer_id=snap.customer_id,
                automation=automation,
                subject_id=start.subject_id,
                subscription_id=start.subscription_id,
                anchor=start.anchor,
                customer_email=snap.email,
                customer_name=snap.name,
                livemode=event.livemode,
                context=subscription_context(self._ledger, start.subscription_id),
                customer_timezone=self._ledger.timezone,
                customer_country=snap.country,
            ),
            LifecycleRef(
                workflow_id=start.workflow_id,
                lifecycle=start.lifecycle,
                automation=automation.name,
                subscription_id=start.subscription_id,
                subject_id=start.subject_id,
                anchor=start.anchor,
            ),
            event,
            # Ids name one instance (a trial, a renewal period); only a cancellation
            # that was undone and scheduled again reuses its id.
            reusable=start.reusable,
            summary=f"{kind.title} of {start.subject_id} ({automation.name})",
        )

    async def _start_child(
        self,
        run: Any,
        input: object,
        ref: LifecycleRef,
        event: BillingEvent,
        *,
        reusable: bool,
        summary: str,
    ) -> None:
        """Start a lifecycle child and remember it; an id already taken starts nothing."""
        try:
            await workflow.start_child_workflow(
                run,
                input,
                id=ref.workflow_id,
                # Children outlive this run's continue-as-new; each reports back by signal.
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE
                if reusable
                else WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=self._child_attributes(ref.lifecycle, ref.automation, event),
                static_summary=summary,
            )
        except WorkflowAlreadyStartedError:
            return
        self._ledger.state.lifecycles.append(ref)

    async def _choose_automation(
        self, lifecycle: str, workflow_id: str, event: BillingEvent, **trigger: Any
    ) -> Automation | None:
        """The automation this trigger runs (an activity: the definitions are the worker's)."""
        automation: Automation | None = await workflow.execute_activity(
            "choose_automation",
            {
                "lifecycle": lifecycle,
                "livemode": event.livemode,
                "customer_metadata": self._ledger.snapshot.metadata,
                **trigger,
            },
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=PERSIST_RETRY,
            result_type=Automation | None,  # type: ignore[arg-type]
        )
        if automation is None:
            workflow.logger.info("no enabled %s automation matches %s", lifecycle, workflow_id)
        return automation

    async def _record_conversion(self, convert: rules.Convert, event: BillingEvent) -> None:
        ref = None
        for candidate in self._ledger.state.lifecycles:
            if candidate.workflow_id == convert.workflow_id:
                ref = candidate
        if ref is not None:
            ref.converted = True
        await workflow.execute_activity(
            "record_conversion",
            ConversionInput(
                stripe_event_id=event.event_id,
                kind=convert.kind,
                customer_id=self._ledger.snapshot.customer_id,
                lifecycle=convert.lifecycle,
                workflow_id=convert.workflow_id or workflow.info().workflow_id,
                automation=ref.automation if ref is not None else "",
                invoice_id=convert.invoice_id,
                subscription_id=convert.subscription_id,
                amount_cents=convert.amount_cents,
                mrr_delta_cents=convert.mrr_delta_cents,
                currency=convert.currency,
                occurred_at=event.created,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=PERSIST_RETRY,
        )

    def _child_attributes(
        self, lifecycle: str, automation: str, event: BillingEvent
    ) -> TypedSearchAttributes:
        snap = self._ledger.snapshot
        attributes: list[SearchAttributePair[Any]] = [
            SearchAttributePair(contract.CUSTOMER_ID, snap.customer_id),
            SearchAttributePair(contract.LIFECYCLE, lifecycle),
            SearchAttributePair(contract.AUTOMATION, automation),
            SearchAttributePair(contract.LIVEMODE, event.livemode),
        ]
        if self._input.index_email and snap.email:
            attributes.append(SearchAttributePair(contract.CUSTOMER_EMAIL, snap.email))
        return TypedSearchAttributes(attributes)

    def _index(self) -> None:
        snap = self._ledger.snapshot
        wanted: dict[str, Any] = {
            contract.CUSTOMER_ID.name: snap.customer_id,
            contract.CUSTOMER_EMAIL.name: snap.email if self._input.index_email else None,
            contract.BILLING_STATUS.name: snap.status,
            contract.PLAN.name: snap.plan,
            contract.MRR_CENTS.name: snap.mrr_cents,
            contract.LIVEMODE.name: snap.livemode,
        }
        updates: list[SearchAttributeUpdate[Any]] = []
        keys = {key.name: key for key in contract.SEARCH_ATTRIBUTES}
        for name, value in wanted.items():
            if self._indexed.get(name, _UNSET) == value:
                continue
            key = keys[name]
            updates.append(key.value_unset() if value is None else key.value_set(value))
            self._indexed[name] = value
        # Only changes are upserted: each upsert is an event in the workflow's history.
        if updates:
            workflow.upsert_search_attributes(updates)

    def _set_details(self) -> None:
        snap = self._ledger.snapshot
        if snap.events_applied == 0:
            workflow.set_current_details("Waiting for the first Stripe event.")
            return
        money = f"{snap.mrr_cents / 100:.2f} {(snap.currency or '').upper()}".strip()
        subs = ", ".join(
            f"{s.id} {s.status} ({s.plan or 'no plan'})" for s in snap.subscriptions.values()
        )
        running = [r.workflow_id for r in self._ledger.state.lifecycles if r.status == "running"]
        workflow.set_current_details(
            f"**Status:** {snap.status} · **Plan:** {snap.plan or '—'} · **MRR:** {money}  \n"
            f"**Subscriptions:** {subs or 'none'}  \n"
            f"**Last event:** {snap.last_event_type} · {snap.events_applied} events applied"
            + (" · customer deleted in Stripe" if snap.deleted else "")
            + (f"  \n**Running lifecycles:** {', '.join(running)}" if running else "")
        )


_UNSET = object()
