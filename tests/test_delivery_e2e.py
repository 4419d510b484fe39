"""A bounce reported by Postmark stops the next email of a running sequence, end to end:
signed Stripe webhooks through the real API, the dunning workflow on the dev server, mail
through the Postmark transport to a local server speaking Postmark's API, and Postmark's
bounce webhook back into the API."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from .conftest import SUPPORT_KEY, running_stack
from .delivery_helpers import TRANSACTIONAL_STREAM
from .fakes import POSTMARK_TOKEN, PostmarkHttpServer, running_postmark
from .report_helpers import start_dunning
from .workflow_helpers import eventually

AUTH = {"Authorization": f"Bearer {SUPPORT_KEY}"}
HOOK_AUTH = ("postmark-hooks", "hook-password-e2e")
# The second email comes two seconds after the first: time for the bounce to arrive.
AUTOMATIONS = """
automations:
  - name: dunning-quick
    lifecycle: dunning
    steps:
      - {after: 0s, send: dunning/payment-failed}
      - {after: 2s, send: dunning/reminder}
"""


@pytest.fixture
def postmark() -> Iterator[PostmarkHttpServer]:
    yield from running_postmark()


async def messages(http: httpx.AsyncClient, cus: str) -> list[dict[str, Any]]:
    response = await http.get(f"/v1/customers/{cus}/messages", headers=AUTH)
    found: list[dict[str, Any]] = response.json().get("messages", [])
    return found


async def test_hard_bounce_suppresses_the_rest_of_the_dunning(
    dev_env: WorkflowEnvironment,
    sqlite_url: str,
    task_queue: str,
    tmp_path: Path,
    postmark: PostmarkHttpServer,
) -> None:
    automations = tmp_path / "automations.yaml"
    automations.write_text(AUTOMATIONS)
    async with running_stack(
        dev_env,
        sqlite_url,
        task_queue,
        automations=automations,
        mail_transport="postmark",
        postmark_server_token=POSTMARK_TOKEN,
        postmark_api_url=postmark.url,
        postmark_message_stream=TRANSACTIONAL_STREAM,
        postmark_webhook_user=HOOK_AUTH[0],
        postmark_webhook_password=HOOK_AUTH[1],
    ) as (_, http):
        cus, _ = await start_dunning(http, "ada@example.com")

        async def first_sent() -> bool:
            return [m["status"] for m in await messages(http, cus)] == ["sent"]

        await eventually(first_sent, "the first dunning email sent through Postmark")
        [postmark_id] = postmark.state.message_ids
        bounce = {
            "RecordType": "Bounce",
            "MessageStream": TRANSACTIONAL_STREAM,
            "ID": 4242,
            "Type": "HardBounce",
            "TypeCode": 1,
            "MessageID": postmark_id,
            "Description": "The server was unable to deliver your message (ex: unknown user).",
            "Email": "ada@example.com",
            "BouncedAt": "2026-11-22T10:00:00Z",
            "Inactive": True,
        }
        hooked = await http.post("/webhooks/postmark", json=bounce, auth=HOOK_AUTH)
        assert hooked.status_code == 200, hooked.text

        async def second_suppressed() -> bool:
            return [m["status"] for m in await messages(http, cus)] == ["bounced", "suppressed"]

        await eventually(second_suppressed, "the reminder recorded as suppressed")
        log = await messages(http, cus)
        assert [m["template"] for m in log] == ["dunning/payment-failed", "dunning/reminder"]
        reminder = (await http.get(f"/v1/messages/{log[1]['id']}", headers=AUTH)).json()
        assert "suppression list" in reminder["error"]
    # Postmark was asked to send exactly one email.
    assert len(postmark.state.requests) == 1
