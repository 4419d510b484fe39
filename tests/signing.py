"""Signing test webhooks exactly the way Stripe signs them (the app verifies with `stripe`)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import httpx

WEBHOOK_SECRET = "whsec_test_5b0c1a9e7d3f4e2a8c6b"


def stripe_signature(
    body: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None
) -> str:
    """The `Stripe-Signature` header: `t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`."""
    ts = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={digest}"


def signed(event: dict[str, Any], secret: str = WEBHOOK_SECRET) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    return body, {
        "Stripe-Signature": stripe_signature(body, secret),
        "Content-Type": "application/json",
    }


async def post_webhook(http: httpx.AsyncClient, event: dict[str, Any]) -> None:
    """Deliver `event` to the API signed as Stripe signs it; it must be acknowledged."""
    body, headers = signed(event)
    response = await http.post("/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 200, response.text
