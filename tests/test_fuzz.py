"""Fuzzing: every operation of the OpenAPI spec (every `/v1` route, both webhooks, health
and tracked links) with schemathesis, and the normaliser with hypothesis.

The spec must describe what the API answers: schemathesis's conformance checks (status
code, content type and body schema as documented; no 5xx) over data that fits the spec
and data that does not, with an admin key. Both runs are bounded and derandomized, so
they take the same cases every time.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import func, select
from temporalio.testing import WorkflowEnvironment

from stripe_lifecycle.api.app import create_app
from stripe_lifecycle.domain import contract
from stripe_lifecycle.intake.normalise import UnreadableEvent
from stripe_lifecycle.settings import Settings
from stripe_lifecycle.storage.db import create_engine, create_sessionmaker
from stripe_lifecycle.storage.models import MessageEvent, WebhookEvent

from . import corpus
from .conftest import ADMIN_KEY, BIN, app_settings, running_api, temporal_address
from .mutation_helpers import check_total, paths, replaced

POSTMARK_USER = "postmark"
POSTMARK_PASSWORD = "postmark-fuzz-password-3e8c"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
Operation = schemathesis.APIOperation[Any, Any, Any, Any]
# Cases per operation and generation mode: about 30 operations, two modes.
EXAMPLES_PER_OPERATION = 6


@pytest.fixture(scope="module")
async def own_temporal() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server of this module's own: the fuzzing starts syncs and signals customers
    under ids other tests use, on a task queue no worker polls."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(BIN / "temporal"),
        search_attributes=contract.SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
    )
    async with env:
        yield env


def fuzzed_settings(sqlite_url: str, env: WorkflowEnvironment, task_queue: str) -> Settings:
    return app_settings(
        sqlite_url,
        temporal_address(env),
        task_queue,
        postmark_webhook_user=POSTMARK_USER,
        postmark_webhook_password=POSTMARK_PASSWORD,
    )


def authorization(path: str) -> str:
    if path == "/webhooks/postmark":
        credentials = f"{POSTMARK_USER}:{POSTMARK_PASSWORD}".encode()
        return f"Basic {base64.b64encode(credentials).decode()}"
    return f"Bearer {ADMIN_KEY}"


def fuzz_operation(operation: Operation, mode: GenerationMode) -> list[str]:
    """The failed checks of the operation's cases in one generation mode, one line each."""
    failures: list[str] = []
    headers = {"Authorization": authorization(operation.path)}

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        # A failure is reported, not shrunk: the report names the case.
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(operation.as_strategy(mode))
    def run(case: schemathesis.Case[Operation]) -> None:
        try:
            case.call_and_validate(headers=headers, checks=CHECKS)
        except FailureGroup as failure:
            # Every failed check, the response and a curl command to reproduce it.
            failures.append(f"{operation.label} ({mode.value}): {failure}")

    try:
        run()
    except Unsatisfiable:
        # No data can break this operation's schema (no parameters, any body).
        assert mode == GenerationMode.NEGATIVE
    return failures


async def rows(database_url: str, model: type[Any]) -> int:
    engine = create_engine(database_url)
    async with create_sessionmaker(engine)() as session:
        count = (await session.execute(select(func.count()).select_from(model))).scalar()
    await engine.dispose()
    return int(count or 0)


async def test_every_operation_answers_as_the_openapi_spec_says(
    own_temporal: WorkflowEnvironment, sqlite_url: str, task_queue: str
) -> None:
    app = create_app(fuzzed_settings(sqlite_url, own_temporal, task_queue))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    # Starting a sync last: while it runs, with no worker to answer its progress query,
    # each `GET /v1/sync` waits for that query's timeout.
    operations: list[Operation] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), (
            f"the spec has an operation schemathesis cannot read: {result}"
        )
        operations.append(result.ok())
    operations.sort(key=lambda operation: operation.label == "POST /v1/sync")
    paths_fuzzed = {operation.path for operation in operations}
    assert {"/webhooks/stripe", "/webhooks/postmark", "/v1/customers/{customer_id}"} <= (
        paths_fuzzed
    )
    failures: list[str] = []
    try:
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                failures += fuzz_operation(operation, mode)
    finally:
        # schemathesis ran the app's lifespan on a loop of its own; end it with the test.
        shutdown_lifespans()
    assert failures == [], "\n\n".join(failures)
    # Nothing generated carries a valid Stripe signature: nothing entered the inbox.
    assert await rows(sqlite_url, WebhookEvent) == 0


async def test_the_spec_lists_json_routes_only_and_their_refusals(
    own_temporal: WorkflowEnvironment, sqlite_url: str, task_queue: str
) -> None:
    settings_ = fuzzed_settings(sqlite_url, own_temporal, task_queue)
    async with running_api(settings_) as (_, http):
        spec = (await http.get("/openapi.json")).json()
    documented = spec["paths"]
    # HTML pages people open in a browser are not part of the JSON API; the codec server
    # under /dashboard (the Temporal UI sends it the session cookie) answers JSON.
    pages = [p for p in documented if p.startswith(("/dashboard", "/u/", "/survey/"))]
    assert pages == ["/dashboard/codec/encode", "/dashboard/codec/decode"]
    for path, operations in documented.items():
        for method, operation in operations.items():
            codes = operation["responses"]
            assert "413" in codes, (method, path)
            if path.startswith("/v1/"):
                assert "401" in codes, (method, path)
            if "422" in codes:
                schema = codes["422"]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/HTTPValidationError"}


