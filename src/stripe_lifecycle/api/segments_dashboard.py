"""The dashboard's segments pages, signed in as for `/dashboard` (`sessions.py`).

`GET /dashboard/segments`: per segment of `LIFECYCLE_SEGMENTS`, its members now and who
entered and left it week by week over the last 12 weeks (a server-drawn SVG chart and its
table). `GET /dashboard/segments/{name}`: the segment's members, by customer id.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import HTMLResponse, Response

from stripe_lifecycle.api.charts import money
from stripe_lifecycle.api.dashboard import render_page, to_login
from stripe_lifecycle.api.deps import AppStateDep, SegmentName, SegmentsDep, SessionDep
from stripe_lifecycle.api.segment_charts import flow_chart
from stripe_lifecycle.api.segments import StartingAfter
from stripe_lifecycle.api.sessions import ViewerDep, csrf_token, session_secret
from stripe_lifecycle.storage.reports import periods
from stripe_lifecycle.storage.segments import (
    PeriodChanges,
    changes_per_period,
    member_counts,
    segment_members,
)

router = APIRouter(prefix="/dashboard", tags=["dashboard"])

WEEKS = 12
# The drill-down lists at most this many members; the API's CSV has them all.
MEMBERS_LISTED = 500


def week_spans(now: datetime, weeks: int = WEEKS) -> list[tuple[datetime, datetime]]:
    """The last `weeks` ISO weeks (Monday to Sunday, UTC), this one included (to now)."""
    monday = datetime.combine(now.date() - timedelta(days=now.weekday()), datetime.min.time(), UTC)
    return periods(monday - timedelta(weeks=weeks - 1), now, "week")


@router.get("/segments", response_class=HTMLResponse)
async def segments_page(
    viewer: ViewerDep,
    state: AppStateDep,
    session: SessionDep,
    configured: SegmentsDep,
) -> Response:
    """The segments page (HTML): members now, entries and exits per week."""
    if viewer is None:
        return to_login()
    now = datetime.now(UTC)
    spans = week_spans(now)
    counts = await member_counts(session)
    changes = await changes_per_period(session, spans)
    cards = []
    for segment in configured.segments:
        weeks = changes.get(segment.name) or [PeriodChanges(start=s, end=e) for s, e in spans]
        cards.append(
            {
                "segment": segment,
                "members": counts.get(segment.name, 0),
                "entered": sum(w.entered for w in weeks),
                "exited": sum(w.exited for w in weeks),
                "chart": flow_chart(segment.name, weeks),
            }
        )
    return render_page(
        "segments.html",
        viewer=viewer,
        csrf=(csrf_token(session_secret(state.settings), viewer.session) if viewer.session else ""),
        current="segments",
        cards=cards,
        weeks=WEEKS,
        now=now,
    )


@router.get("/segments/{name}", response_class=HTMLResponse)
async def segment_page(
    name: SegmentName,
    viewer: ViewerDep,
    state: AppStateDep,
    session: SessionDep,
    configured: SegmentsDep,
    starting_after: StartingAfter = None,
) -> Response:
    """One segment's members (HTML), by customer id, a page at a time."""
    if viewer is None:
        return to_login()
    found = [s for s in configured.segments if s.name == name]
    if not found:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no segment {name}")
    page = await segment_members(session, name, MEMBERS_LISTED, starting_after)
    counts = await member_counts(session)
    return render_page(
        "segment.html",
        viewer=viewer,
        csrf=(csrf_token(session_secret(state.settings), viewer.session) if viewer.session else ""),
        current="segments",
        segment=found[0],
        members=counts.get(name, 0),
        page=page,
        starting_after=starting_after,
        money=money,
    )
