"""The historical sync's activities: list Stripe's customers, subscriptions, invoices and
charges page by page into `stripe_sync_objects`, then deliver each customer's backfill to
their customer workflow the way the forwarder delivers webhooks.

A page is stored in one transaction, keyed by object: the same page read twice (a worker
lost after the write, the activity retried) stores nothing twice, and an object read
unchanged by a later sync is not delivered again. A delivery retried after a crash
signals events the customer workflow has already seen: it drops them by event id.

Stripe's rate limit is answered here rather than by a Temporal retry: each 429 is waited
out with exponential backoff and jitter (Stripe's advice; its 429s carry no Retry-After)
and counted, the count surviving a retry of the activity in its heartbeat. A key Stripe
refuses (401) or that may not read a resource (403) stops the sync with an error naming
the key's problem and the resource; the sync keeps its cursor.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import stripe
from sqlalchemy import Table, select, update
from sqlmodel import SQLModel, col
from temporalio import activity
from temporalio.converter import value_to_type
from temporalio.exceptions import ApplicationError

from stripe_lifecycle.activities.interface import (
    DeliverRequest,
    DeliverResult,
    StripeSync,
    SyncAccountInfo,
    SyncAccountRequest,
    SyncPageRequest,
    SyncPageResult,
)
from stripe_lifecycle.domain.events import BillingEvent
from stripe_lifecycle.domain.sync import EXPAND, PAGE_SIZE, Resource
from stripe_lifecycle.intake.backfill import Backfill, backfills
from stripe_lifecycle.intake.bounds import Refused, admit
from stripe_lifecycle.intake.forwarder import MAX_BATCH, Deliver
from stripe_lifecycle.storage.db import SessionMaker, insert_for
from stripe_lifecycle.storage.models import SyncedObject
from stripe_lifecycle.stripe_api.client import worth_retrying

log = logging.getLogger(__name__)

NO_KEY = (
    "LIFECYCLE_STRIPE_API_KEY is not set: the sync reads Stripe with it (a secret key, or a "
    "restricted key with read access to customers, subscriptions, invoices and charges)"
)
# The key may read some things and not this one (a restricted key).
FORBIDDEN = "StripeKeyForbidden"
REFUSED = "StripeRefused"
# Customers signalled at once by one delivery call.
DELIVERY_LANES = 32

# What a Stripe restricted key needs, by resource, for the message that names it.
PERMISSIONS = {
    Resource.CUSTOMERS: "Customers: read",
    Resource.SUBSCRIPTIONS: "Subscriptions: read",
    Resource.INVOICES: "Invoices: read",
    Resource.CHARGES: "Charges: read",
}


class SyncActivities(StripeSync):
    def __init__(
        self,
        client: stripe.StripeClient | None,
        sessionmaker: SessionMaker,
        deliver: Deliver,
        *,
        rate_limit_backoff: float = 0.5,
        rate_limit_waits: int = 8,
    ) -> None:
        # None when LIFECYCLE_STRIPE_API_KEY is not set: every sync stops, saying so.
        self._client = client
        self._sessionmaker = sessionmaker
        self._deliver = deliver
        self._backoff = rate_limit_backoff
        self._waits = rate_limit_waits
        self._table: Table = SQLModel.metadata.tables[SyncedObject.__tablename__]

    @activity.defn(name="sync_account_info")
    async def sync_account_info(self, request: SyncAccountRequest) -> SyncAccountInfo:
        client = self._require_client()

        async def retrieve() -> Any:
            # `GET /v1/account` answers for the connected account the request acts on.
            options: stripe.RequestOptions = {}
            if request.account is not None:
                options["stripe_account"] = request.account
            return await client.v1.accounts.retrieve_current_async(None, options)

        try:
            account, rate_limited = await self._read("the account", retrieve)
        except ApplicationError as exc:
            if exc.type not in (FORBIDDEN, REFUSED):
                raise
            # A restricted key may read customers and not the account: the sync goes on,
            # without an estimate of how much there is.
            activity.logger.info("the Stripe account cannot be read, no estimate: %s", exc)
            return SyncAccountInfo()
        created = getattr(account, "created", None)
        return SyncAccountInfo(
            created=created if isinstance(created, int) else None, rate_limited=rate_limited
        )

    @activity.defn(name="sync_list_page")
    async def sync_list_page(self, request: SyncPageRequest) -> SyncPageResult:
        client = self._require_client()
        resource = Resource(request.resource)
        created = {"lte": request.until}
        if request.since is not None:
            created["gte"] = request.since
        params: dict[str, Any] = {"limit": PAGE_SIZE, "created": created}
        if EXPAND[resource]:
            params["expand"] = EXPAND[resource]
        if resource == Resource.SUBSCRIPTIONS:
            # Without it Stripe leaves canceled subscriptions out, and with them churn.
            params["status"] = "all"
        if request.starting_after is not None:
            params["starting_after"] = request.starting_after
        if request.account is not None:
            params["stripe_account"] = request.account

        async def list_page() -> Any:
            # The raw answer: the library's typed objects cost ~10x the request itself per
            # page (measured: 200 ms against 15 ms for 100 invoices), and turn decimal
            # strings into Decimals; the JSON as Stripe sent it is what webhooks carry.
            return await client.raw_request_async("get", f"/v1/{resource}", **params)

        response, rate_limited = await self._read(resource, list_page, PERMISSIONS[resource])
        # stripe-python has parsed the body already: parsing it again took a twentieth of
        # the worker's busy time while listing (py-spy).
        body: dict[str, Any] = response.data
        objects = [obj for obj in body.get("data", []) if isinstance(obj, dict)]
        read_at = int(time.time())
        found: list[Backfill] = []
        unreadable = 0
        for obj in objects:
            try:
                found += backfills(resource, obj, read_at=read_at, account=request.account)
            except Exception:
                # A shape no version we know has: skipped and said, never the sync's end.
                unreadable += 1
                activity.logger.exception("cannot read %s %s", resource, obj.get("id"))
        changed = await self._store(found, request.account)
        times = [obj["created"] for obj in objects if isinstance(obj.get("created"), int)]
        last = objects[-1].get("id") if objects else None
        return SyncPageResult(
            read=len(objects),
            changed=changed,
            next_starting_after=last if body.get("has_more") and isinstance(last, str) else None,
            oldest_created=min(times) if times else None,
            rate_limited=rate_limited,
            unreadable=unreadable,
        )

    async def _read(
        self, what: str, call: Callable[[], Awaitable[Any]], permission: str = "read access"
    ) -> tuple[Any, int]:
        """`call`'s answer once Stripe gives it, and the 429s waited out for it."""
        # The 429s of earlier attempts of this page, so none goes uncounted.
        details = activity.info().heartbeat_details
        rate_limited = int(details[0]) if details else 0
        waits = 0
        while True:
            try:
                return await call(), rate_limited
            except stripe.RateLimitError:
                rate_limited += 1
                waits += 1
                activity.heartbeat(rate_limited)
                if waits > self._waits:
                    raise
                delay = min(30.0, self._backoff * 2 ** (waits - 1)) * random.uniform(0.5, 1.0)
                activity.logger.info("Stripe rate-limited reading %s; waiting %.2fs", what, delay)
                await asyncio.sleep(delay)
            except stripe.AuthenticationError as exc:
                raise ApplicationError(
                    f"Stripe refused LIFECYCLE_STRIPE_API_KEY (401) reading {what}: the key "
                    "is wrong, revoked or expired; set a valid key and run the sync again, it "
                    "resumes where it stopped",
                    type="StripeKeyRefused",
                    non_retryable=True,
                ) from exc
            except stripe.PermissionError as exc:
                raise ApplicationError(
                    f"LIFECYCLE_STRIPE_API_KEY may not read {what} (403): give the "
                    f"restricted key {permission}, or use the secret key; then run "
                    "the sync again, it resumes where it stopped",
                    type=FORBIDDEN,
                    non_retryable=True,
                ) from exc
            except stripe.StripeError as exc:
                if worth_retrying(exc):
                    activity.logger.warning("reading %s will be retried: %s", what, exc)
                    raise
                raise ApplicationError(
                    f"Stripe refused to answer for {what}: {exc}",
                    type=REFUSED,
                    non_retryable=True,
                ) from exc

    async def _store(self, found: list[Backfill], account: str | None) -> int:
        """Upsert the page's objects; how many of the listed ones were new or changed
        (with the cards expanded on them)."""
        # One row per object: an object twice in one statement (the same card expanded on
        # a customer and its subscription) is refused by PostgreSQL's ON CONFLICT.
        latest = {item.object_id: item for item in found}
        if not latest:
            return 0
        now = datetime.now(UTC)
        rows = [
            {
                "account": account or "",
                "object_id": item.object_id,
                "resource": item.resource,
                "customer_id": item.event.customer_id,
                "digest": item.digest,
                "event": item.stored_event(),
                "delivered": False,
                "synced_at": now,
            }
            for item in latest.values()
        ]
        async with self._sessionmaker() as session:
            insert = insert_for(session.get_bind().dialect.name)
            statement = insert(self._table)
            excluded = statement.excluded
            result = await session.execute(
                statement.on_conflict_do_update(
                    index_elements=["account", "object_id"],
                    set_={
                        "digest": excluded.digest,
                        "event": excluded.event,
                        "customer_id": excluded.customer_id,
                        "delivered": False,
                        "synced_at": excluded.synced_at,
                    },
                    # Unchanged since the last read: nothing to deliver again.
                    where=self._table.c.digest != excluded.digest,
                ).returning(self._table.c.object_id),
                rows,
            )
            changed = {latest[row.object_id].listed_id for row in result}
            await session.commit()
        return len(changed)

    @activity.defn(name="sync_deliver")
    async def sync_deliver(self, request: DeliverRequest) -> DeliverResult:
        account = request.account or ""
        pending = (col(SyncedObject.account) == account) & col(SyncedObject.delivered).is_(False)
        async with self._sessionmaker() as session:
            customers = list(
                (
                    await session.execute(
                        select(col(SyncedObject.customer_id))
                        .where(pending)
                        .where(col(SyncedObject.customer_id) > (request.after_customer or ""))
                        .group_by(col(SyncedObject.customer_id))
                        .order_by(col(SyncedObject.customer_id))
                        .limit(request.limit)
                    )
                ).scalars()
            )
            if not customers:
                return DeliverResult(customers=0, events=0, last_customer=None)
            rows = (
                await session.execute(
                    select(
                        col(SyncedObject.id), col(SyncedObject.customer_id), col(SyncedObject.event)
                    )
                    .where(pending)
                    .where(col(SyncedObject.customer_id).in_(customers))
                    .order_by(col(SyncedObject.id))
                )
            ).all()
        by_customer: dict[str, list[BillingEvent]] = defaultdict(list)
        for _, customer_id, stored in rows:
            if stored is None:
                continue
            event: BillingEvent = value_to_type(BillingEvent, stored)
            event.backfill_starts = request.start_lifecycles
            # Bounded as webhooks are (`intake/bounds.py`): an object that cannot enter a
            # workflow is left out, logged, rather than failing every delivery after it.
            admitted = admit(event)
            if isinstance(admitted, Refused):
                activity.logger.error(
                    "sync: %s of customer %s left out: %s",
                    event.event_id,
                    customer_id,
                    admitted.reason,
                )
                continue
            by_customer[str(customer_id)].append(admitted.event)
        lanes = asyncio.Semaphore(DELIVERY_LANES)

        async def deliver(customer_id: str, events: list[BillingEvent]) -> None:
            async with lanes:
                for start in range(0, len(events), MAX_BATCH):
                    await self._deliver(customer_id, events[start : start + MAX_BATCH])
                activity.heartbeat()

        await asyncio.gather(*(deliver(c, events) for c, events in by_customer.items()))
        async with self._sessionmaker() as session:
            await session.execute(
                update(SyncedObject)
                .where(col(SyncedObject.id).in_([row_id for row_id, _, _ in rows]))
                .values(delivered=True, event=None)
            )
            await session.commit()
        return DeliverResult(
            customers=len(customers),
            events=sum(len(events) for events in by_customer.values()),
            last_customer=customers[-1],
        )

    def _require_client(self) -> stripe.StripeClient:
        if self._client is None:
            raise ApplicationError(NO_KEY, type="StripeNotConfigured", non_retryable=True)
        return self._client
