"""The Temporal worker: the only place workflows and activities are wired to real clients."""

from temporalio.bridge.proto.workflow_activation import WorkflowActivation
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.client import Client
from temporalio.converter import (
    ActivitySerializationContext,
    DataConverter,
    SerializationContext,
    StorageDriverStoreContext,
    WorkflowSerializationContext,
)
from temporalio.worker import Worker, WorkerConfig, WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions
from temporalio.workflow import Info

from stripe_lifecycle.activities.conversions import ConversionActivities
from stripe_lifecycle.activities.mail import MailActivities
from stripe_lifecycle.activities.outbound import OutboundActivities
from stripe_lifecycle.activities.reconcile import ReconcileActivities
from stripe_lifecycle.activities.segments import SegmentActivities, SegmentSweepActivities
from stripe_lifecycle.activities.selection import AutomationActivities
from stripe_lifecycle.activities.snapshots import SnapshotActivities
from stripe_lifecycle.activities.stripe_actions import StripeActivities
from stripe_lifecycle.activities.stripe_reads import StripeReadActivities
from stripe_lifecycle.activities.sync import SyncActivities
from stripe_lifecycle.domain import contract
from stripe_lifecycle.domain.attribution import Policy
from stripe_lifecycle.domain.automations import Automation
from stripe_lifecycle.domain.segments import SegmentsConfig, load_segments
from stripe_lifecycle.domain.send_windows import parse_window
from stripe_lifecycle.intake.forwarder import ForwarderConfig, temporal_delivery
from stripe_lifecycle.mail.templates import Brand, TemplateRenderer, load_checked_automations
from stripe_lifecycle.mail.transports import build_transport
from stripe_lifecycle.settings import Settings
from stripe_lifecycle.storage.db import SessionMaker
from stripe_lifecycle.stripe_api.client import Pacer, build_stripe_client
from stripe_lifecycle.workflows.customer import CustomerWorkflow
from stripe_lifecycle.workflows.lifecycles import LIFECYCLE_WORKFLOWS
from stripe_lifecycle.workflows.reconcile import StripeReconcileWorkflow
from stripe_lifecycle.workflows.segments import SegmentSweepWorkflow
from stripe_lifecycle.workflows.sync import StripeSyncWorkflow

# Passed through the workflow sandbox whole (`sandbox_runner`).
PACKAGE = "stripe_lifecycle"

WORKFLOWS: list[type] = [
    CustomerWorkflow,
    *LIFECYCLE_WORKFLOWS.values(),
    StripeReconcileWorkflow,
    StripeSyncWorkflow,
    SegmentSweepWorkflow,
]


# One of each kind of context a workflow's payloads can be given.
_SAMPLE_CONTEXTS: tuple[SerializationContext, ...] = (
    WorkflowSerializationContext(namespace="default", workflow_id="customer-cus_1"),
    ActivitySerializationContext(
        namespace="default",
        workflow_id="customer-cus_1",
        workflow_type="CustomerWorkflow",
        activity_type="persist_and_evaluate",
        activity_id="1",
        activity_task_queue="stripe-lifecycle",
        is_local=True,
    ),
)


def sandbox_runner(converter: DataConverter) -> SandboxedWorkflowRunner:
    """The sandbox our workflows run in, for a worker or replayer converting with
    `converter`, which must take no serialization context (`ContextFreeSandbox`)."""
    taking = [
        type(context).__name__
        for context in _SAMPLE_CONTEXTS
        if converter.with_context(context) is not converter
    ]
    if taking:
        raise ValueError(
            f"the data converter reads serialization contexts ({', '.join(taking)}), "
            "which ContextFreeSandbox does not give it"
        )
    if converter.external_storage is not None:
        raise ValueError(
            "the data converter stores payloads externally, which needs the workflow's "
            "store context, and ContextFreeSandbox gives none"
        )
    # Our whole package is imported once, outside every sandbox, and each run's sandbox
    # takes its workflow class from there. The stock sandbox imports a workflow's module
    # afresh for every run it creates (a new customer, or one evicted and replayed):
    # executing the module and `@workflow.defn`'s inspection of its classes were a fifth of
    # the worker's CPU while applying webhooks (`bench.ingest --py-spy`). What that reload
    # guards, ruff guards where the code is written and a test where it is imported: no
    # clock, randomness or I/O in `workflows/` (banned-api, `pyproject.toml`), and no state
    # in their modules a run could change (`tests/test_workflow_modules.py`).
    return ContextFreeSandbox(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(PACKAGE)
    )


