"""One customer's segment evaluation against what the database holds, on both databases:
the usage the app reported and the last click in the customer's mail join the workflow's
billing facts; each entry and exit is recorded once, with the condition that turned it;
a segment dropped from the file lets its members go; the facts are stored for the sweep,
first inserted and then replaced."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from temporalio.testing import ActivityEnvironment

from stripe_lifecycle.activities.interface import EvaluateSegments, SegmentsEvaluation
from stripe_lifecycle.activities.segments import SegmentActivities
from stripe_lifecycle.domain.segments import parse_segments
from stripe_lifecycle.storage.db import create_engine, create_sessionmaker
from stripe_lifecycle.storage.models import (
    CustomerSegmentFacts,
    SegmentEvent,
    SegmentMember,
)
from stripe_lifecycle.storage.segments import record_usage

from .segment_helpers import click

CUSTOMER = "cus_evaluated"
NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)

SEGMENTS = """
segments:
  - name: on-pro
    where: {field: plan, eq: Pro}
  - name: heavy-users
    where: {field: usage.projects, gte: 10}
  - name: engaged
    where: {field: clicked_within_days, lte: 14}
  - name: retiring
    where: {field: plan, eq: Pro}
"""
# The same file a release later: `retiring` is gone.
SEGMENTS_LATER = SEGMENTS.split("  - name: retiring")[0]


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


def facts(plan: str) -> dict[str, Any]:
    return {"status": "active", "plan": plan, "usage": {}, "last_click_at": None}


async def test_an_evaluation_reads_what_the_database_holds_and_records_each_change_once(
    engine: AsyncEngine,
) -> None:
    sessionmaker = create_sessionmaker(engine)
    env = ActivityEnvironment()
    activities = SegmentActivities(sessionmaker, parse_segments(SEGMENTS, "segments.yaml"), [])

    async def evaluate(
        activities: SegmentActivities, plan: str, at: datetime, previous: list[str]
    ) -> SegmentsEvaluation:
        request = EvaluateSegments(
            customer_id=CUSTOMER,
            facts=facts(plan),
            now=at,
            previous=previous,
            known=["on-pro", "heavy-users", "engaged", "retiring"] if previous else [],
            evaluated_before=bool(previous),
        )
        return await env.run(activities.evaluate_segments, request)

    async def stored() -> tuple[list[tuple[str, str, str]], list[str], CustomerSegmentFacts]:
        async with sessionmaker() as session:
            events = (
                (await session.execute(select(SegmentEvent).order_by(col(SegmentEvent.id))))
                .scalars()
                .all()
            )
            members = (
                (
                    await session.execute(
                        select(SegmentMember.segment).order_by(col(SegmentMember.segment))
                    )
                )
                .scalars()
                .all()
            )
            row = await session.get(CustomerSegmentFacts, CUSTOMER)
        assert row is not None
        return [(e.segment, e.change, e.reason) for e in events], list(members), row

    # Nothing reported, never clicked: on Pro only.
    first = await evaluate(activities, "Basic", NOW - timedelta(days=2), [])
    assert first.segments == []
    first = await evaluate(activities, "Pro", NOW - timedelta(days=1), [])
    assert first.segments == ["on-pro", "retiring"]

    # The app reports usage and the customer clicks: both read from the database.
    async with sessionmaker() as session:
        await record_usage(session, CUSTOMER, "projects", 12)
    await click(sessionmaker, CUSTOMER, NOW - timedelta(days=3))
    second = await evaluate(activities, "Pro", NOW, first.segments)
    assert second.segments == ["on-pro", "heavy-users", "engaged", "retiring"]
    assert [change.segment for change in second.entered] == ["heavy-users", "engaged"]
    assert second.usage["metrics"] == {"projects": 12}
    events, members, row = await stored()
    assert members == ["engaged", "heavy-users", "on-pro", "retiring"]
    assert row.facts["usage"] == {"projects": 12}
    assert row.facts["last_click_at"] == int((NOW - timedelta(days=3)).timestamp())
    assert row.segments == second.segments and row.evaluated_at == NOW

    # The same facts again (a retried activity): nothing more recorded.
    again = await evaluate(activities, "Pro", NOW, first.segments)
    assert again.segments == second.segments
    assert (await stored())[0] == events

    # A release drops `retiring` and the customer moves to Basic.
    later = SegmentActivities(sessionmaker, parse_segments(SEGMENTS_LATER, "segments.yaml"), [])
    third = await evaluate(later, "Basic", NOW + timedelta(hours=1), second.segments)
    assert third.segments == ["heavy-users", "engaged"]
    assert [change.segment for change in third.exited] == ["on-pro", "retiring"]
    events, members, row = await stored()
    assert members == ["engaged", "heavy-users"]
    assert events == [
        ("on-pro", "entered", "plan Basic → Pro (eq Pro)"),
        ("retiring", "entered", "plan Basic → Pro (eq Pro)"),
        ("heavy-users", "entered", "usage.projects missing → 12 (gte 10)"),
        ("engaged", "entered", "clicked_within_days missing → 3 (lte 14)"),
        ("on-pro", "exited", "plan Pro → Basic (eq Pro)"),
        ("retiring", "exited", "the segment is no longer defined"),
    ]
    assert row.facts["plan"] == "Basic" and row.segments == third.segments
