"""API memory benchmark: does the API process's memory grow with the requests it serves?

    make bench-api-memory           # or: .venv/bin/python -m bench.api_memory --requests 2500

Starts its own Temporal dev server and a `lifecycle api` process (SQLite inbox, no
worker), then sends it varied requests from a seeded generator: every `/v1` route with
known and unknown ids, valid and invalid bodies and wrong keys, signed Stripe events for
new customers (stored and signalled), badly signed and unsigned ones, bodies over the size
limit, Postmark records, tracked links, unsubscribe and survey pages with forged tokens,
dashboard logins with wrong keys, and health checks. It reads the process's resident set
size (`VmRSS` in /proc) after N, 2N and 4N requests and prints them as ratios of the
first: a process that leaks per request grows about 2x and 4x; one whose allocator has
reached its high-water mark stays near 1x.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from bench.harness import LINK_SECRET, free_port, wait_http
from bench.webhooks import signature
from stripe_lifecycle.storage.migrate import upgrade
from stripe_lifecycle.temporal_setup import start_dev_server, stop_process, wait_for_server

SECRET = "whsec_bench_memory_0123456789"
SUPPORT_KEY = "sk_bench_support_4c1f9e7a2b"
ADMIN_KEY = "sk_bench_admin_8e2d5a9c3f"
POSTMARK_USER = "postmark"
POSTMARK_PASSWORD = "postmark-bench-password-5b7d"
BIN = Path(sys.executable).parent
MIB = 1024 * 1024

TEMPLATES = (
    "dunning/payment-failed",
    "dunning/reminder",
    "trial/welcome",
    "winback/offer",
    "renewal/upcoming",
    "upgrade/offer",
)
RECORD_TYPES = ("Delivery", "Bounce", "SpamComplaint", "Open", "Click", "SubscriptionChange")


def rss_bytes(pid: int) -> int:
    """The process's resident set size, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None


def _key(rng: random.Random) -> dict[str, str]:
    # Mostly the admin key; sometimes support (403 on admin routes), a wrong one or none.
    roll = rng.random()
    if roll < 0.7:
        return {"Authorization": f"Bearer {ADMIN_KEY}"}
    if roll < 0.85:
        return {"Authorization": f"Bearer {SUPPORT_KEY}"}
    if roll < 0.95:
        return {"Authorization": f"Bearer sk_wrong_{rng.getrandbits(64):x}"}
    return {}


def _id(rng: random.Random, prefix: str) -> str:
    # Known-looking ids, unknown ones, and ids the path validation refuses.
    roll = rng.random()
    if roll < 0.8:
        return f"{prefix}_{rng.getrandbits(48):x}"
    if roll < 0.9:
        return "x" * rng.randint(256, 2000)
    return f"{prefix}-%E2%9C%93{rng.getrandbits(16)}"


def _json(payload: Any) -> tuple[dict[str, str], bytes]:
    return {"Content-Type": "application/json"}, json.dumps(payload).encode()


def stripe_event(rng: random.Random, n: int) -> dict[str, Any]:
    customer = f"cus_mem{n}_{rng.getrandbits(32):x}"
    created = int(time.time()) - rng.randint(0, 86_400)
    return {
        "id": f"evt_mem_{n}_{rng.getrandbits(48):x}",
        "object": "event",
        "api_version": rng.choice(["2025-03-31.basil", "2024-06-20", "2099-01-01.future"]),
        "created": created,
        "livemode": False,
        "type": rng.choice(
            ["customer.created", "customer.updated", "invoice.created", "made.up.event"]
        ),
        "data": {
            "object": {
                "id": customer,
                "object": "customer",
                "email": f"{customer}@example.com",
                "name": "M" * rng.randint(1, 400),
                "created": created - 86_400,
                "metadata": {f"k{i}": "v" * rng.randint(0, 200) for i in range(rng.randint(0, 8))},
            }
        },
    }


def webhook(rng: random.Random, n: int) -> Request:
    event = stripe_event(rng, n)
    body = json.dumps(event).encode()
    roll = rng.random()
    headers = {"Content-Type": "application/json"}
    if roll < 0.6:
        headers["Stripe-Signature"] = signature(SECRET, body)
    elif roll < 0.75:
        headers["Stripe-Signature"] = f"t={int(time.time())},v1={rng.getrandbits(256):064x}"
    elif roll < 0.85:
        body = b"{" * rng.randint(1, 5000)
        headers["Stripe-Signature"] = signature(SECRET, body)
    elif roll < 0.9:
        # Over the 1 MiB limit: refused on its Content-Length before it is read.
        body = b" " * (MIB + rng.randint(1, 1000))
    return Request("POST", "/webhooks/stripe", headers, body)


