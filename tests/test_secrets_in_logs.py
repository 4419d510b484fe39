"""Secrets never reach the logs: a whole run through the real processes' code with every
logger at DEBUG (ours, uvicorn, SQLAlchemy, httpx, urllib3, Temporal, stripe): signed
webhooks into the API served by uvicorn, the dunning workflow on the dev server sending
through a Postmark-speaking server (which fails once with a 5xx) and taking a Stripe action
on a Stripe-speaking server, a tracked link making a portal session, the dashboard signed
into, used and signed out of, API calls, and refusals (a bad signature, wrong keys). Then
no captured line holds the Stripe key, the webhook secret, the Postmark token, the
Postmark webhook password, the link secret, an API key or a session cookie."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from temporalio.testing import WorkflowEnvironment

from stripe_lifecycle.api.app import create_app
from stripe_lifecycle.api.sessions import SESSION_COOKIE
from stripe_lifecycle.settings import Settings
from stripe_lifecycle.storage.db import create_engine, create_sessionmaker

from .conftest import (
    ADMIN_KEY,
    LINK_SECRET,
    SUPPORT_KEY,
    app_settings,
    free_port,
    temporal_address,
    workers,
)
from .delivery_helpers import TRANSACTIONAL_STREAM
from .fakes import (
    POSTMARK_TOKEN,
    STRIPE_API_KEY,
    PostmarkHttpServer,
    StripeHttpServer,
    StripeState,
    running_postmark,
    serving,
)
from .page_helpers import csrf_of
from .report_helpers import start_dunning
from .signing import WEBHOOK_SECRET, signed
from .workflow_helpers import eventually

HOOK_USER, HOOK_PASSWORD = "postmark-hooks", "hook-password-Wq3Zr8Tn5Ly2Kv7Xe"
AUTOMATIONS = """
automations:
  - name: dunning-logged
    lifecycle: dunning
    steps:
      - {after: 0s, send: dunning/payment-failed}
      - {after: 1s, action: mark_uncollectible}
"""
# Every logger the processes write through, at DEBUG for the run.
LOGGERS = (
    "",
    "stripe_lifecycle",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "uvicorn.asgi",
    "sqlalchemy",
    "sqlalchemy.engine",
    "sqlalchemy.pool",
    "aiosqlite",
    "httpx",
    "httpcore",
    "urllib3",
    "postmarker",
    "temporalio",
    "stripe",
    "asyncio",
)


def _running_task() -> asyncio.Task[object] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # a thread without an event loop (sync activities, postmarker)
        return None


class Captured(logging.Handler):
    """Every record, formatted with its arguments and any traceback, except those of the
    test's own task: its HTTP client plays the browser, Stripe and Postmark, and logs the
    cookies it is given, as a browser's own log would; that is not the system's log."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []
        self.outside = _running_task()

    def emit(self, record: logging.LogRecord) -> None:
        if self.outside is None or _running_task() is not self.outside:
            self.lines.append(self.format(record))


@contextlib.contextmanager
def everything_logged() -> Iterator[Captured]:
    captured = Captured()
    loggers = [logging.getLogger(name) for name in LOGGERS]
    saved = [(logger, logger.level, logger.propagate, logger.disabled) for logger in loggers]
    root = logging.getLogger()
    root.addHandler(captured)
    # An earlier uvicorn in this process (another test's, with uvicorn's default logging
    # config) leaves its loggers not propagating: their records would miss the capture.
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.propagate = True
        logger.disabled = False
    try:
        yield captured
    finally:
        root.removeHandler(captured)
        for logger, level, propagate, disabled in saved:
            logger.setLevel(level)
            logger.propagate = propagate
            logger.disabled = disabled


