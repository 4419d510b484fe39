"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import select, text
from sqlmodel import col

from stripe_lifecycle.api.deps import AppStateDep
from stripe_lifecycle.storage.models import ReconciliationPass

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: AppStateDep) -> JSONResponse:
    checks: dict[str, str] = {}
    last_pass = None
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
        # The last finished reconciliation pass, and how many events webhooks had lost.
        "last_reconciliation": last_pass.finished_at.isoformat() if last_pass else None,
        "events_recovered": last_pass.events_recovered if last_pass else None,
    }
    return JSONResponse(body, status_code=200 if ready else 503)
