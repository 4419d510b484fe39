"""The `lifecycle` command: configuration errors, and `lifecycle dev` as a user runs it."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from stripe_lifecycle.domain import contract, ids
from stripe_lifecycle.settings import Settings, parse_api_keys

from .cli_helpers import LIFECYCLE, clean_env, run_cli
from .conftest import LINK_SECRET, SUPPORT_KEY, free_port
from .events import customer_event, unique_customer_id
from .signing import WEBHOOK_SECRET, signed


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("LIFECYCLE_DATABASE_URL", "postgresql://x/y", "async SQLAlchemy URL"),
        ("LIFECYCLE_API_KEYS", "owner:abc", "unknown role 'owner'"),
        ("LIFECYCLE_API_KEYS", "support", "must be role:key"),
        ("LIFECYCLE_API_PORT", "eighty", "valid integer"),
        ("LIFECYCLE_MAIL_TRANSPORT", "pigeon", "'outbox', 'postmark' or 'smtp'"),
        ("LIFECYCLE_PAYLOAD_KEY", "abc", "must be 32 random bytes"),
    ],
)
def test_bad_configuration_fails_fast_naming_the_variable(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    result = run_cli("migrate", env=clean_env(**{variable: value}), cwd=tmp_path)
    assert result.returncode == 2
    assert variable in result.stderr
    assert message in result.stderr
    assert "abc" not in result.stderr  # a key is never echoed


def test_api_keys_parse_roles() -> None:
    first, second = "k1-Xq7vR2mN9pL4tW8sB3cJ6h", "k2-Gd5yT1kF8wQ3zM6nV9rP2x"
    keys = parse_api_keys(f" support:{first} , admin:{second},")
    assert [(k.role, k.digest) for k in keys] == [
        ("support", hashlib.sha256(first.encode()).digest()),
        ("admin", hashlib.sha256(second.encode()).digest()),
    ]
    assert keys[0].matches(first) and not keys[0].matches(second)
    assert Settings(public_url="https://billing.example.com/").public_url == (
        "https://billing.example.com"
    )


def test_migrate_creates_the_sqlite_database(tmp_path: Path) -> None:
    db = tmp_path / "nested" / "lifecycle.db"
    result = run_cli(
        "migrate", env=clean_env(LIFECYCLE_DATABASE_URL=f"sqlite+aiosqlite:///{db}"), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert db.exists()


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_lifecycle_dev_runs_everything_and_stops_cleanly(tmp_path: Path) -> None:
    # free_port's ports lie below the kernel's ephemeral range: the Temporal dev server that
    # `lifecycle dev` starts first picks its own HTTP, metrics and internal ports by binding
    # port 0, which can no longer hand it the API's (conftest.py, _PortClaims).
    temporal_port, ui_port, api_port = free_port(), free_port(), free_port()
    env = clean_env(
        LIFECYCLE_DATA_DIR=str(tmp_path / "data"),
        LIFECYCLE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'data' / 'lifecycle.db'}",
        LIFECYCLE_TEMPORAL_ADDRESS=f"127.0.0.1:{temporal_port}",
        LIFECYCLE_TEMPORAL_PORT=str(temporal_port),
        LIFECYCLE_UI_PORT=str(ui_port),
        LIFECYCLE_API_PORT=str(api_port),
        LIFECYCLE_STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        LIFECYCLE_API_KEYS=f"support:{SUPPORT_KEY}",
        # Its Temporal client, the worker's and the API's, encrypt what Temporal stores.
        LIFECYCLE_PAYLOAD_KEY=secrets.token_hex(32),
    )
    log = (tmp_path / "dev.log").open("w")
    process = subprocess.Popen([LIFECYCLE, "dev"], env=env, cwd=tmp_path, stdout=log, stderr=log)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}") as http:
            for _ in range(240):
                assert process.poll() is None, (tmp_path / "dev.log").read_text()
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.25)
            else:
                raise AssertionError((tmp_path / "dev.log").read_text())

            cus = unique_customer_id()
            body, headers = signed(customer_event(cus, "sam@example.com", created=1_790_000_000))
            assert (
                await http.post("/webhooks/stripe", content=body, headers=headers)
            ).status_code == 200

            client = await Client.connect(f"127.0.0.1:{temporal_port}")
            handle = client.get_workflow_handle(ids.customer_workflow_id(cus))
            for _ in range(100):
                try:
                    attrs = (await handle.describe()).typed_search_attributes
                except RPCError as exc:  # the forwarder delivers after the 200
                    assert exc.status == RPCStatusCode.NOT_FOUND
                    await asyncio.sleep(0.1)
                    continue
                if attrs.get(contract.CUSTOMER_ID) == cus:
                    break
                await asyncio.sleep(0.1)
            assert attrs.get(contract.CUSTOMER_ID) == cus
            # LIFECYCLE_INDEX_EMAIL is off by default: Temporal never indexes the address.
            assert attrs.get(contract.CUSTOMER_EMAIL) is None
            support = {"Authorization": f"Bearer {SUPPORT_KEY}"}
            customer = await http.get(f"/v1/customers/{cus}", headers=support)
            assert customer.json()["email"] == "sam@example.com"
            found = await http.get(
                "/v1/customers", params={"email": "Sam@Example.com"}, headers=support
            )
            assert [c["customer_id"] for c in found.json()["customers"]] == [cus]
            # Read without the key, as the Temporal server keeps it: no address anywhere.
            history = await handle.fetch_history()
            assert all(b"sam@example.com" not in e.SerializeToString() for e in history.events)
        async with httpx.AsyncClient() as ui:
            assert (await ui.get(f"http://127.0.0.1:{ui_port}/")).status_code == 200
        assert (tmp_path / "data" / "temporal.db").exists()
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=60)
        log.close()
    assert code == 0, (tmp_path / "dev.log").read_text()
    assert not _port_open(temporal_port), "the embedded Temporal server outlived `lifecycle dev`"
    assert not _port_open(api_port)


def test_automations_validate_list_and_init(tmp_path: Path) -> None:
    env = clean_env()
    result = run_cli("automations", "validate", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "automations.default.yaml: 17 automations, all valid" in result.stdout

    listing = run_cli("automations", "list", env=env, cwd=tmp_path).stdout
    assert "dunning-annual-plans  [enabled]" in listing
    assert "filters: subscription_interval=['year']" in listing
    assert "- 30d before: send card_expiring/reminder" in listing
    assert (
        "trigger: entering segment seats-near-limit (re-entry: after 30d; leaving ends it: yes; "
        "existing members: left alone)" in listing
    )
    assert "holdout: 10% of customers get no email" in listing

    assert run_cli("automations", "init", env=env, cwd=tmp_path).returncode == 0
    assert (tmp_path / "automations.yaml").read_text().startswith("# The automations")
    again = run_cli("automations", "init", env=env, cwd=tmp_path)
    assert again.returncode != 0 and "exists already" in again.stderr


@pytest.mark.parametrize("command", [("automations", "validate"), ("worker",), ("dev",)])
def test_invalid_automations_stop_the_start_naming_file_automation_and_field(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    bad = tmp_path / "mine.yaml"
    bad.write_text(
        "automations:\n"
        "  - name: dunning-typo\n"
        "    lifecycle: dunning\n"
        "    steps:\n"
        "      - {after: 3 days, send: dunning/reminder}\n"
        "      - {after: 7d, send: dunning/final-notise}\n"
    )
    env = clean_env(LIFECYCLE_AUTOMATIONS=str(bad), LIFECYCLE_LINK_SECRET=LINK_SECRET)
    result = run_cli(*command, env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert (
        f"{bad}: automation 'dunning-typo': steps[0].after: bad duration '3 days'" in result.stderr
    )
    assert (
        f"{bad}: automation 'dunning-typo': steps[1].send: unknown template 'dunning/final-notise'"
        in result.stderr
    )


def test_api_and_worker_refuse_to_start_without_a_link_secret(tmp_path: Path) -> None:
    for command in ("api", "worker"):
        result = run_cli(command, env=clean_env(), cwd=tmp_path)
        assert result.returncode == 2
        assert "LIFECYCLE_LINK_SECRET is required" in result.stderr
