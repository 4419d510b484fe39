"""Engine and session factory. Created by the processes that need them, never at import."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

SessionMaker = async_sessionmaker[AsyncSession]

# PostgreSQL's SQLSTATE classes of a server that cannot serve now, whatever the statement:
# connection exceptions, insufficient resources (too many connections, disk full),
# operator intervention (shutting down, starting up, connection terminated).
_UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57"})
_UNREACHABLE_ERRNOS = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN})


def create_engine(database_url: str, *, ping: bool = True) -> AsyncEngine:
    """The engine of the app's database. Its errors and logs never show statement
    parameters (`hide_parameters`): they hold Stripe payloads, emails and names.

    `ping`: on PostgreSQL, test each pooled connection before lending it out, a round
    trip and about a quarter of a millisecond of CPU per transaction. The API pings: a
    request's failure is its answer. The worker need not: an activity whose connection a
    database restart left dead fails and is retried, and SQLAlchemy, seeing the
    disconnect, replaces every pooled connection older than it."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url, pool_size=20, max_overflow=20, pool_pre_ping=ping, hide_parameters=True
    )


def database_unavailable(error: BaseException) -> bool:
    """Whether `error` says the database cannot be reached or cannot serve now (refused,
    reset, timed out, shutting down, out of connections), as opposed to a statement it
    refused: the same request may succeed later.

    asyncpg's network errors reach us unwrapped (an `OSError` for a refused or timed-out
    connection); a connection lost mid-statement is a `DBAPIError` SQLAlchemy marks
    `connection_invalidated`; the server's refusals of a statement carry their SQLSTATE."""
    if isinstance(error, exc.TimeoutError | exc.DisconnectionError):
        return True
    if isinstance(error, OSError):
        # The network's failures, not a file's (a missing template is no outage).
        return isinstance(error, ConnectionError | TimeoutError | socket.gaierror) or (
            error.errno in _UNREACHABLE_ERRNOS
        )
    if isinstance(error, exc.DBAPIError):
        # Without a statement the connection itself failed: refused at login (the database
        # not accepting connections, the server starting up), or lost.
        if error.connection_invalidated or error.statement is None:
            return True
        sqlstate = getattr(error.orig, "sqlstate", None)
        return isinstance(sqlstate, str) and sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES
    return False


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while the worker writes; NORMAL sync is durable in WAL mode
    # against application crashes, which is what the embedded default promises.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_sessionmaker(engine: AsyncEngine) -> SessionMaker:
    return async_sessionmaker(engine, expire_on_commit=False)


def insert_for(dialect: str) -> Callable[..., postgresql.Insert | sqlite.Insert]:
    """`insert` with ON CONFLICT for the database in use: both dialects spell the clause
    the same, but each has its own construct."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert
