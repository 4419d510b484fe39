"""In-process rate limits: token buckets for the pages behind email links (`/t/`,
`/survey/`, `/u/`), and a backoff on failed dashboard sign-ins.

Both live in the API process's memory, each remembering a bounded number of clients (the
least recently seen are forgotten first): each API process limits on its own, so behind
N processes a client gets up to N times the rate. That is enough to stop one client
hammering a link (each visit of a billing link makes a Stripe portal session) or guessing
keys at the login form, not a substitute for a rate limit at the load balancer.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import HTTPException, Request, status

# How many clients (or links, or keys) each limit remembers.
MAX_REMEMBERED = 10_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class TokenBuckets:
    """`capacity` requests at once per key, refilled at `per_second`; at most `max_keys`
    keys are remembered (the least recently seen are forgotten first, as a full bucket)."""

    capacity: float
    per_second: float
    max_keys: int = MAX_REMEMBERED
    clock: Callable[[], float] = time.monotonic
    _buckets: OrderedDict[str, _Bucket] = field(default_factory=OrderedDict)

    def take(self, key: str) -> float:
        """0 when the request may go ahead (a token is taken); otherwise the seconds until
        the key's next token."""
        now = self.clock()
        bucket = self._buckets.pop(key, None) or _Bucket(self.capacity, now)
        bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.per_second)
        bucket.updated = now
        self._buckets[key] = bucket
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.per_second


@dataclass
class LinkRateLimits:
    """The limits of the pages behind email links (`/t/`, `/survey/`, `/u/`): per client
    address, all of them together (a burst of 60, then one a second), and per link (a
    burst of 10, then one every 6 seconds: mail scanners and a reader clicking again or
    saving a form twice fit well within it)."""

    clock: Callable[[], float] = time.monotonic
    per_client: TokenBuckets = field(init=False)
    per_link: TokenBuckets = field(init=False)

    def __post_init__(self) -> None:
        self.per_client = TokenBuckets(60, 1.0, clock=self.clock)
        self.per_link = TokenBuckets(10, 1 / 6, clock=self.clock)


def retry_after(wait: float) -> str:
    """The `Retry-After` header's whole seconds for a wait."""
    return str(max(1, math.ceil(wait)))


def client_address(request: Request) -> str:
    # Behind a reverse proxy this is the proxy unless uvicorn trusts its forwarded headers.
    return request.client.host if request.client else "unknown"


def refuse_if_limited(wait: float) -> None:
    """429 with `Retry-After` when a limit says to wait (`wait` > 0)."""
    if wait:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail="too many requests for this link; try again shortly",
            headers={"Retry-After": retry_after(wait)},
        )


@dataclass
class _Failures:
    # Failures within the last window (at most `allowed` are kept).
    recent: list[float]
    # Blocks so far: each doubles the next one's length.
    blocks: int
    blocked_until: float
    last_failure: float


@dataclass
class FailureBackoff:
    """Failed attempts per key (a client address, a presented key): `allowed` failures
    within `window` seconds pass, then the key is blocked for `window`. After a block,
    each further failure blocks it again for twice as long as the last time, up to
    `max_block`, until a success, or `max_block` without a failure after the last block,
    forgets it."""

    allowed: int = 5
    window: float = 60.0
    max_block: float = 3600.0
    max_keys: int = MAX_REMEMBERED
    clock: Callable[[], float] = time.monotonic
    _failures: OrderedDict[str, _Failures] = field(default_factory=OrderedDict)

    def wait(self, key: str) -> float:
        """The seconds until `key` may try again; 0 when it may now."""
        found = self._failures.get(key)
        return max(0.0, found.blocked_until - self.clock()) if found else 0.0

    def failed(self, key: str) -> None:
        now = self.clock()
        found = self._failures.pop(key, None)
        if found is None or now - max(found.last_failure, found.blocked_until) >= self.max_block:
            found = _Failures(recent=[], blocks=0, blocked_until=0.0, last_failure=now)
        found.last_failure = now
        found.recent = [t for t in found.recent if now - t < self.window] + [now]
        if len(found.recent) >= (self.allowed if found.blocks == 0 else 1):
            found.blocked_until = now + min(self.max_block, self.window * 2**found.blocks)
            found.blocks += 1
            found.recent = []
        self._failures[key] = found
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)


@dataclass
class LoginThrottle:
    """Failed dashboard sign-ins, per client address and per key presented (the key's
    digest, never the key): five failures a minute, then a block that doubles with each
    further failure (1, 2, 4 ... minutes, at most an hour). A client spreading guesses over
    many addresses still meets the per-key limit on any key it repeats."""

    clock: Callable[[], float] = time.monotonic
    per_client: FailureBackoff = field(init=False)
    per_key: FailureBackoff = field(init=False)

    def __post_init__(self) -> None:
        self.per_client = FailureBackoff(clock=self.clock)
        self.per_key = FailureBackoff(clock=self.clock)

    def wait(self, client: str, key_id: str) -> float:
        return max(self.per_client.wait(client), self.per_key.wait(key_id))

    def failed(self, client: str, key_id: str) -> None:
        self.per_client.failed(client)
        self.per_key.failed(key_id)

    def succeeded(self, client: str, key_id: str) -> None:
        self.per_client.succeeded(client)
        self.per_key.succeeded(key_id)
