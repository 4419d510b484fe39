"""The customer entity workflow: one long-lived `customer-{cus_id}` per Stripe customer."""

import dataclasses
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import (
    RetryPolicy,
    SearchAttributePair,
    SearchAttributeUpdate,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ActivityError, FailureError, WorkflowAlreadyStartedError

from stripe_lifecycle.activities.interface import (
    Automations,
    ChooseAutomation,
    ConversionInput,
    Conversions,
    EvaluateSegments,
    EventTriggersRequest,
    InstanceRecord,
    InstancesMrr,
    PersistAndEvaluate,
    Segments,
    SegmentsChanged,
    SegmentsEvaluation,
    Snapshots,
    StoreBatch,
    StripeReads,
)
from stripe_lifecycle.domain import contract, holdout, ids, rules, segments, stripe_reads
from stripe_lifecycle.domain.automations import Automation
from stripe_lifecycle.domain.events import BillingEvent, BillingEvents
from stripe_lifecycle.domain.ledger import (
    RULES_VERSION,
    BillingSnapshot,
    CustomerLedger,
    LifecycleRef,
    new_state,
    primary_subscription,
)
from stripe_lifecycle.domain.lifecycles import Lifecycle
from stripe_lifecycle.domain.money import format_amount
from stripe_lifecycle.domain.template_context import (
    card_context,
    event_context,
    quote_context,
    subscription_context,
)
from stripe_lifecycle.workflows.customer_messages import (
    CustomerWorkflowInput,
    EraseRequest,
    EraseResult,
)
from stripe_lifecycle.workflows.engine import (
    InvoiceLifecycleWorkflow,
    InvoiceUpdate,
    LifecycleFinished,
    LifecycleInput,
    LifecycleParent,
    LifecycleUpdate,
    LifecycleWorkflow,
)
from stripe_lifecycle.workflows.lifecycles import LIFECYCLE_WORKFLOWS

# Finished lifecycles kept in the entity's state (running ones are always kept).
FINISHED_LIFECYCLES_KEPT = 50

# Runs recorded before the subscription and card lifecycles existed replay without them;
# runs started since (continue-as-new included) take the new branch.
SEQUENCES_PATCH = "subscription-and-card-lifecycles"
# Runs that began before rules version 2 (`domain/ledger.py`, RULES_VERSION) decide by
# the rules they started with; runs started since, continued-as-new ones included, by
# version 2: every lifecycle decided by the rules, invoice ones included (they are told
# their outcome, and the conversion is recorded here), and Stripe's own rules for cards,
# canceled subscriptions, first payments, setup fees and deleted customers; and a
# batch's missing details (coupons, tiers, invoice payments) read from Stripe before it
# is applied.
RULES_V2_PATCH = "rules-v2"
# Runs started since read Stripe on the Stripe reads task queue, under the rate cap every
# bulk read shares (`LIFECYCLE_STRIPE_READ_RATE`): a burst of paid invoices otherwise
# meets Stripe's rate limit. Runs recorded before read on their own queue, and replay so.
READS_QUEUE_PATCH = "stripe-reads-queue"

# Runs started or continued since evaluate the customer's segments whenever what they read
# changes, start the upgrade campaigns an entry triggers, hold out a share of each
# automation's customers and record every instance started (`lifecycle_instances`).
SEGMENTS_PATCH = "segments-campaigns-holdouts"
# A customer workflow may run for years: a run begun before segments takes them up, and
# rules version 3 (every trigger), on the first `segments_changed` signal it receives
# (the sweep sends one to every customer never evaluated). Asked only there: no run
# recorded before holds such a signal, so the answer is given live, once, and replays the
# same from its marker.
SEGMENTS_ADOPTED_PATCH = "segments-adopted"
# Runs started since decide by rules version 3: invoices paid by hand (due and overdue),
# finalized invoices, quotes and `event` sequences.
TRIGGERS_PATCH = "every-trigger"
# Runs started since store a batch that starts, tells and ends nothing together with the
# segment evaluation it calls for, in one local activity (each one costs a workflow
# activation and a marker in the history), and send the snapshot without the subscription
# payloads the store leaves out.
ONE_WRITE_PATCH = "one-local-activity-per-quiet-batch"
# Runs started (or continued) since take every change the run's first task asks about above
# at once, from one marker: each patch asked records a marker and upserts Temporal's
# change-version search attribute (a visibility write), six of each in every new run.
# Runs recorded before it hold no such marker, and replay by the markers they hold. These
# runs also choose automations in a local activity: a lookup in the worker's memory needs
# no task queue round trip (three history events and a workflow task for each choice).
FIRST_TASK_PATCH = "one-marker-and-local-choices"
# Runs started since tell their running lifecycles the customer's address when an event
# brings a new one (the customer's own event may arrive after its subscription's, whose
# lifecycles then started without it: see `engine.ADDRESS_PATCH`). Asked only when that
# happens, so runs recorded before replay as they ran.
ADDRESS_PATCH = "tell-lifecycles-the-address"
# Runs started since fill in the MRR of an instance recorded in `lifecycle_instances`
# before its subscription's first event arrived (a failed payment can come first), once it
# has. Asked only when that happens, so runs recorded before replay as they ran.
LATE_MRR_PATCH = "instance-mrr-filled-in"
# Runs started (or continued) since store each batch that is not quiet in a local
# activity that also answers which event types start an `event` sequence
# (`Segments.store_batch`); the question was a local activity of its own in a run's first
# batch and in every batch an hour or more after the last answer, which is most batches of
# a customer whose events come days apart. A batch quiet unless one of its event types
# starts a sequence is evaluated in that same activity when none does, as a quiet batch
# is. Decided in the run's first task with everything `FIRST_TASK_PATCH` decides, from
# one marker (runs recorded with that marker replay by it).
STORE_BATCH_PATCH = "store-batch-answers-event-triggers"
# Runs started (or continued) since also choose, in the activity that stores a batch, the
# automation of each lifecycle the batch starts (`StoreBatch.choose`), instead of a local
# activity per start after it. A start no automation takes (with the default automations,
# the renewal of every monthly subscription each period: the renewal reminders are for
# annual plans) leaves the batch quiet, stored and evaluated in that one activity, where
# it took three. Decided in the first task, standing for everything `STORE_BATCH_PATCH`
# does, from one marker (runs recorded with that marker replay by it).
STORE_CHOICES_PATCH = "store-batch-chooses-automations"
# How long the event types `event` automations are triggered by are taken as known,
# before the worker is asked again (the automations file may have changed).
EVENT_TRIGGERS_FRESH = timedelta(hours=1)

# The DB may be down for a while; keep trying rather than drop a snapshot.
PERSIST_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
)
# Stripe rate limits and has outages: back off for a few minutes, then apply the batch with
# what its payloads tell (the MRR marked not exact) rather than hold the customer's events.
STRIPE_READ_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
)


