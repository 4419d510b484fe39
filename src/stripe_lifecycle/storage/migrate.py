"""Apply Alembic migrations programmatically (`lifecycle migrate`, `lifecycle dev`, tests)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

from stripe_lifecycle.storage.db import create_engine


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", "stripe_lifecycle.storage:migrations")
    config.set_main_option("sqlalchemy.url", database_url)
    return config


async def upgrade(database_url: str, revision: str = "head") -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade, database_url, revision)
    finally:
        await engine.dispose()


def _upgrade(connection: Connection, database_url: str, revision: str) -> None:
    config = alembic_config(database_url)
    # env.py runs on this connection instead of opening its own, so it works inside a
    # running event loop (the dev command and the tests).
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
