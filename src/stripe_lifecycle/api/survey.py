"""Why customers cancel: the survey page behind the cancellation email's "Tell us why"
button, and the API through which the product's own cancel flow records the same answer.

`GET /survey/{token}` and `POST /survey/{token}` take the signed token of the email's
`survey` link (the tracking redirect sends the reader here with it): a page, not JSON, so
a bad answer re-renders the page with a 422 and what to fix. One answer per email: answering
again replaces it. The reasons are Stripe's `cancellation_details.feedback` values, so
answers line up with what the Stripe dashboard and Customer Portal collect.
"""

from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Literal

from fastapi import APIRouter, Form, HTTPException, status
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from stripe_lifecycle.api.deps import (
    LINK_CLIENT_LIMIT,
    STRIPE_ID_MAX_LENGTH,
    STRIPE_ID_PATTERN,
    AppStateDep,
    CustomerId,
    NowDep,
    SessionDep,
    SupportKey,
)
from stripe_lifecycle.api.errors import NO_API_KEY, UNPARSABLE_BODY
from stripe_lifecycle.api.link_access import check_link
from stripe_lifecycle.api.rate_limit import refuse_if_limited
from stripe_lifecycle.api.token_pages import TokenPage
from stripe_lifecycle.domain.lifecycles import Lifecycle
from stripe_lifecycle.domain.links import read_token
from stripe_lifecycle.mail.templates import Brand
from stripe_lifecycle.storage.db import insert_for
from stripe_lifecycle.storage.models import (
    CancellationFeedback,
    CancellationFeedbackPublic,
    FeedbackSource,
    Message,
    utcnow,
)

router = APIRouter(tags=["cancellation feedback"])

SURVEY_LINK = "survey"
COMMENT_MAX_LENGTH = 5000

CancellationReason = Literal[
    "too_expensive",
    "missing_features",
    "switched_service",
    "unused",
    "customer_service",
    "too_complex",
    "low_quality",
    "other",
]

# In the order the page offers them; the wording of Stripe's Customer Portal.
REASON_LABELS: dict[CancellationReason, str] = {
    "too_expensive": "It's too expensive",
    "missing_features": "Some features are missing",
    "switched_service": "I'm switching to a different service",
    "unused": "I don't use the service enough",
    "customer_service": "Customer service was less than expected",
    "too_complex": "Ease of use was less than expected",
    "low_quality": "Quality was less than expected",
    "other": "Other reason",
}

# In the frame that every page behind a signed link shares (token_pages.py).
_SURVEY = TokenPage(
    "survey.html",
    """{% extends "token_page.html" %}
{% block title %}{{ "Thank you" if thanks else question }}{% endblock %}
{% block style %}
.choice { align-items: center; }
.choice input { margin: 0; }
label[for=comment] { display: block; margin: 0 0 8px; font-weight: 600; }
textarea { box-sizing: border-box; width: 100%; min-height: 96px; padding: 10px;
  border: 1px solid #c1c9d2; border-radius: 6px; font: inherit; }
button { margin-top: 16px; }
.error { padding: 12px; border-radius: 6px; background: #fdecea; color: #a4281d; }
{% endblock %}
{% block card %}
{% if thanks %}
<h1>Thank you</h1>
<p>We've got your answer. It helps us make {{ brand.name }} better.</p>
<p class="muted">Changed your mind? Open the link in the email again to change your answer.</p>
{% else %}
<h1>{{ question }}</h1>
<p>Your answer helps us make {{ brand.name }} better. It takes a few seconds.</p>
{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
<form method="post">
<fieldset>
<legend>The main reason</legend>
{% for value, label in reasons.items() %}
<label class="choice"><input type="radio" name="reason" value="{{ value }}" required
{%- if value == reason %} checked{% endif %}> {{ label }}</label>
{% endfor %}
</fieldset>
<label for="comment">Anything else you'd like to tell us? (optional)</label>
<textarea id="comment" name="comment" maxlength="{{ comment_max_length }}">{{ comment }}</textarea>
<button type="submit">Send</button>
</form>
{% endif %}
{% endblock %}
""",
)


# The same reasons explain a downgrade: its check-in email links here too.
QUESTIONS: dict[str, str] = {Lifecycle.PLAN_CHANGE: "What made you change your plan?"}
DEFAULT_QUESTION = "Why did you cancel?"


def _page(
    brand: Brand,
    message: Message,
    *,
    status_code: int = status.HTTP_200_OK,
    thanks: bool = False,
    reason: str | None = None,
    comment: str | None = None,
    error: str | None = None,
) -> HTMLResponse:
    return _SURVEY.respond(
        status_code,
        brand=brand,
        question=QUESTIONS.get(message.lifecycle, DEFAULT_QUESTION),
        thanks=thanks,
        reasons=REASON_LABELS,
        reason=reason,
        comment=comment or "",
        comment_max_length=COMMENT_MAX_LENGTH,
        error=error,
    )


class _LinkRefused(Exception):
    def __init__(self, page: HTMLResponse) -> None:
        self.page = page


async def _surveyed_message(
    state: AppStateDep, session: AsyncSession, token: str, now: datetime
) -> Message:
    """The message whose survey link this is; `_LinkRefused` once the link expired or was
    revoked (the page that says so)."""
    found = read_token(state.settings.link_secret_bytes(), token)
    message = await session.get(Message, found.first) if found else None
    if found is None or message is None or found.second != SURVEY_LINK:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="unknown survey")
    refuse_if_limited(state.link_limits.per_link.take(f"survey:{message.id}"))
    destination = message.destinations.get(SURVEY_LINK, "")
    access = await check_link(session, state.settings, message, found, destination, now)
    if access.refused is not None:
        raise _LinkRefused(access.refused)
    return message


