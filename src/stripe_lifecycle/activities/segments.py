"""Segment membership: evaluated for one customer when what it reads changes, and swept
for the conditions that turn with time alone; and the record of every lifecycle instance
started, with its holdout group.

The customer workflow is the only writer of a customer's memberships: the sweep finds the
customers whose segments turn and tells their workflows (`segments_changed`), which
evaluate them with what they know now and start the campaigns an entry triggers.
"""

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Executable,
    String,
    Table,
    bindparam,
    cast,
    delete,
    func,
    literal_column,
    null,
    select,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlmodel import SQLModel, col
from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from stripe_lifecycle.activities.interface import (
    EvaluateSegments,
    InstanceRecord,
    InstancesMrr,
    PersistAndEvaluate,
    SegmentChangeInfo,
    Segments,
    SegmentsChanged,
    SegmentsEvaluation,
    SegmentSweep,
    StoreBatch,
    StoredBatch,
    SweepRequest,
    SweepResult,
)
from stripe_lifecycle.activities.selection import AutomationActivities, trigger_event_types
from stripe_lifecycle.activities.snapshots import SnapshotWriter, upsert_snapshot
from stripe_lifecycle.domain import contract, ids
from stripe_lifecycle.domain.automations import Automation, campaign_segments
from stripe_lifecycle.domain.segments import (
    Facts,
    Segment,
    SegmentsConfig,
    evaluate,
    field_value,
    why_changed,
)
from stripe_lifecycle.storage.db import SessionMaker, insert_for
from stripe_lifecycle.storage.models import (
    Customer,
    CustomerSegmentFacts,
    CustomerUsage,
    LifecycleInstance,
    Message,
    MessageClick,
    SegmentChange,
    SegmentEvent,
    SegmentMember,
    UTCDateTime,
)

# Being found in a segment is news to a campaign only for a customer who is new (created
# within a day): the rest of the base was in it before anyone looked. An older customer
# is "already in it" when first evaluated against the segment (a new segments file), and
# for a while after their first evaluation, while the events of a customer seen for the
# first time (a new install, a historical sync) still arrive.
NEW_CUSTOMER = timedelta(days=1)
FIRST_SIGHT = timedelta(hours=1)
SWEEP_PAGE = 1000
# `segment_events.reason`'s length.
REASON_CHARS = 2000
# Signals in flight at once: the sweep must not flood the frontend after a long outage.
SIGNALS_IN_FLIGHT = 50


