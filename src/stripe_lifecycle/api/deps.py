"""FastAPI dependencies as `Annotated` aliases."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client
from temporalio.service import RPCError

from stripe_lifecycle.api.state import AppState
from stripe_lifecycle.settings import ApiRole


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

# What a call to an unreachable Temporal raises: the lazy client's first connect fails with
# a RuntimeError ("Failed client connect"), later calls with an RPCError.
TEMPORAL_UNREACHABLE = (RPCError, RuntimeError, TimeoutError)


_bearer = HTTPBearer(auto_error=False, description="An API key from LIFECYCLE_API_KEYS")

# Which roles may do what a role allows: admin can do everything support can.
_GRANTS: dict[ApiRole, frozenset[ApiRole]] = {
    "support": frozenset({"support", "admin"}),
    "admin": frozenset({"admin"}),
}


@dataclass(frozen=True)
class Caller:
    """Who called: the key's role and a short fingerprint of the key (for audit trails;
    never the key itself)."""

    role: ApiRole
    key_id: str

    def __str__(self) -> str:
        return f"{self.role} key {self.key_id}"


def require_role(role: ApiRole) -> Callable[..., Caller]:
    def check(
        state: AppStateDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Caller:
        unauthorized = HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="a valid API key is required (Authorization: Bearer <key>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
        if credentials is None:
            raise unauthorized
        # Compare against every key, so timing does not reveal which one nearly matched.
        matched = [k.role for k in state.api_keys if k.matches(credentials.credentials)]
        if not matched:
            raise unauthorized
        if not _GRANTS[role] & set(matched):
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"this key lacks the {role} role")
        key_id = hashlib.sha256(credentials.credentials.encode()).hexdigest()[:8]
        return Caller(role=matched[0], key_id=key_id)

    return check


SupportKey = Annotated[Caller, Depends(require_role("support"))]
AdminKey = Annotated[Caller, Depends(require_role("admin"))]