@workflow.defn(name="CustomerWorkflow")
class CustomerWorkflow(LifecycleParent):
    """Holds one customer's billing snapshot, fed by Stripe events, and runs its lifecycles.

    Signals: `billing_events(BillingEvents)` — normalised Stripe events of this customer;
    duplicates (by event id) are ignored, and an event older than what is known about the
    same object does not overwrite it.
    `lifecycle_finished(LifecycleFinished)` — a lifecycle child ended.
    Updates: `erase(EraseRequest) -> EraseResult` — erase the customer's personal data.
    Queries: `state() -> BillingSnapshot`, `lifecycles() -> list[LifecycleRef]`.
    For each applied event it carries out what `domain/rules.py` decides: starts one
    lifecycle child per instance (`dunning-{invoice_id}`, `trial-{sub_id}`, ...), tells
    running ones their new dates, fresher data or outcome, and records conversions.
    Never completes on its own: a late event must find this run and its state, not start
    an empty one. Continues as new when the SDK suggests it, carrying the state.
    Its handlers hand everything to `CustomerRun`, a plain class: this one is the
    workflow's contract with Temporal, that one how a run keeps it.
    """

    @workflow.init
    def __init__(self, input: CustomerWorkflowInput) -> None:
        self._run = CustomerRun(input)

    @workflow.run
    async def run(self, input: CustomerWorkflowInput) -> None:  # noqa: ARG002 (__init__ took it)
        await self._run.run()

    @workflow.signal(name=contract.BILLING_EVENTS_SIGNAL)
    def billing_events(self, batch: BillingEvents) -> None:
        self._run.billing_events(batch)

    @workflow.signal
    def lifecycle_finished(self, finished: LifecycleFinished) -> None:
        self._run.lifecycle_finished(finished)

    @workflow.signal(name=contract.SEGMENTS_CHANGED_SIGNAL)
    def segments_changed(self, changed: SegmentsChanged) -> None:
        self._run.segments_changed(changed)

    @workflow.update
    async def erase(self, request: EraseRequest) -> EraseResult:
        """`CustomerRun.erase`."""
        return await self._run.erase(request)

    @workflow.query
    def state(self) -> BillingSnapshot:
        """`CustomerRun.state`."""
        return self._run.state()

    @workflow.query
    def lifecycles(self) -> list[LifecycleRef]:
        return self._run.lifecycles()


