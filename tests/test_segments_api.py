"""Segments as support reads them (`/v1/segments`, a segment's customers as pages and CSV,
a customer's memberships and history), the usage API the business's app reports to (stored,
then signalled to the customer workflow on the real dev server), the weekly entries and
exits the dashboard draws, and `lifecycle segments list | members | explain` run as a
user runs them. Membership rows are written straight into the database (SQLite and
PostgreSQL), as the segment evaluation writes them."""

from __future__ import annotations

import contextlib
import csv
import io
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from stripe_lifecycle.activities.interface import SegmentsChanged
from stripe_lifecycle.api.segments_dashboard import WEEKS, week_spans
from stripe_lifecycle.domain import ids
from stripe_lifecycle.domain.segments import evaluate, explain, load_segments
from stripe_lifecycle.storage.db import SessionMaker, create_engine, create_sessionmaker
from stripe_lifecycle.storage.models import CustomerUsage
from stripe_lifecycle.storage.segments import changes_per_period

from .cli_helpers import clean_env, run_cli
from .conftest import ADMIN_KEY, SUPPORT_KEY, app_settings, free_port, running_api, temporal_address
from .segment_helpers import (
    SEGMENT_NAMES,
    add_changes,
    add_customer,
    add_facts,
    add_members,
    entered,
    exited,
    write_segments,
)
from .signal_recorder import SegmentsSignalRecorder

