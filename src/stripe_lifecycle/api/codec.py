"""A codec server for the Temporal Web UI and CLI: with LIFECYCLE_PAYLOAD_KEY set, Temporal
holds only ciphertext, and these endpoints encrypt and decrypt payloads for the people
allowed to read them, following Temporal's codec server protocol: `POST {endpoint}/decode`
and `/encode` with a JSON body `{"payloads": [...]}` in proto3 JSON (bytes as base64),
answered in the same shape.

Who may call: a `support` or `admin` API key as a Bearer token (the `temporal` CLI's
`--codec-auth`), or a dashboard session cookie sent by the Temporal Web UI's own origin
(LIFECYCLE_TEMPORAL_UI_URL) with cross-origin credentials on: the cookie is SameSite=Strict,
and a request from any other origin is refused, so no other page can use it. That cookie is
scoped to `/dashboard`, hence the endpoints' place. Each call is in the audit log: who
read customers' payloads, and when.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from google.protobuf import json_format
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import PayloadCodec

from stripe_lifecycle.api.deps import AppStateDep, Caller
from stripe_lifecycle.api.sessions import ViewerDep
from stripe_lifecycle.payload_codec import UnknownPayloadKey

router = APIRouter(prefix="/dashboard/codec", tags=["codec"])

PREFIX = "/dashboard/codec/"
_PAYLOADS_BODY: dict[str, Any] = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["payloads"],
                "properties": {
                    "payloads": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "metadata": {
                                    "type": "object",
                                    "additionalProperties": {"type": "string", "format": "byte"},
                                },
                                "data": {"type": "string", "format": "byte"},
                            },
                        },
                    }
                },
            }
        }
    },
    "required": True,
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the payloads, encoded or decoded, in the same JSON shape"},
    400: {
        "description": 'a body that is not `{"payloads": [...]}`, or a payload that '
        "does not decrypt (a key this API was not given, or altered data)"
    },
    401: {"description": "no API key or dashboard session (from the Temporal UI's origin)"},
    409: {"description": "payload encryption is off: LIFECYCLE_PAYLOAD_KEY is not set"},
}


def codec_caller(request: Request, state: AppStateDep, viewer: ViewerDep) -> Caller:
    from_ui = request.headers.get("origin") == state.settings.temporal_ui_origin()
    if viewer is None or (viewer.session is not None and not from_ui):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="a valid API key is required (Authorization: Bearer <key>), or a dashboard "
            "session sent by the Temporal Web UI at LIFECYCLE_TEMPORAL_UI_URL",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return viewer.caller


CodecCaller = Annotated[Caller, Depends(codec_caller)]


def _codec(state: AppStateDep) -> PayloadCodec:
    codec = state.temporal.data_converter.payload_codec
    if codec is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail="payload encryption is off: LIFECYCLE_PAYLOAD_KEY is not set on this API",
        )
    return codec


CodecDep = Annotated[PayloadCodec, Depends(_codec)]


async def _payloads(request: Request) -> list[Payload]:
    try:
        parsed = json_format.Parse(await request.body(), Payloads(), ignore_unknown_fields=True)
    except (json_format.ParseError, UnicodeDecodeError) as exc:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail='the body must be {"payloads": [...]} in proto3 JSON (bytes as base64)',
        ) from exc
    return list(parsed.payloads)


def _answer(payloads: Sequence[Payload]) -> Response:
    return Response(
        json_format.MessageToJson(Payloads(payloads=payloads), indent=None),
        media_type="application/json",
    )


@router.post("/encode", openapi_extra={"requestBody": _PAYLOADS_BODY}, responses=_RESPONSES)
async def encode(request: Request, _caller: CodecCaller, codec: CodecDep) -> Response:
    """Encrypt payloads (what the Web UI or CLI sends when it starts or signals a workflow)."""
    return _answer(await codec.encode(await _payloads(request)))


@router.post("/decode", openapi_extra={"requestBody": _PAYLOADS_BODY}, responses=_RESPONSES)
async def decode(request: Request, _caller: CodecCaller, codec: CodecDep) -> Response:
    """Decrypt payloads for display; payloads that are not encrypted come back as they are."""
    try:
        decoded = await codec.decode(await _payloads(request))
    except UnknownPayloadKey as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(exc)) from exc
    return _answer(decoded)


class CodecCors:
    """CORS on the codec endpoints only, for the Temporal Web UI's origin: it calls them
    from the browser, with credentials when it relies on the dashboard session."""

    def __init__(self, app: ASGIApp, ui_origin: str) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=[ui_origin],
            allow_methods=["POST"],
            allow_headers=["Authorization", "Content-Type", "X-Namespace"],
            allow_credentials=True,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path", "").startswith(PREFIX):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