class SegmentActivities(Segments):
    def __init__(
        self,
        sessionmaker: SessionMaker,
        config: SegmentsConfig,
        automations: Sequence[Automation],
        writer: SnapshotWriter | None = None,
        choices: AutomationActivities | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._config = config
        # The worker's, so `store_batch` chooses as `choose_automation` does.
        self._choices = choices or AutomationActivities(list(automations))
        self._campaign_segments = campaign_segments(automations)
        self._event_triggers = trigger_event_types(automations)
        # The worker's group-committing writer, shared with `persist_snapshot`.
        self._writer = writer or SnapshotWriter(sessionmaker)

    @activity.defn(name="persist_and_evaluate_segments")
    async def persist_and_evaluate(self, request: PersistAndEvaluate) -> SegmentsEvaluation:
        """Store the snapshot and evaluate (which reads none of it from the DB) in one
        transaction: both land or neither, and a retry does both again."""
        async with self._sessionmaker() as session:
            connection = await session.connection()
            await upsert_snapshot(session, request.snapshot)
            evaluation = await self._evaluate(connection, request.evaluation)
            await session.commit()
        return evaluation

    @activity.defn(name="store_batch")
    async def store_batch(self, request: StoreBatch) -> StoredBatch:
        """Store the snapshot, answer the event types that start a sequence and choose the
        automation of each trigger asked; a batch that is quiet unless one of its types
        does or one of its triggers chooses one, and none does, has its evaluation made in
        the snapshot's transaction, as `persist_and_evaluate` does. A snapshot stored
        alone goes through the group-committing writer."""
        triggers = self._event_triggers
        chosen = [self._choices.choose(asked) for asked in request.choose]
        quiet = (
            request.quiet_unless is not None
            and not set(request.quiet_unless) & set(triggers)
            and all(automation is None for automation in chosen)
        )
        if not quiet or request.evaluation is None:
            await self._writer.write(request.snapshot)
            return StoredBatch(event_triggers=triggers, quiet=quiet, chosen=chosen)
        async with self._sessionmaker() as session:
            connection = await session.connection()
            await upsert_snapshot(session, request.snapshot)
            evaluation = await self._evaluate(connection, request.evaluation)
            await session.commit()
        return StoredBatch(
            event_triggers=triggers, quiet=True, evaluation=evaluation, chosen=chosen
        )

    @activity.defn(name="evaluate_segments")
    async def evaluate_segments(self, request: EvaluateSegments) -> SegmentsEvaluation:
        """Evaluate every segment for the customer and record each entry and exit (with
        the condition that turned it, old → new) against what the DB holds; answer what
        changed against the workflow's own record, so a retry answers the same."""
        async with self._sessionmaker() as session:
            evaluation = await self._evaluate(await session.connection(), request)
            await session.commit()
        return evaluation

    async def _evaluate(
        self, connection: AsyncConnection, request: EvaluateSegments
    ) -> SegmentsEvaluation:
        """The evaluation's reads and writes, in the caller's transaction, as plain SQL
        statements: one read of what the DB holds of the customer, and the facts written
        (with the reads and writes of a membership that changed): the ORM's unit of work,
        and a round trip per read, cost the worker more than the evaluation itself."""
        now = _aware(request.now)
        at = int(now.timestamp())
        customer_id = request.customer_id
        held = await _held(connection, customer_id)
        facts = {**request.facts, "usage": held.usage, "last_click_at": held.last_click_at}
        current = [
            s.name for s in self._config.segments if evaluate(s, facts, at, self._config.seats)
        ]
        members = held.segments
        entered = [name for name in current if name not in members]
        exited = [name for name in members if name not in current]
        reasons: dict[str, str] = {}
        if entered or exited:
            # What turned each one: the facts they were last evaluated on, against these.
            stored = (await connection.execute(_STORED_FACTS, {"customer_id": customer_id})).first()
            old_facts = stored.facts if stored is not None else None
            old_at = int(_aware(stored.evaluated_at).timestamp()) if stored is not None else None
            reasons = {
                s.name: why_changed(s, old_facts, old_at, facts, at, self._config.seats)
                for s in self._config.segments
                if s.name in entered or s.name in exited
            }
            await self._record_changes(connection, request, facts, entered, exited, reasons)
        await connection.execute(
            _facts_upsert(connection.dialect.name),
            {"customer_id": customer_id, "facts": facts, "segments": current, "evaluated_at": now},
        )
        previous = set(request.previous)
        known = [s.name for s in self._config.segments]
        news = [
            SegmentChangeInfo(
                name,
                reasons.get(name, "entered"),
                initial=self._initial(request, name, facts, at),
            )
            for name in current
            if name not in previous
        ]
        gone = [
            SegmentChangeInfo(name, reasons.get(name, "left"))
            for name in request.previous
            if name not in current
        ]
        return SegmentsEvaluation(
            segments=current,
            known=known,
            entered=news,
            exited=gone,
            campaign_segments=sorted(self._campaign_segments & set(current)),
            usage=self._usage(facts, at),
        )

    async def _record_changes(
        self,
        connection: AsyncConnection,
        request: EvaluateSegments,
        facts: Facts,
        entered: list[str],
        exited: list[str],
        reasons: dict[str, str],
    ) -> None:
        """The memberships entered and left, and each change in the membership history."""
        customer_id, now = request.customer_id, _aware(request.now)
        at = int(now.timestamp())
        changes = [
            _membership_change(
                customer_id,
                name,
                SegmentChange.ENTERED,
                now,
                reasons[name],
                initial=self._initial(request, name, facts, at),
            )
            for name in entered
        ] + [
            # A segment no longer defined: its members leave it.
            _membership_change(
                customer_id,
                name,
                SegmentChange.EXITED,
                now,
                reasons.get(name, "the segment is no longer defined"),
            )
            for name in exited
        ]
        if entered:
            await connection.execute(
                _ENTER,
                [
                    {"segment": name, "customer_id": customer_id, "entered_at": now}
                    for name in entered
                ],
            )
        if exited:
            await connection.execute(_LEAVE, {"customer_id": customer_id, "segments": exited})
        await connection.execute(_RECORD_CHANGES, changes)

    def _initial(self, request: EvaluateSegments, name: str, facts: Facts, at: int) -> bool:
        created = facts.get("customer_created")
        if isinstance(created, int) and at - created <= NEW_CUSTOMER.total_seconds():
            return False
        if not request.evaluated_before or name not in request.known:
            return True
        first = request.first_evaluated
        return first is not None and at - first <= FIRST_SIGHT.total_seconds()

    def _usage(self, facts: Facts, at: int) -> dict[str, Any]:
        """What an upgrade offer may name: the usage the app reported, and seats used of
        the plan's limit."""
        seats = self._config.seats
        usage = facts.get("usage") or {}
        used: Any = facts.get("quantity")
        if seats.used.startswith("usage."):
            used = usage.get(seats.used.removeprefix("usage."))
        limit = (facts.get("price_metadata") or {}).get(seats.limit_key or "")
        return {
            "metrics": dict(usage),
            "seats_used": used,
            "seat_limit": _number(limit),
            "seat_usage": field_value("seat_usage", facts, at, seats),
        }

    @activity.defn(name="record_instance")
    async def record_instance(self, record: InstanceRecord) -> None:
        """Insert once (by workflow id): a retried activity changes nothing."""
        values = {
            "workflow_id": record.workflow_id,
            "customer_id": record.customer_id,
            "lifecycle": str(record.lifecycle),
            "automation": record.automation,
            "held_out": record.held_out,
            "started_at": _aware(record.started_at),
            "mrr_cents": record.mrr_cents,
            "currency": record.currency,
        }
        async with self._sessionmaker() as session:
            insert = insert_for(session.get_bind().dialect.name)
            await session.execute(
                insert(LifecycleInstance).values(**values).on_conflict_do_nothing()
            )
            await session.commit()

    @activity.defn(name="record_instances_mrr")
    async def record_instances_mrr(self, mrr: InstancesMrr) -> None:
        """Set the MRR (and its currency) of instances recorded before it was known; the
        same values again change nothing."""
        async with self._sessionmaker() as session:
            await session.execute(
                update(LifecycleInstance)
                .where(col(LifecycleInstance.workflow_id).in_(mrr.workflow_ids))
                .values(mrr_cents=mrr.mrr_cents, currency=mrr.currency)
            )
            await session.commit()


class SegmentSweepActivities(SegmentSweep):
    def __init__(
        self,
        client: Client,
        sessionmaker: SessionMaker,
        config: SegmentsConfig,
        automations: Sequence[Automation],
    ) -> None:
        self._client = client
        self._sessionmaker = sessionmaker
        self._config = config
        self._offered = {
            a.name: a.trigger_segment
            for a in automations
            if a.enabled and a.enter_existing and a.trigger_segment is not None
        }

    @activity.defn(name="sweep_segments")
    async def sweep_segments(self, request: SweepRequest) -> SweepResult:
        """Re-evaluate, on the facts stored at their last evaluation, only the segments
        whose conditions turn with time; tell each customer whose membership turns. Then
        offer `enter_existing` campaigns to the members of their segments they have not
        run for yet."""
        now = _aware(request.now)
        at = int(now.timestamp())
        timed = [s for s in self._config.segments if s.time_based]
        customers = changed = offered = 0
        after = ""
        limiter = asyncio.Semaphore(SIGNALS_IN_FLIGHT)
        while timed:
            async with self._sessionmaker() as session:
                rows = (
                    await session.execute(
                        select(CustomerSegmentFacts)
                        .where(col(CustomerSegmentFacts.customer_id) > after)
                        .order_by(col(CustomerSegmentFacts.customer_id))
                        .limit(SWEEP_PAGE)
                    )
                ).scalars()
                page = list(rows)
                # A click since the last evaluation is news to `clicked_within_days`,
                # which nothing else tells the customer workflow.
                clicks = await _last_clicks(session, [row.customer_id for row in page])
            if not page:
                break
            after = page[-1].customer_id
            turned = [
                row.customer_id
                for row in page
                if self._turned(
                    timed, {**row.facts, "last_click_at": clicks.get(row.customer_id)}, row, at
                )
            ]
            customers += len(page)
            changed += await _signal_all(
                self._client, limiter, turned, SegmentsChanged(reason="time passed")
            )
            activity.heartbeat(customers)
        for automation, segment in self._offered.items():
            async with self._sessionmaker() as session:
                started = select(col(LifecycleInstance.customer_id)).where(
                    col(LifecycleInstance.automation) == automation
                )
                members = (
                    await session.execute(
                        select(col(SegmentMember.customer_id))
                        .where(col(SegmentMember.segment) == segment)
                        .where(col(SegmentMember.customer_id).not_in(started))
                    )
                ).scalars()
                waiting = list(members)
            offered += await _signal_all(
                self._client,
                limiter,
                waiting,
                SegmentsChanged(
                    reason=f"{automation} enters existing members", offer_existing=[segment]
                ),
            )
        first = await self._first_evaluations(limiter)
        usage = await self._unread_usage(limiter)
        activity.logger.info(
            "segment sweep: %d customers checked, %d turned, %d offered a campaign, "
            "%d evaluated for the first time, %d told of usage",
            customers,
            changed,
            offered,
            first,
            usage,
        )
        return SweepResult(
            customers=customers, changed=changed, offered=offered, first=first, usage=usage
        )

    async def _unread_usage(self, limiter: asyncio.Semaphore) -> int:
        """Tell the customers whose usage was reported after their last evaluation: the
        usage API could not (Temporal was unreachable), and the value waits, stored."""
        async with self._sessionmaker() as session:
            rows = await session.execute(
                select(col(CustomerUsage.customer_id))
                .join(
                    CustomerSegmentFacts,
                    col(CustomerSegmentFacts.customer_id) == col(CustomerUsage.customer_id),
                )
                .where(col(CustomerUsage.reported_at) > col(CustomerSegmentFacts.evaluated_at))
                .distinct()
            )
            waiting = list(rows.scalars())
        return await _signal_all(
            self._client, limiter, waiting, SegmentsChanged(reason="usage reported")
        )

    async def _first_evaluations(self, limiter: asyncio.Semaphore) -> int:
        """Tell the customer workflows that have never evaluated segments (begun before
        they existed) to start; page by page, so a large base is told in bounded memory."""
        told = 0
        after = ""
        while True:
            async with self._sessionmaker() as session:
                evaluated = select(col(CustomerSegmentFacts.customer_id))
                page = list(
                    (
                        await session.execute(
                            select(col(Customer.customer_id))
                            .where(col(Customer.customer_id) > after)
                            .where(col(Customer.customer_id).not_in(evaluated))
                            .order_by(col(Customer.customer_id))
                            .limit(SWEEP_PAGE)
                        )
                    ).scalars()
                )
            if not page:
                return told
            after = page[-1]
            told += await _signal_all(
                self._client, limiter, page, SegmentsChanged(reason="first evaluation")
            )
            activity.heartbeat(after)

    def _turned(
        self, timed: list[Segment], facts: Facts, row: CustomerSegmentFacts, at: int
    ) -> bool:
        """Whether the customer's membership of a segment with time conditions differs
        now from what their last evaluation stored."""
        return any(
            evaluate(s, facts, at, self._config.seats) != (s.name in row.segments) for s in timed
        )


async def _signal_all(
    client: Client,
    limiter: asyncio.Semaphore,
    customer_ids: Iterable[str],
    changed: SegmentsChanged,
) -> int:
    async def one(customer_id: str) -> bool:
        async with limiter:
            handle = client.get_workflow_handle(ids.customer_workflow_id(customer_id))
            try:
                await handle.signal(contract.SEGMENTS_CHANGED_SIGNAL, changed)
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
                # The customer's workflow is gone (terminated by hand): nothing to tell.
                return False
            return True

    results = await asyncio.gather(*(one(c) for c in customer_ids))
    return sum(results)


def _membership_change(
    customer_id: str,
    segment: str,
    change: str,
    at: datetime,
    reason: str,
    *,
    initial: bool = False,
) -> dict[str, Any]:
    """An entry or exit as the membership history keeps it (the reason cut to its column:
    a condition may quote a long value)."""
    return {
        "customer_id": customer_id,
        "segment": segment,
        "change": change,
        "at": at,
        "reason": reason[:REASON_CHARS],
        "initial": initial,
    }


async def _last_clicks(session: AsyncSession, customer_ids: list[str]) -> dict[str, int]:
    """The last click in each customer's mail, epoch seconds, for those who clicked."""
    if not customer_ids:
        return {}
    rows = await session.execute(
        select(col(Message.customer_id), func.max(MessageClick.clicked_at))
        .join(Message, col(Message.id) == col(MessageClick.message_id))
        .where(col(Message.customer_id).in_(customer_ids))
        .group_by(col(Message.customer_id))
    )
    return {customer: int(_aware(at).timestamp()) for customer, at in rows.all()}


def _table(model: type[SQLModel]) -> Table:
    return SQLModel.metadata.tables[str(model.__tablename__)]


_USAGE_TABLE = _table(CustomerUsage)
_MESSAGES_TABLE = _table(Message)
_CLICKS_TABLE = _table(MessageClick)
_FACTS_TABLE = _table(CustomerSegmentFacts)
_MEMBERS_TABLE = _table(SegmentMember)
_EVENTS_TABLE = _table(SegmentEvent)

# The evaluation's statements, built once and on the tables, not the models: SQLAlchemy
# keeps the cache key of a statement object on it (a statement built per evaluation is
# built and hashed anew), and an ORM-enabled statement takes the ORM's longer path.

# What the DB holds of one customer that an evaluation reads, in one round trip: each
# usage metric reported, each segment the customer is a member of, and the last click in
# their mail, one row each, told apart by `kind`.
_HELD = union_all(
    select(
        literal_column("'usage'", String).label("kind"),
        _USAGE_TABLE.c.metric.label("name"),
        _USAGE_TABLE.c.value.label("number"),
        # Typed, or PostgreSQL reads this and the next branch's NULL as text.
        cast(null(), UTCDateTime).label("moment"),
    ).where(_USAGE_TABLE.c.customer_id == bindparam("customer_id")),
    select(
        literal_column("'member'", String),
        _MEMBERS_TABLE.c.segment,
        null(),
        null(),
    ).where(_MEMBERS_TABLE.c.customer_id == bindparam("customer_id")),
    select(
        literal_column("'click'", String),
        null(),
        null(),
        func.max(_CLICKS_TABLE.c.clicked_at),
    )
    .select_from(
        _CLICKS_TABLE.join(_MESSAGES_TABLE, _MESSAGES_TABLE.c.id == _CLICKS_TABLE.c.message_id)
    )
    .where(_MESSAGES_TABLE.c.customer_id == bindparam("customer_id")),
)
_STORED_FACTS = select(_FACTS_TABLE.c.facts, _FACTS_TABLE.c.evaluated_at).where(
    _FACTS_TABLE.c.customer_id == bindparam("customer_id")
)
_RECORD_CHANGES = _EVENTS_TABLE.insert()
_ENTER = _MEMBERS_TABLE.insert()
_LEAVE = delete(_MEMBERS_TABLE).where(
    _MEMBERS_TABLE.c.customer_id == bindparam("customer_id"),
    _MEMBERS_TABLE.c.segment.in_(bindparam("segments", expanding=True)),
)
_FACTS_UPSERTS: dict[str, Executable] = {}


def _facts_upsert(dialect: str) -> Executable:
    """Insert the customer's facts, or replace those stored: the customer's workflow is
    their one writer."""
    statement = _FACTS_UPSERTS.get(dialect)
    if statement is None:
        insert = insert_for(dialect)(_FACTS_TABLE)
        statement = _FACTS_UPSERTS[dialect] = insert.on_conflict_do_update(
            index_elements=[_FACTS_TABLE.c.customer_id],
            set_={name: insert.excluded[name] for name in ("facts", "segments", "evaluated_at")},
        )
    return statement


@dataclass(frozen=True)
class _Held:
    usage: dict[str, int | float]
    segments: list[str]
    last_click_at: int | None


async def _held(connection: AsyncConnection, customer_id: str) -> _Held:
    """What only the DB knows of the customer: the usage the app reported, the segments
    they are in (in the order stored), and the last click on a tracked link in their mail
    (epoch seconds)."""
    usage: dict[str, int | float] = {}
    segments: list[str] = []
    last_click: datetime | None = None
    for row in await connection.execute(_HELD, {"customer_id": customer_id}):
        if row.kind == "usage":
            usage[row.name] = _plain(row.number)
        elif row.kind == "member":
            segments.append(row.name)
        else:
            last_click = row.moment
    return _Held(
        usage=usage,
        segments=segments,
        last_click_at=int(_aware(last_click).timestamp()) if last_click is not None else None,
    )


def _plain(value: float) -> int | float:
    """Whole numbers as ints, so facts read the way they were reported (9, not 9.0)."""
    return int(value) if float(value).is_integer() else value


def _number(value: object) -> int | float | None:
    try:
        number = float(str(value))
    except ValueError:
        return None
    return _plain(number)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