def postmark(rng: random.Random) -> Request:
    credentials = base64.b64encode(f"{POSTMARK_USER}:{POSTMARK_PASSWORD}".encode()).decode()
    record = {
        "RecordType": rng.choice([*RECORD_TYPES, "", "Unknown"]),
        "MessageID": f"{rng.getrandbits(64):x}",
        "Recipient": f"r{rng.getrandbits(20)}@example.com",
        "Email": f"e{rng.getrandbits(20)}@example.com",
        "ID": rng.getrandbits(31),
        "Type": rng.choice(["HardBounce", "SoftBounce", "Transient"]),
        "Metadata": {"message_id": f"{rng.getrandbits(64):x}"},
        "ReceivedAt": "2026-11-30T10:00:00Z",
    }
    headers, body = _json(record)
    headers["Authorization"] = f"Basic {credentials}" if rng.random() < 0.9 else "Basic eDp5"
    return Request("POST", "/webhooks/postmark", headers, body)


def v1(rng: random.Random) -> Request:
    key = _key(rng)
    customer = _id(rng, "cus")
    message = _id(rng, "msg")
    kind = rng.randrange(16)
    if kind == 0:
        return Request("GET", f"/v1/customers/{customer}", key)
    if kind == 1:
        return Request("GET", f"/v1/customers/{customer}/messages", key)
    if kind == 2:
        return Request("GET", f"/v1/messages/{message}", key)
    if kind == 3:
        headers, body = _json({"reason": "r" * rng.randint(0, 2100)})
        return Request("POST", f"/v1/customers/{customer}/dunning/cancel", key | headers, body)
    if kind == 4:
        headers, body = _json(
            {"reason": rng.choice(["too_expensive", "other", "nonsense"]), "comment": "c" * 50}
        )
        return Request(
            "POST", f"/v1/customers/{customer}/cancellation-feedback", key | headers, body
        )
    if kind == 5:
        return Request("GET", f"/v1/customers/{customer}/cancellation-feedback", key)
    if kind == 6:
        return Request("GET", f"/v1/customers/{customer}/segments", key)
    if kind == 7:
        headers, body = _json({"metric": "seats_used", "value": rng.randint(-5, 500)})
        return Request("POST", f"/v1/customers/{customer}/usage", key | headers, body)
    if kind == 8:
        name = rng.choice(["starter-3-months", "no-such-segment", "BAD NAME"])
        return Request("GET", f"/v1/segments/{name}/customers?limit={rng.randint(1, 200)}", key)
    if kind == 9:
        return Request("GET", rng.choice(["/v1/segments", "/v1/templates", "/v1/sync"]), key)
    if kind == 10:
        template = rng.choice([*TEMPLATES, "no/such-template"])
        output = rng.choice(["json", "html", "text"])
        return Request("GET", f"/v1/templates/{template}/preview?format={output}", key)
    if kind == 11:
        template = rng.choice(TEMPLATES)
        headers, body = _json(stripe_event(rng, rng.getrandbits(20)))
        return Request("POST", f"/v1/templates/{template}/preview", key | headers, body)
    if kind == 12:
        report = rng.choice(["attribution", "lift"])
        since = rng.choice(["2026-01-01", "2026-11-01T00:00:00Z", "yesterday", ""])
        accept = rng.choice(["application/json", "text/csv"])
        return Request("GET", f"/v1/reports/{report}?since={since}", key | {"Accept": accept})
    if kind == 13:
        return Request("GET", "/v1/inbox/quarantined", key)
    if kind == 14:
        event = _id(rng, "evt")
        method = rng.choice(["POST", "DELETE"])
        path = f"/v1/inbox/{event}/retry" if method == "POST" else f"/v1/inbox/{event}"
        headers, body = _json({"reason": "bench"})
        return Request(method, path, key | headers, body)
    target = rng.choice([f"customers/{customer}", f"messages/{message}"])
    headers, body = _json({"reason": "bench"})
    return Request("POST", f"/v1/{target}/links/revoke", key | headers, body)


