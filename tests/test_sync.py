"""The historical sync end to end: `POST /v1/sync` and `lifecycle sync` against the local
Stripe-speaking server (lists newest first, cursors, `expand`, 429s, key checks), through
the worker and the customer workflows on the dev server, into this test's database.

The account is built from the project's corpus in all three API-version families, so
every rule of the backfill reads old and new shapes alike."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlmodel import col
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from stripe_lifecycle.domain import contract, ids
from stripe_lifecycle.domain.ledger import BillingSnapshot
from stripe_lifecycle.domain.sync import RESOURCES, Resource
from stripe_lifecycle.storage.db import SessionMaker
from stripe_lifecycle.storage.models import Conversion, Message, SyncedObject
from stripe_lifecycle.sync_control import start_sync, sync_status
from stripe_lifecycle.workflows.customer import CustomerWorkflow
from stripe_lifecycle.workflows.engine import LifecycleWorkflow
from stripe_lifecycle.workflows.sync import (
    LISTING,
    ResourceProgress,
    StripeSyncWorkflow,
    SyncInput,
    SyncProgress,
)

from . import corpus
from .cli_helpers import LIFECYCLE, clean_env, run_cli
from .conftest import ADMIN_KEY, LINK_SECRET, SUPPORT_KEY, running_stack, temporal_address
from .fakes import (
    STRIPE_API_KEY,
    STRIPE_KEY_WITHOUT_INVOICES,
    StripeHttpServer,
    StripeState,
    serving,
)
from .stripe_fixtures import FIXTURES_DIR, load_fixture, needs_shared

VERSIONS = ("legacy", "basil", "clover")
DAY = 86_400
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
SUPPORT = {"Authorization": f"Bearer {SUPPORT_KEY}"}


def _object(name: str, version: str) -> dict[str, Any]:
    obj: dict[str, Any] = copy.deepcopy(corpus.load(name, version)["data"]["object"])
    return obj


def _set_period(sub: dict[str, Any], start: int, end: int) -> None:
    # Before basil the period is the subscription's; since, each item's.
    if "current_period_end" in sub:
        sub["current_period_start"], sub["current_period_end"] = start, end
    for item in sub["items"]["data"]:
        if "current_period_end" in item or "current_period_end" not in sub:
            item["current_period_start"], item["current_period_end"] = start, end


@dataclass
class Expected:
    ltv: int = 0
    status: str = "active"
    mrr: int = 0


@dataclass
class Account:
    """A Stripe account of `customers` customers (versions in turn), each with one
    subscription, paid invoices and a card; some trialing, some cancelling at period end,
    some canceled, one with an open failed invoice, some with a refund."""

    state: StripeState
    now: int
    # Ids of this test's own: the customer workflows of the shared dev server outlive it.
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    expected: dict[str, Expected] = field(default_factory=dict)

    def cus(self, i: int) -> str:
        return f"cus_{self.tag}{i:04d}"

    def sub(self, i: int) -> str:
        return f"sub_{self.tag}{i:04d}"

    def build(self, customers: int) -> Account:
        for i in range(customers):
            self._customer(i, VERSIONS[i % 3])
        return self

    def _customer(self, i: int, version: str) -> None:
        now, state = self.now, self.state
        cus, sub_id, pm = self.cus(i), self.sub(i), f"pm_{self.tag}{i:04d}"
        signed_up = now - 200 * DAY + i * 60
        customer = _object("customer.created", version)
        customer.update(id=cus, created=signed_up, email=f"sync{i}@example.com", discount=None)
        customer["invoice_settings"] = {
            **customer.get("invoice_settings", {}),
            "default_payment_method": pm,
        }
        state.customers[cus] = customer
        card = _object("payment_method.attached", version)
        card.update(id=pm, customer=cus, created=signed_up)
        card["card"] = {**card["card"], "exp_month": 12, "exp_year": 2099}
        state.payment_methods[pm] = card
        kind = i % 10
        sub = _object(
            "customer.subscription.created.trialing"
            if kind == 1
            else "customer.subscription.created",
            version,
        )
        sub.update(id=sub_id, customer=cus, created=signed_up, discounts=[], discount=None)
        _set_period(sub, now - 10 * DAY, now + 20 * DAY)
        expected = Expected(mrr=2000)
        if kind == 1:
            sub.update(status="trialing", trial_start=now - 9 * DAY, trial_end=now + 5 * DAY)
            _set_period(sub, now - 9 * DAY, now + 5 * DAY)
            expected = Expected(status="trialing", mrr=0)
        elif kind == 2:
            sub.update(cancel_at_period_end=True, canceled_at=now - DAY)
        elif kind == 3:
            sub.update(status="canceled", canceled_at=now - 30 * DAY, ended_at=now - 30 * DAY)
            expected = Expected(status="canceled", mrr=0)
        state.subscriptions[sub_id] = sub
        self.expected[cus] = expected
        paid = 0 if kind == 1 else 3
        for n in range(paid):
            invoice = corpus.invoice_event(
                "invoice.paid", version, cus, created=0, subscription=sub_id
            )["data"]["object"]
            invoice.update(
                id=f"in_{self.tag}{i:04d}_{n}", created=signed_up + n * 30 * DAY, discounts=[]
            )
            state.invoices[invoice["id"]] = invoice
            expected.ltv += invoice["amount_paid"]
        if kind == 4:
            failed = corpus.invoice_event(
                "invoice.payment_failed", version, cus, created=0, subscription=sub_id
            )["data"]["object"]
            failed.update(
                id=f"in_{self.tag}{i:04d}_failed",
                created=now - 3 * DAY,
                status="open",
                attempt_count=1,
                billing_reason="subscription_cycle",
            )
            state.invoices[failed["id"]] = failed
            sub["status"] = "past_due"
            expected.status = "past_due"
        if kind == 5:
            charge = _object("charge.refunded", version)
            charge.update(id=f"ch_{self.tag}{i:04d}", customer=cus, created=signed_up + DAY)
            charge.update(amount=2000, amount_refunded=500)
            state.charges[charge["id"]] = charge
            expected.ltv -= 500


@pytest.fixture
def stripe_api() -> Iterator[StripeHttpServer]:
    with serving(StripeHttpServer(StripeState())) as server:
        yield server


@pytest.fixture
def acct(stripe_api: StripeHttpServer) -> str:
    """A connected account of this test's own: the sync's workflow id is the account's
    (`stripe-sync-{acct}`), and the dev server is shared by every test."""
    account = f"acct_T{uuid.uuid4().hex[:14]}"
    stripe_api.state.connected[account] = StripeState()
    return account


def objects(stripe_api: StripeHttpServer, acct: str) -> StripeState:
    return stripe_api.state.connected[acct]


@contextlib.asynccontextmanager
async def synced_stack(
    env: WorkflowEnvironment,
    database_url: str,
    task_queue: str,
    stripe_api: StripeHttpServer,
    api_key: str = STRIPE_API_KEY,
) -> AsyncIterator[httpx.AsyncClient]:
    async with running_stack(
        env,
        database_url,
        task_queue,
        stripe_api_key=api_key,
        stripe_api_base=stripe_api.url,
        stripe_read_rate=1000.0,
    ) as (_, http):
        yield http


async def finished(http: httpx.AsyncClient, acct: str, timeout: float = 60) -> dict[str, Any]:
    """`GET /v1/sync` once the account's sync has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = await http.get("/v1/sync", params={"account": acct}, headers=SUPPORT)
        if answer.status_code == 200 and answer.json()["status"] != "running":
            body: dict[str, Any] = answer.json()
            return body
        await asyncio.sleep(0.2)
    raise AssertionError("the sync did not end")


