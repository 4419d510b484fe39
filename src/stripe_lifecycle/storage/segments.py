"""What the API, the CLI and the dashboard read of segments: member counts, the members of
a segment page by page (or all of them, batch by batch, for CSV), one customer's
memberships and their history, entries and exits per period, and product usage.

The rows are written by the segment evaluation (`segment_members`, `segment_events`,
`customer_segment_facts`) and by `POST /v1/customers/{id}/usage` (`customer_usage`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from typing import Any, cast

from pydantic import BaseModel
from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from stripe_lifecycle.storage.db import SessionMaker, insert_for
from stripe_lifecycle.storage.models import (
    Customer,
    CustomerSegmentFacts,
    CustomerUsage,
    SegmentChange,
    SegmentEvent,
    SegmentMember,
    utcnow,
)

# Page sizes of `GET /v1/segments/{name}/customers`, as Stripe's lists have them.
DEFAULT_PAGE = 100
MAX_PAGE = 1000
# Rows read at a time while the member list streams as CSV.
CSV_BATCH = 1000


class SegmentSummary(BaseModel):
    name: str
    description: str
    # Customers in the segment now.
    members: int
    # Some condition turns with time alone (`subscription_age_days`, ...): the periodic
    # sweep re-evaluates it.
    time_based: bool


class SegmentList(BaseModel):
    segments: list[SegmentSummary]


class SegmentCustomer(BaseModel):
    """A member, with the billing snapshot's figures (None while the customer has none)."""

    customer_id: str
    email: str | None
    plan: str | None
    status: str | None
    mrr_cents: int | None
    currency: str | None
    entered_at: datetime


class SegmentCustomers(BaseModel):
    data: list[SegmentCustomer]
    # More members follow the last one: ask again with `starting_after` its customer id.
    has_more: bool


class Membership(BaseModel):
    name: str
    entered_at: datetime


class MembershipChange(BaseModel):
    segment: str
    # "entered" or "exited".
    change: str
    at: datetime
    # Which condition changed, old → new value.
    reason: str
    # Already in the segment when it was first evaluated for the customer: not news.
    initial: bool


class CustomerSegments(BaseModel):
    customer_id: str
    segments: list[Membership]
    # Every entry and exit, oldest first.
    history: list[MembershipChange]