class ContextFreeSandbox(SandboxedWorkflowRunner):
    """The workflow sandbox, whose instances tell the worker that no payload needs a
    serialization context, for a converter that takes none.

    Before it encodes or decodes each list of payloads of an activation or a completion,
    the worker asks the workflow instance which context the payloads belong to (the
    workflow's, or that of the activity or child a command is for), six passes over each
    activation and completion. The sandbox answers every such question by executing a
    string of Python inside the sandbox under its import hooks: a tenth of the worker's
    busy time while applying webhooks (py-spy, `bench.ingest --py-spy`), for an answer
    our converter and codec never read (`DataConverter.with_context` returns the
    converter itself). Answering "none" makes the worker use that same converter without
    entering the sandbox; activations still run in it, unchanged.
    """

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _ContextFreeInstance(super().create_instance(det))


class _ContextFreeInstance(WorkflowInstance):
    def __init__(self, inner: WorkflowInstance) -> None:
        self._inner = inner

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        return self._inner.activate(act)

    def get_serialization_context(self, command_info: object) -> None:  # noqa: ARG002 (the signature is Temporal's)
        return None

    def get_external_store_context(self, command_info: object) -> StorageDriverStoreContext:  # noqa: ARG002 (the signature is Temporal's)
        return StorageDriverStoreContext(target=None)

    def get_info(self) -> Info:
        return self._inner.get_info()

    def get_thread_id(self) -> int | None:
        return self._inner.get_thread_id()


def worker_config(
    client: Client,
    settings: Settings,
    sessionmaker: SessionMaker,
    *,
    task_queue: str | None = None,
    automations: list[Automation] | None = None,
    segments: SegmentsConfig | None = None,
) -> WorkerConfig:
    """What the main worker is made of: every workflow and activity on real clients."""
    if automations is None:
        _, automations = load_checked_automations(settings)
    if segments is None:
        segments = load_segments(settings.segments)
    snapshots = SnapshotActivities(sessionmaker)
    choices = AutomationActivities(
        automations,
        default_window=parse_window(settings.send_window),
        default_timezone=settings.default_timezone,
    )
    segment_activities = SegmentActivities(
        sessionmaker, segments, automations, writer=snapshots.writer, choices=choices
    )
    sweep = SegmentSweepActivities(client, sessionmaker, segments, automations)
    mail = MailActivities(
        build_transport(settings),
        TemplateRenderer(Brand.from_settings(settings), settings.templates_dir),
        sessionmaker,
        sender=settings.mail_from,
        test_mode_allowed_domains=settings.test_mode_domains(),
        public_url=settings.public_url,
        link_secret=settings.link_secret_bytes(),
        team_email=settings.team_email,
        team_slack_webhook=settings.team_slack_webhook,
        unsubscribe_billing=settings.unsubscribe_billing,
        marketing_cap=settings.marketing_cap,
        marketing_cap_hours=settings.marketing_cap_hours,
    )
    conversions = ConversionActivities(
        sessionmaker,
        Policy.build(
            settings.attribution_model,
            settings.attribution_window_days,
            settings.attribution_windows,
        ),
    )
    stripe_client = build_stripe_client(settings)
    stripe_actions = StripeActivities(stripe_client)
    outbound = OutboundActivities(settings.outbound_webhook_secret, settings.outbound_hosts())
    stripe_reads = StripeReadActivities(stripe_client)
    reconciliation = ReconcileActivities(stripe_client, sessionmaker)
    queue = task_queue or settings.task_queue
    sync = _sync_activities(client, settings, sessionmaker, queue)
    return WorkerConfig(
        client=client,
        task_queue=queue,
        workflows=WORKFLOWS,
        activities=[
            snapshots.persist_snapshot,
            mail.send_email,
            mail.notify_team,
            choices.choose_automation,
            choices.send_time,
            choices.event_triggers,
            conversions.record_conversion,
            stripe_actions.stripe_action,
            outbound.send_webhook,
            # Runs begun before reads had a task queue of their own read here.
            stripe_reads.read_stripe,
            # Passes begun before reads had a task queue of their own read here.
            reconciliation.reconcile_events_page,
            reconciliation.record_reconciliation,
            reconciliation.reconciliation_gap,
            sync.sync_deliver,
            segment_activities.evaluate_segments,
            segment_activities.persist_and_evaluate,
            segment_activities.store_batch,
            segment_activities.record_instance,
            segment_activities.record_instances_mrr,
            sweep.sweep_segments,
        ],
        workflow_runner=sandbox_runner(client.data_converter),
        max_cached_workflows=settings.worker_max_cached_workflows,
        max_concurrent_workflow_tasks=settings.worker_max_concurrent_workflow_tasks,
        max_concurrent_activities=settings.worker_max_concurrent_activities,
    )


