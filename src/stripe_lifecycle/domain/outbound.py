"""Outbound webhooks (the `webhook` step): the event's JSON body, its signature, the host
allow-list, and the retry timing workflows give the `send_webhook` activity. Pure: no I/O.

The signature is Stripe's own scheme under our header name, so a receiver that already
verifies `Stripe-Signature` verifies ours with the same code:

    Lifecycle-Signature: t=1767225600,v1=5257a869e7ec...

`v1` is the hex HMAC-SHA256, keyed with LIFECYCLE_OUTBOUND_WEBHOOK_SECRET, of the
timestamp, a dot, and the raw request body (`"{t}.{body}"`). A receiver recomputes it over
the bytes it received (not a re-serialised JSON), compares in constant time, and refuses a
timestamp older than its tolerance (replays). `verify` below does exactly that.

Every delivery of one step carries the same id (the body's `id`, and the `Idempotency-Key`
header): the activity may be retried after the receiver got the event but before its
answer came back, so receivers dedupe by it, as they do with Stripe's event ids.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

SIGNATURE_HEADER = "Lifecycle-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SIGNATURE_SCHEME = "v1"
# Stripe's libraries refuse signatures older than five minutes by default; so do we.
DEFAULT_TOLERANCE_SECONDS = 300

# How long one POST may take before it counts as a timeout (and is retried).
WEBHOOK_REQUEST_TIMEOUT_SECONDS = 10.0
# Retry timing of the `send_webhook` activity, for the workflow's RetryPolicy: each attempt
# at most WEBHOOK_ATTEMPT_TIMEOUT; waits of 10 s, 20 s, 40 s ... up to an hour between
# attempts; given up a day after the first (the step then ends failed).
WEBHOOK_ATTEMPT_TIMEOUT = timedelta(seconds=30)
WEBHOOK_RETRY_INITIAL = timedelta(seconds=10)
WEBHOOK_RETRY_BACKOFF = 2.0
WEBHOOK_RETRY_MAX_INTERVAL = timedelta(hours=1)
WEBHOOK_GIVE_UP = timedelta(days=1)

# The error type the activity raises for an answer worth retrying (5xx, 408, 429, timeouts,
# connection errors); the workflow's RetryPolicy must leave it retryable.
WEBHOOK_UNAVAILABLE = "WebhookUnavailable"

DELIVERED = "delivered"
FAILED = "failed"

_SCHEMES = frozenset({"http", "https"})


class SignatureError(ValueError):
    """A signature header that does not prove the body came from us, and why."""


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The hex HMAC-SHA256 of `"{timestamp}.{body}"` keyed with `secret`."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(body: bytes, secret: str, timestamp: int) -> str:
    """The `Lifecycle-Signature` value: `t=<unix>,v1=<hex>`."""
    return f"t={timestamp},{SIGNATURE_SCHEME}={sign(body, secret, timestamp)}"


def verify(
    header: str,
    body: bytes,
    secret: str,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    *,
    now: float | None = None,
) -> int:
    """Check a `Lifecycle-Signature` header against the raw body, as a receiver does;
    returns the signed timestamp, raises SignatureError if the header does not prove the
    body is ours and fresh (at most `tolerance` seconds old; 0 or less: any age)."""
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError as exc:
                raise SignatureError("the timestamp is not a number") from exc
        elif key == SIGNATURE_SCHEME:
            signatures.append(value)
    if timestamp is None:
        raise SignatureError("no timestamp in the header")
    if not signatures:
        raise SignatureError(f"no {SIGNATURE_SCHEME} signature in the header")
    expected = sign(body, secret, timestamp)
    # Several v1 values appear while a secret is being rolled: any one may match.
    if not any(hmac.compare_digest(expected, s) for s in signatures):
        raise SignatureError("no signature matches the body")
    current = time.time() if now is None else now
    if tolerance > 0 and timestamp < current - tolerance:
        raise SignatureError(f"the timestamp is more than {tolerance} s old")
    return timestamp


def event_body(event_id: str, event_type: str, created: int, payload: dict[str, Any]) -> bytes:
    """The JSON a `webhook` step POSTs, shaped like a Stripe event:
    `{"id", "object": "event", "type", "created", "data"}`."""
    event = {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created": created,
        "data": payload,
    }
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def parse_hosts(raw: str) -> frozenset[str]:
    """LIFECYCLE_OUTBOUND_WEBHOOK_HOSTS: comma-separated hostnames, each optionally with a
    port (`app.example.com`, `hooks.example.com:8443`, `127.0.0.1:9000`); lower-cased.
    Raises ValueError, naming the variable, for an entry that is not a bare host."""
    hosts: set[str] = set()
    for position, entry in enumerate(e.strip() for e in raw.split(",")):
        if not entry:
            continue
        host, port = _host_port(entry)
        if host is None or "/" in entry or "@" in entry or "?" in entry or "#" in entry:
            raise ValueError(
                f"LIFECYCLE_OUTBOUND_WEBHOOK_HOSTS entry {position + 1} ({entry!r}) must be "
                "a hostname, optionally with :port (no scheme, path or credentials)"
            )
        hosts.add(host if port is None else f"{host}:{port}")
    return frozenset(hosts)


def url_refusal(url: str, hosts: Iterable[str]) -> str | None:
    """Why `url` may not receive a webhook, or None if it may: the scheme must be http or
    https, the URL must carry no credentials, and its host must be allow-listed, either
    as a bare host (any port) or as the exact `host:port`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "the URL cannot be read"
    if parts.scheme.lower() not in _SCHEMES:
        return "the URL must start with https:// (or http://)"
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        return "the URL has no host"
    if parts.username is not None or parts.password is not None:
        return "the URL may not carry credentials"
    allowed = {h.lower() for h in hosts}
    shown = f"[{host}]" if ":" in host else host
    effective = port if port is not None else (443 if parts.scheme.lower() == "https" else 80)
    if shown in allowed or f"{shown}:{effective}" in allowed:
        return None
    return f"the host {shown} is not in LIFECYCLE_OUTBOUND_WEBHOOK_HOSTS"


def host_allowed(url: str, hosts: Iterable[str]) -> bool:
    """Whether `url` may receive a webhook (see `url_refusal`)."""
    return url_refusal(url, hosts) is None


def origin(url: str) -> str:
    """`scheme://host[:port]` of a URL: what logs and details show of an endpoint (paths
    and queries may carry tokens)."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    except ValueError:
        return "(unreadable URL)"


def _host_port(entry: str) -> tuple[str | None, int | None]:
    try:
        parts = urlsplit(f"//{entry}")
        port = parts.port
    except ValueError:
        return None, None
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        return None, None
    return (f"[{host}]" if ":" in host else host), port
