"""Segments as support reads them, and the product usage the business's app reports.

- `GET /v1/segments`: the segments of `LIFECYCLE_SEGMENTS`, in file order, with their
  member counts.
- `GET /v1/segments/{name}/customers`: the members, paginated like Stripe's lists
  (`limit`, `starting_after`, `has_more`), or all of them as CSV for `Accept: text/csv`.
- `GET /v1/customers/{customer_id}/segments`: a customer's segments now, and every entry
  and exit with why.
- `POST /v1/customers/{customer_id}/usage` (admin): the latest value of a usage metric,
  stored, then signalled to the customer workflow so its segments are re-evaluated.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, status
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field, field_validator
from temporalio.service import RPCError, RPCStatusCode

from stripe_lifecycle.activities.interface import SegmentsChanged
from stripe_lifecycle.api.deps import (
    STRIPE_ID_MAX_LENGTH,
    STRIPE_ID_PATTERN,
    TEMPORAL_UNREACHABLE,
    AdminKey,
    AppStateDep,
    CustomerId,
    SegmentName,
    SegmentsDep,
    SessionDep,
    SupportKey,
    TemporalDep,
)
from stripe_lifecycle.api.errors import ADMIN_ONLY, UNPARSABLE_BODY, error, not_found
from stripe_lifecycle.api.reports import CSV, wants_csv
from stripe_lifecycle.domain import contract, ids
from stripe_lifecycle.storage.segments import (
    DEFAULT_PAGE,
    MAX_PAGE,
    CustomerSegments,
    SegmentCustomers,
    SegmentList,
    SegmentSummary,
    all_members,
    customer_segments,
    member_counts,
    members_csv,
    record_usage,
    segment_members,
)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["segments"])

# The app waits this long for Temporal to take the signal; the usage is stored either way.
SIGNAL_TIMEOUT = timedelta(seconds=5)
METRIC_PATTERN = r"^[a-z0-9_.\-]{1,64}$"

# The customer id a page starts after, checked like the ids in paths.
StartingAfter = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=STRIPE_ID_MAX_LENGTH,
        pattern=STRIPE_ID_PATTERN,
        description="a customer id: the page starts after it (the last one of the page before)",
    ),
]


@router.get("/segments", response_model=SegmentList)
async def list_segments(
    session: SessionDep, configured: SegmentsDep, _caller: SupportKey
) -> SegmentList:
    """The segments in force, in the order of the segments file, with how many customers
    are in each now."""
    counts = await member_counts(session)
    return SegmentList(
        segments=[
            SegmentSummary(
                name=s.name,
                description=s.description,
                members=counts.get(s.name, 0),
                time_based=s.time_based,
            )
            for s in configured.segments
        ]
    )


@router.get(
    "/segments/{name}/customers",
    response_model=SegmentCustomers,
    responses={
        200: {"content": {CSV: {"schema": {"type": "string"}}}},
        404: error("no segment of that name in the segments file"),
    },
)
async def list_segment_customers(
    name: SegmentName,
    state: AppStateDep,
    session: SessionDep,
    configured: SegmentsDep,
    _caller: SupportKey,
    limit: Annotated[
        int, Query(ge=1, le=MAX_PAGE, description="members per page (JSON only)")
    ] = DEFAULT_PAGE,
    starting_after: StartingAfter = None,
    accept: Annotated[str | None, Header()] = None,
) -> SegmentCustomers | Response:
    """The customers in the segment now, by customer id, with their billing snapshot's
    plan, status and MRR and when they entered. `Accept: text/csv` streams every member
    (no pagination) as CSV with a header line."""
    if name not in {s.name for s in configured.segments}:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no segment {name}")
    if wants_csv(accept):
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
        return StreamingResponse(
            _csv_lines(state, name),
            media_type=f"{CSV}; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="segment-{safe}.csv"'},
        )
    return await segment_members(session, name, limit, starting_after)


async def _csv_lines(state: AppStateDep, name: str) -> AsyncIterator[str]:
    header = True
    async for batch in all_members(state.sessionmaker, name):
        yield members_csv(batch, header)
        header = False
    if header:
        yield members_csv([], True)


@router.get(
    "/customers/{customer_id}/segments",
    response_model=CustomerSegments,
    responses=not_found("customer"),
)
async def get_customer_segments(
    customer_id: CustomerId, session: SessionDep, _caller: SupportKey
) -> CustomerSegments:
    """The customer's segments now (with when they entered) and their history: every
    entry and exit, oldest first, with why (which condition changed, old → new value)
    and whether it was the customer's first evaluation (`initial`)."""
    found = await customer_segments(session, customer_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no customer {customer_id}")
    return found


class UsageReport(BaseModel):
    metric: str = Field(
        pattern=METRIC_PATTERN,
        description="lowercase letters, digits, `_`, `.` and `-`; at most 64",
        examples=["seats_used"],
    )
    value: float = Field(
        ge=0, allow_inf_nan=False, strict=True, description="a number, 0 or more", examples=[9]
    )

    @field_validator("value", mode="before")
    @classmethod
    def _finite(cls, value: object) -> object:
        # Python's JSON reader takes `Infinity` and `NaN`; refused as they are, they would
        # come back in the 422's `input`, which JSON cannot carry (a 500). As text they
        # are refused the same and the answer can say what was sent.
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return value


class UsageRecorded(BaseModel):
    customer_id: str
    metric: str
    value: float
    # The customer workflow took the signal and re-evaluates the customer's segments now;
    # false when it does not run (yet: its first snapshot reads the stored usage) or
    # Temporal is unreachable (the usage is stored; the next evaluation reads it).
    evaluated: bool


@router.post(
    "/customers/{customer_id}/usage",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UsageRecorded,
    responses={**ADMIN_ONLY, **UNPARSABLE_BODY},
)
async def report_usage(
    customer_id: CustomerId,
    body: UsageReport,
    session: SessionDep,
    temporal: TemporalDep,
    _caller: AdminKey,
) -> UsageRecorded:
    """Product usage from the business's app (`usage.<metric>` in segments): stores the
    metric's latest value, then asks the customer workflow to re-evaluate the customer's
    segments. Needs an `admin` key: the app's backend writes it, support does not."""
    # Stored first: a Temporal outage must not lose the value.
    await record_usage(session, customer_id, body.metric, body.value)
    shown = f"{body.value:.0f}" if body.value.is_integer() else repr(body.value)
    signal = SegmentsChanged(reason=f"usage.{body.metric} reported: {shown}")
    handle = temporal.get_workflow_handle(ids.customer_workflow_id(customer_id))
    try:
        await handle.signal(contract.SEGMENTS_CHANGED_SIGNAL, signal, rpc_timeout=SIGNAL_TIMEOUT)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            log.warning("usage of %s stored, not signalled: %s", customer_id, exc)
        evaluated = False
    except TEMPORAL_UNREACHABLE as exc:
        log.warning("usage of %s stored, not signalled: Temporal unreachable: %s", customer_id, exc)
        evaluated = False
    else:
        evaluated = True
    return UsageRecorded(
        customer_id=customer_id, metric=body.metric, value=body.value, evaluated=evaluated
    )