async def snapshot(
    client: Client,
    customer_id: str,
    settled: Callable[[BillingSnapshot], bool] = lambda snap: snap.events_applied > 0,
    timeout: float = 30,
) -> BillingSnapshot:
    """The customer workflow's snapshot once `settled` holds (by default: it has applied
    something), or as it is when `timeout` runs out."""
    handle: WorkflowHandle[CustomerWorkflow, None] = client.get_workflow_handle_for(
        CustomerWorkflow.run, ids.customer_workflow_id(customer_id)
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            snap = await handle.query(CustomerWorkflow.state)
        except RPCError:
            # Not started yet: its first signal is on the way.
            if time.monotonic() > deadline:
                raise
        else:
            if settled(snap) or time.monotonic() > deadline:
                return snap
        await asyncio.sleep(0.1)


def has_ltv(cents: int, snap: BillingSnapshot) -> bool:
    return snap.ltv.get("usd", 0) == cents


def windowed(query: dict[str, str]) -> tuple[int, int]:
    """The `created` window a list request asked for: (gte, lte)."""
    return int(query["created[gte]"]), int(query["created[lte]"])


def read_all(listed: StripeState, customers: int) -> dict[str, int]:
    """What a sync of `listed` reads of each list."""
    return {
        "customers": customers,
        "subscriptions": customers,
        "invoices": len(listed.invoices),
        "charges": len(listed.charges),
    }


async def count(sessionmaker: SessionMaker, model: type[Any]) -> int:
    async with sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_a_full_sync_fills_every_snapshot_and_a_second_changes_nothing(
    dev_env: WorkflowEnvironment,
    sqlite_url: str,
    sessionmaker: SessionMaker,
    task_queue: str,
    stripe_api: StripeHttpServer,
    acct: str,
) -> None:
    now = int(time.time())
    account = Account(objects(stripe_api, acct), now).build(130)
    async with synced_stack(dev_env, sqlite_url, task_queue, stripe_api) as http:
        started = await http.post("/v1/sync", json={"account": acct}, headers=ADMIN)
        assert started.status_code == 202, started.text
        assert started.json() == {"workflow_id": f"stripe-sync-{acct}", "state": "started"}
        done = await finished(http, acct)
        assert done["status"] == "completed", done
        read = {r["resource"]: r["read"] for r in done["resources"]}
        assert read == read_all(objects(stripe_api, acct), 130)
        assert done["customers_delivered"] == 130
        # Every list was paged (more than 100 customers), with cards expanded, not fetched.
        lists = [r for r in stripe_api.state.requests if r.path == "/v1/customers"]
        assert len(lists) == 3 and "starting_after" not in lists[0].query
        assert all("data.invoice_settings.default_payment_method" in r.expand for r in lists)
        # After its first page the list went on as two windows side by side: the page
        # after the first's last customer, from the middle of what was left, and the
        # older half, from the start to the second before that middle.
        [chain] = [windowed(r.query) for r in lists[1:] if "starting_after" in r.query]
        [older] = [windowed(r.query) for r in lists[1:] if "starting_after" not in r.query]
        first = windowed(lists[0].query)
        assert (older[0], chain[1]) == first
        assert older[0] < older[1] == chain[0] - 1
        subs = [r for r in stripe_api.state.requests if r.path == "/v1/subscriptions"]
        assert {r.query.get("status") for r in subs} == {"all"}
        for cus, expected in account.expected.items():
            snap = await snapshot(dev_env.client, cus)
            assert (snap.status, snap.mrr.get("usd", 0), snap.ltv.get("usd", 0)) == (
                expected.status,
                expected.mrr,
                expected.ltv,
            ), cus
            assert snap.email == account.state.customers[cus]["email"]
            # The card the customer is billed with, from the expanded customer.
            assert f"pm_{account.tag}{cus[-4:]}" in snap.payment_methods
            # A backfill starts nothing unless asked to.
            assert snap.lifecycles == []
        # Nothing in the past earned an email or a conversion.
        assert await count(sessionmaker, Message) == 0
        assert await count(sessionmaker, Conversion) == 0
        rows = await count(sessionmaker, SyncedObject)

        again = await http.post("/v1/sync", json={"account": acct}, headers=ADMIN)
        assert again.json()["state"] == "started"
        second = await finished(http, acct)
        assert second["status"] == "completed"
        assert [r["changed"] for r in second["resources"]] == [0, 0, 0, 0]
        assert second["customers_delivered"] == 0
        assert await count(sessionmaker, SyncedObject) == rows

        # A paid invoice since: the third sync delivers that customer's change only.
        paid = copy.deepcopy(objects(stripe_api, acct).invoices[f"in_{account.tag}0000_0"])
        paid.update(id=f"in_{account.tag}0000_new", created=int(time.time()) - 1)
        objects(stripe_api, acct).invoices[paid["id"]] = paid
        await asyncio.sleep(1.1)
        await http.post("/v1/sync", json={"account": acct}, headers=ADMIN)
        third = await finished(http, acct)
        assert third["customers_delivered"] == 1
        ltv = account.expected[account.cus(0)].ltv + paid["amount_paid"]
        snap = await snapshot(dev_env.client, account.cus(0), lambda s: s.ltv["usd"] == ltv)
        assert snap.ltv["usd"] == ltv
    assert await count(sessionmaker, Message) == 0


async def test_start_lifecycles_goes_on_from_the_current_step(
    dev_env: WorkflowEnvironment,
    sqlite_url: str,
    sessionmaker: SessionMaker,
    task_queue: str,
    stripe_api: StripeHttpServer,
    acct: str,
) -> None:
    now = int(time.time())
    account = Account(objects(stripe_api, acct), now).build(10)
    async with synced_stack(dev_env, sqlite_url, task_queue, stripe_api) as http:
        await http.post("/v1/sync", json={"start_lifecycles": True, "account": acct}, headers=ADMIN)
        done = await finished(http, acct)
        assert done["status"] == "completed" and done["start_lifecycles"] is True

        async def state_of(workflow_id: str) -> Any:
            handle = dev_env.client.get_workflow_handle(workflow_id)
            deadline = time.monotonic() + 30
            while True:
                try:
                    return await handle.query(LifecycleWorkflow.state)
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)

        # The trial ends in five days: the welcome and the reminder a week before were due
        # before the sync, and are skipped rather than sent late.
        trial = await state_of(ids.trial_id(account.sub(1)))
        assert trial.outcome is None
        assert trial.steps_done and all(
            s.status == "skipped: due before the sync" for s in trial.steps_done
        )
        assert [s.step for s in trial.steps_done] == ["0-trial-welcome", "1-trial-ending"]
        assert trial.next_step == "2-trial-ending"
        # The cancellation at period end, and the invoice that failed three days ago.
        cancel = await state_of(ids.scheduled_cancel_id(account.sub(2)))
        assert cancel.outcome is None
        dunning = await state_of(ids.dunning_id(f"in_{account.tag}0004_failed"))
        assert dunning.outcome is None
        assert [s.status for s in dunning.steps_done][:1] == ["skipped: due before the sync"]
        # Nothing from long ago: no win-back for the subscription canceled a month ago,
        # no renewal reminders, and no email went out at once.
        assert (await snapshot(dev_env.client, account.cus(3))).lifecycles == []
        assert await count(sessionmaker, Message) == 0
        assert await count(sessionmaker, Conversion) == 0


