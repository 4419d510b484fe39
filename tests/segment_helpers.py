"""Segment definitions and membership rows for the segments API, CLI and dashboard tests,
and the clicks the segments read. The rows are written straight into the database, as the
segment evaluation (and the click tracker) writes them."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from stripe_lifecycle.storage.db import SessionMaker
from stripe_lifecycle.storage.models import (
    Customer,
    CustomerSegmentFacts,
    Message,
    MessageClick,
    SegmentChange,
    SegmentEvent,
    SegmentMember,
)

SEGMENTS_YAML = """\
seat_usage: {limit_metadata_key: seats, used: quantity}
segments:
  - name: starter-3-months
    description: Starter customers active for 3 months or more
    where:
      all:
        - {field: plan, in: [Starter]}
        - {field: status, eq: active}
        - {field: subscription_age_days, gte: 90}
  - name: heavy-users
    description: Customers using 8 seats or more
    where: {field: usage.seats_used, gte: 8}
  - name: past-due
    description: Customers whose payment failed
    where: {field: status, eq: past_due}
"""
# In file order.
SEGMENT_NAMES = ["starter-3-months", "heavy-users", "past-due"]


def write_segments(directory: Path) -> Path:
    path = directory / "segments.yaml"
    path.write_text(SEGMENTS_YAML, encoding="utf-8")
    return path


async def add_customer(
    sessionmaker: SessionMaker,
    customer_id: str,
    email: str,
    *,
    plan: str = "Starter",
    status: str = "active",
    mrr_cents: int = 4900,
    currency: str = "usd",
) -> None:
    async with sessionmaker() as session:
        session.add(
            Customer(
                customer_id=customer_id,
                email=email,
                plan=plan,
                status=status,
                mrr_cents=mrr_cents,
                currency=currency,
            )
        )
        await session.commit()


async def add_members(
    sessionmaker: SessionMaker, segment: str, members: dict[str, datetime]
) -> None:
    async with sessionmaker() as session:
        session.add_all(
            SegmentMember(segment=segment, customer_id=customer_id, entered_at=at)
            for customer_id, at in members.items()
        )
        await session.commit()


async def add_changes(sessionmaker: SessionMaker, *changes: SegmentEvent) -> None:
    async with sessionmaker() as session:
        session.add_all(changes)
        await session.commit()


def entered(
    customer_id: str, segment: str, at: datetime, reason: str, initial: bool = False
) -> SegmentEvent:
    return SegmentEvent(
        customer_id=customer_id,
        segment=segment,
        change=SegmentChange.ENTERED,
        at=at,
        reason=reason,
        initial=initial,
    )


def exited(customer_id: str, segment: str, at: datetime, reason: str) -> SegmentEvent:
    return SegmentEvent(
        customer_id=customer_id, segment=segment, change=SegmentChange.EXITED, at=at, reason=reason
    )


async def add_facts(
    sessionmaker: SessionMaker,
    customer_id: str,
    facts: dict[str, Any],
    segments: list[str],
    evaluated_at: datetime,
) -> None:
    async with sessionmaker() as session:
        session.add(
            CustomerSegmentFacts(
                customer_id=customer_id, facts=facts, segments=segments, evaluated_at=evaluated_at
            )
        )
        await session.commit()


async def click(sessionmaker: SessionMaker, customer_id: str, at: datetime) -> None:
    """A click at `at` on a tracked link of an email the customer was sent."""
    message_id = str(uuid.uuid4())
    async with sessionmaker() as session:
        session.add(
            Message(
                id=message_id,
                send_key=f"upgrade-{customer_id}/{message_id}",
                customer_id=customer_id,
                workflow_id=f"upgrade-{customer_id}",
                lifecycle="upgrade",
                automation="upgrade-a",
                step="0-upgrade-offer",
                template="upgrade/offer",
                to="ada@example.com",
                status="sent",
                transport="outbox",
                created_at=at,
                sent_at=at,
            )
        )
        session.add(MessageClick(message_id=message_id, link="offer", clicked_at=at))
        await session.commit()
