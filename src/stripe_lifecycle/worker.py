"""The Temporal worker: the only place workflows and activities are wired to real clients."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from .activities.mail import MailActivities
from .activities.snapshots import SnapshotActivities
from .db import SessionMaker
from .mail.templates import Brand, TemplateRenderer
from .mail.transports import build_transport
from .settings import Settings
from .workflows.customer import CustomerWorkflow

WORKFLOWS = [CustomerWorkflow]


def sandbox_runner() -> SandboxedWorkflowRunner:
    # Our pure modules are deterministic and import nothing heavy: load them once, not
    # again in every workflow sandbox (the workflows also mark them passed through).
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(
            "stripe_lifecycle.messages",
            "stripe_lifecycle.billing",
            "stripe_lifecycle.contract",
        )
    )


def build_worker(
    client: Client,
    settings: Settings,
    sessionmaker: SessionMaker,
    *,
    task_queue: str | None = None,
) -> Worker:
    snapshots = SnapshotActivities(sessionmaker)
    mail = MailActivities(
        build_transport(settings),
        TemplateRenderer(Brand.from_settings(settings), settings.templates_dir),
        sessionmaker,
        sender=settings.mail_from,
        test_mode_allowed_domains=settings.test_mode_domains(),
        public_url=settings.public_url,
        link_secret=settings.link_secret_bytes(),
    )
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=WORKFLOWS,
        activities=[snapshots.persist_snapshot, mail.send_email],
        workflow_runner=sandbox_runner(),
        max_cached_workflows=settings.worker_max_cached_workflows,
        max_concurrent_workflow_tasks=settings.worker_max_concurrent_workflow_tasks,
        max_concurrent_activities=settings.worker_max_concurrent_activities,
    )