async def test_a_429_storm_is_waited_out_and_counted(
    dev_env: WorkflowEnvironment,
    sqlite_url: str,
    task_queue: str,
    stripe_api: StripeHttpServer,
    acct: str,
) -> None:
    Account(objects(stripe_api, acct), int(time.time())).build(6)
    stripe_api.state.rate_limited = 4
    async with synced_stack(dev_env, sqlite_url, task_queue, stripe_api) as http:
        await http.post("/v1/sync", json={"account": acct}, headers=ADMIN)
        done = await finished(http, acct)
    assert done["status"] == "completed", done
    assert done["rate_limited"] == 4
    assert {r["resource"]: r["read"] for r in done["resources"]}["customers"] == 6


async def test_a_refused_key_stops_the_sync_naming_it_and_the_sync_resumes(
    dev_env: WorkflowEnvironment,
    sqlite_url: str,
    sessionmaker: SessionMaker,
    task_queue: str,
    stripe_api: StripeHttpServer,
    acct: str,
) -> None:
    listed = objects(stripe_api, acct)
    Account(listed, int(time.time())).build(120)
    async with synced_stack(
        dev_env, sqlite_url, task_queue, stripe_api, api_key=STRIPE_KEY_WITHOUT_INVOICES
    ) as http:
        await http.post("/v1/sync", json={"account": acct}, headers=ADMIN)
        stopped = await finished(http, acct)
    assert stopped["status"] == "failed"
    assert stopped["error"].startswith(
        "LIFECYCLE_STRIPE_API_KEY may not read invoices (403): give the restricted key "
        "Invoices: read"
    )
    assert await count(sessionmaker, Message) == 0
    before = len(stripe_api.state.requests)
    async with synced_stack(dev_env, sqlite_url, task_queue, stripe_api) as http:
        resumed = await http.post("/v1/sync", json={"account": acct}, headers=ADMIN)
        assert resumed.json()["state"] == "resumed"
        done = await finished(http, acct)
    assert done["status"] == "completed", done
    # A list read before the stop goes on from its cursor: the first page (the newest,
    # up to the sync's start) is asked for again only if none had come, and nothing is
    # counted twice. A window split off later starts without a cursor, below that.
    customers = [r for r in stripe_api.state.requests if r.path == "/v1/customers"]
    until = windowed(customers[0].query)[1]
    from_start = [
        r
        for r in stripe_api.state.requests[before:]
        if r.path == "/v1/customers"
        and "starting_after" not in r.query
        and windowed(r.query)[1] == until
    ]
    read_before = {r["resource"]: r["read"] for r in stopped["resources"]}["customers"]
    assert len(from_start) == (0 if read_before else 1)
    assert {r["resource"]: r["read"] for r in done["resources"]} == read_all(listed, 120)
    async with sessionmaker() as session:
        stored = (await session.execute(select(col(SyncedObject.object_id)))).scalars().all()
    assert len(stored) == len(set(stored))


