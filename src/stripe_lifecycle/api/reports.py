"""`GET /v1/reports/attribution`: conversions and revenue per automation, step or template;
`GET /v1/reports/lift`: each automation's treated customers against its holdout group. As
JSON, or as CSV for `Accept: text/csv`. The queries live in `storage/reports.py` and
`storage/lift.py`."""

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi.exceptions import RequestValidationError

from stripe_lifecycle.api.deps import AppStateDep, SessionDep, SupportKey
from stripe_lifecycle.storage.lift import LiftReport, lift_csv, lift_report
from stripe_lifecycle.storage.reports import (
    AttributionReport,
    GroupBy,
    RangeError,
    attribution_report,
    report_csv,
    report_range,
)

router = APIRouter(prefix="/v1/reports", tags=["reports"])

CSV = "text/csv"

Since = Annotated[
    str | None,
    Query(description="ISO date or datetime (UTC unless it says); default 30 days before until"),
]
Until = Annotated[
    str | None,
    Query(description="ISO date (that whole day included) or datetime; default now"),
]


@router.get(
    "/attribution",
    response_model=AttributionReport,
    responses={200: {"content": {CSV: {"schema": {"type": "string"}}}}},
)
async def get_attribution_report(
    session: SessionDep,
    _caller: SupportKey,
    since: Since = None,
    until: Until = None,
    group_by: Annotated[GroupBy, Query(description="one row per automation, step or template")] = (
        "step"
    ),
    accept: Annotated[str | None, Header()] = None,
) -> AttributionReport | Response:
    """What each automation, step or template earned: conversions credited to its emails,
    MRR and amounts per currency, emails sent and conversions per email sent; the
    conversions no email earned, and why; totals per currency that count the money of one
    Stripe event once (`events`, `shared_events`); and dunning's failed invoices,
    recoveries and recovery rate. The same rows and totals as CSV for `Accept: text/csv`."""
    start, end = _range(since, until)
    report = await attribution_report(session, start, end, group_by)
    if wants_csv(accept):
        return _csv(report_csv(report), f"attribution-{start:%Y%m%d}-{end:%Y%m%d}.csv")
    return report


@router.get(
    "/lift",
    response_model=LiftReport,
    responses={200: {"content": {CSV: {"schema": {"type": "string"}}}}},
)
async def get_lift_report(
    session: SessionDep,
    state: AppStateDep,
    _caller: SupportKey,
    since: Since = None,
    until: Until = None,
    accept: Annotated[str | None, Header()] = None,
) -> LiftReport | Response:
    """Per automation, over the lifecycle instances started in the range: the customers
    treated (emailed) and held out, the customers of each who converted and their rate,
    MRR per customer per currency, the absolute and relative lift with its 95% interval
    (`status`: ok, not_enough_data under the minimum sample, no_holdout), and the MRR the
    emails earned beyond what the holdout converted. One CSV row per automation and
    currency for `Accept: text/csv`."""
    start, end = _range(since, until)
    report = await lift_report(session, start, end, state.holdouts)
    if wants_csv(accept):
        return _csv(lift_csv(report), f"lift-{start:%Y%m%d}-{end:%Y%m%d}.csv")
    return report


def _range(since: str | None, until: str | None) -> tuple[datetime, datetime]:
    """The report's range, or a 422 naming the parameter."""
    try:
        return report_range(since, until, datetime.now(UTC))
    except RangeError as exc:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("query", exc.parameter), "msg": str(exc)}]
        ) from None


def _csv(body: str, name: str) -> Response:
    return Response(
        body,
        media_type=f"{CSV}; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def wants_csv(accept: str | None) -> bool:
    """CSV when the client ranks text/csv above JSON (q-values; JSON wins ties)."""
    ranks: dict[str, float] = {}
    for part in (accept or "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ranks[media.lower()] = max(quality, ranks.get(media.lower(), 0.0))
    json_rank = max(ranks.get("application/json", 0.0), ranks.get("*/*", 0.0))
    return ranks.get(CSV, 0.0) > json_rank
