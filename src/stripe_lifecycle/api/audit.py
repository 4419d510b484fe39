"""The audit log: one `audit_log` row for every mutating call (POST, PUT, PATCH, DELETE)
to `/v1` or a dashboard form, written once here rather than by each route.

Who: the key that made the call (role and fingerprint, never the key), noted on the
request by whatever identified it (`AuthenticateApi` for `/v1`, the dashboard's viewer
and login). What: the method, the route template and the ids in the path (never the raw
path or the body: personal data stays out). When, and the status answered.

Refused calls of an identified key are recorded too (a 403 for a role it lacks, a 403 for a
bad CSRF token, a 422): who tried what matters most there. Calls without a configured key
(401, the login form with a wrong key) have no "who" and are not recorded: anyone on the
internet could otherwise fill the table. Webhooks, tracked links, unsubscribe and survey
pages are the customers' and Stripe's, not this installation's keys', and are not either.

The row is written when the response starts, before the client sees the status, so a
caller that got an answer can find its row. A failure to write it is logged, not answered:
the call has already been done.
"""

from __future__ import annotations

import logging
import re
from typing import Literal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stripe_lifecycle.api.deps import Caller
from stripe_lifecycle.api.state import AppState
from stripe_lifecycle.storage.models import AuditEntry

log = logging.getLogger(__name__)

MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
AUDITED_PREFIXES = ("/v1/", "/dashboard/")

Via = Literal["api", "dashboard"]
# Where the caller that identified the request is noted, in the ASGI scope every
# middleware and route of the request share.
_CALLER_KEY = "stripe_lifecycle.caller"
# An id as our routes accept them (Stripe ids, message UUIDs, segment and template names);
# anything else in a path parameter (a request refused for its id) is not copied.
_PATH_ID = re.compile(r"[A-Za-z0-9_./-]{1,255}")
_NOT_AN_ID = "[invalid]"


def note_caller(scope: Scope, caller: Caller, via: Via) -> None:
    """Record who is making this request, for its audit row."""
    scope[_CALLER_KEY] = (caller, via)


def audited(scope: Scope) -> bool:
    path: str = scope.get("path", "")
    return (
        scope["type"] == "http"
        and scope.get("method", "") in MUTATING_METHODS
        and (path.startswith(AUDITED_PREFIXES) or path in ("/v1", "/dashboard"))
    )


def audit_entry(scope: Scope, status_code: int) -> AuditEntry | None:
    """The row for a finished request; None for one no key was identified for."""
    noted: tuple[Caller, Via] | None = scope.get(_CALLER_KEY)
    if noted is None:
        return None
    caller, via = noted
    route = scope.get("route")
    template: str | None = getattr(route, "path", None)
    path_ids = {
        str(name): value if isinstance(value, str) and _PATH_ID.fullmatch(value) else _NOT_AN_ID
        for name, value in (scope.get("path_params") or {}).items()
    }
    customer_id = path_ids.get("customer_id")
    return AuditEntry(
        actor_role=caller.role,
        actor_key_id=caller.key_id,
        via=via,
        method=scope["method"],
        route=template,
        path_ids=path_ids,
        customer_id=customer_id if customer_id != _NOT_AN_ID else None,
        status_code=status_code,
    )


class AuditMutations:
    """Writes the audit row of every mutating `/v1` and dashboard call (see the module)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not audited(scope):
            await self.app(scope, receive, send)
            return
        recorded = False

        async def record(status_code: int) -> None:
            nonlocal recorded
            recorded = True
            entry = audit_entry(scope, status_code)
            if entry is None:
                return
            state: AppState = scope["app"].state.lifecycle
            try:
                async with state.sessionmaker() as db:
                    db.add(entry)
                    await db.commit()
            except Exception:
                log.exception(
                    "could not write the audit row of %s %s (%s)",
                    entry.method,
                    entry.route,
                    entry.status_code,
                )

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not recorded:
                await record(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        except Exception:
            # Answered 500 by the outermost error handler, after this middleware.
            if not recorded:
                await record(500)
            raise
