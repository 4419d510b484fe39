"""The Stripe API client, built once per process from the settings."""

import stripe

from stripe_lifecycle.settings import Settings

# Below the workflow's one-minute start_to_close_timeout, so a hung request ends the attempt
# with an error of its own instead of being cut off by the timeout.
HTTP_TIMEOUT_SECONDS = 30.0


def build_stripe_client(settings: Settings) -> stripe.StripeClient | None:
    """The Stripe client for the worker, or None when LIFECYCLE_STRIPE_API_KEY is not set."""
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
        http_client=stripe.HTTPXClient(timeout=HTTP_TIMEOUT_SECONDS, allow_sync_methods=True),
    )


def worth_retrying(exc: stripe.StripeError) -> bool:
    """A rate limit, Stripe's own failure or the network: the same read may pass later.
    Anything else (404, 403, 400) would be answered the same."""
    if isinstance(exc, stripe.RateLimitError | stripe.APIConnectionError):
        return True
    status = exc.http_status
    return status is None or status >= 500 or status in (409, 429)
