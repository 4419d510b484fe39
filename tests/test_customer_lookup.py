"""Finding customers by email from the database (`GET /v1/customers?email=`, `lifecycle
customers find`): Temporal indexes no email unless LIFECYCLE_INDEX_EMAIL is set."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from stripe_lifecycle.storage.db import create_engine, create_sessionmaker
from stripe_lifecycle.storage.lookup import customers_by_email, customers_by_email_statement
from stripe_lifecycle.storage.models import Customer

from .cli_helpers import clean_env, run_cli
from .conftest import SUPPORT_KEY, app_settings, free_port, running_api

SUPPORT = {"Authorization": f"Bearer {SUPPORT_KEY}"}


@pytest.fixture
async def customers(sqlite_url: str) -> str:
    engine = create_engine(sqlite_url)
    async with create_sessionmaker(engine)() as session:
        session.add_all(
            [
                # Stripe keeps the case the customer typed.
                Customer(customer_id="cus_B2", email="Ada@Example.com", status="active"),
                Customer(customer_id="cus_A1", email="ada@example.com", status="canceled"),
                Customer(customer_id="cus_C3", email="grace@example.com", status="active"),
                Customer(customer_id="cus_D4", email=None, deleted=True),
            ]
        )
        await session.commit()
    await engine.dispose()
    return sqlite_url


async def test_support_finds_every_customer_with_an_email_ignoring_case(
    customers: str, task_queue: str
) -> None:
    # Nothing listens on the Temporal address: the lookup needs the database only.
    settings = app_settings(
        customers,
        f"127.0.0.1:{free_port()}",
        task_queue,
        temporal_ui_url="https://temporal.example.com/",
        temporal_namespace="billing",
    )
    async with running_api(settings) as (_, http):
        found = await http.get(
            "/v1/customers", params={"email": " ADA@example.COM"}, headers=SUPPORT
        )
        assert found.status_code == 200, found.text
        assert found.json() == {
            "customers": [
                {
                    "customer_id": cus,
                    "status": status,
                    "deleted": False,
                    "workflow_id": f"customer-{cus}",
                    "temporal_ui_url": "https://temporal.example.com/namespaces/billing/"
                    f"workflows/customer-{cus}",
                }
                for cus, status in (("cus_A1", "canceled"), ("cus_B2", "active"))
            ]
        }
        none = await http.get("/v1/customers", params={"email": "ada@example"}, headers=SUPPORT)
        assert none.json() == {"customers": []}
        # A prefix or pattern is not a match: exact addresses only.
        pattern = await http.get(
            "/v1/customers", params={"email": "%@example.com"}, headers=SUPPORT
        )
        assert pattern.json() == {"customers": []}
        assert (await http.get("/v1/customers", headers=SUPPORT)).status_code == 422
        too_long = await http.get("/v1/customers", params={"email": "a" * 513}, headers=SUPPORT)
        assert too_long.status_code == 422


async def test_lifecycle_customers_find_prints_ids_and_temporal_ui_links(
    customers: str, tmp_path: Path
) -> None:
    env = clean_env(LIFECYCLE_DATABASE_URL=customers, LIFECYCLE_UI_PORT="9233")
    found = run_cli("customers", "find", "GRACE@example.com", env=env, cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert found.stdout == (
        "cus_C3  active  http://localhost:9233/namespaces/default/workflows/customer-cus_C3\n"
    )
    missing = run_cli("customers", "find", "nobody@example.com", env=env, cwd=tmp_path)
    assert missing.returncode == 1
    assert "no customer has the email nobody@example.com" in missing.stderr


async def test_the_email_lookup_reads_the_index_not_every_customer(database_url: str) -> None:
    """On both databases the lookup's own statement is answered from
    `ix_customers_email_lower` (PostgreSQL told not to scan, as it would for a small table)."""
    engine = create_engine(database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            session.add_all(
                Customer(customer_id=f"cus_{n}", email=f"c{n}@example.com") for n in range(50)
            )
            await session.commit()
            statement = customers_by_email_statement("C7@example.com")
            compiled = statement.compile(
                dialect=session.get_bind().dialect, compile_kwargs={"literal_binds": True}
            )
            if engine.dialect.name == "postgresql":
                await session.execute(text("SET enable_seqscan = off"))
                explain = f"EXPLAIN {compiled}"
            else:
                explain = f"EXPLAIN QUERY PLAN {compiled}"
            plan = "\n".join(str(row) for row in (await session.execute(text(explain))).all())
            assert "ix_customers_email_lower" in plan, plan
            [found] = await customers_by_email(session, "C7@example.com")
            assert found.customer_id == "cus_7"
    finally:
        await engine.dispose()