async def test_a_template_preview_refusal_is_fastapis_422_list(
    own_temporal: WorkflowEnvironment, sqlite_url: str, task_queue: str
) -> None:
    key = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with running_api(fuzzed_settings(sqlite_url, own_temporal, task_queue)) as (_, http):
        unknown_fixture = await http.get(
            "/v1/templates/dunning/payment-failed/preview?fixture=no.such.event", headers=key
        )
        unknown_automation = await http.get(
            "/v1/templates/dunning/payment-failed/preview?automation=nope", headers=key
        )
        not_an_event = await http.post(
            "/v1/templates/dunning/payment-failed/preview", json={"type": 5}, headers=key
        )
    for response, location in (
        (unknown_fixture, ["query", "fixture"]),
        (unknown_automation, ["query", "automation"]),
        (not_an_event, ["body"]),
    ):
        assert response.status_code == 422, response.text
        [problem] = response.json()["detail"]
        assert problem["loc"] == location
        assert problem["type"] == "value_error"
        assert problem["msg"]
    assert "no sample event 'no.such.event'" in unknown_fixture.json()["detail"][0]["msg"]
    assert "no automation 'nope'" in unknown_automation.json()["detail"][0]["msg"]


async def test_a_postmark_record_type_must_be_a_word_and_a_new_one_is_recorded(
    own_temporal: WorkflowEnvironment, sqlite_url: str, task_queue: str
) -> None:
    headers = {"Authorization": authorization("/webhooks/postmark")}
    async with running_api(fuzzed_settings(sqlite_url, own_temporal, task_queue)) as (_, http):

        async def post(record_type: str) -> httpx.Response:
            record = {"RecordType": record_type, "MessageID": "pm-1", "Recipient": "a@b.co"}
            return await http.post("/webhooks/postmark", json=record, headers=headers)

        for refused in ("", " ", "Bounce!", "x" * 33):
            answer = await post(refused)
            assert answer.status_code == 422, (refused, answer.text)
            assert answer.json()["detail"][0]["loc"] == ["body", "RecordType"]
        assert await rows(sqlite_url, MessageEvent) == 0
        # A type Postmark adds later: recorded, so Postmark does not retry it for hours.
        later = await post("InboundBlocked")
        assert later.status_code == 200, later.text
        assert later.json() == {
            "record_type": "InboundBlocked",
            "message_id": None,
            "duplicate": False,
        }
    assert await rows(sqlite_url, MessageEvent) == 1


# JSON as a webhook body can hold it: what a fuzzer puts anywhere in an event.
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["abc", "NaN", "1e999999", "", "usd", "cus_1", "-1", "0x10"])
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=6,
)
PAYLOADS = [
    corpus.load(name, version) for version in corpus.VERSIONS for name in corpus.names(version)
]
EVENT_TYPES = sorted({payload["type"] for payload in PAYLOADS})
# The fields the normaliser reads, so arbitrary objects use them.
OBJECT_KEYS = sorted(
    {
        str(path[-1])
        for payload in PAYLOADS
        for path in paths(payload["data"]["object"])
        if isinstance(path[-1], str)
    }
)
HYPOTHESIS = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def mutated_payloads(draw: Callable[..., Any]) -> dict[str, Any]:
    """A corpus event with one to three fields (or list entries) replaced by anything."""
    payload: dict[str, Any] = draw(st.sampled_from(PAYLOADS))
    for _ in range(draw(st.integers(1, 3))):
        where = list(paths(payload))
        payload = replaced(payload, draw(st.sampled_from(where)), draw(JSON_VALUES))
    return payload


@HYPOTHESIS
@given(mutated_payloads())
def test_a_corpus_event_with_any_fields_replaced_is_read_or_unreadable(
    payload: dict[str, Any],
) -> None:
    check_total(payload)


@st.composite
def invented_events(draw: Callable[..., Any]) -> dict[str, Any]:
    """An event envelope around an object of the normaliser's field names with any values."""
    data_object = draw(st.dictionaries(st.sampled_from(OBJECT_KEYS), JSON_VALUES, max_size=8))
    return {
        "id": draw(st.sampled_from(["evt_fuzz", ""]) | JSON_SCALARS),
        "object": "event",
        "type": draw(st.sampled_from(EVENT_TYPES) | st.text(max_size=20)),
        "created": draw(st.integers(-(10**16), 10**16) | JSON_SCALARS),
        "api_version": draw(st.sampled_from(["2025-03-31.basil", "2024-06-20"]) | JSON_VALUES),
        "livemode": draw(st.booleans() | JSON_SCALARS),
        "data": {"object": data_object, "previous_attributes": draw(JSON_VALUES)},
    }


@HYPOTHESIS
@given(invented_events())
def test_an_invented_event_is_read_or_unreadable(payload: dict[str, Any]) -> None:
    check_total(payload)


def test_the_fuzzing_starts_from_events_the_normaliser_reads() -> None:
    # A corpus it refused would make the tests above prove little.
    refused = [p["id"] for p in PAYLOADS if isinstance(check_total(p), UnreadableEvent)]
    assert refused == []