class CustomerRun:
    """One run of a customer workflow: its state, and what it does with each signal."""

    def __init__(self, input: CustomerWorkflowInput) -> None:
        self._input = input
        self._ledger = CustomerLedger(input.state or new_state(input.customer_id))
        self._pending: list[BillingEvent] = list(input.pending)
        # Where Stripe is read (`READS_QUEUE_PATCH`); None: the run's own task queue.
        self._reads_queue: str | None = None
        # Set once the customer's personal data is erased: this run's history holds it, so
        # the entity continues in a new run at once (and the old one can be deleted).
        self._fresh_history = False
        # `segments_changed` signals not yet acted on, and whether a lifecycle ended since
        # the segments were last evaluated (`in_lifecycle` reads the running ones).
        self._segment_signals: list[SegmentsChanged] = []
        self._lifecycles_changed = False
        # The billing facts of the last evaluation (this run's): unchanged facts need none.
        self._evaluated_facts: dict[str, Any] | None = None
        # Segments, campaigns and holdouts are on (`SEGMENTS_PATCH`, `SEGMENTS_ADOPTED_PATCH`).
        self._segments_on = False
        # The event types `event` automations start on, and when the worker said so.
        self._event_triggers: tuple[datetime, list[str]] | None = None
        # A quiet batch is stored and evaluated in one local activity (`ONE_WRITE_PATCH`).
        self._one_write = False
        # Automations are chosen in a local activity (`FIRST_TASK_PATCH`).
        self._local_choices = False
        # A batch is stored by `Segments.store_batch` (`STORE_BATCH_PATCH`), which also
        # chooses its starts' automations (`STORE_CHOICES_PATCH`).
        self._store_batch = False
        self._store_choices = False
        # The current batch's triggers and the automation the store chose for each.
        self._chosen: list[tuple[ChooseAutomation, Automation | None]] = []
        # Search attributes survive continue-as-new; start from what the run already has.
        current = workflow.info().typed_search_attributes
        self._indexed: dict[str, Any] = {
            key.name: current.get(key)
            for key in contract.SEARCH_ATTRIBUTES
            if current.get(key) is not None
        }

    async def run(self) -> None:
        # Decided once, in the run's first workflow task: a patch asked for later, after a
        # local activity, can land in a different task on replay than it did live.
        self._store_choices = workflow.patched(STORE_CHOICES_PATCH)
        self._store_batch = self._store_choices or workflow.patched(STORE_BATCH_PATCH)
        if self._store_batch or workflow.patched(FIRST_TASK_PATCH):
            # What `_first_task_patches` decides in a run that has all six.
            self._reads_queue = contract.stripe_reads_queue(workflow.info().task_queue)
            self._segments_on = self._one_write = self._local_choices = True
        else:
            self._first_task_patches()
        self._set_details()
        while True:
            await workflow.wait_condition(
                lambda: (
                    bool(self._pending)
                    or self._history_full()
                    or self._fresh_history
                    or bool(self._segment_signals)
                    or self._lifecycles_changed
                )
            )
            if self._pending:
                await self._apply_pending()
            if self._segment_signals or self._lifecycles_changed:
                await self._segments_changed()
            if self._history_full() or self._fresh_history:
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    CustomerWorkflowInput(
                        customer_id=self._input.customer_id,
                        index_email=self._input.index_email,
                        max_history_events=self._input.max_history_events,
                        state=self._ledger.export(),
                        pending=self._pending,
                    )
                )

    def _first_task_patches(self) -> None:
        """The changes of the first task as runs recorded before `FIRST_TASK_PATCH` asked
        about them, one patch each."""
        if not workflow.patched(SEQUENCES_PATCH):
            self._ledger.rules_version = 0
        elif not workflow.patched(RULES_V2_PATCH):
            self._ledger.rules_version = 1
        elif not workflow.patched(TRIGGERS_PATCH):
            self._ledger.rules_version = 2
        if workflow.patched(READS_QUEUE_PATCH):
            self._reads_queue = contract.stripe_reads_queue(workflow.info().task_queue)
        self._segments_on = workflow.patched(SEGMENTS_PATCH)
        self._one_write = workflow.patched(ONE_WRITE_PATCH)

    def _history_full(self) -> bool:
        info = workflow.info()
        limit = self._input.max_history_events
        return info.is_continue_as_new_suggested() or (
            limit is not None and info.get_current_history_length() >= limit
        )

    def billing_events(self, batch: BillingEvents) -> None:
        self._pending.extend(batch.events)

    def lifecycle_finished(self, finished: LifecycleFinished) -> None:
        rules.finished(
            self._ledger, finished.workflow_id, finished.outcome, FINISHED_LIFECYCLES_KEPT
        )
        self._lifecycles_changed = True

    def segments_changed(self, changed: SegmentsChanged) -> None:
        self._segment_signals.append(changed)

    async def erase(self, request: EraseRequest) -> EraseResult:
        """Erase the customer's personal data (email, name, address, cards, metadata) and
        end every running lifecycle, keeping the money figures; the entity then continues
        in a new run whose history holds no personal data."""
        workflow.logger.info("personal data erased by %s", request.actor)
        ended = []
        for ref in list(self._ledger.state.lifecycles):
            end = rules.End(ref.workflow_id, rules.CUSTOMER_DELETED)
            if rules.begin(self._ledger, end):
                ended.append(ref.workflow_id)
                await self._tell(
                    ref.workflow_id,
                    LifecycleUpdate(
                        event_id=f"erasure-{workflow.info().run_id}",
                        created=int(workflow.now().timestamp()),
                        outcome=rules.CUSTOMER_DELETED,
                    ),
                )
        self._ledger.erase()
        self._index()
        self._set_details()
        self._fresh_history = True
        return EraseResult(ended=ended, run_id=workflow.info().run_id)

    def state(self) -> BillingSnapshot:
        """The snapshot with every lifecycle instance it started, running and ended."""
        return dataclasses.replace(
            self._ledger.snapshot, lifecycles=list(self._ledger.state.lifecycles)
        )

    def lifecycles(self) -> list[LifecycleRef]:
        return list(self._ledger.state.lifecycles)

    async def _apply_pending(self) -> None:
        batch, self._pending = self._pending, []
        if self._ledger.rules_version >= 2:
            await self._read_stripe(batch)
        address = self._ledger.snapshot.email
        applied = rules.apply_batch(self._ledger, batch)
        if not applied:
            return
        self._index()
        self._set_details()
        await self._record_late_mrr()
        told = self._told_address() if self._ledger.snapshot.email not in (None, address) else []
        # A batch that brings running lifecycles their address is not quiet: they wait for it.
        if self._one_write and self._segments_on and not told and self._quiet(applied):
            await self._evaluate_segments(force=False, offer_existing=[], store=True)
            self._set_details()
            return
        if self._store_batch:
            if await self._store(applied, quiet_possible=not told):
                self._set_details()
                return
        else:
            # A local activity: a short idempotent DB write needs no task queue round trip,
            # which would cost the server three history events and a dispatch per batch.
            await workflow.execute_local_activity_method(
                Snapshots.persist_snapshot,
                self._stored_snapshot(),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=PERSIST_RETRY,
            )
        if told:
            await self._tell_address(told, applied[-1].event)
        await self._carry_out_batch(applied)
        self._chosen = []
        if self._segments_on:
            await self._evaluate_segments(force=False, offer_existing=[])
        self._set_details()

    async def _carry_out_batch(self, applied: list[rules.Applied]) -> None:
        for applied_event in applied:
            event = applied_event.event
            for decision in self._decisions(applied_event):
                if rules.begin(self._ledger, decision):
                    await self._carry_out(decision, event)

    async def _record_late_mrr(self) -> None:
        """The customer's MRR for the instances recorded before their subscription was
        known, now that it is (runs since `LATE_MRR_PATCH`)."""
        snap = self._ledger.snapshot
        late = [
            ref
            for ref in self._ledger.state.lifecycles
            if ref.mrr_unknown and ref.subscription_id in snap.subscriptions
        ]
        if not late or not workflow.patched(LATE_MRR_PATCH):
            return
        await workflow.execute_local_activity_method(
            Segments.record_instances_mrr,
            InstancesMrr(
                workflow_ids=[ref.workflow_id for ref in late],
                mrr_cents=snap.mrr_cents,
                currency=snap.currency,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=PERSIST_RETRY,
        )
        for ref in late:
            ref.mrr_unknown = False

    async def _store(self, applied: list[rules.Applied], *, quiet_possible: bool) -> bool:
        """Store the batch's snapshot, take the event types that start `event` sequences
        as the worker answers them now (`STORE_BATCH_PATCH`), and the automation each of
        the batch's lifecycle starts runs (`STORE_CHOICES_PATCH`). A batch that would be
        quiet but for event types not answered within the hour and starts not yet chosen,
        when none of them starts anything, is quiet: evaluated in the same activity (if its
        facts changed), its starts recorded as decided, and nothing left to carry out.
        Whether it was."""
        unanswered, choose = self._questions(applied)
        if not quiet_possible:
            unanswered = None
        facts, request = self._evaluation_request(force=False)
        stored = await workflow.execute_local_activity_method(
            Segments.store_batch,
            StoreBatch(
                snapshot=self._stored_snapshot(),
                quiet_unless=unanswered,
                # Only a batch that may prove quiet is evaluated in this activity.
                evaluation=request if unanswered is not None else None,
                choose=choose,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=PERSIST_RETRY,
        )
        self._event_triggers = (workflow.now(), stored.event_triggers)
        self._chosen = list(zip(choose, stored.chosen, strict=True))
        if stored.quiet and self._store_choices:
            # Carried out with every answer known, it sends and starts nothing; before the
            # evaluation, as in any batch: the choices read the segments it may change.
            await self._carry_out_batch(applied)
            self._chosen = []
        if stored.evaluation is not None:
            await self._take_evaluation(facts, stored.evaluation, [])
        return stored.quiet

    def _questions(
        self, applied: list[rules.Applied]
    ) -> tuple[list[str] | None, list[ChooseAutomation]]:
        """What the store is asked for the batch: the event types of its `event` sequence
        starts if every other decision is moot (`_quiet`, before the worker answers) or,
        in runs since `STORE_CHOICES_PATCH`, a lifecycle start the store chooses for, else
        None; and the triggers of those starts."""
        types: set[str] = set()
        choose: list[ChooseAutomation] = []
        quiet = True
        for applied_event in applied:
            for decision in self._decisions(applied_event):
                if (
                    isinstance(decision, rules.Start)
                    and decision.lifecycle == Lifecycle.EVENT
                    and not decision.workflow_id
                ):
                    types.add(applied_event.event.type)
                elif rules.moot(self._ledger, decision):
                    continue
                elif (
                    self._store_choices
                    and isinstance(decision, rules.Start)
                    and decision.lifecycle != Lifecycle.EVENT
                ):
                    trigger = self._start_trigger(decision, applied_event.event)
                    if trigger not in choose:
                        choose.append(trigger)
                else:
                    quiet = False
        return (sorted(types) if quiet else None), choose

    def _decisions(self, applied: rules.Applied) -> list[rules.Decision]:
        # A sync's backfill is the present, not news: it fills the ledger only (runs
        # recorded so far never saw one, so their histories replay unchanged).
        decide = rules.backfill_decisions if applied.event.backfill else rules.decide
        return decide(applied.event, applied.before, self._ledger)

    def _quiet(self, applied: list[rules.Applied]) -> bool:
        """Whether carrying the batch out would start, tell, end and record nothing, nor
        ask the worker anything: each decision moot (`rules.moot`), or an `event` sequence
        of a type the worker said (within the hour) triggers none. No decision then
        changes the ledger, so the events' decisions are the same taken together as one
        by one."""
        triggers = self._event_triggers
        fresh = triggers is not None and workflow.now() - triggers[0] < EVENT_TRIGGERS_FRESH
        for applied_event in applied:
            for decision in self._decisions(applied_event):
                untriggered = (
                    isinstance(decision, rules.Start)
                    and decision.lifecycle == Lifecycle.EVENT
                    and not decision.workflow_id
                    and fresh
                    and triggers is not None
                    and applied_event.event.type not in triggers[1]
                )
                if not (untriggered or rules.moot(self._ledger, decision)):
                    return False
        return True

    def _stored_snapshot(self) -> BillingSnapshot:
        """The snapshot as the local activity stores it: runs since `ONE_WRITE_PATCH` leave
        out each subscription's payload, which the store drops (the activity's input is
        not in the history, so this replays either way)."""
        snap = self._ledger.snapshot
        if not self._one_write:
            return snap
        return dataclasses.replace(
            snap,
            subscriptions={
                key: dataclasses.replace(sub, subscription=None)
                for key, sub in snap.subscriptions.items()
            },
        )

    def _told_address(self) -> list[LifecycleRef]:
        """The running lifecycles a new address goes to: none in runs from before
        `ADDRESS_PATCH` (asked only when there are some, so those runs replay as they ran)."""
        running = [r for r in self._ledger.state.lifecycles if r.status == rules.RUNNING]
        if not running or not workflow.patched(ADDRESS_PATCH):
            return []
        return running

    async def _tell_address(self, running: list[LifecycleRef], event: BillingEvent) -> None:
        """Tell the running lifecycles the customer's new address (and name)."""
        snap = self._ledger.snapshot
        for ref in running:
            await self._tell(
                ref.workflow_id,
                LifecycleUpdate(
                    event_id=event.event_id,
                    created=event.created,
                    customer_email=snap.email,
                    customer_name=snap.name,
                ),
            )

    async def _segments_changed(self) -> None:
        """Usage reported, time passed or a lifecycle ended: evaluate the segments again."""
        signals, self._segment_signals = self._segment_signals, []
        self._lifecycles_changed = False
        if signals and not self._segments_on:
            self._segments_on = workflow.patched(SEGMENTS_ADOPTED_PATCH)
            if self._segments_on and self._ledger.rules_version == 2:
                self._ledger.rules_version = RULES_VERSION
        if not self._segments_on:
            return
        offer = sorted({segment for signal in signals for segment in signal.offer_existing})
        await self._evaluate_segments(force=bool(signals), offer_existing=offer)

    async def _evaluate_segments(
        self, *, force: bool, offer_existing: list[str], store: bool = False
    ) -> None:
        """Evaluate the customer's segments (an activity: the definitions, usage and clicks
        are the worker's and the DB's) when what they read changed, and act on the answer:
        index them, end the campaigns of segments left, start those of segments entered.
        `store`: persist the snapshot first, in the same local activity."""
        facts, request = self._evaluation_request(force=force)
        if request is None:
            if store:
                await workflow.execute_local_activity_method(
                    Snapshots.persist_snapshot,
                    self._stored_snapshot(),
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=PERSIST_RETRY,
                )
            return
        if store:
            evaluation = await workflow.execute_local_activity_method(
                Segments.persist_and_evaluate,
                PersistAndEvaluate(snapshot=self._stored_snapshot(), evaluation=request),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=PERSIST_RETRY,
            )
        else:
            evaluation = await workflow.execute_local_activity_method(
                Segments.evaluate_segments,
                request,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=PERSIST_RETRY,
            )
        await self._take_evaluation(facts, evaluation, offer_existing)

    def _evaluation_request(self, *, force: bool) -> tuple[dict[str, Any], EvaluateSegments | None]:
        """The billing facts the segments read now, and the evaluation to ask for: none
        when they are those of the last evaluation and nothing else asks for one."""
        state = self._ledger.state
        running = sorted({r.lifecycle for r in state.lifecycles if r.status == rules.RUNNING})
        facts = segments.billing_facts(self._ledger.snapshot, running)
        if not force and facts == self._evaluated_facts:
            return facts, None
        return facts, EvaluateSegments(
            customer_id=self._ledger.snapshot.customer_id,
            facts=facts,
            now=workflow.now(),
            previous=list(state.segments),
            known=list(state.segments_known),
            evaluated_before=state.segments_evaluated,
            first_evaluated=state.segments_first_evaluated,
        )

    async def _take_evaluation(
        self, facts: dict[str, Any], evaluation: SegmentsEvaluation, offer_existing: list[str]
    ) -> None:
        """Index the segments evaluated on `facts`, end the campaigns of segments left and
        start those of segments entered."""
        state = self._ledger.state
        self._evaluated_facts = facts
        if evaluation.segments != state.segments or not state.segments_evaluated:
            workflow.upsert_search_attributes([contract.SEGMENTS.value_set(evaluation.segments)])
        state.segments = list(evaluation.segments)
        state.segments_known = list(evaluation.known)
        state.segments_evaluated = True
        if state.segments_first_evaluated is None:
            state.segments_first_evaluated = int(workflow.now().timestamp())
        exits = rules.campaign_exits(self._ledger, [change.segment for change in evaluation.exited])
        for end in exits:
            if rules.begin(self._ledger, end):
                await self._tell(
                    end.workflow_id,
                    LifecycleUpdate(
                        event_id=f"segments-{workflow.uuid4()}",
                        created=int(workflow.now().timestamp()),
                        outcome=end.outcome,
                    ),
                )
        await self._start_campaigns(evaluation, offer_existing)

    async def _start_campaigns(
        self, evaluation: SegmentsEvaluation, offer_existing: list[str]
    ) -> None:
        """An entry starts the segment's campaign; being in it already (when the customer
        was first evaluated against it, or as the sweep found) only those that say
        `enter_existing`."""
        triggers = set(evaluation.campaign_segments)
        entries = [(e.segment, e.initial) for e in evaluation.entered if e.segment in triggers]
        entered = {segment for segment, _ in entries}
        entries += [
            (segment, True)
            for segment in offer_existing
            if segment in triggers and segment in evaluation.segments and segment not in entered
        ]
        for segment, existing in entries:
            automation = await self._choose(self._campaign_trigger(segment, existing))
            if automation is None:
                continue
            now = int(workflow.now().timestamp())
            start = rules.campaign_start(self._ledger, automation, segment, now)
            if start is None or not rules.begin(self._ledger, start):
                continue
            await self._launch(
                start,
                automation,
                livemode=self._ledger.snapshot.livemode,
                context={"usage": evaluation.usage},
            )

    def _campaign_trigger(self, segment: str, existing: bool) -> ChooseAutomation:
        snap = self._ledger.snapshot
        sub = primary_subscription(snap)
        return ChooseAutomation(
            lifecycle=Lifecycle.UPGRADE,
            livemode=snap.livemode,
            subscription_periods=sub.periods if sub else [],
            invoice_amount=sub.amount_cents if sub else None,
            currency=sub.currency if sub else snap.currency,
            product_ids=[sub.product_id] if sub and sub.product_id else [],
            price_ids=[sub.price_id] if sub and sub.price_id else [],
            plan=snap.plan,
            customer_metadata=snap.metadata,
            invoice_metadata=sub.metadata if sub else {},
            segments=list(self._ledger.state.segments),
            segment=segment,
            existing=existing,
        )

    async def _read_stripe(self, batch: list[BillingEvent]) -> None:
        """Fill in what the batch's payloads leave out, read from Stripe (an activity)."""
        for request in stripe_reads.requests_for(batch):
            try:
                answer = await workflow.execute_activity_method(
                    StripeReads.read_stripe,
                    request,
                    task_queue=self._reads_queue,
                    start_to_close_timeout=timedelta(minutes=1),
                    retry_policy=STRIPE_READ_RETRY,
                )
            except ActivityError as exc:
                workflow.logger.warning("Stripe reads failed, applying what is known: %s", exc)
                continue
            stripe_reads.fill(batch, answer, request.account)

    async def _carry_out(self, decision: rules.Decision, event: BillingEvent) -> None:
        if isinstance(decision, rules.Start) and decision.lifecycle == Lifecycle.EVENT:
            await self._start_event_sequence(decision, event)
        elif isinstance(decision, rules.Start):
            await self._start(decision, event)
        elif isinstance(decision, rules.Convert):
            await self._record_conversion(decision, event)
        elif isinstance(decision, rules.Forward):
            sub = self._ledger.snapshot.subscriptions.get(rules.subscription_of(event) or "")
            await self._tell(
                decision.workflow_id,
                InvoiceUpdate(
                    event_id=event.event_id,
                    event_type=event.type,
                    created=event.created,
                    invoice=event.invoice,
                    mrr_cents=sub.mrr_cents if sub else None,
                ),
            )
        else:
            update = LifecycleUpdate(event_id=event.event_id, created=event.created)
            if isinstance(decision, rules.Retime):
                update.anchor = decision.anchor
                ref = rules.latest(self._ledger, decision.workflow_id)
                update.context = subscription_context(
                    self._ledger, ref.subscription_id if ref else None
                )
            elif isinstance(decision, rules.Refresh):
                update.invoice = decision.invoice
            else:
                update.outcome = decision.outcome
            await self._tell(decision.workflow_id, update)

    async def _tell(self, workflow_id: str, update: LifecycleUpdate | InvoiceUpdate) -> None:
        """Signal a lifecycle child; one that has just ended (its last step, or by hand)
        has nothing left to be told, and its own report says how it ended."""
        handle = workflow.get_external_workflow_handle(workflow_id)
        try:
            if isinstance(update, InvoiceUpdate):
                await handle.signal(InvoiceLifecycleWorkflow.invoice_update, update)
            else:
                await handle.signal(LifecycleWorkflow.lifecycle_update, update)
        except FailureError as exc:
            workflow.logger.warning("could not tell %s: %s", workflow_id, exc)

    async def _start(self, start: rules.Start, event: BillingEvent) -> None:
        """Start a lifecycle child if an automation matches, and remember it; an id
        already taken starts nothing."""
        automation = await self._choose_automation(start, event)
        if automation is None:
            workflow.logger.info(
                "no enabled %s automation matches %s", start.lifecycle, start.workflow_id
            )
            return
        context = None
        if start.lifecycle == Lifecycle.QUOTE_EXPIRING and event.quote is not None:
            context = quote_context(event.quote)
        await self._launch(start, automation, livemode=event.livemode, context=context)

    async def _start_event_sequence(self, start: rules.Start, event: BillingEvent) -> None:
        """An `event` automation triggered by this event's type runs one instance for
        it, `event-{automation}-{event_id}`; most event types trigger none, and cost no
        automation lookup."""
        if event.type not in await self._event_types():
            return
        trigger = self._trigger_context(start, event)
        trigger.event_type = event.type
        if event.object is not None:
            trigger.invoice_amount = event.object.amount
            trigger.currency = event.object.currency
        automation = await self._choose(trigger)
        if automation is None:
            return
        named = dataclasses.replace(
            start, workflow_id=ids.event_sequence_id(automation.name, event.event_id)
        )
        if rules.begin(self._ledger, named):
            await self._launch(
                named,
                automation,
                livemode=event.livemode,
                context=event_context(event.type, event.event_id, event.object),
            )

    async def _event_types(self) -> list[str]:
        """The event types `event` automations start on, as the worker said within the
        hour (a local activity, recorded)."""
        now = workflow.now()
        if self._event_triggers is None or now - self._event_triggers[0] >= EVENT_TRIGGERS_FRESH:
            answer = await workflow.execute_local_activity_method(
                Automations.event_triggers,
                EventTriggersRequest(),
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=PERSIST_RETRY,
            )
            self._event_triggers = (now, answer.event_types)
        return self._event_triggers[1]

    async def _launch(
        self,
        start: rules.Start,
        automation: Automation,
        *,
        livemode: bool,
        context: dict[str, Any] | None = None,
    ) -> None:
        """Start the child running `automation`, with the customer in or out of its
        holdout group; an id already taken starts nothing."""
        snap = self._ledger.snapshot
        sub = snap.subscriptions.get(start.subscription_id or "")
        kind = LIFECYCLE_WORKFLOWS[start.lifecycle]
        invoice = start.invoice
        held_out = self._segments_on and holdout.held_out(
            snap.customer_id, automation.name, automation.holdout_basis_points
        )
        subject = f"invoice {start.subject_id}" if invoice is not None else start.subject_id
        memo = {} if invoice is None else {contract.MEMO_INVOICE_ID: invoice.id}
        try:
            await workflow.start_child_workflow(
                kind.run,
                LifecycleInput(
                    customer_id=snap.customer_id,
                    automation=automation,
                    subject_id=start.subject_id,
                    subscription_id=start.subscription_id,
                    anchor=start.anchor,
                    customer_email=snap.email,
                    customer_name=snap.name,
                    livemode=livemode,
                    # Invoice lifecycles read their invoice (and the card it is charged
                    # to); the others the subscription.
                    context=(
                        {"payment_method": card_context(self._ledger.billing_payment_method())}
                        if invoice is not None
                        else subscription_context(self._ledger, start.subscription_id)
                    )
                    | (context or {}),
                    customer_timezone=self._ledger.timezone,
                    customer_country=snap.country,
                    invoice=invoice,
                    mrr_cents=sub.mrr_cents if sub else 0,
                    stripe_account=snap.stripe_account,
                    since=start.since,
                    held_out=held_out,
                ),
                id=start.workflow_id,
                # Children outlive this run's continue-as-new; each reports back by signal.
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                # Ids name one instance (an invoice's dunning, a trial, a renewal period);
                # only a cancellation that was undone and scheduled again reuses its id.
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE
                if start.reusable
                else WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=self._child_attributes(
                    start.lifecycle, automation.name, livemode
                ),
                memo=memo,
                static_summary=f"{kind.title} of {subject} ({automation.name})"
                + (" · holdout group" if held_out else ""),
            )
        except WorkflowAlreadyStartedError:
            return
        now = workflow.now()
        ref = rules.started(
            self._ledger, start, automation.name, held_out=held_out, at=int(now.timestamp())
        )
        if self._segments_on:
            # Its subscription not known yet, the MRR recorded is not its customer's.
            ref.mrr_unknown = bool(start.subscription_id) and sub is None
            await workflow.execute_local_activity_method(
                Segments.record_instance,
                InstanceRecord(
                    workflow_id=start.workflow_id,
                    customer_id=snap.customer_id,
                    lifecycle=start.lifecycle,
                    automation=automation.name,
                    held_out=held_out,
                    started_at=now,
                    mrr_cents=snap.mrr_cents,
                    currency=snap.currency,
                ),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=PERSIST_RETRY,
            )

    async def _choose_automation(
        self, start: rules.Start, event: BillingEvent
    ) -> Automation | None:
        """The automation this trigger runs."""
        return await self._choose(self._start_trigger(start, event))

    def _start_trigger(self, start: rules.Start, event: BillingEvent) -> ChooseAutomation:
        """What a lifecycle start's automation is chosen by."""
        trigger = self._trigger_context(start, event)
        snap = self._ledger.snapshot
        sub = snap.subscriptions.get(start.subscription_id or "")
        invoice = start.invoice
        if invoice is not None:
            trigger.invoice_amount = invoice.amount_due
            trigger.currency = invoice.currency
            trigger.product_ids = invoice.product_ids
            trigger.price_ids = invoice.price_ids
            trigger.plan = snap.plan
            trigger.invoice_metadata = invoice.metadata
            trigger.collection_method = invoice.collection_method
        elif event.quote is not None and start.lifecycle == Lifecycle.QUOTE_EXPIRING:
            trigger.invoice_amount = event.quote.amount_total
            trigger.currency = event.quote.currency
            trigger.plan = snap.plan
        elif sub is not None:
            trigger.invoice_amount = sub.amount_cents
            trigger.currency = sub.currency
            trigger.product_ids = [sub.product_id] if sub.product_id else []
            trigger.price_ids = [sub.price_id] if sub.price_id else []
            trigger.plan = sub.plan
            trigger.cancellation_reason = sub.cancellation_reason
            trigger.invoice_metadata = sub.metadata
        else:
            trigger.currency = snap.currency
            trigger.plan = snap.plan
        return trigger

    def _trigger_context(self, start: rules.Start, event: BillingEvent) -> ChooseAutomation:
        """What every trigger's filters read of the customer and its subscription."""
        snap = self._ledger.snapshot
        sub = snap.subscriptions.get(start.subscription_id or "")
        return ChooseAutomation(
            lifecycle=start.lifecycle,
            livemode=event.livemode,
            subscription_periods=sub.periods if sub else [],
            customer_metadata=snap.metadata,
            segments=list(self._ledger.state.segments),
        )

    async def _choose(self, trigger: ChooseAutomation) -> Automation | None:
        """An activity (a local one in runs since `FIRST_TASK_PATCH`): the definitions are
        the worker's, and the choice is recorded; none when the batch's store chose for
        this trigger already (`STORE_CHOICES_PATCH`)."""
        for asked, chosen in self._chosen:
            if asked == trigger:
                return chosen
        if self._local_choices:
            return await workflow.execute_local_activity_method(
                Automations.choose_automation,
                trigger,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=PERSIST_RETRY,
            )
        return await workflow.execute_activity_method(
            Automations.choose_automation,
            trigger,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=PERSIST_RETRY,
        )

    async def _record_conversion(self, convert: rules.Convert, event: BillingEvent) -> None:
        ref = rules.latest(self._ledger, convert.workflow_id) if convert.workflow_id else None
        await workflow.execute_activity_method(
            Conversions.record_conversion,
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
                uncredited_reason=convert.uncredited_reason,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=PERSIST_RETRY,
        )

    def _child_attributes(
        self, lifecycle: Lifecycle, automation: str, livemode: bool
    ) -> TypedSearchAttributes:
        snap = self._ledger.snapshot
        attributes: list[SearchAttributePair[Any]] = [
            SearchAttributePair(contract.CUSTOMER_ID, snap.customer_id),
            SearchAttributePair(contract.LIFECYCLE, lifecycle),
            SearchAttributePair(contract.AUTOMATION, automation),
            SearchAttributePair(contract.LIVEMODE, livemode),
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
        money = _amounts(snap.mrr, snap.currency) + ("" if snap.mrr_exact else " (not exact)")
        subs = ", ".join(
            f"{s.id} {s.status} ({s.plan or 'no plan'})" for s in snap.subscriptions.values()
        )
        running = [r.workflow_id for r in self._ledger.state.lifecycles if r.status == "running"]
        workflow.set_current_details(
            f"**Status:** {snap.status} · **Plan:** {snap.plan or '—'} · **MRR:** {money}"
            f" · **LTV:** {_amounts(snap.ltv, snap.currency)}  \n"
            f"**Subscriptions:** {subs or 'none'}  \n"
            f"**Last event:** {snap.last_event_type} · {snap.events_applied} events applied"
            + (" · customer deleted in Stripe" if snap.deleted else "")
            + (f"  \n**Running lifecycles:** {', '.join(running)}" if running else "")
            + (
                f"  \n**Segments:** {', '.join(self._ledger.state.segments)}"
                if self._ledger.state.segments
                else ""
            )
        )


_UNSET = object()


def _amounts(per_currency: dict[str, int], currency: str | None) -> str:
    """Money per currency as people read it ("$49.00 + €20.00"), never added up; none is
    zero in the customer's currency."""
    shown = per_currency or {currency or "": 0}
    return " + ".join(_amount(cents, code) for code, cents in sorted(shown.items()))


def _amount(cents: int, currency: str) -> str:
    try:
        return format_amount(cents, currency)
    except ValueError:
        # Not an ISO code (a hand-made payload): the details must still be written.
        return f"{cents} {currency or '(no currency)'}"