async def member_counts(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(
        select(col(SegmentMember.segment), func.count()).group_by(col(SegmentMember.segment))
    )
    return {row[0]: row[1] for row in rows.all()}


def _members_query(segment: str, starting_after: str | None) -> Any:
    query = (
        select(
            col(SegmentMember.customer_id),
            col(Customer.email),
            col(Customer.plan),
            col(Customer.status),
            col(Customer.mrr_cents),
            col(Customer.currency),
            col(SegmentMember.entered_at),
        )
        .select_from(SegmentMember)
        .outerjoin(Customer, col(Customer.customer_id) == col(SegmentMember.customer_id))
        .where(col(SegmentMember.segment) == segment)
        .order_by(col(SegmentMember.customer_id))
    )
    if starting_after is not None:
        query = query.where(col(SegmentMember.customer_id) > starting_after)
    return query


def _member(row: Any) -> SegmentCustomer:
    customer_id, email, plan, status, mrr_cents, currency, entered_at = row
    return SegmentCustomer(
        customer_id=customer_id,
        email=email,
        plan=plan,
        status=status,
        mrr_cents=mrr_cents,
        currency=currency,
        entered_at=entered_at,
    )


async def segment_members(
    session: AsyncSession, segment: str, limit: int, starting_after: str | None = None
) -> SegmentCustomers:
    """Up to `limit` members after `starting_after`, by customer id."""
    rows = (await session.execute(_members_query(segment, starting_after).limit(limit + 1))).all()
    return SegmentCustomers(data=[_member(r) for r in rows[:limit]], has_more=len(rows) > limit)


async def all_members(
    sessionmaker: SessionMaker, segment: str, batch: int = CSV_BATCH
) -> AsyncIterator[list[SegmentCustomer]]:
    """Every member, by customer id, `batch` at a time; each batch in a short session of
    its own, so a slow reader holds no transaction open."""
    after: str | None = None
    while True:
        async with sessionmaker() as session:
            page = await segment_members(session, segment, batch, after)
        if page.data:
            yield page.data
        if not page.has_more:
            return
        after = page.data[-1].customer_id


CSV_COLUMNS = ("customer_id", "email", "plan", "status", "mrr_cents", "currency", "entered_at")


def members_csv(members: Iterable[SegmentCustomer], header: bool) -> str:
    """Members as CSV lines (the header line first when `header`); empty cells for what
    is unknown, times in ISO 8601."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(CSV_COLUMNS)
    for member in members:
        values = member.model_dump()
        values["entered_at"] = member.entered_at.isoformat()
        writer.writerow(["" if values[c] is None else str(values[c]) for c in CSV_COLUMNS])
    return out.getvalue()


async def customer_segments(session: AsyncSession, customer_id: str) -> CustomerSegments | None:
    """The customer's segments now and every entry and exit, oldest first; None when the
    customer is unknown (no billing snapshot and no segment rows)."""
    members = (
        await session.execute(
            select(SegmentMember)
            .where(col(SegmentMember.customer_id) == customer_id)
            .order_by(col(SegmentMember.entered_at), col(SegmentMember.segment))
        )
    ).scalars()
    events = (
        await session.execute(
            select(SegmentEvent)
            .where(col(SegmentEvent.customer_id) == customer_id)
            .order_by(col(SegmentEvent.at), col(SegmentEvent.id))
        )
    ).scalars()
    found = CustomerSegments(
        customer_id=customer_id,
        segments=[Membership(name=m.segment, entered_at=m.entered_at) for m in members],
        history=[
            MembershipChange(
                segment=e.segment, change=e.change, at=e.at, reason=e.reason, initial=e.initial
            )
            for e in events
        ],
    )
    if not found.segments and not found.history:
        if await session.get(Customer, customer_id) is None:
            return None
    return found


class PeriodChanges(BaseModel):
    start: datetime
    end: datetime
    entered: int = 0
    exited: int = 0
    # Entries of customers already in the segment when it was first evaluated for them:
    # counted apart, so a new segments file does not look like a rush of entries.
    initial: int = 0


async def changes_per_period(
    session: AsyncSession, spans: list[tuple[datetime, datetime]]
) -> dict[str, list[PeriodChanges]]:
    """Per segment, its entries and exits in each [start, end) span (consecutive,
    oldest first), counted by the database in one query."""
    if not spans:
        return {}
    at = col(SegmentEvent.at)
    # Grouped in an outer query: PostgreSQL does not match a CASE of bound parameters in
    # GROUP BY to the same CASE in the select list.
    events = (
        select(
            col(SegmentEvent.segment).label("segment"),
            case(*((at < end, index) for index, (_, end) in enumerate(spans))).label("period"),
            col(SegmentEvent.change).label("change"),
            col(SegmentEvent.initial).label("initial"),
        )
        .where(at >= spans[0][0], at < spans[-1][1])
        .subquery()
    )
    rows = await session.execute(
        select(
            events.c.segment, events.c.period, events.c.change, events.c.initial, func.count()
        ).group_by(events.c.segment, events.c.period, events.c.change, events.c.initial)
    )
    found: dict[str, list[PeriodChanges]] = {}
    for row in rows.all():
        segment, index, change, initial, count = cast(tuple[str, int, str, bool, int], tuple(row))
        series = found.setdefault(segment, [PeriodChanges(start=s, end=e) for s, e in spans])
        point = series[index]
        if change == SegmentChange.EXITED:
            point.exited += count
        elif initial:
            point.initial += count
        else:
            point.entered += count
    return found


async def customer_usage(session: AsyncSession, customer_id: str) -> dict[str, float]:
    rows = await session.execute(
        select(col(CustomerUsage.metric), col(CustomerUsage.value)).where(
            col(CustomerUsage.customer_id) == customer_id
        )
    )
    return {row[0]: row[1] for row in rows.all()}


async def record_usage(session: AsyncSession, customer_id: str, metric: str, value: float) -> None:
    """The metric's latest value (an upsert on customer and metric), committed."""
    insert = insert_for(session.get_bind().dialect.name)
    now = utcnow()
    await session.execute(
        insert(CustomerUsage)
        .values(customer_id=customer_id, metric=metric, value=value, reported_at=now)
        .on_conflict_do_update(
            index_elements=["customer_id", "metric"], set_={"value": value, "reported_at": now}
        )
    )
    await session.commit()


async def segment_facts(session: AsyncSession, customer_id: str) -> CustomerSegmentFacts | None:
    return await session.get(CustomerSegmentFacts, customer_id)