async def _answer_to(session: AsyncSession, message_id: str) -> CancellationFeedback | None:
    result = await session.execute(
        select(CancellationFeedback).where(col(CancellationFeedback.message_id) == message_id)
    )
    return result.scalar_one_or_none()


def _comment(text: str | None) -> str | None:
    return (text or "").strip() or None


@router.get(
    "/survey/{token}",
    response_class=HTMLResponse,
    include_in_schema=False,
    dependencies=[LINK_CLIENT_LIMIT],
)
async def survey_page(
    token: str, state: AppStateDep, session: SessionDep, now: NowDep
) -> HTMLResponse:
    """The survey, with the answer already given to this email (if any) selected; 410 once
    the link expired or was revoked."""
    try:
        message = await _surveyed_message(state, session, token, now)
    except _LinkRefused as refused:
        return refused.page
    answer = await _answer_to(session, message.id)
    return _page(
        Brand.from_settings(state.settings),
        message,
        reason=answer.reason if answer else None,
        comment=answer.comment if answer else None,
    )


@router.post(
    "/survey/{token}",
    response_class=HTMLResponse,
    include_in_schema=False,
    dependencies=[LINK_CLIENT_LIMIT],
)
async def answer_survey(
    token: str,
    state: AppStateDep,
    session: SessionDep,
    now: NowDep,
    reason: Annotated[str, Form()] = "",
    comment: Annotated[str, Form()] = "",
) -> HTMLResponse:
    """Store the answer to this email (replacing an earlier one) and thank the reader."""
    try:
        message = await _surveyed_message(state, session, token, now)
    except _LinkRefused as refused:
        return refused.page
    brand = Brand.from_settings(state.settings)
    error: str | None = None
    if reason not in REASON_LABELS:
        error = "Please choose the main reason you cancelled."
    elif len(comment) > COMMENT_MAX_LENGTH:
        error = f"Please keep your comment under {COMMENT_MAX_LENGTH} characters."
    if error:
        return _page(
            brand,
            message,
            status_code=HTTPStatus.UNPROCESSABLE_ENTITY,
            reason=reason,
            comment=comment,
            error=error,
        )
    now = utcnow()
    values = CancellationFeedback(
        customer_id=message.customer_id,
        subscription_id=message.subscription_id,
        message_id=message.id,
        workflow_id=message.workflow_id,
        reason=reason,
        comment=_comment(comment),
        source=FeedbackSource.EMAIL,
        created_at=now,
        updated_at=now,
    ).model_dump(exclude={"id"})
    # An upsert on the unique message id, so a double-clicked submit cannot race itself
    # into an integrity error: the last answer wins.
    insert = insert_for(session.get_bind().dialect.name)
    await session.execute(
        insert(CancellationFeedback)
        .values(**values)
        .on_conflict_do_update(
            index_elements=["message_id"],
            set_={"reason": reason, "comment": values["comment"], "updated_at": now},
        )
    )
    await session.commit()
    return _page(brand, message, thanks=True)


class FeedbackIn(BaseModel):
    subscription_id: str | None = Field(
        default=None, min_length=1, max_length=STRIPE_ID_MAX_LENGTH, pattern=STRIPE_ID_PATTERN
    )
    reason: CancellationReason
    comment: str | None = Field(default=None, max_length=COMMENT_MAX_LENGTH)


class FeedbackList(BaseModel):
    feedback: list[CancellationFeedbackPublic]


@router.post(
    "/v1/customers/{customer_id}/cancellation-feedback",
    status_code=status.HTTP_201_CREATED,
    responses={**NO_API_KEY, **UNPARSABLE_BODY},
)
async def record_feedback(
    customer_id: CustomerId, body: FeedbackIn, session: SessionDep, caller: SupportKey
) -> CancellationFeedbackPublic:
    """Record why the customer cancelled, as the product's own cancel flow asked them.

    The customer need not be known here yet: the cancel flow usually runs before Stripe's
    webhook has reached us, and the answer must not be lost for it.
    """
    row = CancellationFeedback(
        customer_id=customer_id,
        subscription_id=body.subscription_id,
        reason=body.reason,
        comment=_comment(body.comment),
        source=FeedbackSource.API,
        actor=str(caller),
    )
    session.add(row)
    await session.commit()
    await session.refresh(row)
    return CancellationFeedbackPublic.model_validate(row, from_attributes=True)


@router.get("/v1/customers/{customer_id}/cancellation-feedback", responses=NO_API_KEY)
async def customer_feedback(
    customer_id: CustomerId, session: SessionDep, _role: SupportKey
) -> FeedbackList:
    """Every cancellation answer of the customer, from email and API, oldest first."""
    rows = await session.execute(
        select(CancellationFeedback)
        .where(col(CancellationFeedback.customer_id) == customer_id)
        .order_by(col(CancellationFeedback.created_at), col(CancellationFeedback.id))
    )
    return FeedbackList(
        feedback=[
            CancellationFeedbackPublic.model_validate(f, from_attributes=True)
            for f in rows.scalars()
        ]
    )
