"""Reconciliation: Stripe's own list of events, read back page by page, fills in the
webhook inbox where deliveries were lost (an outage, a misconfigured endpoint).

A missing event is stored exactly as the webhook would have stored it; the forwarder's
sweep then delivers it like any other row. The unique event id makes an event already
there, or a webhook of it arriving later, change nothing.

A rate limit, a 5xx or a network failure raises, so that Temporal retries the page with
backoff (the Stripe client itself does not retry); a key Stripe refuses stops the pass
with an error naming what is wrong with it."""

import json
from datetime import UTC, datetime
from typing import Any

import stripe
from sqlalchemy import Table, select
from sqlmodel import SQLModel, col
from stripe.params import EventListParams
from temporalio import activity
from temporalio.exceptions import ApplicationError

from stripe_lifecycle.activities.interface import (
    EventsPageRequest,
    EventsPageResult,
    GapRequest,
    Reconciliation,
    ReconciliationRecord,
)
from stripe_lifecycle.intake.inbox import read_row
from stripe_lifecycle.storage.db import SessionMaker, insert_for
from stripe_lifecycle.storage.models import ReconciliationPass, WebhookEvent
from stripe_lifecycle.stripe_api.client import worth_retrying

# Stripe's largest page.
PAGE_SIZE = 100

NO_KEY = (
    "LIFECYCLE_STRIPE_API_KEY is not set: reconciliation reads Stripe's events with it "
    "(a secret key, or a restricted key with Events: read)"
)
KEY_REFUSED = (
    "Stripe refused LIFECYCLE_STRIPE_API_KEY (401): the key is wrong, revoked or expired; "
    "set a valid secret or restricted key"
)
KEY_CANNOT_READ_EVENTS = (
    "LIFECYCLE_STRIPE_API_KEY may not read events (403): give the restricted key "
    "Events: read, or use the secret key"
)


class ReconcileActivities(Reconciliation):
    def __init__(self, client: stripe.StripeClient | None, sessionmaker: SessionMaker) -> None:
        # None when LIFECYCLE_STRIPE_API_KEY is not set: every pass fails, saying so.
        self._client = client
        self._sessionmaker = sessionmaker
        self._inbox: Table = SQLModel.metadata.tables[WebhookEvent.__tablename__]

    @activity.defn(name="reconcile_events_page")
    async def reconcile_events_page(self, request: EventsPageRequest) -> EventsPageResult:
        """Read one page of events and store those the inbox lacks; raises on errors worth a
        retry, and non-retryably on a key Stripe refuses."""
        if self._client is None:
            raise ApplicationError(NO_KEY, type="StripeNotConfigured", non_retryable=True)
        params: EventListParams = {
            "limit": PAGE_SIZE,
            "created": {"gte": request.created_gte},
            "types": request.types,
        }
        if request.starting_after is not None:
            params["starting_after"] = request.starting_after
        try:
            page = await self._client.v1.events.list_async(params)
        except stripe.AuthenticationError as exc:
            raise ApplicationError(
                KEY_REFUSED, type="StripeKeyRefused", non_retryable=True
            ) from exc
        except stripe.PermissionError as exc:
            raise ApplicationError(
                KEY_CANNOT_READ_EVENTS, type="StripeKeyRefused", non_retryable=True
            ) from exc
        except stripe.StripeError as exc:
            if worth_retrying(exc):
                activity.logger.warning("listing Stripe's events will be retried: %s", exc)
                raise
            raise ApplicationError(
                f"Stripe refused to list events: {exc}", type="StripeRefused", non_retryable=True
            ) from exc
        payloads = _as_sent(page)
        recovered = await self._store_missing(payloads)
        return EventsPageResult(
            events_seen=len(payloads),
            events_recovered=recovered,
            next_starting_after=payloads[-1]["id"] if page.has_more and payloads else None,
        )

    async def _store_missing(self, payloads: list[dict[str, Any]]) -> int:
        if not payloads:
            return 0
        now = datetime.now(UTC)
        # Oldest first, as webhooks would have come: the forwarder sends in inbox order.
        rows = sorted(
            (read_row(payload, now)[0] for payload in payloads),
            key=lambda row: (row["created"], row["event_id"]),
        )
        async with self._sessionmaker() as session:
            insert = insert_for(session.get_bind().dialect.name)
            result = await session.execute(
                insert(self._inbox)
                .on_conflict_do_nothing(index_elements=["event_id"])
                .returning(self._inbox.c.event_id),
                rows,
            )
            stored = [row.event_id for row in result]
            await session.commit()
        if stored:
            activity.logger.warning(
                "reconciliation stored %d events no webhook delivered: %s", len(stored), stored
            )
        return len(stored)

    @activity.defn(name="record_reconciliation")
    async def record_reconciliation(self, record: ReconciliationRecord) -> None:
        async with self._sessionmaker() as session:
            session.add(
                ReconciliationPass(
                    finished_at=record.finished_at,
                    lookback_seconds=record.lookback_seconds,
                    events_seen=record.events_seen,
                    events_recovered=record.events_recovered,
                )
            )
            await session.commit()

    @activity.defn(name="reconciliation_gap")
    async def reconciliation_gap(self, request: GapRequest) -> datetime | None:
        async with self._sessionmaker() as session:
            last = await session.scalar(
                select(ReconciliationPass)
                .order_by(col(ReconciliationPass.finished_at).desc())
                .limit(1)
            )
        if last is None or last.finished_at >= request.before:
            return None
        return last.finished_at


def _as_sent(page: stripe.ListObject[stripe.Event]) -> list[dict[str, Any]]:
    """The page's events as the JSON Stripe sent, which is what a webhook carries: the
    library's objects turn decimal strings into Decimals, which JSON columns refuse, and
    fields of newer API versions stay in either way."""
    response = page.last_response
    # Set on every object a request answered; only hand-built ones lack it.
    assert response is not None
    data: list[dict[str, Any]] = json.loads(response.body)["data"]
    return data
