"""Local endpoints our outbound posts reach: a business's webhook receiver that checks
each event's `Lifecycle-Signature` the way Stripe's library checks `Stripe-Signature`, and
a server speaking Slack's incoming-webhook API. Each records what it was sent and answers
what a test tells it to."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import stripe

from .fakes import LocalHttpServer, QuietHandler, serving

OUTBOUND_SECRET = "lifecycle-outbound-secret-5d1e8c"


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    # Whether the signature header proved the body, checked with the `stripe` library's
    # own verification (same scheme, our header name).
    verified: bool

    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "text/plain"
    # Seconds to wait before answering (longer than the client's timeout: a timeout).
    delay: float = 0.0


@dataclass
class ReceiverState:
    secret: str
    received: list[Received] = field(default_factory=list)
    # The next answers, oldest first; then `default`.
    replies: list[Reply] = field(default_factory=list)
    default: Reply = field(default_factory=lambda: Reply(200, b"ok"))

    def next_reply(self) -> Reply:
        return self.replies.pop(0) if self.replies else self.default

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [r.json() for r in self.received]


def stripe_verified(body: bytes, header: str | None, secret: str) -> bool:
    try:
        stripe.WebhookSignature.verify_header(body, header, secret, tolerance=300)
    except stripe.SignatureVerificationError:
        return False
    return True


class ReceiverHandler(QuietHandler):
    server: ReceiverServer

    def do_POST(self) -> None:
        state = self.server.state
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        header = self.headers.get("Lifecycle-Signature")
        state.received.append(
            Received(
                self.path,
                dict(self.headers.items()),
                body,
                stripe_verified(body, header, state.secret),
            )
        )
        reply = state.next_reply()
        if reply.delay:
            time.sleep(reply.delay)
        self.send_answer(reply.status, reply.content_type, reply.body, {})


class ReceiverServer(LocalHttpServer):
    def __init__(self, state: ReceiverState) -> None:
        super().__init__(ReceiverHandler)
        self.state = state

    @property
    def host(self) -> str:
        """`127.0.0.1:<port>`, as LIFECYCLE_OUTBOUND_WEBHOOK_HOSTS lists it."""
        return self.url.removeprefix("http://")


def running_receiver(secret: str = OUTBOUND_SECRET) -> Iterator[ReceiverServer]:
    """A business's webhook endpoint, for a fixture to yield."""
    with serving(ReceiverServer(ReceiverState(secret))) as server:
        yield server


# --- Slack ------------------------------------------------------------------------------

SLACK_PATH = "/services/T000TEST/B000TEST/slacktoken9f8e7d6c"


class SlackHandler(QuietHandler):
    """Slack's incoming webhook, as documented: `POST /services/...` with a JSON body
    holding `text`; `200 ok`, or a refusal named in a text/plain body."""

    server: SlackServer

    def do_POST(self) -> None:
        state = self.server.state
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        state.received.append(Received(self.path, dict(self.headers.items()), body, False))
        if self.path != SLACK_PATH:
            self.send_answer(404, "text/plain", b"no_service", {})
            return
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or not payload.get("text"):
            self.send_answer(400, "text/plain", b"invalid_payload", {})
            return
        reply = state.next_reply()
        self.send_answer(reply.status, reply.content_type, reply.body, {})


class SlackServer(LocalHttpServer):
    def __init__(self, state: ReceiverState) -> None:
        super().__init__(SlackHandler)
        self.state = state

    @property
    def webhook_url(self) -> str:
        return self.url + SLACK_PATH


def running_slack() -> Iterator[SlackServer]:
    """A Slack incoming-webhook endpoint, for a fixture to yield."""
    with serving(SlackServer(ReceiverState(secret=""))) as server:
        yield server
