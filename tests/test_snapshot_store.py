"""The snapshot store: the customer workflow's read model, written by `persist_snapshot`
(and `store_batch`, which also answers the event triggers and evaluates a quiet batch's
segments) on both databases. A retried or late activity carrying an older snapshot never wins;
concurrent writes share a transaction (group commit), and one the database refuses fails
alone."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select
from temporalio.testing import ActivityEnvironment

from stripe_lifecycle.activities.interface import (
    ChooseAutomation,
    EvaluateSegments,
    StoreBatch,
    StoredBatch,
)
from stripe_lifecycle.activities.segments import SegmentActivities
from stripe_lifecycle.activities.selection import AutomationActivities
from stripe_lifecycle.activities.snapshots import SnapshotActivities, SnapshotWriter
from stripe_lifecycle.domain.automations import parse_automations
from stripe_lifecycle.domain.ledger import BillingSnapshot, SubscriptionState
from stripe_lifecycle.domain.lifecycles import Lifecycle
from stripe_lifecycle.domain.segments import billing_facts, parse_segments
from stripe_lifecycle.domain.send_windows import parse_window
from stripe_lifecycle.storage.db import create_engine, create_sessionmaker
from stripe_lifecycle.storage.models import Customer, CustomerSegmentFacts

from .tcp_proxy import TcpProxy, tcp_proxy


@contextlib.asynccontextmanager
async def engine_at(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    async with engine_at(database_url) as on_either:
        yield on_either


@pytest.fixture
async def postgresql(postgresql_url: str) -> AsyncIterator[AsyncEngine]:
    async with engine_at(postgresql_url) as on_postgresql:
        yield on_postgresql


def snapshot(version: int, *, plan: str, mrr: int, email: str | None) -> BillingSnapshot:
    return BillingSnapshot(
        customer_id="cus_store",
        email=email,
        name="Ada",
        status="active",
        plan=plan,
        mrr_cents=mrr,
        currency="usd",
        ltv_cents=10 * version,
        customer_since=1_700_000_000,
        events_applied=version,
        subscriptions={"sub_1": subscription(version, plan=plan, mrr=mrr)},
        mrr={"usd": mrr},
        ltv={"usd": 10 * version},
        mrr_exact=version % 2 == 0,
    )


def subscription(version: int, *, plan: str, mrr: int) -> SubscriptionState:
    return SubscriptionState(
        id="sub_1",
        status="active",
        plan=plan,
        price_id=f"price_{plan.lower()}",
        product_id="prod_1",
        interval="month",
        quantity=1,
        mrr_cents=mrr,
        currency="usd",
        current_period_end=1_702_592_000,
        trial_end=None,
        cancel_at_period_end=False,
        version=version,
    )


async def test_newer_snapshots_replace_every_column_and_older_ones_change_nothing(
    engine: AsyncEngine,
) -> None:
    sessionmaker = create_sessionmaker(engine)
    store = SnapshotActivities(sessionmaker)
    env = ActivityEnvironment()
    await env.run(store.persist_snapshot, snapshot(2, plan="Pro", mrr=4900, email="a@x.io"))
    # A retry of an earlier batch's write, arriving late.
    await env.run(store.persist_snapshot, snapshot(1, plan="Starter", mrr=900, email=None))
    async with sessionmaker() as session:
        kept = await session.get(Customer, "cus_store")
        assert kept is not None
        assert (kept.snapshot_version, kept.plan, kept.mrr_cents, kept.email) == (
            2,
            "Pro",
            4900,
            "a@x.io",
        )
        assert kept.mrr == {"usd": 4900} and kept.mrr_exact
        first_update = kept.updated_at

    # The same version again (a retried activity) and a newer one both write.
    await env.run(store.persist_snapshot, snapshot(2, plan="Pro", mrr=4900, email="a@x.io"))
    await env.run(store.persist_snapshot, snapshot(3, plan="Team", mrr=9900, email=None))
    async with sessionmaker() as session:
        stored = await session.get(Customer, "cus_store")
        assert stored is not None
        assert stored.snapshot_version == 3
        assert (stored.plan, stored.mrr_cents, stored.email, stored.ltv_cents) == (
            "Team",
            9900,
            None,
            30,
        )
        assert stored.mrr == {"usd": 9900} and stored.ltv == {"usd": 30}
        assert not stored.mrr_exact
        assert stored.customer_since == datetime.fromtimestamp(1_700_000_000, UTC)
        # The subscription's own payload is working memory, not part of the read model.
        assert [s["plan"] for s in stored.subscriptions] == ["Team"]
        assert all("subscription" not in s for s in stored.subscriptions)
        assert stored.updated_at >= first_update


async def test_concurrent_writes_share_one_transaction_and_the_newest_of_a_customer_wins(
    engine: AsyncEngine,
) -> None:
    commits: list[int] = []
    event.listen(engine.sync_engine, "commit", lambda _connection: commits.append(1))
    sessionmaker = create_sessionmaker(engine)
    writer = SnapshotWriter(sessionmaker)
    base = snapshot(1, plan="Pro", mrr=4900, email="a@x.io")
    others = [dataclasses.replace(base, customer_id=f"cus_{n}") for n in range(40)]
    # One customer's two batches in flight at once, the newer one handed over first.
    newer = snapshot(3, plan="Team", mrr=9900, email="a@x.io")
    older = snapshot(2, plan="Starter", mrr=900, email="a@x.io")
    await asyncio.gather(*(writer.write(s) for s in [newer, *others, older]))
    # Every write waited for its commit; the first flush took all that were waiting.
    assert len(commits) == 1
    async with sessionmaker() as session:
        stored = {c.customer_id: c for c in (await session.execute(select(Customer))).scalars()}
    assert len(stored) == 41
    assert (stored["cus_store"].snapshot_version, stored["cus_store"].plan) == (3, "Team")

    # Writes that arrive while a flush runs go in the next one.
    commits.clear()
    first = asyncio.create_task(writer.write(dataclasses.replace(base, events_applied=5)))
    await asyncio.sleep(0)
    later = [dataclasses.replace(s, events_applied=6, plan="Team") for s in others[:10]]
    await asyncio.gather(first, *(writer.write(s) for s in later))
    assert len(commits) == 2


async def test_a_snapshot_the_database_refuses_fails_only_its_own_write(
    postgresql: AsyncEngine,
) -> None:
    sessionmaker = create_sessionmaker(postgresql)
    writer = SnapshotWriter(sessionmaker)
    base = snapshot(1, plan="Pro", mrr=4900, email="a@x.io")
    good = [dataclasses.replace(base, customer_id=f"cus_{n}") for n in range(5)]
    # Longer than the column: PostgreSQL refuses it (the intake bounds ids; this is the
    # writer's own guard).
    refused = dataclasses.replace(base, customer_id="cus_" + "x" * 300)
    results = await asyncio.gather(
        *(writer.write(s) for s in [*good[:2], refused, *good[2:]]), return_exceptions=True
    )
    assert [isinstance(r, Exception) for r in results] == [
        False,
        False,
        True,
        False,
        False,
        False,
    ]
    assert "value too long" in str(results[2])
    async with sessionmaker() as session:
        ids = (await session.execute(select(Customer.customer_id))).scalars().all()
    assert sorted(ids) == sorted(s.customer_id for s in good)


async def test_an_outage_while_a_failed_batch_is_written_alone_fails_the_rest_at_once(
    postgresql_url: str,
) -> None:
    async with tcp_proxy("127.0.0.1", 5432) as proxy:
        url = make_url(postgresql_url).set(host="127.0.0.1", port=proxy.port)
        async with engine_at(url.render_as_string(hide_password=False)) as engine:
            await _written_alone_until_the_outage(engine, proxy)


async def _written_alone_until_the_outage(engine: AsyncEngine, proxy: TcpProxy) -> None:
    errors: list[str] = []
    cuts: list[int] = []
    attempts_while_down: list[int] = []

    def on_error(context: ExceptionContext) -> None:
        errors.append(str(context.original_exception))

    def on_checkout(*_args: object) -> None:
        # The batch was refused (one snapshot too long): the database goes away as
        # its snapshots are about to be written one by one.
        if not cuts and errors and "value too long" in errors[0]:
            cuts.append(1)
            proxy.cut_now()

    def on_connect(*_args: object) -> None:
        if not proxy.up:
            attempts_while_down.append(1)

    event.listen(engine.sync_engine, "handle_error", on_error)
    event.listen(engine.sync_engine.pool, "checkout", on_checkout)
    event.listen(engine.sync_engine, "do_connect", on_connect)
    writer = SnapshotWriter(create_sessionmaker(engine))
    base = snapshot(1, plan="Pro", mrr=4900, email="a@x.io")
    batch = [dataclasses.replace(base, customer_id=f"cus_{n}") for n in range(20)]
    refused = dataclasses.replace(base, customer_id="cus_" + "x" * 300)
    results = await asyncio.gather(
        *(writer.write(s) for s in [refused, *batch]), return_exceptions=True
    )
    # Every write failed, and the writer stopped at the first that met the outage
    # rather than waiting on a dead database for each of the twenty.
    assert all(isinstance(r, Exception) for r in results)
    assert "value too long" in errors[0]
    assert len(attempts_while_down) <= 2, attempts_while_down

    # The database back: the next writes go through.
    await proxy.restore()
    await asyncio.gather(*(writer.write(s) for s in batch))
    async with create_sessionmaker(engine)() as session:
        ids = (await session.execute(select(Customer.customer_id))).scalars().all()
    assert sorted(ids) == sorted(s.customer_id for s in batch)


STORE_SEGMENTS = """
segments:
  - name: on-pro
    where: {field: plan, eq: Pro}
