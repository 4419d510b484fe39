"""Group commit for the webhook inbox.

Under load, many webhook requests are in flight at once; each waiting for its own
INSERT and COMMIT (an fsync on PostgreSQL) makes the database the bottleneck. The writer
gathers whatever requests arrived while the previous batch was being written into one
multi-row INSERT and one COMMIT, and answers each request only after its row is durable.
A lone request is written at once: batching only happens when there is a queue.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from stripe_lifecycle.domain.events import BillingEvent
from stripe_lifecycle.intake.bounds import MAX_ID_LENGTH
from stripe_lifecycle.intake.normalise import (
    UnreadableEvent,
    event_customer_id,
    event_payment_reference,
    normalise_event,
)
from stripe_lifecycle.storage.db import insert_for
from stripe_lifecycle.storage.models import InboxStatus, WebhookEvent

log = logging.getLogger(__name__)

MAX_BATCH = 500
# The widths of the inbox's text columns (`WebhookEvent`).
_TYPE_WIDTH = 255
_API_VERSION_WIDTH = 64
_CUSTOMER_ID_WIDTH = 255
_LAST_TIMESTAMP = 253_402_300_799  # 9999-12-31T23:59:59Z


@dataclass
class _Pending:
    row: dict[str, Any]
    done: asyncio.Future[int | None]


def read_row(
    payload: dict[str, Any], received_at: datetime, problem: str | None = None
) -> tuple[dict[str, Any], BillingEvent | None]:
    """The inbox row of a Stripe event (webhook or reconciliation) and the event to deliver.

    An event that cannot be read (`problem` found reading its body, a field the normaliser
    refuses, a value wider than its column) gets an `unreadable` row with the reason and
    nothing to deliver: it is acknowledged, so Stripe does not retry it for days.
    """
    if problem is None:
        problem = _column_problem(payload)
    if problem is None:
        try:
            event = normalise_event(payload)
        except UnreadableEvent as exc:
            problem = str(exc)
        else:
            return inbox_row(payload, event, received_at), event
    log.warning("inbox: event %s is unreadable: %s", payload.get("id"), problem)
    return unreadable_row(payload, problem, received_at), None


def _column_problem(payload: dict[str, Any]) -> str | None:
    type_, api_version = payload.get("type"), payload.get("api_version")
    if isinstance(type_, str) and len(type_) > _TYPE_WIDTH:
        return f"type: longer than {_TYPE_WIDTH} characters"
    if api_version is not None and not isinstance(api_version, str):
        return "api_version: expected a string"
    if isinstance(api_version, str) and len(api_version) > _API_VERSION_WIDTH:
        return f"api_version: longer than {_API_VERSION_WIDTH} characters"
    return None


def unreadable_row(payload: dict[str, Any], problem: str, received_at: datetime) -> dict[str, Any]:
    """The row of an event that cannot be read: what of its envelope fits the columns, the
    payload as received (or in brief, `intake/body.py`), and the reason."""
    api_version = payload.get("api_version")
    customer_id = event_customer_id(payload)
    # A `created` that names no moment is kept in the payload; the row says when it came.
    created = received_at
    seconds = payload.get("created")
    if isinstance(seconds, int) and not isinstance(seconds, bool):
        if 0 <= seconds <= _LAST_TIMESTAMP:
            created = datetime.fromtimestamp(seconds, UTC)
    return {
        "event_id": payload["id"],
        "type": str(payload.get("type", ""))[:_TYPE_WIDTH],
        "livemode": payload.get("livemode") is True,
        "api_version": api_version[:_API_VERSION_WIDTH] if isinstance(api_version, str) else None,
        "customer_id": customer_id if len(customer_id or "") <= _CUSTOMER_ID_WIDTH else None,
        "created": created,
        "payload": payload,
        "received_at": received_at,
        "status": InboxStatus.UNREADABLE,
        "attempts": 0,
        "last_error": problem[:2000],
    }


def inbox_row(
    payload: dict[str, Any], event: BillingEvent | None, received_at: datetime
) -> dict[str, Any]:
    """The inbox row of a Stripe event and its normalised form (`normalise_event`), the same
    whether a webhook brought it or reconciliation read it back. An event that names only a
    payment (a dispute) is pending too: the forwarder reads its customer from Stripe."""
    deliverable = event is not None or event_payment_reference(payload) is not None
    return {
        "event_id": payload["id"],
        "type": payload["type"],
        "livemode": bool(payload.get("livemode", False)),
        "api_version": payload.get("api_version"),
        # normalise_event answers None exactly when the event names no customer. An id
        # longer than any Stripe id does not fit the column: the row is stored without it,
        # and the forwarder quarantines the event (`intake/bounds.py`).
        "customer_id": (
            event.customer_id
            if event is not None and len(event.customer_id) <= MAX_ID_LENGTH
            else None
        ),
        "created": datetime.fromtimestamp(payload["created"], UTC),
        "payload": payload,
        "received_at": received_at,
        "status": InboxStatus.PENDING if deliverable else InboxStatus.IGNORED,
        "attempts": 0,
        "last_error": None,
    }


class InboxWriter:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._table: Table = SQLModel.metadata.tables[WebhookEvent.__tablename__]
        insert = insert_for(engine.dialect.name)
        # One statement object, executed with many parameter sets: SQLAlchemy compiles it
        # once and sends each batch as multi-row INSERT ... RETURNING.
        self._statement = (
            insert(self._table)
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(self._table.c.event_id, self._table.c.id)
        )
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def store(self, row: dict[str, Any]) -> int | None:
        """Store one event row; its inbox id, or None if the event id was already stored."""
        pending = _Pending(row, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(pending)
        return await pending.done

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("inbox: writing %d events failed: %s", len(batch), exc)
                for item in batch:
                    if not item.done.done():
                        item.done.set_exception(exc)

    async def _write(self, batch: list[_Pending]) -> None:
        # The same event twice in one batch (a fast Stripe retry): only the first is new.
        first: dict[str, _Pending] = {}
        for item in batch:
            first.setdefault(item.row["event_id"], item)
        async with self._engine.begin() as conn:
            result = await conn.execute(self._statement, [item.row for item in first.values()])
            inserted: dict[str, int] = {row.event_id: row.id for row in result}
        for item in batch:
            is_first = first[item.row["event_id"]] is item
            if not item.done.done():
                item.done.set_result(inserted.get(item.row["event_id"]) if is_first else None)
