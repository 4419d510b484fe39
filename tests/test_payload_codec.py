"""Payload encryption (LIFECYCLE_PAYLOAD_KEY): what the codec seals and opens, key rotation,
histories recorded in clear still replaying, the codec endpoints the Temporal Web UI and
CLI call, and a real run on the dev server whose stored history holds no customer's email
or name while the worker, API and forwarder work with them."""

from __future__ import annotations

import base64
import dataclasses
import json
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message as Message_
from pydantic import ValidationError
from sqlalchemy import select
from sqlmodel import col
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.client import WorkflowHistory
from temporalio.converter import (
    DataConverter,
    ExternalStorage,
    PayloadCodec,
    SerializationContext,
    StorageDriver,
    StorageDriverClaim,
    StorageDriverRetrieveContext,
    StorageDriverStoreContext,
    WithSerializationContext,
)
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

from stripe_lifecycle.domain import ids
from stripe_lifecycle.payload_codec import (
    ENCODING,
    EncryptionCodec,
    PayloadKeyError,
    UnknownPayloadKey,
    build_codec,
    data_converter,
    key_id,
    parse_key,
)
from stripe_lifecycle.payload_converter import LifecyclePayloadConverter
from stripe_lifecycle.storage.db import create_engine, create_sessionmaker
from stripe_lifecycle.storage.models import Message
from stripe_lifecycle.temporal_setup import connect
from stripe_lifecycle.worker import WORKFLOWS, ContextFreeSandbox, sandbox_runner
from stripe_lifecycle.workflows.customer import CustomerWorkflow

from .conftest import (
    SUPPORT_KEY,
    app_settings,
    free_port,
    running_api,
    temporal_address,
    workers,
)
from .events import customer_event, subscription_event, unique_customer_id
from .signing import post_webhook
from .workflow_helpers import DAY, eventually

KEY = secrets.token_bytes(32)
OLD_KEY = secrets.token_bytes(32)
SUPPORT = {"Authorization": f"Bearer {SUPPORT_KEY}"}
UI = "http://localhost:8233"
NAME = "Ada Lovelace-Byron"
HISTORY = Path(__file__).parent / "histories" / "customer_workflow_v3_trial_converted.json"


def plain(data: bytes) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=data)


async def test_a_sealed_payload_opens_to_itself_and_shows_nothing_of_it() -> None:
    codec = EncryptionCodec(KEY)
    original = plain(b'{"email":"ada@example.com"}')
    [sealed] = await codec.encode([original])
    assert sealed.metadata["encoding"] == ENCODING
    assert sealed.metadata["encryption-key-id"] == key_id(KEY).encode()
    assert b"ada@example.com" not in sealed.SerializeToString()
    assert await codec.decode([sealed]) == [original]
    # A fresh nonce each time: the same value never seals to the same bytes.
    [again] = await codec.encode([original])
    assert again.data != sealed.data


async def test_payloads_written_in_clear_pass_through_decoding() -> None:
    # Workflows started before the key was set, and the recorded histories.
    original = plain(b'"cus_1"')
    assert await EncryptionCodec(KEY).decode([original]) == [original]


async def test_a_rotated_key_seals_new_payloads_and_the_old_one_still_opens_its_own() -> None:
    [old_sealed] = await EncryptionCodec(OLD_KEY).encode([plain(b"1")])
    rotated = EncryptionCodec(KEY, [OLD_KEY])
    assert await rotated.decode([old_sealed]) == [plain(b"1")]
    [new_sealed] = await rotated.encode([plain(b"2")])
    assert new_sealed.metadata["encryption-key-id"] == key_id(KEY).encode()
    # Without the old key, what it sealed is refused by name rather than misread.
    with pytest.raises(UnknownPayloadKey, match=key_id(OLD_KEY)):
        await EncryptionCodec(KEY).decode([old_sealed])


async def test_an_altered_or_relabelled_payload_does_not_open() -> None:
    codec = EncryptionCodec(KEY, [OLD_KEY])
    [sealed] = await codec.encode([plain(b"1")])
    # One bit of the tag flipped (setting the last byte to a value it may already have
    # altered nothing one time in 256).
    flipped = Payload(
        metadata=dict(sealed.metadata), data=sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    )
    with pytest.raises(UnknownPayloadKey, match="altered or corrupt"):
        await codec.decode([flipped])
    # The key id is bound in: naming another known key does not make it open.
    relabelled = Payload(
        metadata={**sealed.metadata, "encryption-key-id": key_id(OLD_KEY).encode()},
        data=sealed.data,
    )
    with pytest.raises(UnknownPayloadKey, match="altered or corrupt"):
        await codec.decode([relabelled])


