"""The benchmarks' webhook sender: signed Stripe events posted over keep-alive HTTP/1.1
connections with nothing between the socket and the request.

Stripe sends from its own machines; a benchmark's load generator shares the two cores with
what it measures. An HTTP client library spends about 4 ms of CPU per request (httpx,
measured in `bench/ingest.py`'s CPU rows), more than the API spends answering it, and that
time would be taken from the API, the worker and the Temporal server under test.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time


def signature(secret: str, body: bytes) -> str:
    """The `Stripe-Signature` header Stripe would send with `body`, signed now."""
    stamp = int(time.time())
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
    return f"t={stamp},v1={digest.hexdigest()}"


class WebhookSender:
    """Posts bodies to `/webhooks/stripe` with a `Stripe-Signature` made as Stripe makes
    it; a connection is reused once its answer is read, and opened when none is free."""

    def __init__(self, port: int, secret: str, host: str = "127.0.0.1") -> None:
        self._host, self._port = host, port
        self._secret = secret
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, body: bytes) -> None:
        """Send one event; raises unless the API answers 2xx."""
        if self._idle:
            reader, writer = self._idle.pop()
        else:
            reader, writer = await asyncio.open_connection(self._host, self._port)
        head = (
            f"POST /webhooks/stripe HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
            f"Content-Type: application/json\r\n"
            f"Stripe-Signature: {signature(self._secret, body)}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        status_line = await reader.readline()
        if not status_line:
            writer.close()
            raise ConnectionError("the API closed the connection without answering")
        length, keep = 0, True
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            match name.strip().lower():
                case "content-length":
                    length = int(value)
                case "connection":
                    keep = value.strip().lower() != "close"
                case "transfer-encoding":
                    # The rest of the answer cannot be read: the connection is spent.
                    writer.close()
                    raise RuntimeError(f"answer in {value.strip()} encoding: not expected here")
        await reader.readexactly(length)
        if keep:
            self._idle.append((reader, writer))
        else:
            writer.close()
        status = int(status_line.split()[1])
        if not 200 <= status < 300:
            raise RuntimeError(f"the API answered {status_line.decode().strip()}")

    async def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        await asyncio.gather(*(writer.wait_closed() for _, writer in self._idle))
        self._idle.clear()
