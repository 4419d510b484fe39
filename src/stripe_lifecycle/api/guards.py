"""ASGI middleware that answers before a request body is read: the body size limit on
every route, and the API key on every `/v1` route.

FastAPI reads and parses a route's JSON body before it solves the route's dependencies,
so a key checked only by a dependency would let an unauthenticated caller learn what the
parser thinks of their body (a 422) and make the server read it. Here the key is checked
first; the route's own dependency still decides the role (403).
"""

from __future__ import annotations

from fastapi import HTTPException, status
from fastapi.responses import JSONResponse
from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stripe_lifecycle.api.audit import note_caller
from stripe_lifecycle.api.deps import authenticate
from stripe_lifecycle.api.state import AppState


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a streamed body passes the limit: FastAPI re-raises an
    HTTPException met while reading a body, and the app's handler answers it."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            status.HTTP_413_CONTENT_TOO_LARGE,
            detail=f"request body over {max_bytes} bytes (LIFECYCLE_MAX_BODY_BYTES)",
        )


class BodySizeLimit:
    """413 for a body over `max_bytes`: at once when Content-Length says so, else as soon
    as the streamed chunks (a chunked upload has no Content-Length) add up to more."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            too_large = BodyTooLarge(self.max_bytes)
            await JSONResponse({"detail": too_large.detail}, status_code=too_large.status_code)(
                scope, receive, send
            )
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except BodyTooLarge as exc:
            # Only where no handler answered it (a route reading the body after starting
            # its response cannot be answered any more).
            if started:
                raise
            await JSONResponse({"detail": exc.detail}, status_code=exc.status_code)(
                scope, receive, send
            )


class AuthenticateApi:
    """401 for a `/v1` request without a configured API key, before its body is read; the
    key's caller is noted for the audit log."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and (path == "/v1" or path.startswith("/v1/")):
            state: AppState = scope["app"].state.lifecycle
            scheme, credentials = get_authorization_scheme_param(
                Headers(scope=scope).get("authorization")
            )
            try:
                caller = authenticate(state, credentials if scheme.lower() == "bearer" else None)
            except HTTPException as exc:
                response = JSONResponse(
                    {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
                )
                await response(scope, receive, send)
                return
            note_caller(scope, caller, "api")
        await self.app(scope, receive, send)
