"""Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from stripe_lifecycle.storage import models  # noqa: F401  (registers the tables)
from stripe_lifecycle.storage.db import create_engine
from stripe_lifecycle.storage.migrate import alembic_config, upgrade


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, SQLModel.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def _downgrade(connection: Connection, url: str) -> None:
    config = alembic_config(url)
    config.attributes["connection"] = connection
    command.downgrade(config, "base")


async def test_migrations_match_models_and_downgrade_cleanly(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            assert await conn.run_sync(_diff) == []
            assert {"webhook_inbox", "customers", "messages"} <= await conn.run_sync(_tables)
        async with engine.begin() as conn:
            await conn.run_sync(_downgrade, database_url)
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) == {"alembic_version"}
        await upgrade(database_url)  # and back up again: upgrades are repeatable
        async with engine.connect() as conn:
            assert {"webhook_inbox", "customers", "messages"} <= await conn.run_sync(_tables)
    finally:
        await engine.dispose()