def page(rng: random.Random) -> Request:
    token = base64.urlsafe_b64encode(rng.randbytes(rng.randint(8, 120))).decode().rstrip("=")
    kind = rng.randrange(7)
    if kind == 0:
        return Request("GET", f"/t/{token}")
    if kind == 1:
        return Request("GET", f"/u/{token}")
    if kind == 2:
        return Request("GET", f"/survey/{token}")
    if kind == 3:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        return Request("POST", f"/survey/{token}", headers, b"reason=other&comment=hi")
    if kind == 4:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        key = f"sk_guess_{rng.getrandbits(64):x}"
        return Request("POST", "/dashboard/login", headers, f"api_key={key}".encode())
    if kind == 5:
        return Request("GET", "/dashboard", {"Authorization": f"Bearer {SUPPORT_KEY}"})
    return Request("GET", rng.choice(["/healthz", "/readyz", "/openapi.json"]))


def request(rng: random.Random, n: int) -> Request:
    roll = rng.random()
    if roll < 0.3:
        return webhook(rng, n)
    if roll < 0.4:
        return postmark(rng)
    if roll < 0.8:
        return v1(rng)
    return page(rng)


async def drive(
    base_url: str, seed: int, start: int, count: int, concurrency: int
) -> dict[int, int]:
    """Send requests `start`..`start + count` of the seeded sequence; the status counts."""
    rng = random.Random(f"{seed}:{start}")
    requests = [request(rng, n) for n in range(start, start + count)]
    statuses: dict[int, int] = {}
    queue: asyncio.Queue[Request] = asyncio.Queue()
    for item in requests:
        queue.put_nowait(item)

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
            while not queue.empty():
                item = queue.get_nowait()
                try:
                    response = await http.request(
                        item.method, item.path, headers=item.headers, content=item.content
                    )
                    code = response.status_code
                except httpx.TransportError:
                    # The server may close a connection on a refused oversized body.
                    code = 0
                statuses[code] = statuses.get(code, 0) + 1

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return statuses


def api_environment(database_url: str, temporal_address: str, api_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "LIFECYCLE_DATABASE_URL": database_url,
        "LIFECYCLE_TEMPORAL_ADDRESS": temporal_address,
        "LIFECYCLE_TASK_QUEUE": "bench-api-memory",
        "LIFECYCLE_API_PORT": str(api_port),
        "LIFECYCLE_STRIPE_WEBHOOK_SECRET": SECRET,
        "LIFECYCLE_API_KEYS": f"support:{SUPPORT_KEY},admin:{ADMIN_KEY}",
        "LIFECYCLE_LINK_SECRET": LINK_SECRET,
        "LIFECYCLE_POSTMARK_WEBHOOK_USER": POSTMARK_USER,
        "LIFECYCLE_POSTMARK_WEBHOOK_PASSWORD": POSTMARK_PASSWORD,
    }


async def main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="lifecycle-bench-memory-"))
    database_url = f"sqlite+aiosqlite:///{workdir / 'lifecycle.db'}"
    await upgrade(database_url)
    temporal_port, api_port = free_port(), free_port()
    address = f"127.0.0.1:{temporal_port}"
    server = start_dev_server(
        workdir, temporal_port, free_port(), "default", workdir / "temporal.log"
    )
    logs: IO[bytes] = (workdir / "api.log").open("wb")
    api: subprocess.Popen[bytes] | None = None
    try:
        await wait_for_server(address, "default", server)
        api = subprocess.Popen(
            [str(BIN / "lifecycle"), "api"],
            env=api_environment(database_url, address, api_port),
            stdout=logs,
            stderr=logs,
        )
        base_url = f"http://127.0.0.1:{api_port}"
        await wait_http(f"{base_url}/readyz", api)
        started = rss_bytes(api.pid)
        print(
            f"bench: {4 * args.requests} requests in all, concurrency {args.concurrency}, "
            f"seed {args.seed}, SQLite, {os.cpu_count()} cores; API RSS at start "
            f"{started / MIB:.0f} MiB"
        )
        sent = 0
        first: int | None = None
        statuses: dict[int, int] = {}
        for total in (args.requests, 2 * args.requests, 4 * args.requests):
            began = time.perf_counter()
            counts = await drive(base_url, args.seed, sent, total - sent, args.concurrency)
            rate = (total - sent) / (time.perf_counter() - began)
            for code, count in counts.items():
                statuses[code] = statuses.get(code, 0) + count
            sent = total
            rss = rss_bytes(api.pid)
            first = first or rss
            print(
                f"after {total:6d} requests: RSS {rss / MIB:6.1f} MiB = {rss / first:.2f}x "
                f"after {args.requests} ({rate:.0f} requests/s)"
            )
        print("statuses: " + ", ".join(f"{c}: {n}" for c, n in sorted(statuses.items())))
    finally:
        if api is not None:
            stop_process(api)
        stop_process(server)
        logs.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2500, help="N (RSS after N, 2N, 4N)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=14)
    asyncio.run(main(parser.parse_args()))
