"""The cancellation survey behind the "Tell us why" email button, and the feedback API of
the product's own cancel flow: on SQLite and PostgreSQL, through the real app."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from html.parser import HTMLParser

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlmodel import col

from stripe_lifecycle.domain.ids import plan_change_id, winback_id
from stripe_lifecycle.domain.links import make_token
from stripe_lifecycle.storage.models import CancellationFeedback, Message

from .conftest import LINK_SECRET, SUPPORT_KEY, app_settings, free_port, running_api

STRIPE_REASONS = [
    "too_expensive",
    "missing_features",
    "switched_service",
    "unused",
    "customer_service",
    "too_complex",
    "low_quality",
    "other",
]
SUPPORT = {"Authorization": f"Bearer {SUPPORT_KEY}"}
SUPPORT_ACTOR = f"support key {hashlib.sha256(SUPPORT_KEY.encode()).hexdigest()[:8]}"


class SurveyForm(HTMLParser):
    """What a reader sees of the form: the choices, which is selected, the comment box."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.choices: list[str] = []
        self.checked: list[str] = []
        self.comment: str | None = None
        self._in_comment = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "input" and values.get("name") == "reason":
            self.choices.append(values["value"] or "")
            if "checked" in values:
                self.checked.append(values["value"] or "")
        elif tag == "textarea" and values.get("name") == "comment":
            self._in_comment, self.comment = True, ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "textarea":
            self._in_comment = False

    def handle_data(self, data: str) -> None:
        if self._in_comment:
            self.comment = (self.comment or "") + data


@pytest.fixture
async def api(
    database_url: str, task_queue: str
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    # Temporal is not needed here: the app's client is lazy, so an unused port will do.
    settings = app_settings(
        database_url, f"127.0.0.1:{free_port()}", task_queue, brand_name="Acme <Tools>"
    )
    async with running_api(settings) as running:
        yield running


async def cancellation_email(
    app: FastAPI,
    customer_id: str,
    subscription_id: str | None = None,
    workflow_id: str | None = None,
) -> str:
    """Records a sent "your subscription has been cancelled" email of `workflow_id` about
    `subscription_id` (by default the win-back of a subscription of its own); returns its
    id."""
    message_id = str(uuid.uuid4())
    if workflow_id is None:
        subscription_id = subscription_id or subscription()
        workflow_id = winback_id(customer_id, subscription_id)
    async with app.state.lifecycle.sessionmaker() as session:
        session.add(
            Message(
                id=message_id,
                send_key=f"{workflow_id}:0-send-winback-cancelled",
                customer_id=customer_id,
                workflow_id=workflow_id,
                lifecycle="winback",
                automation="winback",
                step="0-send-winback-cancelled",
                template="winback/cancelled",
                to="ada@example.com",
                status="sent",
                transport="outbox",
                destinations={"survey": "hosted:survey"},
                subscription_id=subscription_id,
            )
        )
        await session.commit()
    return message_id


def survey_path(message_id: str, link: str = "survey") -> str:
    return f"/survey/{make_token(LINK_SECRET.encode(), message_id, link, datetime.now(UTC))}"


async def stored_feedback(app: FastAPI) -> list[CancellationFeedback]:
    async with app.state.lifecycle.sessionmaker() as session:
        rows = await session.execute(
            select(CancellationFeedback).order_by(col(CancellationFeedback.id))
        )
        return list(rows.scalars())


def customer() -> str:
    return f"cus_{uuid.uuid4().hex[:14]}"


def subscription() -> str:
    return f"sub_{uuid.uuid4().hex[:14]}"


async def test_the_emailed_link_opens_a_self_contained_survey(
    api: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, http = api
    page = await http.get(survey_path(await cancellation_email(app, customer())))
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert "Why did you cancel?" in page.text
    assert "Acme &lt;Tools&gt;" in page.text and "<Tools>" not in page.text
    assert 'name="viewport"' in page.text
    # Nothing fetched from elsewhere and no script: it works in any mail app's browser.
    assert "<script" not in page.text and "src=" not in page.text
    form = SurveyForm(page.text)
    assert form.choices == STRIPE_REASONS
    assert (form.checked, form.comment) == ([], "")


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_forged_foreign_and_unknown_tokens_find_no_survey(
    api: tuple[FastAPI, httpx.AsyncClient], method: str
) -> None:
    app, http = api
    message_id = await cancellation_email(app, customer())
    for path in (
        f"/survey/{make_token(b'another-secret', message_id, 'survey', datetime.now(UTC))}",
        survey_path(message_id, "offer"),
        survey_path(str(uuid.uuid4())),
        "/survey/not-a-token",
    ):
        response = await http.request(method, path, data={"reason": "too_expensive"})
        assert response.status_code == 404, path
    assert await stored_feedback(app) == []


async def test_an_answer_is_stored_and_answering_again_replaces_it(
    api: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, http = api
    cus, sub = customer(), subscription()
    message_id = await cancellation_email(app, cus, sub)
    path = survey_path(message_id)

    thanks = await http.post(
        path, data={"reason": "too_expensive", "comment": "  Too pricey for a team of 3 \n"}
    )
    assert thanks.status_code == 200
    assert "Thank you" in thanks.text and SurveyForm(thanks.text).choices == []
    [first] = await stored_feedback(app)
    assert (
        first.customer_id,
        first.subscription_id,
        first.message_id,
        first.workflow_id,
        first.reason,
        first.comment,
        first.source,
        first.actor,
    ) == (
        cus,
        sub,
        message_id,
        winback_id(cus, sub),
        "too_expensive",
        "Too pricey for a team of 3",
        "email",
        None,
    )

    # Coming back to the link shows the answer given.
    form = SurveyForm((await http.get(path)).text)
    assert (form.checked, form.comment) == (["too_expensive"], "Too pricey for a team of 3")

    assert (await http.post(path, data={"reason": "switched_service"})).status_code == 200
    [second] = await stored_feedback(app)
    assert (second.id, second.reason, second.comment) == (first.id, "switched_service", None)
    assert second.created_at == first.created_at
    assert second.updated_at > first.updated_at


async def test_each_email_has_its_own_answer_and_other_lifecycles_name_no_subscription(
    api: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, http = api
    cus, gone, kept = customer(), subscription(), subscription()
    winback = await cancellation_email(app, cus, gone)
    # A plan change's check-in email is about no ended subscription.
    downgrade = await cancellation_email(app, cus, workflow_id=plan_change_id(kept, 1_767_225_600))
    for message_id, reason in ((winback, "unused"), (downgrade, "missing_features")):
        assert (
            await http.post(survey_path(message_id), data={"reason": reason})
        ).status_code == 200
    answers = {(f.message_id, f.reason, f.subscription_id) for f in await stored_feedback(app)}
    assert answers == {(winback, "unused", gone), (downgrade, "missing_features", None)}


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"reason": "too_cheap", "comment": "<b>hm</b>"}, "Please choose the main reason"),
        ({"comment": "<b>hm</b>"}, "Please choose the main reason"),
        ({"reason": "other", "comment": "<b>hm</b>" + "x" * 5000}, "under 5000 characters"),
    ],
)
async def test_an_invalid_answer_is_shown_again_and_nothing_is_stored(
    api: tuple[FastAPI, httpx.AsyncClient], form: dict[str, str], error: str
) -> None:
    app, http = api
    response = await http.post(survey_path(await cancellation_email(app, customer())), data=form)
    assert response.status_code == 422
    assert error in response.text
    # What the reader typed is kept (and escaped), so they only fix what was wrong.
    assert "&lt;b&gt;hm&lt;/b&gt;" in response.text and "<b>hm" not in response.text
    assert SurveyForm(response.text).comment == form["comment"]
    assert await stored_feedback(app) == []