def test_keys_are_read_as_hex_or_base64_and_anything_else_is_refused_unechoed() -> None:
    assert parse_key(KEY.hex(), "K") == KEY
    assert parse_key(base64.b64encode(KEY).decode(), "K") == KEY
    assert parse_key(base64.urlsafe_b64encode(KEY).decode(), "K") == KEY
    for bad in ("short", KEY.hex()[:-2], base64.b64encode(KEY[:16]).decode(), "z" * 64):
        with pytest.raises(PayloadKeyError, match="LIFECYCLE_PAYLOAD_KEY must be 32") as exc:
            parse_key(bad, "LIFECYCLE_PAYLOAD_KEY")
        assert bad not in str(exc.value)
    assert build_codec(None, None) is None
    with pytest.raises(PayloadKeyError, match="without LIFECYCLE_PAYLOAD_KEY"):
        build_codec(None, OLD_KEY.hex())
    with pytest.raises(PayloadKeyError, match="LIFECYCLE_PAYLOAD_OLD_KEYS entry 2"):
        build_codec(KEY.hex(), f"{OLD_KEY.hex()},nope")


def test_a_bad_key_stops_the_settings_naming_the_variable() -> None:
    with pytest.raises(ValidationError, match="LIFECYCLE_PAYLOAD_KEY must be 32") as exc:
        app_settings("sqlite+aiosqlite://", "127.0.0.1:1", "tq", payload_key="secret-ish")
    assert "secret-ish" not in str(exc.value)
    with pytest.raises(ValidationError, match="without LIFECYCLE_PAYLOAD_KEY"):
        app_settings("sqlite+aiosqlite://", "127.0.0.1:1", "tq", payload_old_keys=KEY.hex())
    with pytest.raises(ValidationError, match="LIFECYCLE_PAYLOAD_OLD_KEYS entry 1"):
        app_settings(
            "sqlite+aiosqlite://", "127.0.0.1:1", "tq", payload_key=KEY.hex(), payload_old_keys="x"
        )
    rotated = app_settings(
        "sqlite+aiosqlite://",
        "127.0.0.1:1",
        "tq",
        payload_key=KEY.hex(),
        payload_old_keys=f"{base64.b64encode(OLD_KEY).decode()}, ",
    ).payload_codec()
    assert rotated is not None and rotated.current_key_id == key_id(KEY)


async def test_histories_recorded_in_clear_replay_with_the_codec() -> None:
    history = WorkflowHistory.from_json(HISTORY.stem, HISTORY.read_text())
    replayer = Replayer(
        workflows=WORKFLOWS,
        # The sandbox is test_replay.py's business; this checks what the codec does.
        workflow_runner=UnsandboxedWorkflowRunner(),
        data_converter=data_converter(EncryptionCodec(KEY)),
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None


class ContextualCodec(PayloadCodec, WithSerializationContext):
    """A codec that would seal each payload for the workflow or activity it belongs to."""

    def __init__(self, context: SerializationContext | None = None) -> None:
        self.context = context

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)

    def with_context(self, context: SerializationContext) -> ContextualCodec:
        return ContextualCodec(context)


def test_the_sandbox_gives_no_context_and_so_refuses_a_converter_that_reads_one() -> None:
    # Ours takes none, with or without the codec: the sandbox can skip the question.
    assert isinstance(sandbox_runner(data_converter(None)), ContextFreeSandbox)
    assert isinstance(sandbox_runner(data_converter(EncryptionCodec(KEY))), ContextFreeSandbox)
    contextual = dataclasses.replace(data_converter(None), payload_codec=ContextualCodec())
    with pytest.raises(
        ValueError,
        match=r"reads serialization contexts \(WorkflowSerializationContext, "
        r"ActivitySerializationContext\)",
    ):
        sandbox_runner(contextual)