SUPPORT = {"Authorization": f"Bearer {SUPPORT_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
NOW = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(days=1)


@contextlib.asynccontextmanager
async def segments_api(
    database_url: str, tmp_path: Path, temporal: str | None = None, task_queue: str = "tq-seg"
) -> AsyncIterator[tuple[httpx.AsyncClient, SessionMaker]]:
    """The real app on `database_url` with the test segments file. Without `temporal`, an
    address where nothing listens: the app's client is lazy."""
    address = temporal or f"127.0.0.1:{free_port()}"
    settings = app_settings(database_url, address, task_queue, segments=write_segments(tmp_path))
    async with running_api(settings) as (app, http):
        yield http, app.state.lifecycle.sessionmaker


# --- reading segments ----------------------------------------------------------------------


async def test_segments_are_listed_in_file_order_with_their_member_counts(
    database_url: str, tmp_path: Path
) -> None:
    async with segments_api(database_url, tmp_path) as (http, sessionmaker):
        await add_members(sessionmaker, "heavy-users", {"cus_a": NOW, "cus_b": NOW})
        await add_members(sessionmaker, "past-due", {"cus_b": NOW})
        # A segment no longer in the file is not listed.
        await add_members(sessionmaker, "retired-segment", {"cus_c": NOW})
        answer = await http.get("/v1/segments", headers=SUPPORT)
    assert answer.status_code == 200
    assert answer.json() == {
        "segments": [
            {
                "name": "starter-3-months",
                "description": "Starter customers active for 3 months or more",
                "members": 0,
                "time_based": True,
            },
            {
                "name": "heavy-users",
                "description": "Customers using 8 seats or more",
                "members": 2,
                "time_based": False,
            },
            {
                "name": "past-due",
                "description": "Customers whose payment failed",
                "members": 1,
                "time_based": False,
            },
        ]
    }


async def test_a_segments_customers_come_in_pages_by_customer_id(
    database_url: str, tmp_path: Path
) -> None:
    async with segments_api(database_url, tmp_path) as (http, sessionmaker):
        for n, letter in enumerate("abde"):
            await add_customer(
                sessionmaker, f"cus_{letter}", f"{letter}@example.com", mrr_cents=1000 * (n + 1)
            )
        # cus_c has no billing snapshot yet (only usage reported): its figures are null.
        entries = {f"cus_{letter}": NOW - DAY * i for i, letter in enumerate("ebdca")}
        await add_members(sessionmaker, "heavy-users", entries)
        await add_members(sessionmaker, "past-due", {"cus_0": NOW})

        async def page(**params: Any) -> dict[str, Any]:
            answer = await http.get(
                "/v1/segments/heavy-users/customers", params=params, headers=SUPPORT
            )
            assert answer.status_code == 200, answer.text
            found: dict[str, Any] = answer.json()
            return found

        first = await page(limit=2)
        assert [c["customer_id"] for c in first["data"]] == ["cus_a", "cus_b"]
        assert first["has_more"] is True
        assert first["data"][0] == {
            "customer_id": "cus_a",
            "email": "a@example.com",
            "plan": "Starter",
            "status": "active",
            "mrr_cents": 1000,
            "currency": "usd",
            "entered_at": (NOW - DAY * 4).isoformat().replace("+00:00", "Z"),
        }
        second = await page(limit=2, starting_after="cus_b")
        assert [c["customer_id"] for c in second["data"]] == ["cus_c", "cus_d"]
        assert second["has_more"] is True
        assert second["data"][0] | {"entered_at": None} == {
            "customer_id": "cus_c",
            "email": None,
            "plan": None,
            "status": None,
            "mrr_cents": None,
            "currency": None,
            "entered_at": None,
        }
        last = await page(limit=2, starting_after="cus_d")
        assert ([c["customer_id"] for c in last["data"]], last["has_more"]) == (["cus_e"], False)
        assert (await page())["has_more"] is False and len((await page())["data"]) == 5
        assert await page(starting_after="cus_e") == {"data": [], "has_more": False}

        for bad in ({"limit": 0}, {"limit": 1001}, {"limit": "ten"}):
            answer = await http.get(
                "/v1/segments/heavy-users/customers", params=bad, headers=SUPPORT
            )
            assert answer.status_code == 422, bad


async def test_a_segments_customers_stream_as_csv_all_of_them(
    database_url: str, tmp_path: Path
) -> None:
    async with segments_api(database_url, tmp_path) as (http, sessionmaker):
        await add_customer(sessionmaker, "cus_0000", "first@example.com", currency="eur")
        # More than one batch of the stream (1,000), and more than the largest page.
        members = {f"cus_{n:04d}": NOW - timedelta(minutes=n) for n in range(1203)}
        await add_members(sessionmaker, "past-due", members)
        answer = await http.get(
            "/v1/segments/past-due/customers?limit=5", headers={**SUPPORT, "Accept": "text/csv"}
        )
        empty = await http.get(
            "/v1/segments/heavy-users/customers", headers={**SUPPORT, "Accept": "text/csv"}
        )
        json_wins = await http.get(
            "/v1/segments/past-due/customers",
            headers={**SUPPORT, "Accept": "application/json, text/csv;q=0.5"},
        )
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert 'filename="segment-past-due.csv"' in answer.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(answer.text)))
    assert rows[0] == [
        "customer_id",
        "email",
        "plan",
        "status",
        "mrr_cents",
        "currency",
        "entered_at",
    ]
    assert len(rows) == 1 + 1203
    assert [r[0] for r in rows[1:]] == sorted(members)
    assert rows[1] == [
        "cus_0000",
        "first@example.com",
        "Starter",
        "active",
        "4900",
        "eur",
        NOW.isoformat(),
    ]
    assert rows[2] == ["cus_0001", "", "", "", "", "", (NOW - timedelta(minutes=1)).isoformat()]
    assert empty.text.splitlines() == [",".join(rows[0])]
    assert json_wins.headers["content-type"] == "application/json"