def build_stripe_reads_worker(
    client: Client, settings: Settings, sessionmaker: SessionMaker, *, task_queue: str | None = None
) -> Worker:
    """The worker of Stripe reads (sync and reconciliation pages, what the customer
    workflows read of coupons, prices and invoice payments). Temporal hands out
    this queue's tasks at LIFECYCLE_STRIPE_READ_RATE a second on average across every
    worker, so adding workers does not raise the rate; it hands them out in bursts, so
    each worker also spaces its own reads at that rate (`Pacer`)."""
    queue = task_queue or settings.task_queue
    # Every read of this worker takes turns at one pacer, at the queue's rate.
    pacer = Pacer(settings.stripe_read_rate)
    sync = _sync_activities(client, settings, sessionmaker, queue, pacer)
    stripe_client = build_stripe_client(settings, pacer)
    reconciliation = ReconcileActivities(stripe_client, sessionmaker)
    return Worker(
        client,
        task_queue=contract.stripe_reads_queue(queue),
        activities=[
            sync.sync_account_info,
            sync.sync_list_page,
            reconciliation.reconcile_events_page,
            StripeReadActivities(stripe_client).read_stripe,
        ],
        max_task_queue_activities_per_second=settings.stripe_read_rate,
    )


def build_workers(
    client: Client,
    settings: Settings,
    sessionmaker: SessionMaker,
    *,
    task_queue: str | None = None,
    automations: list[Automation] | None = None,
    segments: SegmentsConfig | None = None,
) -> list[Worker]:
    """Every worker a `lifecycle worker` process runs."""
    return [
        Worker(
            **worker_config(
                client,
                settings,
                sessionmaker,
                task_queue=task_queue,
                automations=automations,
                segments=segments,
            )
        ),
        build_stripe_reads_worker(client, settings, sessionmaker, task_queue=task_queue),
    ]


def _sync_activities(
    client: Client,
    settings: Settings,
    sessionmaker: SessionMaker,
    task_queue: str,
    pacer: Pacer | None = None,
) -> SyncActivities:
    # Backfill reaches the customer workflows the way the forwarder delivers webhooks.
    deliver = temporal_delivery(
        client, ForwarderConfig(task_queue=task_queue, index_email=settings.index_email)
    )
    return SyncActivities(build_stripe_client(settings, pacer), sessionmaker, deliver)
