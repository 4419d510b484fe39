"""The `lifecycle` command: dev, worker, api, migrate, temporal-setup, reconcile, sync,
automations, templates, segments, keys."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import getpass
import logging
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, NoReturn

import uvicorn
from pydantic import SecretStr, ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client, WorkflowFailureError
from temporalio.worker import Worker

from stripe_lifecycle.api.app import create_app
from stripe_lifecycle.domain import ids
from stripe_lifecycle.domain.automations import (
    PACKAGED_DEFAULTS,
    Automation,
    AutomationsError,
)
from stripe_lifecycle.domain.segments import SegmentsError
from stripe_lifecycle.mail.preview import (
    PreviewError,
    default_sample,
    find_automation,
    parse_event,
    render_preview,
    sample_event,
)
from stripe_lifecycle.mail.templates import Brand, TemplateRenderer, load_checked_automations
from stripe_lifecycle.payload_codec import data_converter
from stripe_lifecycle.segments_cli import SEGMENT_COMMANDS, add_segment_commands
from stripe_lifecycle.settings import (
    LINK_SECRET_MIN_LENGTH,
    ConfigurationError,
    Settings,
    get_settings,
    hashed_key,
    weak_secret,
)
from stripe_lifecycle.storage import migrate
from stripe_lifecycle.storage.db import create_engine, create_sessionmaker
from stripe_lifecycle.storage.lookup import customers_by_email
from stripe_lifecycle.sync_control import root_cause, start_sync
from stripe_lifecycle.sync_progress import SYNC_POLL_SECONDS, follow_sync
from stripe_lifecycle.temporal_setup import (
    cancel_paused_instances,
    connect,
    ensure_reconcile_schedule,
    ensure_segment_sweep_schedule,
    register_search_attributes,
    start_dev_server,
    stop_process,
    try_connect,
    wait_for_server,
)
from stripe_lifecycle.worker import build_workers
from stripe_lifecycle.workflows.reconcile import ReconcileInput, StripeReconcileWorkflow

log = logging.getLogger("stripe_lifecycle")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: we stop the API and worker together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _api_server(settings: Settings) -> _Server:
    config = uvicorn.Config(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level="info",
        access_log=False,
        # Longer than the 60 s idle timeout of common load balancers, so the proxy, not
        # us, closes idle keep-alive connections (otherwise requests race the close).
        timeout_keep_alive=75,
    )
    return _Server(config)


async def _serve(
    settings: Settings,
    *,
    api: bool,
    workers: list[Worker],
    after_start: Coroutine[Any, Any, object] | None = None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks: list[asyncio.Task[None]] = []
    server = _api_server(settings) if api else None
    # What is loaded and built by now (modules, the app, the workers, their compiled
    # workflow code) lives as long as the process: out of the collector's generations, a
    # full collection, which would walk it all each time, walks only what came after.
    gc.collect()
    gc.freeze()
    if server is not None:
        tasks.append(asyncio.create_task(server.serve()))
    tasks += [asyncio.create_task(worker.run()) for worker in workers]
    # Not among `tasks`: its end (or failure, which it logs) must not stop the process.
    follow_up = asyncio.create_task(_logged(after_start)) if after_start is not None else None
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    log.info("shutting down")
    if server is not None:
        server.should_exit = True
    await asyncio.gather(*(worker.shutdown() for worker in workers))
    await asyncio.gather(*tasks, return_exceptions=True)
    if follow_up is not None:
        follow_up.cancel()
    stopper.cancel()
    for task in done:
        if task is not stopper and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def _logged(work: Coroutine[Any, Any, object]) -> None:
    try:
        await work
    except Exception:
        log.exception("a start-up task failed; the process goes on")


def _workers_and_start_up(
    client: Client, settings: Settings, engine: AsyncEngine
) -> tuple[list[Worker], Coroutine[Any, Any, None]]:
    """The workers, and what to do once they are up (`_start_up`)."""
    _, automations = load_checked_automations(settings)
    workers = build_workers(client, settings, create_sessionmaker(engine), automations=automations)
    return workers, _start_up(client, settings, automations)


async def _start_up(client: Client, settings: Settings, automations: list[Automation]) -> None:
    """Stop paused automations' instances; create or update the segment sweep Schedule,
    and the reconciliation Schedule once Stripe can be read (without a key every pass
    would fail, an hourly red run)."""
    await cancel_paused_instances(client, automations)
    await ensure_segment_sweep_schedule(
        client, settings.task_queue, settings.segment_sweep_interval
    )
    if settings.stripe_api_key is None:
        log.info("no LIFECYCLE_STRIPE_API_KEY: the reconciliation schedule is not set up")
        return
    await ensure_reconcile_schedule(
        client, settings.task_queue, settings.reconcile_interval, settings.reconcile_lookback
    )


def _dev_link_secret(data_dir: Path) -> str:
    # Kept in the data dir so links in mail sent by earlier runs keep working.
    path = data_dir / "link-secret"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    secret = path.read_text().strip()
    # Held to the rule of LIFECYCLE_LINK_SECRET: the file may have been edited by hand.
    if weak := weak_secret(secret, LINK_SECRET_MIN_LENGTH):
        raise ConfigurationError(
            f"the link secret in {path} {weak}: delete the file to have a new one made "
            "(links in mail sent so far stop working), or set LIFECYCLE_LINK_SECRET"
        )
    return secret


async def cmd_dev(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.link_secret is None:
        secret = SecretStr(_dev_link_secret(settings.data_dir))
        settings = settings.model_copy(update={"link_secret": secret})
    process = None
    converter = data_converter(settings.payload_codec())
    client = await try_connect(
        settings.temporal_address, settings.temporal_namespace, converter=converter
    )
    if client is not None:
        log.info("using the Temporal server already running at %s", settings.temporal_address)
        await register_search_attributes(client, settings.temporal_namespace)
    else:
        address = f"127.0.0.1:{settings.temporal_port}"
        log.info("starting the Temporal dev server on %s (Web UI on %d)", address, settings.ui_port)
        process = start_dev_server(
            settings.data_dir,
            settings.temporal_port,
            settings.ui_port,
            settings.temporal_namespace,
            settings.data_dir / "temporal.log",
        )
        settings = settings.model_copy(update={"temporal_address": address})
    try:
        if process is not None:
            client = await wait_for_server(
                settings.temporal_address, settings.temporal_namespace, process, converter=converter
            )
        assert client is not None
        await migrate.upgrade(settings.database_url)
        if settings.stripe_webhook_secret is None:
            log.warning(
                "LIFECYCLE_STRIPE_WEBHOOK_SECRET is not set: webhooks will be refused. "
                "Set it to the whsec_... secret `stripe listen` prints."
            )
        engine = create_engine(settings.database_url)
        try:
            workers, start_up = _workers_and_start_up(client, settings, engine)
            log.info(
                "ready: API http://%s:%d (docs at /docs), Temporal UI http://localhost:%d",
                settings.api_host,
                settings.api_port,
                settings.ui_port,
            )
            await _serve(settings, api=True, workers=workers, after_start=start_up)
        finally:
            await engine.dispose()
    finally:
        if process is not None:
            stop_process(process)


async def cmd_worker(settings: Settings) -> None:
    client = await connect(settings)
    # Every database call of the worker's is an activity's, retried if it fails.
    engine = create_engine(settings.database_url, ping=False)
    try:
        workers, start_up = _workers_and_start_up(client, settings, engine)
        await _serve(settings, api=False, workers=workers, after_start=start_up)
    finally:
        await engine.dispose()


async def cmd_api(settings: Settings) -> None:
    await _serve(settings, api=True, workers=[])


async def cmd_migrate(settings: Settings) -> None:
    await migrate.upgrade(settings.database_url)
    log.info("database at head")


async def cmd_temporal_setup(settings: Settings) -> None:
    client = await connect(settings)
    added = await register_search_attributes(client, settings.temporal_namespace)
    log.info("search attributes added: %s", ", ".join(added) if added else "none (all present)")


async def cmd_reconcile(settings: Settings) -> None:
    client = await connect(settings)
    lookback = settings.reconcile_lookback
    started = int(time.time())
    # The workers run the pass, as they run the scheduled ones; this process waits for it.
    try:
        result = await client.execute_workflow(
            StripeReconcileWorkflow.run,
            ReconcileInput(lookback_seconds=int(lookback.total_seconds())),
            id=ids.reconcile_now_id(started),
            task_queue=settings.task_queue,
            static_summary="Stripe events read back into the webhook inbox (by hand)",
        )
    except WorkflowFailureError as exc:
        raise SystemExit(f"reconciliation failed: {root_cause(exc)}") from exc
    if result.sync_started:
        print(
            "the last reconciliation is older than Stripe keeps events (30 days): started "
            f"{ids.sync_workflow_id(None)} to read the account's current state instead"
        )
    print(
        f"read {result.events_seen} events of the last {lookback} from Stripe; "
        f"{result.events_recovered} had not arrived by webhook and are now in the inbox"
    )


async def cmd_sync(args: argparse.Namespace, settings: Settings) -> None:
    client = await connect(settings)
    started = await start_sync(
        client,
        settings.task_queue,
        account=args.account,
        start_lifecycles=args.start_lifecycles,
    )
    workflow_id = started.workflow_id
    if started.running_already:
        print(f"{workflow_id} is running already; following it", file=sys.stderr)
    elif started.resumed:
        print(f"{workflow_id} resumes where it stopped", file=sys.stderr)
    try:
        progress = await follow_sync(client, workflow_id, SYNC_POLL_SECONDS)
    except WorkflowFailureError as exc:
        raise SystemExit(f"sync stopped: {root_cause(exc)}") from exc
    print(
        ", ".join(
            f"{r.resource} {r.read:,} ({r.changed:,} new or changed)" for r in progress.resources
        )
        + f"; backfill delivered to {progress.customers_delivered:,} customers"
        + f"; Stripe rate-limited {progress.rate_limited} requests"
    )


async def cmd_automations_validate(settings: Settings) -> None:
    path, automations = load_checked_automations(settings)
    print(f"{path}: {len(automations)} automations, all valid")


async def cmd_automations_list(settings: Settings) -> None:
    path, automations = load_checked_automations(settings)
    print(f"# {path}")
    for a in sorted(automations, key=lambda a: (a.lifecycle, a.priority)):
        state = "enabled" if a.enabled else f"paused (on_pause: {a.on_pause})"
        print(f"{a.lifecycle:<16} {a.priority:>4}  {a.name}  [{state}]")
        print(f"{'':<22}filters: {a.filters.describe()}")
        if a.trigger_segment is not None:
            reentry = (
                "never" if a.reentry_seconds is None else f"after {a.reentry_seconds // 86_400}d"
            )
            print(
                f"{'':<22}trigger: entering segment {a.trigger_segment} (re-entry: {reentry}; "
                f"leaving ends it: {'yes' if a.exit_on_leave else 'no'}; existing members: "
                f"{'enter' if a.enter_existing else 'left alone'})"
            )
        if a.holdout_basis_points:
            print(f"{'':<22}holdout: {a.holdout_percent:g}% of customers get no email")
        if a.send_window is not None:
            print(f"{'':<22}send window: {a.send_window.describe()} (customer's local time)")
        elif a.any_time:
            print(f"{'':<22}send window: any time")
        if a.offer is not None:
            print(
                f"{'':<22}offer: {a.offer.description}"
                + (f" ({a.offer.code})" if a.offer.code else "")
            )
        for step in a.steps:
            print(f"{'':<22}- {step.describe()}")


async def cmd_automations_init(settings: Settings) -> None:
    target = settings.automations
    if target.exists():
        raise SystemExit(f"{target} exists already; edit it, or remove it to start again")
    shutil.copyfile(PACKAGED_DEFAULTS, target)
    print(f"wrote the default automations to {target}")


AUTOMATION_COMMANDS = {
    "validate": (cmd_automations_validate, "check the automations file and its templates"),
    "list": (cmd_automations_list, "show the automations in force, by lifecycle and priority"),
    "init": (cmd_automations_init, "write the default automations to LIFECYCLE_AUTOMATIONS"),
}


# Their arguments come first: `main` binds them, as the other commands take settings only.
async def cmd_templates_list(_args: argparse.Namespace, settings: Settings) -> None:
    for name in TemplateRenderer(Brand.from_settings(settings), settings.templates_dir).names():
        print(name)


async def cmd_templates_render(args: argparse.Namespace, settings: Settings) -> None:
    renderer = TemplateRenderer(Brand.from_settings(settings), settings.templates_dir)
    try:
        if args.fixture is None:
            event = sample_event(default_sample(args.template))
        else:
            event = parse_event(args.fixture.read_text(encoding="utf-8"), str(args.fixture))
        automation = None
        if args.automation is not None:
            _, automations = load_checked_automations(settings)
            automation = find_automation(automations, args.automation)
        preview = render_preview(
            renderer,
            args.template,
            event,
            public_url=settings.public_url,
            automation=automation,
            unsubscribe_billing=settings.unsubscribe_billing,
        )
    except OSError as exc:
        raise SystemExit(f"cannot read {args.fixture}: {exc.strerror}") from exc
    except PreviewError as exc:
        raise SystemExit(str(exc)) from exc
    # Notes on stderr, so `--part html > preview.html` is the email alone.
    if args.fixture is None:
        print(f"# the bundled sample {event['type']} event", file=sys.stderr)
    for what, why in preview.samples.items():
        print(f"# sample {what}: {why}", file=sys.stderr)
    email = preview.email
    if args.part == "all":
        print(f"Subject: {email.subject}\n\n--- text ---\n{email.text}\n--- html ---")
        sys.stdout.write(email.html)
    else:
        parts = {"subject": email.subject + "\n", "text": email.text, "html": email.html}
        sys.stdout.write(parts[args.part])


async def cmd_customers_find(args: argparse.Namespace, settings: Settings) -> None:
    """The customers with an email (ignoring case), from the database: no Temporal needed."""
    engine = create_engine(settings.database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            found = await customers_by_email(session, args.email)
    except (DBAPIError, OSError) as exc:
        reason = exc.orig if isinstance(exc, DBAPIError) else exc
        raise SystemExit(f"cannot read the database at LIFECYCLE_DATABASE_URL: {reason}") from exc
    finally:
        await engine.dispose()
    if not found:
        raise SystemExit(f"no customer has the email {args.email}")
    for customer in found:
        workflow_id = ids.customer_workflow_id(customer.customer_id)
        state = "deleted" if customer.deleted else customer.status
        print(f"{customer.customer_id}  {state}  {settings.temporal_ui_link(workflow_id)}")


def cmd_keys_hash() -> int:
    """Print the `sha256:<hex>` form of a key read from stdin (hidden when typed), for
    LIFECYCLE_API_KEYS: `admin:sha256:...` lets the environment hold no usable key."""
    if sys.stdin.isatty():
        key = getpass.getpass("API key (not echoed): ")
    else:
        key = sys.stdin.readline()
    key = key.strip()
    if not key:
        print("no key on stdin", file=sys.stderr)
        return 2
    print(hashed_key(key))
    return 0


TEMPLATE_COMMANDS = {
    "list": (cmd_templates_list, "the email templates in use, shipped and overridden"),
    "render": (cmd_templates_render, "render a template against a Stripe event (a JSON file)"),
}

COMMANDS = {
    "dev": (cmd_dev, "everything on one machine: Temporal dev server + UI, worker, API, SQLite"),
    "worker": (cmd_worker, "run the Temporal worker"),
    "api": (cmd_api, "run the HTTP API (webhooks, /v1)"),
    "migrate": (cmd_migrate, "apply database migrations"),
    "temporal-setup": (cmd_temporal_setup, "register our search attributes on a Temporal cluster"),
    "reconcile": (
        cmd_reconcile,
        "read Stripe's recent events now and store those no webhook delivered",
    ),
}


# Commands that connect a Temporal client, do one thing and end. The client's Rust
# threads can outlive the event loop and abort CPython's teardown ("PyGILState_Release",
# temporalio/sdk-python#300), so these end the process once their output is flushed.
ONE_SHOT_CLIENTS = frozenset({"reconcile", "temporal-setup", "sync"})


def _exit_now(code: int) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lifecycle", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text)
    automations = sub.add_parser("automations", help="validate, list or create automations")
    automations_sub = automations.add_subparsers(dest="action", required=True)
    for name, (_, help_text) in AUTOMATION_COMMANDS.items():
        automations_sub.add_parser(name, help=help_text)
    sync = sub.add_parser(
        "sync",
        help="read the Stripe account's customers, subscriptions, invoices and charges "
        "into the customer workflows (no email for the past), with a progress bar",
    )
    sync.add_argument(
        "--start-lifecycles",
        action="store_true",
        help="also start lifecycles for situations in progress now (running trials, "
        "scheduled cancellations, open failed invoices), from their current step",
    )
    sync.add_argument("--account", help="a connected account (acct_...) to sync instead")
    templates = sub.add_parser("templates", help="list email templates, preview one")
    templates_sub = templates.add_subparsers(dest="action", required=True)
    templates_sub.add_parser("list", help=TEMPLATE_COMMANDS["list"][1])
    render = templates_sub.add_parser("render", help=TEMPLATE_COMMANDS["render"][1])
    render.add_argument("template", help="<lifecycle>/<purpose>, e.g. dunning/payment-failed")
    render.add_argument(
        "--fixture", type=Path, help="a Stripe event JSON file (default: a bundled sample event)"
    )
    render.add_argument("--part", choices=("all", "subject", "html", "text"), default="all")
    render.add_argument("--automation", help="use this automation's offer (default: a sample)")
    add_segment_commands(sub)
    customers = sub.add_parser("customers", help="find customers in the database")
    customers_sub = customers.add_subparsers(dest="action", required=True)
    find = customers_sub.add_parser(
        "find", help="the customers with an email (ignoring case), with Temporal UI links"
    )
    find.add_argument("email")
    keys = sub.add_parser("keys", help="prepare API keys for LIFECYCLE_API_KEYS")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    keys_sub.add_parser(
        "hash",
        help="read a key from stdin and print its sha256: form "
        "(configure it as role:sha256:...; callers still send the key itself)",
    )
    args = parser.parse_args(argv)
    if args.command == "keys":
        # Needs no configuration: it runs where the key is made, not where it is used.
        return cmd_keys_hash()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = get_settings()
    except ValidationError as exc:
        print("configuration error:", file=sys.stderr)
        for error in exc.errors():
            name = "LIFECYCLE_" + "_".join(str(p) for p in error["loc"]).upper()
            print(f"  {name}: {error['msg']}", file=sys.stderr)
        return 2
    if args.command == "automations":
        command, _ = AUTOMATION_COMMANDS[args.action]
    elif args.command == "templates":
        command = functools.partial(TEMPLATE_COMMANDS[args.action][0], args)
    elif args.command == "sync":
        command = functools.partial(cmd_sync, args)
    elif args.command == "segments":
        command = functools.partial(SEGMENT_COMMANDS[args.action][0], args)
    elif args.command == "customers":
        command = functools.partial(cmd_customers_find, args)
    else:
        command, _ = COMMANDS[args.command]
    try:
        if args.command in ("worker", "api"):
            settings.link_secret_bytes()
        if args.command in ("dev", "worker", "api"):
            # A bad automation must stop the start, not surface at 3 a.m. in a workflow.
            load_checked_automations(settings)
        asyncio.run(command(settings))
        if args.command in ONE_SHOT_CLIENTS:
            _exit_now(0)
    except SystemExit as exc:
        if args.command not in ONE_SHOT_CLIENTS:
            raise
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        _exit_now(exc.code if isinstance(exc.code, int) else 1)
    except AutomationsError as exc:
        print("invalid automations:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except SegmentsError as exc:
        print("invalid segments:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except ConfigurationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    return 0
