"""`/v1/sync`: start the historical Stripe sync, and read how it goes."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, Field

from stripe_lifecycle.api.deps import (
    TEMPORAL_UNREACHABLE,
    AdminKey,
    AppStateDep,
    SupportKey,
    TemporalDep,
)
from stripe_lifecycle.api.errors import ADMIN_ONLY, TEMPORAL_DOWN, UNPARSABLE_BODY, error
from stripe_lifecycle.sync_control import start_sync, sync_status

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["sync"])

ACCOUNT_PATTERN = r"^acct_[A-Za-z0-9]+$"
ACCOUNT_HELP = "a connected account (Stripe Connect) instead of the key's own"


class SyncRequest(BaseModel):
    start_lifecycles: bool = Field(
        default=False,
        description="also start lifecycles for situations in progress now (running trials, "
        "scheduled cancellations, open failed invoices), from their current step",
    )
    account: str | None = Field(
        default=None, pattern=ACCOUNT_PATTERN, max_length=255, description=ACCOUNT_HELP
    )


class SyncStartedOut(BaseModel):
    workflow_id: str
    # started | running (already: this request joined it) | resumed (from where it stopped)
    state: str


class ResourceOut(BaseModel):
    resource: str
    read: int
    changed: int
    estimated_total: int | None
    done: bool


class SyncOut(BaseModel):
    workflow_id: str
    status: str
    state: str | None
    started_at: datetime | None
    finished_at: datetime | None
    resources: list[ResourceOut]
    customers_delivered: int
    events_delivered: int
    rate_limited: int
    unreadable: int
    start_lifecycles: bool
    error: str | None


@router.post(
    "/sync",
    response_model=SyncStartedOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={**ADMIN_ONLY, **UNPARSABLE_BODY, **TEMPORAL_DOWN},
)
async def post_sync(
    body: SyncRequest, state: AppStateDep, temporal: TemporalDep, caller: AdminKey
) -> SyncStartedOut:
    try:
        started = await start_sync(
            temporal,
            state.settings.task_queue,
            account=body.account,
            start_lifecycles=body.start_lifecycles,
        )
    except TEMPORAL_UNREACHABLE as exc:
        raise _unreachable(exc) from exc
    outcome = "running" if started.running_already else "resumed" if started.resumed else "started"
    log.info("sync %s %s by %s", started.workflow_id, outcome, caller)
    return SyncStartedOut(workflow_id=started.workflow_id, state=outcome)


@router.get(
    "/sync",
    response_model=SyncOut,
    responses={404: error("no sync has run for this account"), **TEMPORAL_DOWN},
)
async def get_sync(
    temporal: TemporalDep,
    _caller: SupportKey,
    account: Annotated[
        str | None, Query(pattern=ACCOUNT_PATTERN, max_length=255, description=ACCOUNT_HELP)
    ] = None,
) -> SyncOut:
    try:
        found = await sync_status(temporal, account)
    except TEMPORAL_UNREACHABLE as exc:
        raise _unreachable(exc) from exc
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no sync has run for this account")
    progress = found.progress
    return SyncOut(
        workflow_id=found.workflow_id,
        status=found.status,
        state=progress.state if progress else None,
        started_at=_utc(progress.started_at) if progress else None,
        finished_at=_utc(progress.finished_at) if progress else None,
        resources=[
            ResourceOut(
                resource=r.resource,
                read=r.read,
                changed=r.changed,
                estimated_total=r.estimated_total,
                done=r.done,
            )
            for r in (progress.resources if progress else [])
        ],
        customers_delivered=progress.customers_delivered if progress else 0,
        events_delivered=progress.events_delivered if progress else 0,
        rate_limited=progress.rate_limited if progress else 0,
        unreadable=progress.unreadable if progress else 0,
        start_lifecycles=progress.start_lifecycles if progress else False,
        error=found.error,
    )


def _utc(value: datetime | None) -> datetime | None:
    return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)


def _unreachable(exc: BaseException) -> HTTPException:
    log.warning("sync: Temporal unreachable: %s", exc)
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="Temporal is unreachable")
