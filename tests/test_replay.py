"""Histories recorded from earlier versions of the workflows still replay: a change that
would break running workflows (a non-deterministic change) fails here. Record a new
history when a workflow changes on purpose, behind `workflow.patched`.

- customer_workflow_v1: customer created, trial, active, invoice paid, a redelivered
  event, then one batch holding an older event and a newer one.
- customer_workflow_v2: a trial converted (paid invoice and activation in reverse
  order), an upgrade (expansion), a cancellation scheduled and undone (saved), then the
  subscription deleted (win-back started).
- trial_workflow_v1: a trial extended, then cut short (a late reminder skipped).
- dunning_workflow_v1: the default dunning; two emails, a retry failure (invoice
  refreshed), a third email, then paid (recovered conversion).
"""

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from stripe_lifecycle.worker import WORKFLOWS, sandbox_runner

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_there_are_recorded_histories() -> None:
    assert {p.stem for p in HISTORIES} >= {
        "customer_workflow_v1",
        "customer_workflow_v2",
        "dunning_workflow_v1",
        "trial_workflow_v1",
    }


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=WORKFLOWS, workflow_runner=sandbox_runner())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None