async def test_a_customers_segments_now_and_their_history_oldest_first(
    database_url: str, tmp_path: Path
) -> None:
    async with segments_api(database_url, tmp_path) as (http, sessionmaker):
        cus = "cus_history"
        await add_customer(sessionmaker, cus, "ada@example.com")
        await add_members(sessionmaker, "starter-3-months", {cus: NOW - 2 * DAY})
        await add_members(sessionmaker, "heavy-users", {cus: NOW - 30 * DAY})
        # Written out of order: the answer orders them by time.
        await add_changes(
            sessionmaker,
            entered(
                cus, "starter-3-months", NOW - 2 * DAY, "subscription_age_days 89 → 90 (gte 90)"
            ),
            exited(cus, "past-due", NOW - 20 * DAY, "status past_due → active (eq past_due)"),
            entered(cus, "past-due", NOW - 25 * DAY, "status active → past_due (eq past_due)"),
            entered(cus, "heavy-users", NOW - 30 * DAY, "first evaluation", initial=True),
            entered("cus_other", "past-due", NOW - DAY, "first evaluation"),
        )
        answer = await http.get(f"/v1/customers/{cus}/segments", headers=SUPPORT)
        # Known only from its segment rows (no snapshot yet): still a customer.
        rows_only = await http.get("/v1/customers/cus_other/segments", headers=SUPPORT)
        await add_customer(sessionmaker, "cus_plain", "plain@example.com")
        plain = await http.get("/v1/customers/cus_plain/segments", headers=SUPPORT)
        unknown = await http.get("/v1/customers/cus_nobody/segments", headers=SUPPORT)

    def z(moment: datetime) -> str:
        return moment.isoformat().replace("+00:00", "Z")

    assert answer.status_code == 200
    assert answer.json() == {
        "customer_id": cus,
        "segments": [
            {"name": "heavy-users", "entered_at": z(NOW - 30 * DAY)},
            {"name": "starter-3-months", "entered_at": z(NOW - 2 * DAY)},
        ],
        "history": [
            {
                "segment": "heavy-users",
                "change": "entered",
                "at": z(NOW - 30 * DAY),
                "reason": "first evaluation",
                "initial": True,
            },
            {
                "segment": "past-due",
                "change": "entered",
                "at": z(NOW - 25 * DAY),
                "reason": "status active → past_due (eq past_due)",
                "initial": False,
            },
            {
                "segment": "past-due",
                "change": "exited",
                "at": z(NOW - 20 * DAY),
                "reason": "status past_due → active (eq past_due)",
                "initial": False,
            },
            {
                "segment": "starter-3-months",
                "change": "entered",
                "at": z(NOW - 2 * DAY),
                "reason": "subscription_age_days 89 → 90 (gte 90)",
                "initial": False,
            },
        ],
    }
    assert rows_only.status_code == 200 and len(rows_only.json()["history"]) == 1
    assert plain.json() == {"customer_id": "cus_plain", "segments": [], "history": []}
    assert unknown.status_code == 404


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_unknown_segments_are_404s(database_url: str, tmp_path: Path) -> None:
    async with segments_api(database_url, tmp_path) as (http, sessionmaker):
        await add_members(sessionmaker, "retired-segment", {"cus_a": NOW})
        for path in ("/v1/segments/nope/customers", "/v1/segments/retired-segment/customers"):
            answer = await http.get(path, headers=SUPPORT)
            assert answer.status_code == 404, path
            assert answer.json()["detail"].startswith("no segment")
        csv_answer = await http.get(
            "/v1/segments/nope/customers", headers={**SUPPORT, "Accept": "text/csv"}
        )
        assert csv_answer.status_code == 404


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_reads_need_a_key_and_usage_needs_the_admin_role(
    database_url: str, tmp_path: Path
) -> None:
    reads = [
        "/v1/segments",
        "/v1/segments/heavy-users/customers",
        "/v1/customers/cus_a/segments",
    ]
    usage = "/v1/customers/cus_a/usage"
    body = {"metric": "seats_used", "value": 9}
    async with segments_api(database_url, tmp_path) as (http, sessionmaker):
        await add_members(sessionmaker, "heavy-users", {"cus_a": NOW})
        for path in reads:
            assert (await http.get(path)).status_code == 401, path
            wrong = await http.get(path, headers={"Authorization": "Bearer sk_wrong"})
            assert wrong.status_code == 401, path
            assert (await http.get(path, headers=SUPPORT)).status_code == 200, path
            assert (await http.get(path, headers=ADMIN)).status_code == 200, path
        assert (await http.post(usage, json=body)).status_code == 401
        refused = await http.post(usage, json=body, headers=SUPPORT)
        assert refused.status_code == 403
        assert refused.json()["detail"] == "this key lacks the admin role"
        async with sessionmaker() as session:
            assert list((await session.execute(select(CustomerUsage))).scalars()) == []