class NowhereDriver(StorageDriver):
    """A storage driver the refusal comes before: nothing is ever stored."""

    def name(self) -> str:
        return "nowhere"

    async def store(
        self,
        context: StorageDriverStoreContext,  # noqa: ARG002 (the signature is Temporal's)
        payloads: Sequence[Payload],  # noqa: ARG002
    ) -> list[StorageDriverClaim]:
        raise AssertionError("never called")

    async def retrieve(
        self,
        context: StorageDriverRetrieveContext,  # noqa: ARG002 (the signature is Temporal's)
        claims: Sequence[StorageDriverClaim],  # noqa: ARG002
    ) -> list[Payload]:
        raise AssertionError("never called")


def test_the_sandbox_refuses_a_converter_that_stores_payloads_externally() -> None:
    external = dataclasses.replace(
        data_converter(None), external_storage=ExternalStorage(drivers=[NowhereDriver()])
    )
    with pytest.raises(ValueError, match="stores payloads externally"):
        sandbox_runner(external)


def test_without_a_key_payloads_are_plain_json_and_failures_plain_text() -> None:
    converter = data_converter(None)
    assert converter.payload_codec is None
    assert converter.failure_converter_class is DataConverter.default.failure_converter_class
    assert converter.payload_converter_class is LifecyclePayloadConverter


def payloads_json(*payloads: Payload) -> str:
    return json_format.MessageToJson(Payloads(payloads=payloads))


def opened(response: httpx.Response) -> list[Payload]:
    assert response.status_code == 200, response.text
    return list(json_format.Parse(response.text, Payloads()).payloads)