async def test_feedback_api_records_and_lists_a_customers_answers(
    api: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, http = api
    cus = customer()
    path = f"/v1/customers/{cus}/cancellation-feedback"
    answer = {"subscription_id": subscription(), "reason": "too_complex", "comment": "Setup hurt"}

    assert (await http.post(path, json=answer)).status_code == 401
    assert (await http.get(path)).status_code == 401
    refused = await http.post(path, json=answer | {"reason": "meh"}, headers=SUPPORT)
    assert refused.status_code == 422
    assert "too_expensive" in refused.text  # the error lists the accepted values
    assert await stored_feedback(app) == []

    created = await http.post(path, json=answer, headers=SUPPORT)
    assert created.status_code == 201
    body = created.json()
    assert {k: body[k] for k in ("customer_id", "subscription_id", "reason", "comment")} == {
        "customer_id": cus,
        **answer,
    }
    assert (body["source"], body["actor"], body["message_id"]) == ("api", SUPPORT_ACTOR, None)

    message_id = await cancellation_email(app, cus)
    await http.post(survey_path(message_id), data={"reason": "other", "comment": "x"})
    await http.post(
        f"/v1/customers/{customer()}/cancellation-feedback",
        json={"reason": "unused"},
        headers=SUPPORT,
    )

    listed = await http.get(path, headers=SUPPORT)
    assert listed.status_code == 200
    feedback = listed.json()["feedback"]
    assert [(f["source"], f["reason"], f["message_id"]) for f in feedback] == [
        ("api", "too_complex", None),
        ("email", "other", message_id),
    ]
    assert feedback[0] == body