# --- the usage API -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"metric": "Seats", "value": 9},
        {"metric": "seats used", "value": 9},
        {"metric": "", "value": 9},
        {"metric": "m" * 65, "value": 9},
        {"metric": "seats_used", "value": -1},
        {"metric": "seats_used", "value": "9"},
        {"metric": "seats_used", "value": True},
        {"metric": "seats_used", "value": None},
        {"metric": "seats_used"},
        {"value": 9},
    ],
)
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_bad_usage_is_a_422_and_nothing_is_stored(
    database_url: str, tmp_path: Path, body: dict[str, Any]
) -> None:
    async with segments_api(database_url, tmp_path) as (http, sessionmaker):
        answer = await http.post("/v1/customers/cus_a/usage", json=body, headers=ADMIN)
        # JSON has no infinity; Python's encoder writes one anyway, and it is refused too.
        infinite = await http.post(
            "/v1/customers/cus_a/usage",
            content=b'{"metric": "seats_used", "value": Infinity}',
            headers={**ADMIN, "Content-Type": "application/json"},
        )
        async with sessionmaker() as session:
            stored = list((await session.execute(select(CustomerUsage))).scalars())
    assert answer.status_code == 422, answer.text
    assert infinite.status_code == 422
    assert infinite.json()["detail"][0]["loc"] == ["body", "value"]
    assert stored == []


async def _usage(sessionmaker: SessionMaker, customer_id: str) -> dict[str, float]:
    async with sessionmaker() as session:
        rows = await session.execute(
            select(CustomerUsage).where(CustomerUsage.customer_id == customer_id)  # type: ignore[arg-type]
        )
        return {u.metric: u.value for u in rows.scalars()}


async def test_usage_is_stored_then_signalled_to_the_customer_workflow(
    dev_env: WorkflowEnvironment, database_url: str, tmp_path: Path, task_queue: str
) -> None:
    cus = f"cus_{uuid.uuid4().hex[:12]}"
    client = dev_env.client
    async with (
        Worker(client, task_queue=task_queue, workflows=[SegmentsSignalRecorder]),
        segments_api(database_url, tmp_path, temporal_address(dev_env), task_queue) as (
            http,
            sessionmaker,
        ),
    ):
        handle: WorkflowHandle[Any, Any] = await client.start_workflow(
            SegmentsSignalRecorder.run, id=ids.customer_workflow_id(cus), task_queue=task_queue
        )
        try:
            first = await http.post(
                f"/v1/customers/{cus}/usage",
                json={"metric": "seats_used", "value": 9},
                headers=ADMIN,
            )
            again = await http.post(
                f"/v1/customers/{cus}/usage",
                json={"metric": "seats_used", "value": 9.5},
                headers=ADMIN,
            )
            other = await http.post(
                f"/v1/customers/{cus}/usage",
                json={"metric": "api.calls-30d", "value": 0},
                headers=ADMIN,
            )
            received = await handle.query(SegmentsSignalRecorder.signals)
        finally:
            await handle.terminate("test over")
        usage = await _usage(sessionmaker, cus)
    assert first.status_code == 202
    assert first.json() == {
        "customer_id": cus,
        "metric": "seats_used",
        "value": 9.0,
        "evaluated": True,
    }
    assert again.json()["evaluated"] is True and other.json()["evaluated"] is True
    # The latest value per metric.
    assert usage == {"seats_used": 9.5, "api.calls-30d": 0.0}
    assert received == [
        SegmentsChanged(reason="usage.seats_used reported: 9"),
        SegmentsChanged(reason="usage.seats_used reported: 9.5"),
        SegmentsChanged(reason="usage.api.calls-30d reported: 0"),
    ]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_usage_of_a_customer_without_a_workflow_is_stored_not_evaluated(
    dev_env: WorkflowEnvironment, database_url: str, tmp_path: Path, task_queue: str
) -> None:
    cus = f"cus_{uuid.uuid4().hex[:12]}"
    async with segments_api(database_url, tmp_path, temporal_address(dev_env), task_queue) as (
        http,
        sessionmaker,
    ):
        answer = await http.post(
            f"/v1/customers/{cus}/usage", json={"metric": "seats_used", "value": 3}, headers=ADMIN
        )
        assert answer.status_code == 202
        assert answer.json()["evaluated"] is False
        assert await _usage(sessionmaker, cus) == {"seats_used": 3.0}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_usage_is_kept_while_temporal_is_down(database_url: str, tmp_path: Path) -> None:
    async with segments_api(database_url, tmp_path) as (http, sessionmaker):
        started = time.monotonic()
        answer = await http.post(
            "/v1/customers/cus_a/usage", json={"metric": "seats_used", "value": 12}, headers=ADMIN
        )
        assert time.monotonic() - started < 15
        assert (answer.status_code, answer.json()["evaluated"]) == (202, False)
        assert await _usage(sessionmaker, "cus_a") == {"seats_used": 12.0}