async def test_the_codec_endpoints_encode_and_decode_for_key_holders_and_the_ui(
    sqlite_url: str, task_queue: str
) -> None:
    # Nothing listens on the Temporal address: the codec needs no server.
    settings = app_settings(
        sqlite_url, f"127.0.0.1:{free_port()}", task_queue, payload_key=KEY.hex()
    )
    body = payloads_json(plain(b'{"email":"ada@example.com"}'))
    json_headers = {**SUPPORT, "Content-Type": "application/json"}
    async with running_api(settings) as (_, http):
        [sealed] = opened(
            await http.post("/dashboard/codec/encode", content=body, headers=json_headers)
        )
        assert sealed.metadata["encoding"] == ENCODING
        assert b"ada@example.com" not in sealed.data
        decoded = await http.post(
            "/dashboard/codec/decode", content=payloads_json(sealed), headers=SUPPORT
        )
        assert opened(decoded) == [plain(b'{"email":"ada@example.com"}')]
        # The wire form is proto3 JSON: bytes (the metadata values too) as base64.
        wire = json.loads(decoded.text)["payloads"][0]
        assert base64.b64decode(wire["metadata"]["encoding"]) == b"json/plain"

        refused = await http.post("/dashboard/codec/decode", content=body)
        assert refused.status_code == 401
        bad = await http.post(
            "/dashboard/codec/decode", content=b'{"payloads": 7}', headers=SUPPORT
        )
        assert bad.status_code == 400
        foreign = Payload(metadata={**sealed.metadata}, data=sealed.data)
        foreign.metadata["encryption-key-id"] = b"0123456789abcdef"
        unknown = await http.post(
            "/dashboard/codec/decode", content=payloads_json(foreign), headers=SUPPORT
        )
        assert unknown.status_code == 400 and "0123456789abcdef" in unknown.text

        # The Web UI's preflight from its origin is allowed, with credentials; other
        # origins get no CORS grant.
        preflight = await http.options(
            "/dashboard/codec/decode",
            headers={
                "Origin": UI,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-namespace",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == UI
        assert preflight.headers["access-control-allow-credentials"] == "true"
        stranger = await http.options(
            "/dashboard/codec/decode",
            headers={"Origin": "http://evil.test", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in stranger.headers

        # A dashboard session (the UI sending cookies) works from the UI's origin only.
        login = await http.post("/dashboard/login", data={"key": SUPPORT_KEY})
        assert login.status_code == 303, login.text
        from_ui = await http.post(
            "/dashboard/codec/decode", content=payloads_json(sealed), headers={"Origin": UI}
        )
        assert opened(from_ui) == [plain(b'{"email":"ada@example.com"}')]
        assert from_ui.headers["access-control-allow-origin"] == UI
        elsewhere = await http.post(
            "/dashboard/codec/decode",
            content=payloads_json(sealed),
            headers={"Origin": "http://evil.test"},
        )
        assert elsewhere.status_code == 401


async def test_codec_endpoints_say_so_when_encryption_is_off(
    sqlite_url: str, task_queue: str
) -> None:
    settings = app_settings(sqlite_url, f"127.0.0.1:{free_port()}", task_queue)
    async with running_api(settings) as (_, http):
        off = await http.post("/dashboard/codec/decode", content=payloads_json(), headers=SUPPORT)
    assert off.status_code == 409
    assert "LIFECYCLE_PAYLOAD_KEY" in off.text


def all_payload_bytes(history: WorkflowHistory) -> bytes:
    # Each event as stored, payloads, memos, failures and search attributes included.
    return b"".join(event.SerializeToString() for event in history.events)


def encrypted_payloads(history: WorkflowHistory) -> list[Payload]:
    """Every payload of the history that our codec sealed, wherever it sits."""
    found: list[Payload] = []

    def walk(message: Message_) -> None:
        if isinstance(message, Payload):
            if message.metadata.get("encoding") == ENCODING:
                found.append(message)
            return
        for field, value in message.ListFields():
            if field.message_type is None:
                continue
            if field.message_type.GetOptions().map_entry:
                items = list(value.values())
            elif field.is_repeated:
                items = list(value)
            else:
                items = [value]
            for item in items:
                if isinstance(item, Message_):
                    walk(item)

    for event in history.events:
        walk(event)
    return found


async def test_a_customer_run_with_a_key_leaves_no_email_or_name_in_temporals_history(
    dev_env: WorkflowEnvironment, sqlite_url: str, task_queue: str
) -> None:
    settings = app_settings(
        sqlite_url, temporal_address(dev_env), task_queue, payload_key=KEY.hex()
    )
    # The worker's client is made as `lifecycle worker` makes it; the API makes its own.
    client = await connect(settings)
    engine = create_engine(sqlite_url)
    cus = unique_customer_id()
    sub = f"sub_{cus[4:]}"
    email = f"ada.{cus[5:]}@example.com"
    now = int(time.time())
    try:
        async with workers(client, settings, create_sessionmaker(engine)):
            async with running_api(settings) as (_, http):
                created = customer_event(cus, email, created=now - 10, type_="customer.created")
                created["data"]["object"]["name"] = NAME
                await post_webhook(http, created)
                await post_webhook(
                    http,
                    subscription_event(
                        cus,
                        created=now - 9,
                        sub_id=sub,
                        status="trialing",
                        type_="customer.subscription.created",
                        trial_end=now + 14 * DAY,
                    ),
                )
                entity = client.get_workflow_handle_for(
                    CustomerWorkflow.run, ids.customer_workflow_id(cus)
                )

                async def welcomed() -> bool:
                    async with create_sessionmaker(engine)() as session:
                        rows = await session.execute(
                            select(Message).where(col(Message.customer_id) == cus)
                        )
                        return any(
                            m.template == "trial/welcome" and m.to == email for m in rows.scalars()
                        )

                # With the codec, everything works: the trial's welcome email goes out.
                await eventually(welcomed, "the trial's welcome email to the customer")
                state = await entity.query(CustomerWorkflow.state)
                assert (state.email, state.name) == (email, NAME)

                # Read as anyone with access to the namespace reads it: no codec.
                raw = dev_env.client
                histories = [
                    await raw.get_workflow_handle(workflow_id).fetch_history()
                    for workflow_id in (entity.id, ids.trial_id(sub))
                ]
                for history in histories:
                    stored = all_payload_bytes(history)
                    assert email.encode() not in stored
                    assert NAME.encode() not in stored
                    assert b"Lovelace" not in stored
                    assert encrypted_payloads(history)

                # The codec endpoint opens them again for support (the Web UI's view).
                sealed = encrypted_payloads(histories[0])
                decoded = await http.post(
                    "/dashboard/codec/decode", content=payloads_json(*sealed), headers=SUPPORT
                )
                assert any(email.encode() in p.data for p in opened(decoded))

                # Support finds the customer by email from the database.
                found = await http.get(
                    "/v1/customers", params={"email": email.upper()}, headers=SUPPORT
                )
                assert found.status_code == 200, found.text
                [match] = found.json()["customers"]
                assert match["customer_id"] == cus
                assert match["workflow_id"] == entity.id
                assert match["temporal_ui_url"] == (
                    f"http://localhost:8233/namespaces/default/workflows/{entity.id}"
                )
    finally:
        await engine.dispose()
