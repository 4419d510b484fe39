"""The segment sweep on the time-skipping server: a month passes in an instant, and the
sweep tells exactly the customers whose segments turned with time alone (one reaching 90
days on Pro, one whose last click grew older than 14 days, one who clicked since),
reading only the segments with time conditions, and the one whose reported usage its
workflow never heard of; stand-in customer workflows record what they are told."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import ScheduleActionStartWorkflow, ScheduleOverlapPolicy, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from stripe_lifecycle.domain import ids
from stripe_lifecycle.storage.models import CustomerSegmentFacts
from stripe_lifecycle.storage.segments import record_usage
from stripe_lifecycle.temporal_setup import ensure_segment_sweep_schedule
from stripe_lifecycle.workflows.segments import SegmentSweepWorkflow, SweepInput

from .conftest import WorkerRig
from .segment_helpers import click
from .signal_recorder import SegmentsSignalRecorder
from .workflow_helpers import DAY, pause_as_operator, schedule_in_effect

SEGMENTS = """
segments:
  - name: long-time-pro
    description: Pro for 90 days or more
    where:
      all:
        - {field: plan, eq: Pro}
        - {field: subscription_age_days, gte: 90}
  - name: engaged
    description: Clicked an email in the last 14 days
    where: {field: clicked_within_days, lte: 14}
  - name: pro
    description: Everyone on Pro (no time condition)
    where: {field: plan, eq: Pro}
"""


def facts(*, started: int, last_click: int | None = None) -> dict[str, Any]:
    return {
        "status": "active",
        "plan": "Pro",
        "products": ["prod_pro"],
        "prices": ["price_pro_month"],
        "currency": "usd",
        "mrr": {"usd": 4900},
        "ltv": {"usd": 4900},
        "intervals": ["month"],
        "quantity": 1,
        "price_metadata": {},
        "customer_created": started,
        "subscription_started": started,
        "plan_since": started,
        "metadata": {},
        "lifecycles": [],
        "usage": {},
        "last_click_at": last_click,
    }


@pytest.fixture
async def worker(skipping_rig: WorkerRig, tmp_path: Path) -> AsyncIterator[Worker]:
    (tmp_path / "segments.yaml").write_text(SEGMENTS)
    (tmp_path / "automations.yaml").write_text("automations: []\n")
    async with skipping_rig.worker(
        segments=tmp_path / "segments.yaml", automations=tmp_path / "automations.yaml"
    ) as w:
        yield w


@pytest.mark.usefixtures("worker")
async def test_a_month_later_the_sweep_tells_the_customers_whose_segments_turned(
    skipping_rig: WorkerRig,
) -> None:
    env = skipping_rig.env
    now = int((await env.get_current_time()).timestamp())
    tag = uuid.uuid4().hex[:8]
    customers = {
        # Pro for 60 days: 90 in 30 days.
        "ages": (facts(started=now - 60 * DAY), ["pro"]),
        # Pro for 10 days: still under 90 a month on.
        "young": (facts(started=now - 10 * DAY), ["pro"]),
        # Clicked 10 days ago: not within 14 days in 4 days' time.
        "cools": (facts(started=now - 10 * DAY, last_click=now - 10 * DAY), ["engaged", "pro"]),
        # Had never clicked when last evaluated; clicks a day after the sweep below.
        "clicks": (facts(started=now - 10 * DAY), ["pro"]),
        # Reported usage the usage API could not tell its workflow (Temporal was down).
        "reported": (facts(started=now - 10 * DAY), ["pro"]),
    }
    async with skipping_rig.sessionmaker() as session:
        for name, (row, segments) in customers.items():
            session.add(
                CustomerSegmentFacts(
                    customer_id=f"cus_{name}_{tag}",
                    facts=row,
                    segments=segments,
                    evaluated_at=datetime.now(UTC) - timedelta(hours=1),
                )
            )
        await record_usage(session, f"cus_reported_{tag}", "seats_used", 9)
        await session.commit()
    await click(
        skipping_rig.sessionmaker, f"cus_cools_{tag}", datetime.fromtimestamp(now - 10 * DAY, UTC)
    )
    recorder_queue = f"{skipping_rig.task_queue}-customers"
    # The stand-ins wait forever: time moves only by the month this test sleeps, not to
    # whenever the server would time them out.
    with env.auto_time_skipping_disabled():
        await _sweep_a_month_later(skipping_rig, tag, list(customers), recorder_queue)


async def _sweep_a_month_later(
    skipping_rig: WorkerRig, tag: str, customers: list[str], recorder_queue: str
) -> None:
    env = skipping_rig.env
    async with Worker(env.client, task_queue=recorder_queue, workflows=[SegmentsSignalRecorder]):
        stand_ins: dict[str, WorkflowHandle[Any, Any]] = {
            name: await env.client.start_workflow(
                SegmentsSignalRecorder.run,
                id=ids.customer_workflow_id(f"cus_{name}_{tag}"),
                task_queue=recorder_queue,
            )
            for name in customers
        }

        async def sweep(run: str) -> Any:
            return await env.client.execute_workflow(
                SegmentSweepWorkflow.run,
                SweepInput(),
                id=f"sweep-{tag}-{run}",
                task_queue=skipping_rig.task_queue,
            )

        # Nothing has turned yet.
        at_once = await sweep("now")
        assert (at_once.customers, at_once.changed, at_once.offered) == (5, 0, 0)
        assert (at_once.first, at_once.usage) == (0, 1)
        await env.sleep(timedelta(days=30))
        await click(skipping_rig.sessionmaker, f"cus_clicks_{tag}", await env.get_current_time())
        await env.sleep(timedelta(days=1))
        later = await sweep("later")
        assert (later.customers, later.changed) == (5, 3)
        told = {
            name: [s.reason for s in await handle.query(SegmentsSignalRecorder.signals)]
            for name, handle in stand_ins.items()
        }
    assert told == {
        "ages": ["time passed"],
        "young": [],
        "cools": ["time passed"],
        "clicks": ["time passed"],
        # Told at every sweep until its workflow evaluates again (this stand-in does not).
        "reported": ["usage reported", "usage reported"],
    }


async def test_the_sweep_schedule_is_created_once_and_follows_the_interval(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = dev_env.client
    await ensure_segment_sweep_schedule(client, task_queue, timedelta(hours=1))
    handle = client.get_schedule_handle(ids.SEGMENT_SWEEP_SCHEDULE_ID)
    try:
        await schedule_in_effect(handle, timedelta(hours=1), task_queue)
        await pause_as_operator(handle, "paused by the operator")
        # A restart with another LIFECYCLE_SEGMENT_SWEEP_INTERVAL: the same Schedule.
        await ensure_segment_sweep_schedule(client, task_queue, timedelta(minutes=15))
        schedule = await schedule_in_effect(handle, timedelta(minutes=15), task_queue)
        assert schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
        assert schedule.state.paused and schedule.state.note == "paused by the operator"
        action = schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert (action.workflow, action.task_queue) == ("SegmentSweepWorkflow", task_queue)
    finally:
        await handle.delete()