# --- what the dashboard counts, and the API's description -----------------------------------


async def test_entries_and_exits_are_counted_per_week(database_url: str) -> None:
    engine = create_engine(database_url)
    sessionmaker = create_sessionmaker(engine)
    try:
        now = datetime(2026, 3, 19, 15, 30, tzinfo=UTC)  # a Thursday
        spans = week_spans(now)
        assert len(spans) == WEEKS
        assert spans[0][0] == datetime(2025, 12, 29, tzinfo=UTC)  # a Monday, 11 weeks before
        assert spans[-1] == (datetime(2026, 3, 16, tzinfo=UTC), now)
        monday = datetime(2026, 3, 16, tzinfo=UTC)
        await add_changes(
            sessionmaker,
            entered("cus_1", "heavy-users", monday, "a"),  # this week's first instant
            entered("cus_2", "heavy-users", monday + 2 * DAY, "b"),
            exited("cus_3", "heavy-users", monday - timedelta(seconds=1), "c"),  # last week
            entered("cus_4", "heavy-users", monday - 3 * DAY, "first evaluation", initial=True),
            entered("cus_5", "past-due", spans[0][0], "d"),
            entered("cus_6", "past-due", spans[0][0] - timedelta(seconds=1), "too old"),
            entered("cus_7", "past-due", now + timedelta(seconds=1), "not yet"),
        )
        async with sessionmaker() as session:
            found = await changes_per_period(session, spans)
    finally:
        await engine.dispose()
    assert set(found) == {"heavy-users", "past-due"}
    heavy = found["heavy-users"]
    assert [(p.entered, p.exited, p.initial) for p in heavy[-2:]] == [(0, 1, 1), (2, 0, 0)]
    assert sum(p.entered + p.exited + p.initial for p in heavy[:-2]) == 0
    past_due = found["past-due"]
    assert (past_due[0].entered, sum(p.entered for p in past_due)) == (1, 1)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_routes_are_described_in_openapi(database_url: str, tmp_path: Path) -> None:
    async with segments_api(database_url, tmp_path) as (http, _):
        schema = (await http.get("/openapi.json")).json()
    paths = schema["paths"]

    def response_schema(path: str, method: str, code: str) -> str:
        content = paths[path][method]["responses"][code]["content"]["application/json"]
        return str(content["schema"]["$ref"]).rsplit("/", 1)[-1]

    assert response_schema("/v1/segments", "get", "200") == "SegmentList"
    assert response_schema("/v1/segments/{name}/customers", "get", "200") == "SegmentCustomers"
    assert (
        "text/csv" in paths["/v1/segments/{name}/customers"]["get"]["responses"]["200"]["content"]
    )
    assert response_schema("/v1/customers/{customer_id}/segments", "get", "200") == (
        "CustomerSegments"
    )
    assert response_schema("/v1/customers/{customer_id}/usage", "post", "202") == "UsageRecorded"
    components = schema["components"]["schemas"]
    assert set(components["SegmentCustomer"]["properties"]) == {
        "customer_id",
        "email",
        "plan",
        "status",
        "mrr_cents",
        "currency",
        "entered_at",
    }
    assert components["UsageReport"]["required"] == ["metric", "value"]


# --- the command ----------------------------------------------------------------------------