async def test_lifecycle_sync_draws_progress_and_says_what_it_read(
    dev_env: WorkflowEnvironment,
    sqlite_url: str,
    task_queue: str,
    stripe_api: StripeHttpServer,
    acct: str,
    tmp_path: Path,
) -> None:
    Account(objects(stripe_api, acct), int(time.time())).build(12)
    env = clean_env(
        LIFECYCLE_TEMPORAL_ADDRESS=temporal_address(dev_env),
        LIFECYCLE_TASK_QUEUE=task_queue,
        LIFECYCLE_DATABASE_URL=sqlite_url,
    )
    async with synced_stack(dev_env, sqlite_url, task_queue, stripe_api):
        done = await asyncio.to_thread(run_cli, "sync", "--account", acct, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "customers 12 (12 new or changed)" in done.stdout
    assert "backfill delivered to 12 customers" in done.stdout
    # The bar, drawn on stderr: each list with its count.
    assert "customers" in done.stderr and "12/12" in done.stderr


async def test_lifecycle_sync_says_why_a_refused_key_stopped_it(
    dev_env: WorkflowEnvironment,
    sqlite_url: str,
    task_queue: str,
    stripe_api: StripeHttpServer,
    acct: str,
    tmp_path: Path,
) -> None:
    Account(objects(stripe_api, acct), int(time.time())).build(3)
    stripe_api.state.revoked = True
    env = clean_env(
        LIFECYCLE_TEMPORAL_ADDRESS=temporal_address(dev_env),
        LIFECYCLE_TASK_QUEUE=task_queue,
        LIFECYCLE_DATABASE_URL=sqlite_url,
    )
    async with synced_stack(dev_env, sqlite_url, task_queue, stripe_api):
        done = await asyncio.to_thread(run_cli, "sync", "--account", acct, env=env, cwd=tmp_path)
    assert done.returncode == 1
    assert "sync stopped: Stripe refused LIFECYCLE_STRIPE_API_KEY (401) reading" in done.stderr
    assert "Traceback" not in done.stderr


@needs_shared
async def test_captured_objects_of_public_sources_sync_without_a_crash(
    dev_env: WorkflowEnvironment,
    sqlite_url: str,
    task_queue: str,
    stripe_api: StripeHttpServer,
    acct: str,
) -> None:
    """Objects as public sources captured them (OpenAPI fixtures: every field of the
    current API, some unknown to us) are listed and applied, not refused."""
    until = int(time.time()) - 10
    customer = load_fixture("object__customer__openapi-fixtures3.json")
    charge = load_fixture("object__charge__openapi-fixtures3.json")
    customer.update(created=until - 100)
    charge.update(created=until - 50, customer=customer["id"], amount_refunded=100)
    objects(stripe_api, acct).customers[customer["id"]] = customer
    objects(stripe_api, acct).charges[charge["id"]] = charge
    assert FIXTURES_DIR.is_dir()
    async with synced_stack(dev_env, sqlite_url, task_queue, stripe_api) as http:
        await http.post("/v1/sync", json={"account": acct}, headers=ADMIN)
        done = await finished(http, acct)
        assert done["status"] == "completed", done
        assert done["unreadable"] == 0
        snap = await snapshot(dev_env.client, customer["id"], lambda s: bool(s.refunded))
    assert snap.refunded == {charge["currency"]: 100}
    assert snap.stripe_account == acct


async def memo_reads(client: Client, acct: str) -> int:
    """Objects read so far by the account's sync, as its memo tells (0 before it has one)."""
    described = await client.get_workflow_handle(ids.sync_workflow_id(acct)).describe()
    progress = await described.memo_value(contract.MEMO_SYNC_PROGRESS, None, type_hint=SyncProgress)
    return 0 if progress is None else sum(r.read for r in progress.resources)


def _worker_process(env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([LIFECYCLE, "worker"], env=env, cwd=cwd, stdout=out, stderr=out)


async def test_a_worker_killed_mid_sync_resumes_with_no_duplicate_and_no_gap(
    dev_env: WorkflowEnvironment,
    sqlite_url: str,
    sessionmaker: SessionMaker,
    task_queue: str,
    stripe_api: StripeHttpServer,
    acct: str,
    tmp_path: Path,
) -> None:
    listed = objects(stripe_api, acct)
    account = Account(listed, int(time.time())).build(250)
    # Slow enough that the kill lands in the middle of the lists.
    stripe_api.state.endpoint_rate = 3
    env = clean_env(
        LIFECYCLE_TEMPORAL_ADDRESS=temporal_address(dev_env),
        LIFECYCLE_TASK_QUEUE=task_queue,
        LIFECYCLE_DATABASE_URL=sqlite_url,
        LIFECYCLE_LINK_SECRET=LINK_SECRET,
        LIFECYCLE_STRIPE_API_KEY=STRIPE_API_KEY,
        LIFECYCLE_STRIPE_API_BASE=stripe_api.url,
        # Under the endpoint's limit however the windows share it: only the cap on the
        # Stripe reads task queue and the worker's pacer at that rate keep up to eight
        # windows, several of one list, from a 429.
        LIFECYCLE_STRIPE_READ_RATE="2",
    )
    log = tmp_path / "worker.log"
    worker = _worker_process(env, tmp_path, log)
    try:
        await start_sync(dev_env.client, task_queue, account=acct, start_lifecycles=False)
        deadline = time.monotonic() + 60
        while (seen := await memo_reads(dev_env.client, acct)) == 0:
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.05)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        # No worker answers a query now: the progress comes from the memo, as it was.
        status = await sync_status(dev_env.client, acct)
        assert status is not None and status.status == "running"
        assert status.progress is not None and status.progress.state == LISTING
        assert sum(r.read for r in status.progress.resources) >= seen
        assert not all(r.done for r in status.progress.resources)
        worker = _worker_process(env, tmp_path, log)
        deadline = time.monotonic() + 120
        while (status := await sync_status(dev_env.client, acct)) is not None and (
            status.status == "running"
        ):
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.2)
        assert status is not None and status.status == "completed", status
        progress = status.progress
        assert progress is not None
        assert {r.resource: r.read for r in progress.resources} == read_all(listed, 250)
        assert progress.customers_delivered == 250
        # One row per object read (customers, subscriptions, invoices, refunds, cards).
        async with sessionmaker() as session:
            stored = (await session.execute(select(col(SyncedObject.object_id)))).scalars().all()
        kept = [i for i in listed.invoices.values() if i["status"] in ("paid", "open")]
        assert len(stored) == len(set(stored)) == 250 * 3 + len(kept) + len(listed.charges)
        # Every customer's money counted once, however often a page or delivery repeated.
        for cus, expected in account.expected.items():
            snap = await snapshot(dev_env.client, cus, functools.partial(has_ltv, expected.ltv))
            assert (snap.status, snap.ltv.get("usd", 0)) == (expected.status, expected.ltv), cus
        assert stripe_api.state.over_limit == {}
    finally:
        worker.kill()
        worker.wait()
    assert await count(sessionmaker, Message) == 0