"""
STORE_AUTOMATIONS = """
automations:
  - name: dispute-alert
    lifecycle: event
    trigger: {event: charge.dispute.created}
    steps: [{after: 0s, action: notify_team}]
"""


def evaluation_of(stored: BillingSnapshot) -> EvaluateSegments:
    return EvaluateSegments(
        customer_id=stored.customer_id,
        facts=billing_facts(stored, []),
        now=datetime(2026, 1, 1, tzinfo=UTC),
    )


async def test_a_stored_batch_answers_the_triggers_and_is_evaluated_only_when_quiet(
    engine: AsyncEngine,
) -> None:
    sessionmaker = create_sessionmaker(engine)
    store = SegmentActivities(
        sessionmaker,
        parse_segments(STORE_SEGMENTS, "segments.yaml"),
        parse_automations(STORE_AUTOMATIONS, "automations.yaml", []),
    )
    env = ActivityEnvironment()

    async def evaluated() -> CustomerSegmentFacts | None:
        async with sessionmaker() as session:
            return await session.get(CustomerSegmentFacts, "cus_store")

    async def stored_version() -> int | None:
        async with sessionmaker() as session:
            row = await session.get(Customer, "cus_store")
            return row.snapshot_version if row is not None else None

    # Not quiet (decisions to carry out): stored, answered, nothing evaluated.
    first = snapshot(1, plan="Pro", mrr=4900, email="a@x.io")
    answer = await env.run(store.store_batch, StoreBatch(snapshot=first))
    assert answer == StoredBatch(event_triggers=["charge.dispute.created"], quiet=False)
    assert await stored_version() == 1 and await evaluated() is None

    # Quiet unless a dispute starts its sequence, and one does: not quiet, not evaluated.
    second = snapshot(2, plan="Pro", mrr=4900, email="a@x.io")
    disputed = StoreBatch(
        snapshot=second,
        quiet_unless=["charge.dispute.created", "customer.updated"],
        evaluation=evaluation_of(second),
    )
    answer = await env.run(store.store_batch, disputed)
    assert (answer.quiet, answer.evaluation) == (False, None)
    assert await stored_version() == 2 and await evaluated() is None

    # Quiet unless `customer.updated` starts one, which none does: evaluated, in the
    # snapshot's transaction.
    third = snapshot(3, plan="Pro", mrr=4900, email="a@x.io")
    updated = StoreBatch(
        snapshot=third, quiet_unless=["customer.updated"], evaluation=evaluation_of(third)
    )
    answer = await env.run(store.store_batch, updated)
    assert answer.quiet and answer.evaluation is not None
    assert answer.evaluation.segments == ["on-pro"]
    assert [change.segment for change in answer.evaluation.entered] == ["on-pro"]
    facts = await evaluated()
    assert await stored_version() == 3 and facts is not None and facts.segments == ["on-pro"]

    # Quiet with the facts evaluated already (no evaluation asked): stored alone. An older
    # snapshot, a retry arriving late, changes nothing.
    answer = await env.run(store.store_batch, StoreBatch(snapshot=first, quiet_unless=[]))
    assert answer == StoredBatch(event_triggers=["charge.dispute.created"], quiet=True)
    assert await stored_version() == 3


CHOICE_AUTOMATIONS = """
automations:
  - name: renewal-annual
    lifecycle: renewal
    filters: {subscription_interval: year}
    steps: [{before: 7d, action: notify_team}]
  - name: renewal-any-time
    lifecycle: renewal
    priority: 200
    filters: {plan: Enterprise}
    send_window: any
    steps: [{before: 7d, action: notify_team}]