async def test_lifecycle_segments_list_members_and_explain(sqlite_url: str, tmp_path: Path) -> None:
    engine = create_engine(sqlite_url)
    sessionmaker = create_sessionmaker(engine)
    segments_file = write_segments(tmp_path)
    now = int(time.time())
    facts: dict[str, Any] = {
        "status": "active",
        "plan": "Starter",
        "currency": "usd",
        "mrr": {"usd": 4900},
        "quantity": 5,
        # 100½ days: the same whole number of days for the test and the command.
        "subscription_started": now - 100 * 86_400 - 43_200,
        "usage": {"seats_used": 2},
    }
    evaluated_at = NOW - DAY
    try:
        await add_customer(sessionmaker, "cus_ada", "ada@example.com")
        await add_customer(sessionmaker, "cus_bob", "bob@example.com", mrr_cents=9900)
        await add_members(
            sessionmaker, "starter-3-months", {"cus_ada": NOW - 10 * DAY, "cus_bob": NOW}
        )
        await add_facts(sessionmaker, "cus_ada", facts, ["starter-3-months"], evaluated_at)
        async with sessionmaker() as session:
            # Reported since the last evaluation: explain uses it.
            session.add(CustomerUsage(customer_id="cus_ada", metric="seats_used", value=9))
            await session.commit()
    finally:
        await engine.dispose()
    env = clean_env(
        LIFECYCLE_DATABASE_URL=sqlite_url, LIFECYCLE_SEGMENTS=str(segments_file), COLUMNS="200"
    )

    listing = run_cli("segments", "list", env=env, cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    lines = [" ".join(line.replace("│", " ").split()) for line in listing.stdout.splitlines()]
    assert "starter-3-months 2 yes Starter customers active for 3 months or more" in lines
    assert "heavy-users 0 no Customers using 8 seats or more" in lines
    order = [next(i for i, line in enumerate(lines) if line.startswith(n)) for n in SEGMENT_NAMES]
    assert order == sorted(order)

    members = run_cli("segments", "members", "starter-3-months", env=env, cwd=tmp_path)
    assert members.returncode == 0, members.stderr
    assert "ada@example.com" in members.stdout and "9900 usd" in members.stdout
    assert "2 members" in members.stdout
    as_csv = run_cli("segments", "members", "starter-3-months", "--csv", env=env, cwd=tmp_path)
    rows = list(csv.reader(io.StringIO(as_csv.stdout)))
    assert [r[0] for r in rows] == ["customer_id", "cus_ada", "cus_bob"]
    assert rows[1][:6] == ["cus_ada", "ada@example.com", "Starter", "active", "4900", "usd"]

    config = load_segments(segments_file)
    [heavy] = [s for s in config.segments if s.name == "heavy-users"]
    current = {**facts, "usage": {"seats_used": 9.0}}
    assert evaluate(heavy, current, now, config.seats)
    explained = run_cli("segments", "explain", "heavy-users", "cus_ada", env=env, cwd=tmp_path)
    assert explained.returncode == 0, explained.stderr
    out = explained.stdout
    for line in explain(heavy, current, now, config.seats):
        assert line in out
    assert "IN heavy-users (evaluated at " in out and "NOT IN" not in out
    assert f"billing facts of {evaluated_at:%Y-%m-%d %H:%M:%S} UTC" in out
    assert "stored membership: not a member" in out
    [starter] = [s for s in config.segments if s.name == "starter-3-months"]
    assert evaluate(starter, current, now, config.seats)
    in_starter = run_cli(
        "segments", "explain", "starter-3-months", "cus_ada", env=env, cwd=tmp_path
    )
    for line in explain(starter, current, now, config.seats):
        assert line in in_starter.stdout
    assert f"stored membership: in since {NOW - 10 * DAY:%Y-%m-%d %H:%M:%S} UTC" in (
        in_starter.stdout
    )

    for args, message in [
        (("members", "nope"), "no segment 'nope'"),
        (("explain", "nope", "cus_ada"), "no segment 'nope'"),
        (("explain", "heavy-users", "cus_nobody"), "no customer 'cus_nobody'"),
        (("explain", "heavy-users", "cus_bob"), "cus_bob has not been evaluated yet"),
    ]:
        failed = run_cli("segments", *args, env=env, cwd=tmp_path)
        assert failed.returncode != 0, args
        assert message in failed.stderr, failed.stderr
