"""FastAPI dependencies as `Annotated` aliases, and the one API-key check that `/v1` and
the dashboard share."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client
from temporalio.service import RPCError

from stripe_lifecycle.api.errors import Responses, error
from stripe_lifecycle.api.rate_limit import client_address, refuse_if_limited
from stripe_lifecycle.api.state import AppState
from stripe_lifecycle.domain.segments import NAME_MAX, NAME_PATTERN, SegmentsConfig, load_segments
from stripe_lifecycle.settings import ApiRole, key_digest


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.lifecycle
    return state


AppStateDep = Annotated[AppState, Depends(app_state)]


async def session(state: AppStateDep) -> AsyncIterator[AsyncSession]:
    async with state.sessionmaker() as db:
        yield db


SessionDep = Annotated[AsyncSession, Depends(session)]


def temporal(state: AppStateDep) -> Client:
    return state.temporal


TemporalDep = Annotated[Client, Depends(temporal)]


@lru_cache(maxsize=8)
def configured_segments(path: Path) -> SegmentsConfig:
    """The segment definitions of `LIFECYCLE_SEGMENTS`, read once per process: like the
    automations, a changed file takes effect when the processes restart."""
    return load_segments(path)


def segments(state: AppStateDep) -> SegmentsConfig:
    return configured_segments(state.settings.segments)


SegmentsDep = Annotated[SegmentsConfig, Depends(segments)]


def clock() -> datetime:
    """Now, for what expires (email links); tests override the dependency to move time."""
    return datetime.now(UTC)


NowDep = Annotated[datetime, Depends(clock)]


def link_client_limit(request: Request, state: AppStateDep) -> None:
    """The per-client limit of every page behind an email link (`/t/`, `/survey/`, `/u/`),
    checked before the token is read: 429 with `Retry-After` past it."""
    refuse_if_limited(state.link_limits.per_client.take(client_address(request)))


# The pages behind email links take it as a route dependency; their own per-link limit
# follows once the token has named a genuine link.
LINK_CLIENT_LIMIT = Depends(link_client_limit)
# How those routes document the limit in the OpenAPI spec.
RATE_LIMITED: Responses = {
    429: error("Too many requests from this address or for this link; see Retry-After")
}

# Ids in paths, checked before anything reaches the database or Temporal: a value that
# cannot be an id answers 422 (FastAPI's answer to any parameter that fails its schema,
# listed in the OpenAPI spec with the pattern) rather than being looked up, stored past
# its column's length or turned into a workflow id over Temporal's limit.
STRIPE_ID_PATTERN = r"^[A-Za-z0-9_]+$"
# The length of every id column.
STRIPE_ID_MAX_LENGTH = 255
# Our message ids are UUIDs.
MESSAGE_ID_PATTERN = r"^[A-Za-z0-9_-]+$"
MESSAGE_ID_MAX_LENGTH = 36


def stripe_id(what: str, example: str) -> Any:
    """A path parameter holding a Stripe id (`cus_…`, `evt_…`): letters, digits and
    underscores, at most 255 characters."""
    return PathParam(
        min_length=1,
        max_length=STRIPE_ID_MAX_LENGTH,
        pattern=STRIPE_ID_PATTERN,
        description=f"{what}: letters, digits and underscores, at most "
        f"{STRIPE_ID_MAX_LENGTH} characters",
        examples=[example],
    )


CustomerId = Annotated[str, stripe_id("a Stripe customer id", "cus_PQ7x2mWn")]
EventId = Annotated[str, stripe_id("a Stripe event id", "evt_1PQ7x2mWnA")]
MessageId = Annotated[
    str,
    PathParam(
        min_length=1,
        max_length=MESSAGE_ID_MAX_LENGTH,
        pattern=MESSAGE_ID_PATTERN,
        description="a message id (a UUID, as the customer's email log lists it)",
        examples=["5b0f3c1e-8a4d-4c0e-9a51-2f6f0c3d7e21"],
    ),
]
SegmentName = Annotated[
    str,
    PathParam(
        min_length=1,
        max_length=NAME_MAX,
        pattern=NAME_PATTERN,
        description="a segment name of LIFECYCLE_SEGMENTS: lowercase letters, digits and "
        f"single hyphens, at most {NAME_MAX} characters",
        examples=["starter-3-months"],
    ),
]

# What a call to an unreachable Temporal raises: the lazy client's first connect fails with
# a RuntimeError ("Failed client connect"), later calls with an RPCError.
TEMPORAL_UNREACHABLE = (RPCError, RuntimeError, TimeoutError)


_bearer = HTTPBearer(auto_error=False, description="An API key from LIFECYCLE_API_KEYS")

# Which roles may do what a role allows: admin can do everything support can.
_GRANTS: dict[ApiRole, frozenset[ApiRole]] = {
    "support": frozenset({"support", "admin"}),
    "admin": frozenset({"admin"}),
}


def key_fingerprint(key: str) -> str:
    """The short fingerprint audit trails and dashboard sessions name a key by: the first
    8 hex digits of its SHA-256, so a key configured hashed has the same fingerprint."""
    return key_digest(key).hex()[:8]


@dataclass(frozen=True)
class Caller:
    """Who called: the key's role and a short fingerprint of the key (for audit trails;
    never the key itself)."""

    role: ApiRole
    key_id: str
    # Every role the key is configured with (LIFECYCLE_API_KEYS may list a key twice).
    roles: frozenset[ApiRole]

    def __str__(self) -> str:
        return f"{self.role} key {self.key_id}"

    def may(self, role: ApiRole) -> bool:
        return bool(_GRANTS[role] & self.roles)


def identify(state: AppState, presented: str) -> Caller | None:
    """The caller a presented API key identifies; None for a key that is not configured."""
    # Hash once, then compare with every configured digest, none skipped once one matched:
    # timing reveals neither which key nearly matched nor which one did.
    digest = key_digest(presented)
    matched = [k.role for k in state.api_keys if k.matches_digest(digest)]
    if not matched:
        return None
    return Caller(role=matched[0], key_id=digest.hex()[:8], roles=frozenset(matched))


def authenticate(state: AppState, presented: str | None) -> Caller:
    """The caller of a Bearer key; 401 for no key or one that is not configured."""
    caller = identify(state, presented) if presented is not None else None
    if caller is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="a valid API key is required (Authorization: Bearer <key>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return caller


def require_role(role: ApiRole) -> Callable[..., Caller]:
    def check(
        state: AppStateDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Caller:
        caller = authenticate(state, credentials.credentials if credentials else None)
        if not caller.may(role):
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"this key lacks the {role} role")
        return caller

    return check


SupportKey = Annotated[Caller, Depends(require_role("support"))]
AdminKey = Annotated[Caller, Depends(require_role("admin"))]