"""


async def test_a_stored_batch_chooses_each_start_s_automation_as_choose_automation_does(
    engine: AsyncEngine,
) -> None:
    sessionmaker = create_sessionmaker(engine)
    automations = parse_automations(CHOICE_AUTOMATIONS, "automations.yaml", [])
    window = parse_window({"start": "09:00", "end": "17:00"})
    choices = AutomationActivities(automations, default_window=window)
    store = SegmentActivities(
        sessionmaker,
        parse_segments(STORE_SEGMENTS, "segments.yaml"),
        automations,
        choices=choices,
    )
    env = ActivityEnvironment()
    monthly = ChooseAutomation(lifecycle=Lifecycle.RENEWAL, subscription_periods=["month"])
    annual = ChooseAutomation(lifecycle=Lifecycle.RENEWAL, subscription_periods=["year"])
    enterprise = ChooseAutomation(lifecycle=Lifecycle.RENEWAL, plan="Enterprise")

    # A batch quiet but for a start no automation takes is quiet: evaluated.
    first = snapshot(1, plan="Pro", mrr=4900, email="a@x.io")
    answer = await env.run(
        store.store_batch,
        StoreBatch(
            snapshot=first, quiet_unless=[], evaluation=evaluation_of(first), choose=[monthly]
        ),
    )
    assert (answer.quiet, answer.chosen) == (True, [None])
    assert answer.evaluation is not None and answer.evaluation.segments == ["on-pro"]

    # One an automation takes: not quiet, nothing evaluated, each trigger answered in
    # order as the lookup of its own answers it (the default send window in the snapshot
    # of the automation that names none).
    second = snapshot(2, plan="Pro", mrr=4900, email="a@x.io")
    asked = [monthly, annual, enterprise]
    answer = await env.run(
        store.store_batch,
        StoreBatch(
            snapshot=second, quiet_unless=[], evaluation=evaluation_of(second), choose=asked
        ),
    )
    assert (answer.quiet, answer.evaluation) == (False, None)
    assert answer.chosen == [await env.run(choices.choose_automation, a) for a in asked]
    assert [a.name if a else None for a in answer.chosen] == [
        None,
        "renewal-annual",
        "renewal-any-time",
    ]
    assert answer.chosen[1] is not None and answer.chosen[1].send_window == window
    assert answer.chosen[2] is not None and answer.chosen[2].send_window is None