async def test_a_long_sync_continues_as_new_with_its_cursors(
    dev_env: WorkflowEnvironment,
    sqlite_url: str,
    task_queue: str,
    stripe_api: StripeHttpServer,
    acct: str,
) -> None:
    listed = objects(stripe_api, acct)
    Account(listed, int(time.time())).build(330)
    async with synced_stack(dev_env, sqlite_url, task_queue, stripe_api):
        handle = await dev_env.client.start_workflow(
            StripeSyncWorkflow.run,
            # A history this short holds a few pages: every lane crosses a run boundary.
            SyncInput(account=acct, max_history_events=40, deliver_batch=100),
            id=ids.sync_workflow_id(acct),
            task_queue=task_queue,
        )
        progress = await handle.result()
    assert progress.runs > 3
    assert {r.resource: r.read for r in progress.resources} == read_all(listed, 330)
    assert progress.customers_delivered == 330


async def test_a_sync_begun_as_one_chain_per_list_goes_on_in_windows_from_its_cursor(
    dev_env: WorkflowEnvironment,
    sqlite_url: str,
    task_queue: str,
    stripe_api: StripeHttpServer,
    acct: str,
) -> None:
    """A run from before windows, continued as new mid-list, hands this release its
    cursors without windows: each list goes on after its cursor, with what lies before
    the cursor neither read again nor counted twice."""
    listed = objects(stripe_api, acct)
    Account(listed, int(time.time())).build(150)
    newest = sorted(listed.customers.values(), key=lambda c: (c["created"], c["id"]))[::-1]
    until = int(time.time())
    chain = SyncProgress(
        account=acct,
        until=until,
        account_created=until - 400 * DAY,
        resources=[
            ResourceProgress(
                resource="customers",
                read=40,
                oldest_created=newest[39]["created"],
                cursor=newest[39]["id"],
            ),
            *(ResourceProgress(resource=r) for r in RESOURCES if r != Resource.CUSTOMERS),
        ],
    )
    async with synced_stack(dev_env, sqlite_url, task_queue, stripe_api):
        progress = await dev_env.client.execute_workflow(
            StripeSyncWorkflow.run,
            SyncInput(account=acct, progress=chain),
            id=ids.sync_workflow_id(acct),
            task_queue=task_queue,
        )
    assert {r.resource: r.read for r in progress.resources} == read_all(listed, 150)
    customers = [r for r in stripe_api.state.requests if r.path == "/v1/customers"]
    assert customers[0].query["starting_after"] == newest[39]["id"]
    # No page started from the top again: only windows split off below began without a
    # cursor (and the read counts above hold no customer twice).
    assert not any(
        "starting_after" not in r.query and windowed(r.query)[1] == until for r in customers
    )
    # Each window read to its end is dropped, its time kept: all of the account's, but
    # the second between each window and the next.
    read_to_the_end = progress.resources[0]
    assert read_to_the_end.windows == []
    assert 0 <= 400 * DAY - read_to_the_end.covered < len(customers)
