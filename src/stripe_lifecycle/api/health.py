"""Liveness and readiness.

Readiness is about this process's dependencies (the database, Temporal): a replica that
answers 503 is taken out of the load balancer, which would turn Stripe's webhooks away
and help nothing. Quarantined events (`intake/forwarder.py`) are a problem with some
events, not with the replica, so they do not make it unready: `/readyz` counts them
(`quarantined_events`) and says `degraded: true` while any wait for an admin.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import func, select, text
from sqlmodel import col

from stripe_lifecycle.api.deps import AppStateDep
from stripe_lifecycle.storage.models import InboxStatus, ReconciliationPass, WebhookEvent

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    # "ok", or "unreachable: <error class>", for "database" and "temporal".
    checks: dict[str, str]
    undelivered_events: int
    quarantined_events: int | None
    degraded: bool
    last_reconciliation: datetime | None
    events_recovered: int | None


@router.get(
    "/readyz",
    response_model=None,
    responses={
        200: {"model": Readiness, "description": "the database and Temporal are reachable"},
        503: {"model": Readiness, "description": "the database or Temporal is unreachable"},
    },
)
async def readyz(state: AppStateDep) -> JSONResponse:
    checks: dict[str, str] = {}
    last_pass = None
    quarantined: int | None = None
    try:
        async with state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            last_pass = (
                await conn.execute(
                    select(
                        col(ReconciliationPass.finished_at),
                        col(ReconciliationPass.events_recovered),
                    )
                    .order_by(col(ReconciliationPass.finished_at).desc())
                    .limit(1)
                )
            ).first()
            quarantined = (
                await conn.execute(
                    select(func.count())
                    .select_from(WebhookEvent)
                    .where(col(WebhookEvent.status) == InboxStatus.QUARANTINED)
                )
            ).scalar_one()
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {exc.__class__.__name__}"
    try:
        await asyncio.wait_for(state.temporal.service_client.check_health(), timeout=3)
        checks["temporal"] = "ok"
    except Exception as exc:
        checks["temporal"] = f"unreachable: {exc.__class__.__name__}"
    ready = all(v == "ok" for v in checks.values())
    body: dict[str, object] = {
        "status": "ready" if ready else "not ready",
        "checks": checks,
        "undelivered_events": state.forwarder.backlog(),
        # Events that can never be delivered as they are, waiting for an admin
        # (`GET /v1/inbox/quarantined`); None when the database cannot tell.
        "quarantined_events": quarantined,
        "degraded": bool(quarantined),
        # The last finished reconciliation pass, and how many events webhooks had lost.
        "last_reconciliation": last_pass.finished_at.isoformat() if last_pass else None,
        "events_recovered": last_pass.events_recovered if last_pass else None,
    }
    return JSONResponse(body, status_code=200 if ready else 503)
