"""The error answers the OpenAPI spec lists, so it describes every answer the API gives.

Our refusals are FastAPI's: `{"detail": "<why>"}` for an HTTPException, and a 422 with
`{"detail": [{"loc", "msg", "type"}]}` for a request that fails its schema; a check of our
own that refuses a parameter answers that same list (`invalid`), never a bare string.
"""

from __future__ import annotations

from typing import Any, NoReturn

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

Responses = dict[int | str, dict[str, Any]]


class ErrorDetail(BaseModel):
    """Why the request was refused."""

    detail: str


def error(description: str) -> dict[str, Any]:
    return {"model": ErrorDetail, "description": description}


# Every route: the size limit answers before any route sees the request.
BODY_TOO_LARGE: Responses = {
    413: error("request body over LIFECYCLE_MAX_BODY_BYTES; nothing read or stored"),
}
# Every `/v1` route.
NO_API_KEY: Responses = {
    401: error("no API key, or one LIFECYCLE_API_KEYS does not list"),
}
# The `/v1` routes only an admin key may call.
ADMIN_ONLY: Responses = {
    403: error("the key lacks the admin role"),
}
# Routes with a JSON body: one that cannot be decoded (not UTF-8, say).
UNPARSABLE_BODY: Responses = {
    400: error("a body that cannot be parsed"),
}
TEMPORAL_DOWN: Responses = {
    503: error("Temporal is unreachable"),
}


def not_found(what: str) -> Responses:
    return {404: error(f"no such {what}")}


def invalid(location: tuple[str, ...], message: str, value: object = None) -> NoReturn:
    """Refuse a parameter (`("query", "fixture")`, `("body",)`) with FastAPI's 422."""
    raise RequestValidationError(
        [{"type": "value_error", "loc": location, "msg": message, "input": value}]
    )
