"""A small in-process token bucket for the tracked-link endpoint (`/t/`).

Buckets live in the API process's memory: each API process limits on its own, so behind
N processes a client gets up to N times the rate. That is enough to stop one client
hammering a link (each visit of a billing link makes a Stripe portal session), not a
substitute for a rate limit at the load balancer.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field


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
    max_keys: int = 10_000
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
    """The limits of `/t/`: per client address (a burst of 60, then one a second) and per
    link (a burst of 10, then one every 6 seconds: mail scanners and a reader clicking
    again fit well within it)."""

    clock: Callable[[], float] = time.monotonic
    per_client: TokenBuckets = field(init=False)
    per_link: TokenBuckets = field(init=False)

    def __post_init__(self) -> None:
        self.per_client = TokenBuckets(60, 1.0, clock=self.clock)
        self.per_link = TokenBuckets(10, 1 / 6, clock=self.clock)


def retry_after(wait: float) -> str:
    """The `Retry-After` header's whole seconds for a wait."""
    return str(max(1, math.ceil(wait)))
