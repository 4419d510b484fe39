"""`SegmentSweepWorkflow`: one sweep of the segments whose conditions turn with time alone
("active 90+ days", "clicked within 14 days"), run by the `segments-sweep` Schedule.

No signals, updates or queries: its outcome shows in the workflow's details and result."""

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from stripe_lifecycle.activities.interface import SegmentSweep, SweepRequest, SweepResult

# A sweep reads every customer's stored facts: a DB outage is waited out within the hour
# the next sweep would come anyway.
SWEEP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=10,
)


@dataclass
class SweepInput:
    """Nothing yet: the sweep's time is the workflow's, its definitions the worker's."""


@workflow.defn
class SegmentSweepWorkflow:
    """Tells each customer whose segment membership has turned with time, and each member
    of an `enter_existing` campaign's segment it has not run for, to evaluate again."""

    @workflow.run
    async def run(self, input: SweepInput) -> SweepResult:  # noqa: ARG002 (one dataclass in)
        workflow.set_current_details("Sweeping the segments with time conditions…")
        result = await workflow.execute_activity_method(
            SegmentSweep.sweep_segments,
            SweepRequest(now=workflow.now()),
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=timedelta(minutes=1),
            retry_policy=SWEEP_RETRY,
        )
        workflow.set_current_details(
            f"**Checked** {result.customers:,} customers · **{result.changed:,}** whose "
            f"segments turned with time · **{result.offered:,}** offered an existing-members "
            f"campaign · **{result.first:,}** evaluated for the first time · "
            f"**{result.usage:,}** told of usage reported meanwhile"
        )
        return result
