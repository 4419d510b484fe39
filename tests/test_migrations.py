"""Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import TextClause, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel

from stripe_lifecycle.storage import models  # noqa: F401  (registers the tables)
from stripe_lifecycle.storage.db import create_engine
from stripe_lifecycle.storage.migrate import alembic_config, upgrade


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, SQLModel.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def _downgrade(connection: Connection, url: str, revision: str = "base") -> None:
    config = alembic_config(url)
    config.attributes["connection"] = connection
    command.downgrade(config, revision)


# SQLite cannot reflect an expression index (`ix_customers_email_lower`), so alembic leaves
# it out of the comparison there; PostgreSQL compares it.
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based")
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


async def test_win_back_messages_recorded_before_0008_get_their_subscription(
    database_url: str,
) -> None:
    insert = text(
        "INSERT INTO messages (id, send_key, customer_id, workflow_id, lifecycle, automation,"
        ' step, template, "to", subject, status, created_at, html, text, links,'
        " destinations, transport, livemode)"
        " VALUES (:id, :id, :customer, :workflow, :lifecycle, 'a', '0-send', 't',"
        " 'ada@example.com', '', 'sent', :at, '', '', '[]', '{}', 'outbox', false)"
    )
    messages = {
        "winback": ("cus_A1", "winback-cus_A1-sub_B2", "winback"),
        "other-customer": ("cus_A1", "winback-cus_Other-sub_B2", "winback"),
        "no-subscription": ("cus_A1", "winback-cus_A1-in_B2", "winback"),
        "dunning": ("cus_A1", "dunning-in_B2", "dunning"),
    }
    rows = [
        {"id": message_id, "customer": customer, "workflow": workflow, "lifecycle": lifecycle}
        for message_id, (customer, workflow, lifecycle) in messages.items()
    ]

    found = await _rows_after_upgrade(
        database_url, "0007", insert, rows, "SELECT id, subscription_id FROM messages"
    )

    assert dict(found) == {
        "winback": "sub_B2",
        "other-customer": None,
        "no-subscription": None,
        "dunning": None,
    }


async def test_0009_keeps_conversions_and_credits_and_allows_one_per_lifecycle_of_an_event(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    conversion = text(
        "INSERT INTO conversions (stripe_event_id, kind, customer_id, lifecycle, workflow_id,"
        " automation, amount_cents, mrr_delta_cents, currency, occurred_at, message_id,"
        " attribution, recorded_at) VALUES ('evt_paid', :kind, 'cus_1', :lifecycle, 'w', 'a',"
        " 4900, 4900, 'usd', :at, 'msg-1', 'last_send', :at)"
    )
    at = datetime(2026, 11, 1, tzinfo=UTC)
    trial = {"kind": "trial_converted", "lifecycle": "trial", "at": at}
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_downgrade, database_url, "0008")
            await conn.execute(conversion, {"kind": "recovered", "lifecycle": "dunning", "at": at})
            await conn.execute(
                text(
                    "INSERT INTO conversion_credits (conversion_id, message_id, rule, share_bp,"
                    " mrr_delta_cents, amount_cents)"
                    " SELECT id, 'msg-1', 'last_send', 10000, 4900, 4900 FROM conversions"
                )
            )
        await upgrade(database_url)
        async with engine.begin() as conn:
            # The same invoice.paid also converted the trial: a row of its own.
            await conn.execute(conversion, trial)
        with pytest.raises(IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(conversion, trial)
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT c.lifecycle, c.kind, c.uncredited_reason, cc.share_bp"
                    " FROM conversions c LEFT JOIN conversion_credits cc"
                    " ON cc.conversion_id = c.id ORDER BY c.id"
                )
            )
            assert [tuple(r) for r in rows] == [
                ("dunning", "recovered", None, 10_000),
                ("trial", "trial_converted", None, None),
            ]
        # Back to 0009 first: a refused downgrade rolls back only its own revision's work.
        async with engine.begin() as conn:
            await conn.run_sync(_downgrade, database_url, "0009")
        # 0008 holds one conversion per event: going back refuses to choose which to drop.
        with pytest.raises(RuntimeError, match=r"1 event\(s\) have more"):
            async with engine.begin() as conn:
                await conn.run_sync(_downgrade, database_url, "0008")
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM conversions WHERE lifecycle = 'trial'"))
            await conn.run_sync(_downgrade, database_url, "0008")
        async with engine.connect() as conn:
            kept = await conn.execute(
                text(
                    "SELECT c.kind, cc.share_bp FROM conversions c"
                    " JOIN conversion_credits cc ON cc.conversion_id = c.id"
                )
            )
            assert [tuple(r) for r in kept] == [("recovered", 10_000)]
        await upgrade(database_url)
    finally:
        await engine.dispose()


async def test_money_recorded_before_0011_becomes_its_currencys(database_url: str) -> None:
    insert = text(
        "INSERT INTO customers (customer_id, status, mrr_cents, currency, ltv_cents, livemode,"
        " deleted, snapshot_version, subscriptions, updated_at)"
        " VALUES (:id, 'active', :mrr, :currency, :ltv, false, false, 1, '[]', :at)"
    )
    customers = {
        "cus_Paying": (4900, "usd", 9800),
        "cus_Trialing": (0, "eur", 0),
        "cus_NoCurrency": (0, None, 0),
    }
    rows = [
        {"id": customer_id, "mrr": mrr, "currency": currency, "ltv": ltv}
        for customer_id, (mrr, currency, ltv) in customers.items()
    ]

    found = await _rows_after_upgrade(
        database_url,
        "0010",
        insert,
        rows,
        "SELECT customer_id, mrr, ltv, refunded, mrr_exact FROM customers",
    )

    assert {row[0]: tuple(_json(v) for v in row[1:]) for row in found} == {
        "cus_Paying": ({"usd": 4900}, {"usd": 9800}, {}, True),
        "cus_Trialing": ({}, {}, {}, True),
        "cus_NoCurrency": ({}, {}, {}, True),
    }


async def _rows_after_upgrade(
    database_url: str, revision: str, insert: TextClause, rows: list[dict[str, Any]], query: str
) -> list[tuple[Any, ...]]:
    """`rows` inserted (each `at` a fixed date) into the schema of `revision`, then the
    database upgraded to the latest revision and `query` answered."""
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_downgrade, database_url, revision)
            for row in rows:
                await conn.execute(insert, {**row, "at": datetime(2026, 11, 1, tzinfo=UTC)})
        await upgrade(database_url)
        async with engine.connect() as conn:
            return [tuple(row) for row in await conn.execute(text(query))]
    finally:
        await engine.dispose()


def _json(value: Any) -> Any:
    """A raw query's value as the models read it: SQLite answers JSON as text and booleans
    as 0 or 1."""
    if isinstance(value, str):
        return json.loads(value)
    if isinstance(value, int):
        return bool(value)
    return value


async def test_database_errors_never_show_the_personal_data_in_their_parameters(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    insert = text(
        "INSERT INTO customers (customer_id, email, status, mrr_cents, ltv_cents, livemode, "
        "deleted, mrr_exact, snapshot_version, subscriptions, updated_at, mrr, ltv, refunded) "
        "VALUES (:id, :email, 'none', 0, 0, false, false, true, 0, '[]', :now, '{}', '{}', '{}')"
    )
    row = {"id": "cus_Secret1", "email": "grace@example.com", "now": datetime.now(UTC)}
    try:
        async with engine.begin() as conn:
            await conn.execute(insert, row)
        # The same customer again: the error says which statement, not with what.
        with pytest.raises(IntegrityError) as raised:
            async with engine.begin() as conn:
                await conn.execute(insert, row)
        assert "grace@example.com" not in str(raised.value)
        assert "hidden due to hide_parameters" in str(raised.value)
    finally:
        await engine.dispose()
