"""Who is looking at the dashboard: a Bearer key, or a sign-in session cookie.

A browser cannot send a Bearer header, so `POST /dashboard/login` exchanges a key for a
session cookie: HttpOnly, SameSite=Strict, Secure when served over https (or when
`LIFECYCLE_PUBLIC_URL` is https), valid for 12 hours, signed with a key derived from
`LIFECYCLE_LINK_SECRET`. It holds the role and the key's fingerprint, never the key, and
stops working when that key is removed from `LIFECYCLE_API_KEYS` or the session is signed
out: signing out records the session (or, "everywhere", every session of the key signed in
until then) in `dashboard_logouts`, which every request with a cookie consults, so a copy
of the cookie dies with the session it was taken from. Scripts may send
`Authorization: Bearer <key>` instead, checked as on `/v1`. Forms posted with the cookie
carry a CSRF token derived from the session; the strict same-site cookie is the second
guard.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy import delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from stripe_lifecycle.api.audit import note_caller
from stripe_lifecycle.api.deps import AppStateDep, Caller, SessionDep, authenticate
from stripe_lifecycle.api.state import AppState
from stripe_lifecycle.domain.links import seal, unseal
from stripe_lifecycle.settings import ApiRole, Settings
from stripe_lifecycle.storage.models import DashboardLogout

SESSION_COOKIE = "lifecycle_dashboard"
SESSION_TTL = timedelta(hours=12)


@dataclass(frozen=True)
class DashboardSession:
    """What the session cookie holds, signed: never the key itself."""

    role: ApiRole
    key_id: str
    # When it was signed in (Unix seconds, to the millisecond): "sign out everywhere" ends
    # the key's sessions signed in up to then.
    issued_at: float
    expires_at: int
    # Random per login: the session's id in `dashboard_logouts`; its CSRF token derives
    # from it.
    nonce: str


def session_secret(settings: Settings) -> bytes:
    # Derived, so a session cookie can never pass for a tracked-link token or back.
    return hmac.new(settings.link_secret_bytes(), b"dashboard-session", hashlib.sha256).digest()


def new_session(caller: Caller, now: float) -> DashboardSession:
    return DashboardSession(
        role=caller.role,
        key_id=caller.key_id,
        issued_at=round(now, 3),
        expires_at=int(now + SESSION_TTL.total_seconds()),
        nonce=secrets.token_urlsafe(16),
    )


def seal_session(secret: bytes, session: DashboardSession) -> str:
    payload = json.dumps(
        {
            "r": session.role,
            "k": session.key_id,
            "i": round(session.issued_at * 1000),
            "e": session.expires_at,
            "n": session.nonce,
        },
        separators=(",", ":"),
    ).encode()
    return seal(secret, b"session", payload)


def open_session(secret: bytes, token: str, now: float) -> DashboardSession | None:
    """The session of a genuine, unexpired cookie; None for anything else."""
    payload = unseal(secret, b"session", token)
    if payload is None:
        return None
    try:
        values = json.loads(payload)
        session = DashboardSession(
            role=values["r"],
            key_id=str(values["k"]),
            issued_at=int(values["i"]) / 1000,
            expires_at=int(values["e"]),
            nonce=values["n"],
        )
    except (ValueError, KeyError, TypeError):
        return None
    if session.role not in ("support", "admin") or session.expires_at <= now:
        return None
    return session


def csrf_token(secret: bytes, session: DashboardSession) -> str:
    # The MAC part of the nonce sealed for CSRF: nothing a page could guess or reuse.
    return seal(secret, b"csrf", session.nonce.encode()).rpartition(".")[2]


@dataclass(frozen=True)
class Viewer:
    caller: Caller
    # None for a script that sent a Bearer key: there is no cookie to forge requests with.
    session: DashboardSession | None

    @property
    def actor(self) -> str:
        return f"{self.caller} (dashboard)"


async def signed_out(db: AsyncSession, session: DashboardSession) -> bool:
    """Whether the session was signed out, itself or with every session of its key."""
    issued = datetime.fromtimestamp(session.issued_at, UTC)
    found = await db.execute(
        select(func.count())
        .select_from(DashboardLogout)
        .where(col(DashboardLogout.key_id) == session.key_id)
        .where(
            or_(
                col(DashboardLogout.session_id) == session.nonce,
                col(DashboardLogout.session_id).is_(None) & (col(DashboardLogout.at) >= issued),
            )
        )
    )
    return bool(found.scalar_one())


async def sign_out(db: AsyncSession, key_id: str, session: DashboardSession | None) -> None:
    """End one session, or with None every session of the key signed in until now."""
    now = datetime.now(UTC)
    # A sign-out older than a session's lifetime ends nothing that still opens.
    await db.execute(delete(DashboardLogout).where(col(DashboardLogout.at) < now - SESSION_TTL))
    db.add(DashboardLogout(key_id=key_id, session_id=session.nonce if session else None, at=now))
    await db.commit()


async def _session_viewer(state: AppState, db: AsyncSession, token: str) -> Viewer | None:
    session = open_session(session_secret(state.settings), token, time.time())
    if session is None:
        return None
    # The key must still be configured, with that role: removing a key ends its sessions.
    if not any(k.role == session.role and k.fingerprint == session.key_id for k in state.api_keys):
        return None
    if await signed_out(db, session):
        return None
    caller = Caller(role=session.role, key_id=session.key_id, roles=frozenset({session.role}))
    return Viewer(caller, session)


async def current_viewer(request: Request, state: AppStateDep, db: SessionDep) -> Viewer | None:
    """Who is looking: a Bearer key (a wrong one is a 401), else a valid session cookie,
    else nobody (None). Other Authorization schemes (a proxy's basic auth in front of the
    dashboard) are left to the proxy."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        viewer: Viewer | None = Viewer(authenticate(state, credentials.strip()), None)
    else:
        token = request.cookies.get(SESSION_COOKIE)
        viewer = await _session_viewer(state, db, token) if token else None
    if viewer is not None:
        note_caller(request.scope, viewer.caller, "dashboard")
    return viewer


ViewerDep = Annotated[Viewer | None, Depends(current_viewer)]


def check_csrf(state: AppState, viewer: Viewer, presented: str) -> None:
    """A form posted with the session cookie must carry the session's CSRF token (403);
    one posted with a Bearer key needs none."""
    if viewer.session is None:
        return
    expected = csrf_token(session_secret(state.settings), viewer.session)
    if not hmac.compare_digest(expected.encode(), presented.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="invalid CSRF token")
