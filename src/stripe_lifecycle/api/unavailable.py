"""The database down: 503 with Retry-After, never a 500.

A webhook that cannot be stored must not be acknowledged: Stripe retries any answer
other than 2xx, for three days, so the event comes back once the database does. 503 tells
it (and load balancers, and our own API's callers) that the fault is passing and the
request may be repeated as it is; Retry-After says when to try."""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.responses import JSONResponse

from stripe_lifecycle.storage.db import database_unavailable

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


async def database_unavailable_handler(request: Request, error: Exception) -> JSONResponse:
    """For the errors a database outage raises (`database_unavailable`); any other error
    is raised again, to be answered 500 and logged with its traceback."""
    if not database_unavailable(error):
        raise error
    log.warning(
        "%s %s answered 503, the database is unavailable: %s: %s",
        request.method,
        request.url.path,
        error.__class__.__name__,
        error,
    )
    return JSONResponse(
        {"detail": "the database is unavailable; retry later"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
