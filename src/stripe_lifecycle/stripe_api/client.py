"""The Stripe API client, built once per process from the settings."""

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import stripe

from stripe_lifecycle.settings import Settings

# Below the workflow's one-minute start_to_close_timeout, so a hung request ends the attempt
# with an error of its own instead of being cut off by the timeout.
HTTP_TIMEOUT_SECONDS = 30.0


class Pacer:
    """Spaces the starts of this process's requests at least 1/`rate` seconds apart.

    Temporal's cap on the Stripe reads queue holds every worker to the rate on average,
    but hands tasks out in bursts (measured on the dev server: 5 activities within one
    second at a cap of 2 a second), and a burst past Stripe's limit is answered 429. The
    pacer keeps one worker's requests under the rate in every second."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = 0.0
        self._turns = asyncio.Lock()

    async def wait(self) -> None:
        """Return at this request's turn. Requests wait one at a time, and the next turn
        counts from when this one's wait ended: an event loop busy elsewhere that wakes
        several waiters late would otherwise let them all go at once."""
        async with self._turns:
            delay = self._next - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._next = time.monotonic() + self._interval


class PacedHTTPXClient(stripe.HTTPXClient):
    """stripe-python's HTTPX client, each request (async: the activities') waiting its
    turn at `pacer` first."""

    def __init__(self, pacer: Pacer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pacer = pacer

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        await self._pacer.wait()
        return await super().request_async(method, url, headers, post_data)


def build_stripe_client(
    settings: Settings, pacer: Pacer | None = None
) -> stripe.StripeClient | None:
    """The Stripe client for the worker, or None when LIFECYCLE_STRIPE_API_KEY is not set;
    with `pacer`, its requests take turns there."""
    if settings.stripe_api_key is None or not settings.stripe_api_key.get_secret_value():
        return None
    # stripe-python joins base and path as strings: "https://x/" + "/v1/..." would break.
    api_base = settings.stripe_api_base.rstrip("/") if settings.stripe_api_base else None
    return stripe.StripeClient(
        settings.stripe_api_key.get_secret_value(),
        base_addresses={"api": api_base} if api_base else None,
        # Temporal retries the activity with its own backoff; library retries would stack on
        # top of those and hide how often Stripe was asked.
        max_network_retries=0,
        http_client=(
            stripe.HTTPXClient(timeout=HTTP_TIMEOUT_SECONDS, allow_sync_methods=True)
            if pacer is None
            else PacedHTTPXClient(pacer, timeout=HTTP_TIMEOUT_SECONDS, allow_sync_methods=True)
        ),
    )


def worth_retrying(exc: stripe.StripeError) -> bool:
    """A rate limit, Stripe's own failure or the network: the same read may pass later.
    Anything else (404, 403, 400) would be answered the same."""
    if isinstance(exc, stripe.RateLimitError | stripe.APIConnectionError):
        return True
    status = exc.http_status
    return status is None or status >= 500 or status in (409, 429)
