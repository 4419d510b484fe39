"""Histories recorded from earlier versions of the workflows still replay: a change that
would break running workflows (a non-deterministic change) fails here. Record a new
history when a workflow changes on purpose, behind `workflow.patched`.

- customer_workflow_v1: customer created, trial, active, invoice paid, a redelivered
  event, then one batch holding an older event and a newer one (before any lifecycle).
- customer_workflow_v2: a trial converted (paid invoice and activation in reverse
  order), an upgrade (expansion), a cancellation scheduled and undone (saved), then the
  subscription deleted (win-back started).
- customer_workflow_v2_*: runs from before the rules decided invoice lifecycles, each
  starting one lifecycle (dunning and payment action forwarded the invoice events as
  `invoice_update`), recorded on the dev server by the end-to-end tests.
- <lifecycle>_workflow_v1*: each lifecycle type before the one engine (dunning and
  payment action with their own loop and `invoice_update`; trial extended then cut
  short; trial converted; win-back, renewal, card expiring, scheduled cancel, plan
  change).
- <lifecycle>_workflow_v2: each lifecycle type on the one engine, told its outcome by
  `lifecycle_update`.
- customer_workflow_v3_*: runs under rules version 2 (the `rules-v2` patch): every
  lifecycle decided by the rules (a recovery recorded by the customer workflow), a
  dunning and a trial converting on one payment, a batch's Stripe reads, a run continued
  as new; recorded on the dev server by the end-to-end tests.
- customer_workflow_v4_*: runs with segments, campaigns and holdouts (the
  `segments-campaigns-holdouts` patch): seat usage reported through the API entering a
  segment, its upgrade campaign started, the upgrade credited and the segment left and
  entered again; customers of long standing already in their segments, then offered an
  `enter_existing` campaign by the sweep; a segment of time entered through the sweep.
- customer_workflow_v3_adopted_segments: a run begun before segments (no
  `segments-campaigns-holdouts` marker) that takes them up on the sweep's first
  `segments_changed` signal (the `segments-adopted` patch) and starts a campaign.
- customer_workflow_v5_*: runs under rules version 3 (the `every-trigger` patch): an
  invoice paid by hand reminded before it is due and paid; one overdue, reminded and
  paid (recovered); a quote accepted; a dispute's event sequence (resolved through its
  charge).
- customer_workflow_v6_*: runs with the `one-local-activity-per-quiet-batch` patch: a
  batch whose decisions do nothing stores its snapshot and evaluates segments in one local
  activity (a seat count changed within a period; a lifecycle's quiet events).
- customer_workflow_v7_address_told, trial_workflow_v3_address_waited: a trial started
  by its subscription's event before the customer's own (no address yet): the trial's
  welcome waits for the address (`wait-for-the-address`), which the customer workflow
  passes on when the customer's event arrives (`tell-lifecycles-the-address`).
- customer_workflow_v8_*: runs with the `one-marker-and-local-choices` patch, which
  stands for the six patches a run's first task asked one by one (one marker and one
  change-version upsert instead of six) and chooses automations in a local activity:
  lifecycles started, told and converted; the address told to a waiting trial; quiet
  batches; a run continued as new; a batch's Stripe reads. Recorded on the dev server by
  the customer-workflow and end-to-end tests.
- customer_workflow_v9_instance_mrr_filled: a run with the `instance-mrr-filled-in`
  patch: a failed payment starts dunning before any event of its subscription (recorded
  at MRR 0), and the subscription's event fills the instance's MRR in. Recorded on the
  dev server by the customer-workflow tests.
- customer_workflow_v10_*: runs with the `store-batch-answers-event-triggers` patch, which
  stands for everything `one-marker-and-local-choices` does and stores each batch that is
  not quiet in a local activity answering which event types start a sequence: a new
  customer's first batch stored, answered and evaluated in one activity, then a
  `customer.updated` starting its `event` sequence; a renewal's first batch, then a quiet
  seat change; a trial begun before its customer's address, told it when it came.
  Recorded on the dev server by the customer-workflow and end-to-end tests.
- customer_workflow_v11_*: runs with the `store-batch-chooses-automations` patch, which
  stands for everything `store-batch-answers-event-triggers` does and chooses, in the
  activity storing a batch, the automation of each lifecycle it starts: a monthly
  subscription's renewal that no automation takes (a quiet first batch, then a seat
  change); an annual one's, chosen and started; a trial chosen and started before its
  customer's address, told it when it came; a `customer.updated` starting its `event`
  sequence. Recorded on the dev server by the customer-workflow and end-to-end tests.
- invoice_due_workflow_v1, invoice_overdue_workflow_v1, invoice_finalized_workflow_v1,
  quote_expiring_workflow_v1, event_sequence_workflow_v1: each new lifecycle type (the
  event sequence with a webhook step and a team notice across a worker restart).
- upgrade_workflow_v1*: upgrade campaigns: offers mailed, held out, ended by an upgrade.
- segment_sweep_workflow_v1: a sweep of the segments with time conditions.
- stripe_sync_workflow_v1*: historical syncs reading each list as one chain of pages.
- stripe_sync_workflow_v2_*: syncs since the `lists-read-in-windows` patch, each list
  read in `created` windows split off side by side: a full sync; a run continued as new
  mid-list with its windows; a run continued from a run before windows (one chain's
  cursor, no windows). Recorded on the dev server by the sync tests.
- stripe_sync_workflow_v3_memo_*: syncs since the `progress-in-memo` patch, which keep
  their progress in the memo: a first run continued as new mid-list, and the last run of
  that sync, delivering and completed. Recorded on the dev server by the sync tests.
- stripe_reconcile_workflow_v1: a reconciliation pass over two pages of events (120, the
  first page rate-limited once), each group of event types, and the pass recorded.
"""

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from stripe_lifecycle.payload_codec import data_converter
from stripe_lifecycle.worker import WORKFLOWS, sandbox_runner

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def workflow_type(path: Path) -> str:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    return history.events[0].workflow_execution_started_event_attributes.workflow_type.name


def test_every_workflow_type_has_recorded_histories() -> None:
    recorded = {workflow_type(p) for p in HISTORIES}
    registered = {getattr(w, "__temporal_workflow_definition").name for w in WORKFLOWS}
    assert registered - recorded == set()


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    converter = data_converter(None)
    replayer = Replayer(
        workflows=WORKFLOWS, workflow_runner=sandbox_runner(converter), data_converter=converter
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None