@contextlib.asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[str]:
    """The app behind uvicorn, logging as it would (access log on, at DEBUG), its records
    going to the root logger rather than uvicorn's own handlers."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_config=None, log_level="debug"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "uvicorn stopped before it started"
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
def postmark() -> Iterator[PostmarkHttpServer]:
    yield from running_postmark()


@pytest.fixture
def stripe_api() -> Iterator[StripeHttpServer]:
    with serving(StripeHttpServer(StripeState())) as server:
        yield server


async def test_no_secret_is_logged_in_a_whole_run(
    dev_env: WorkflowEnvironment,
    sqlite_url: str,
    task_queue: str,
    tmp_path: Path,
    postmark: PostmarkHttpServer,
    stripe_api: StripeHttpServer,
) -> None:
    automations = tmp_path / "automations.yaml"
    automations.write_text(AUTOMATIONS)
    settings = app_settings(
        sqlite_url,
        temporal_address(dev_env),
        task_queue,
        automations=automations,
        mail_transport="postmark",
        postmark_server_token=POSTMARK_TOKEN,
        postmark_api_url=postmark.url,
        postmark_message_stream=TRANSACTIONAL_STREAM,
        postmark_webhook_user=HOOK_USER,
        postmark_webhook_password=HOOK_PASSWORD,
        stripe_api_key=STRIPE_API_KEY,
        stripe_api_base=stripe_api.url,
    )
    # The first send meets a Postmark outage and is retried.
    postmark.state.replies.append((500, {"ErrorCode": 500, "Message": "Internal error"}))
    cookies: list[str] = []
    with everything_logged() as captured:
        engine = create_engine(sqlite_url)
        try:
            async with (
                workers(dev_env.client, settings, create_sessionmaker(engine)),
                served(settings) as base_url,
                httpx.AsyncClient(base_url=base_url) as http,
            ):
                cus, workflow_id = await start_dunning(http, "ada@example.com")
                invoice_id = workflow_id.removeprefix("dunning-")
                stripe_api.state.invoices[invoice_id] = {
                    "id": invoice_id,
                    "object": "invoice",
                    "customer": cus,
                    "status": "open",
                    "amount_due": 4900,
                    "currency": "usd",
                    "livemode": False,
                }

                def acted() -> bool:
                    return any(
                        r.path == f"/v1/invoices/{invoice_id}/mark_uncollectible"
                        for r in stripe_api.state.requests
                    )

                async def sent_and_acted() -> bool:
                    return len(postmark.state.message_ids) == 1 and acted()

                await eventually(sent_and_acted, "the email sent and the Stripe action taken")
                assert len(postmark.state.requests) == 2  # the 5xx, then the retry

                support = {"Authorization": f"Bearer {SUPPORT_KEY}"}
                listed = await http.get(f"/v1/customers/{cus}/messages", headers=support)
                [message] = listed.json()["messages"]
                shown = await http.get(f"/v1/messages/{message['id']}", headers=support)
                [link] = [url for url in shown.json()["links"] if "/t/" in url]
                clicked = await http.get("/t/" + link.partition("/t/")[2])
                assert clicked.status_code == 302  # a portal session from the Stripe server
                assert any(
                    r.path == "/v1/billing_portal/sessions" for r in stripe_api.state.requests
                )

                # Refusals: a forged signature, wrong keys, Postmark's hook without its password.
                body, headers = signed({"id": "evt_forged", "type": "customer.created"}, "whsec_x")
                forged = await http.post("/webhooks/stripe", content=body, headers=headers)
                assert forged.status_code == 400
                wrong = {"Authorization": f"Bearer {ADMIN_KEY}-not"}
                assert (await http.get(f"/v1/customers/{cus}", headers=wrong)).status_code == 401
                hook = await http.post(
                    "/webhooks/postmark",
                    json={"RecordType": "Delivery", "MessageID": postmark.state.message_ids[0]},
                    auth=(HOOK_USER, HOOK_PASSWORD),
                )
                assert hook.status_code < 500, hook.text
                unhooked = await http.post(
                    "/webhooks/postmark", json={}, auth=(HOOK_USER, HOOK_PASSWORD + "x")
                )
                assert unhooked.status_code == 401

                # The dashboard: a wrong key, the right one, a page, a cancel, signing out.
                assert (
                    await http.post("/dashboard/login", data={"key": SUPPORT_KEY[:-1]})
                ).status_code == 401
                signed_in = await http.post("/dashboard/login", data={"key": ADMIN_KEY})
                assert signed_in.status_code == 303
                cookies.append(http.cookies[SESSION_COOKIE])
                page = await http.get("/dashboard")
                assert page.status_code == 200
                cancel = await http.post(
                    f"/dashboard/customers/{cus}/dunning/cancel",
                    data={"csrf": csrf_of(page.text), "reason": "paid by wire"},
                )
                assert cancel.status_code == 303
                out = await http.post("/dashboard/logout", data={"csrf": csrf_of(page.text)})
                assert out.status_code == 303
                assert (await http.get(f"/v1/customers/{cus}", headers=support)).status_code == 200
        finally:
            await engine.dispose()

    logged = "\n".join(captured.lines)
    # The run was logged in depth: every layer wrote something.
    for name in ("stripe_lifecycle", "uvicorn", "sqlalchemy.engine", "httpx", "temporalio"):
        assert f"\n{name}" in f"\n{logged}", f"nothing logged by {name}"
    secrets = {
        "the Stripe API key": STRIPE_API_KEY,
        "the Stripe webhook secret": WEBHOOK_SECRET,
        "the Postmark server token": POSTMARK_TOKEN,
        "the Postmark webhook password": HOOK_PASSWORD,
        "its basic auth": base64.b64encode(f"{HOOK_USER}:{HOOK_PASSWORD}".encode()).decode(),
        "the link secret": LINK_SECRET,
        "the support key": SUPPORT_KEY,
        "the admin key": ADMIN_KEY,
        **{f"session cookie {n}": value for n, value in enumerate(cookies)},
    }
    assert cookies
    leaks = {
        what: [line for line in captured.lines if value in line][:3]
        for what, value in secrets.items()
    }
    assert not {what: lines for what, lines in leaks.items() if lines}
    # Nor does the settings object's repr, which an error report might print.
    printed = repr(settings) + str(settings)
    assert not [what for what, value in secrets.items() if value in printed]
