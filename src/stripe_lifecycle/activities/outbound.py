"""The `webhook` step: POST one signed event to the business's own endpoint.

The request (see `domain/outbound.py` for the signature and the body):

    POST <url>
    Content-Type: application/json
    Lifecycle-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "{t}.{body}">
    Idempotency-Key: <workflow id>/<step>

    {"id": "<workflow id>/<step>", "object": "event", "type": "<event>",
     "created": <unix>, "data": {...}}

A 2xx answer delivers the step. A 5xx, 408 or 429, a timeout or a connection error raises a
retryable `WebhookUnavailable` error: Temporal retries the activity with the workflow's
backoff, for up to a day. Any other answer (4xx, or a 3xx: redirects are not followed, as
they could lead off the allow-list) ends the step "failed" with the status and the start of
the body. A URL whose host is not allow-listed, or a missing secret, fails the step without
a request. The signing secret is never logged nor put in a detail; of the URL only the
origin is (paths and queries may carry tokens).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import httpx
from pydantic import SecretStr
from temporalio import activity
from temporalio.exceptions import ApplicationError

from stripe_lifecycle.activities.http_log import log_origins_only
from stripe_lifecycle.activities.interface import Outbound, WebhookRequest, WebhookResult
from stripe_lifecycle.domain.outbound import (
    DELIVERED,
    FAILED,
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    WEBHOOK_REQUEST_TIMEOUT_SECONDS,
    WEBHOOK_UNAVAILABLE,
    event_body,
    origin,
    signature_header,
    url_refusal,
)

# 4xx answers that say "not now" rather than "never": worth the retry a 5xx gets.
RETRYABLE_4XX = frozenset({408, 429})
# How much of a refusing answer's body a failed step keeps.
BODY_EXCERPT = 200

ClientFactory = Callable[[], httpx.AsyncClient]


def default_client() -> httpx.AsyncClient:
    # Redirects are not followed: a 3xx could lead to a host off the allow-list.
    return httpx.AsyncClient(timeout=WEBHOOK_REQUEST_TIMEOUT_SECONDS, follow_redirects=False)


class OutboundActivities(Outbound):
    def __init__(
        self,
        secret: SecretStr | None,
        hosts: Iterable[str],
        *,
        client: ClientFactory = default_client,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # None when LIFECYCLE_OUTBOUND_WEBHOOK_SECRET is not set: every webhook step then
        # fails visibly rather than sending unsigned events.
        self._secret = secret
        self._hosts = frozenset(h.lower() for h in hosts)
        self._client = client
        self._clock = clock
        log_origins_only()

    @activity.defn(name="send_webhook")
    async def send_webhook(self, request: WebhookRequest) -> WebhookResult:
        """POST one signed event to the business's endpoint; raises (to be retried) on a
        5xx or timeout, answers "failed" on a 4xx."""
        where = origin(request.url)
        refusal = url_refusal(request.url, self._hosts)
        if refusal is not None:
            activity.logger.warning("webhook %s not sent: %s", request.idempotency_key, refusal)
            return WebhookResult(FAILED, f"not sent: {refusal}")
        if self._secret is None or not self._secret.get_secret_value():
            detail = "not sent: set LIFECYCLE_OUTBOUND_WEBHOOK_SECRET to sign webhooks"
            activity.logger.warning("webhook %s %s", request.idempotency_key, detail)
            return WebhookResult(FAILED, detail)
        if not request.idempotency_key:
            # Without one, receivers could not tell a retried delivery from a new event.
            return WebhookResult(FAILED, "not sent: no idempotency key")

        # `created` is when the step first asked: the same body on every retry.
        created = int(activity.info().scheduled_time.timestamp())
        body = event_body(request.idempotency_key, request.event, created, request.payload)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature_header(
                body, self._secret.get_secret_value(), int(self._clock())
            ),
            IDEMPOTENCY_HEADER: request.idempotency_key,
        }
        try:
            async with self._client() as client:
                response = await client.post(request.url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise _unavailable(request, where, f"timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise _unavailable(request, where, f"unreachable ({type(exc).__name__})") from exc

        code = response.status_code
        if 200 <= code < 300:
            activity.logger.info(
                "webhook %s (%s) delivered to %s: %s",
                request.idempotency_key,
                request.event,
                where,
                code,
            )
            return WebhookResult(DELIVERED, f"{where} answered {code}", code)
        if code >= 500 or code in RETRYABLE_4XX:
            raise _unavailable(request, where, f"answered {code}")
        excerpt = response.text[:BODY_EXCERPT]
        detail = f"{where} answered {code}" + (f": {excerpt}" if excerpt else "")
        activity.logger.warning("webhook %s failed: %s", request.idempotency_key, detail)
        return WebhookResult(FAILED, detail, code)


def _unavailable(request: WebhookRequest, where: str, why: str) -> ApplicationError:
    message = f"webhook {request.idempotency_key}: {where} {why}; retried with backoff"
    activity.logger.warning("%s", message)
    return ApplicationError(message, type=WEBHOOK_UNAVAILABLE)
