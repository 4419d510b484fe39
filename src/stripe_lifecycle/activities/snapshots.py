"""Persist the customer workflow's billing snapshot so the API can answer from the DB."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Executable
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity

from stripe_lifecycle.activities.interface import Snapshots
from stripe_lifecycle.domain.ledger import BillingSnapshot
from stripe_lifecycle.storage.db import SessionMaker, database_unavailable, insert_for
from stripe_lifecycle.storage.models import Customer

logger = logging.getLogger(__name__)

# The most snapshots one flush writes in one transaction.
FLUSH_LIMIT = 200

# A snapshot handed to the writer, and what its activity awaits: its commit.
Waiting = tuple[BillingSnapshot, asyncio.Future[None]]


class SnapshotActivities(Snapshots):
    def __init__(self, sessionmaker: SessionMaker) -> None:
        # Shared with `Segments.store_batch`: one group commit for every snapshot.
        self.writer = SnapshotWriter(sessionmaker)

    @activity.defn(name="persist_snapshot")
    async def persist_snapshot(self, snapshot: BillingSnapshot) -> None:
        """Upsert the snapshot; an older version (retried or late activity) never wins."""
        await self.writer.write(snapshot)
        activity.logger.debug(
            "persisted snapshot of %s at version %d", snapshot.customer_id, snapshot.events_applied
        )


class SnapshotWriter:
    """Writes the snapshots that concurrent activities hand it in one transaction per
    flush (group commit). A transaction costs the worker about a millisecond of CPU
    whatever it holds, and under load many customer workflows persist at once.

    A write returns once its snapshot is committed, so the activity's promise holds.
    Nothing waits to fill a batch: a flush starts whenever none is running, and takes
    what arrived while the last one ran."""

    def __init__(self, sessionmaker: SessionMaker) -> None:
        self._sessionmaker = sessionmaker
        self._queue: list[Waiting] = []
        self._flusher: asyncio.Task[None] | None = None

    async def write(self, snapshot: BillingSnapshot) -> None:
        committed = asyncio.get_running_loop().create_future()
        self._queue.append((snapshot, committed))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await committed

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:FLUSH_LIMIT], self._queue[FLUSH_LIMIT:]
            try:
                await self._commit([snapshot for snapshot, _ in batch])
            except Exception as error:
                if database_unavailable(error) or len(batch) == 1:
                    _settle_all(batch, error)
                else:
                    logger.warning("a batch of %d snapshots failed; writing each alone", len(batch))
                    await self._commit_each(batch)
            else:
                _settle_all(batch, None)

    async def _commit_each(self, batch: list[Waiting]) -> None:
        """A snapshot the database refuses must not fail the others' activities: each is
        written alone, and only its own sees the error; once the database is gone, the
        rest fail at once rather than wait on it one by one."""
        for index, (snapshot, committed) in enumerate(batch):
            try:
                await self._commit([snapshot])
            except Exception as error:
                if database_unavailable(error):
                    _settle_all(batch[index:], error)
                    return
                _settle(committed, error)
            else:
                _settle(committed, None)

    async def _commit(self, snapshots: Sequence[BillingSnapshot]) -> None:
        async with self._sessionmaker() as session:
            await upsert_snapshots(session, snapshots)
            await session.commit()


def _settle_all(batch: list[Waiting], error: BaseException | None) -> None:
    for _, committed in batch:
        _settle(committed, error)


def _settle(committed: asyncio.Future[None], error: BaseException | None) -> None:
    # The activity may have been cancelled (timed out) meanwhile: nobody waits then.
    if committed.done():
        return
    if error is None:
        committed.set_result(None)
    else:
        committed.set_exception(error)


async def upsert_snapshot(session: AsyncSession, snapshot: BillingSnapshot) -> None:
    """The snapshot's upsert, in the caller's transaction; an older version never wins."""
    await upsert_snapshots(session, [snapshot])


async def upsert_snapshots(session: AsyncSession, snapshots: Sequence[BillingSnapshot]) -> None:
    """Upsert snapshots in the caller's transaction, in one statement; an older version
    never wins, and of one customer's snapshots only the newest is written (a statement
    may change a row once)."""
    newest: dict[str, BillingSnapshot] = {}
    for snapshot in snapshots:
        known = newest.get(snapshot.customer_id)
        if known is None or known.events_applied <= snapshot.events_applied:
            newest[snapshot.customer_id] = snapshot
    now = datetime.now(UTC)
    rows = [_row(snapshot, now) for snapshot in newest.values()]
    await session.execute(_upsert(session.get_bind().dialect.name, tuple(rows[0])), rows)


def _row(snapshot: BillingSnapshot, now: datetime) -> dict[str, Any]:
    return {
        "customer_id": snapshot.customer_id,
        "email": snapshot.email,
        "name": snapshot.name,
        "status": snapshot.status,
        "plan": snapshot.plan,
        "mrr_cents": snapshot.mrr_cents,
        "currency": snapshot.currency,
        "ltv_cents": snapshot.ltv_cents,
        "customer_since": _from_epoch(snapshot.customer_since),
        "livemode": snapshot.livemode,
        "deleted": snapshot.deleted,
        "snapshot_version": snapshot.events_applied,
        # The ledger's copy of each subscription's payload is its working memory, not
        # part of the read model.
        "subscriptions": [
            asdict(s, dict_factory=_without_payload) for s in snapshot.subscriptions.values()
        ],
        "updated_at": now,
        "mrr": snapshot.mrr,
        "mrr_exact": snapshot.mrr_exact,
        "ltv": snapshot.ltv,
        "refunded": snapshot.refunded,
    }


# The upsert statement, built once per dialect and set of columns: SQLAlchemy finds a
# statement object it has seen in its compiled cache by a key it keeps on the object, where
# a statement built per snapshot (a `SET` clause of seventeen columns) is built, hashed and
# looked up anew.
_UPSERTS: dict[tuple[str, tuple[str, ...]], Executable] = {}


def _upsert(dialect: str, columns: tuple[str, ...]) -> Executable:
    """Insert each row, or update the stored one's `columns` unless it is newer."""
    statement = _UPSERTS.get((dialect, columns))
    if statement is None:
        table = Customer.metadata.tables[Customer.__tablename__]
        insert = insert_for(dialect)(table)
        statement = insert.on_conflict_do_update(
            index_elements=[table.c.customer_id],
            set_={name: insert.excluded[name] for name in columns if name != "customer_id"},
            where=table.c.snapshot_version <= insert.excluded.snapshot_version,
        )
        _UPSERTS[dialect, columns] = statement
    return statement


def _without_payload(fields: list[tuple[str, Any]]) -> dict[str, Any]:
    return {name: value for name, value in fields if name != "subscription"}


def _from_epoch(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)
