"""Email template previews: every template rendered against a Stripe event before it ships."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Query, Response, status
from fastapi.responses import HTMLResponse, PlainTextResponse
from pydantic import BaseModel

from stripe_lifecycle.api.deps import AppStateDep, SupportKey
from stripe_lifecycle.api.errors import UNPARSABLE_BODY, Responses, invalid, not_found
from stripe_lifecycle.api.page_headers import EMAIL_PREVIEW_POLICY
from stripe_lifecycle.domain.automations import AutomationsError
from stripe_lifecycle.mail.preview import (
    SAMPLE_EVENTS,
    Preview,
    PreviewError,
    UnknownTemplate,
    default_sample,
    find_automation,
    lifecycle_of,
    render_preview,
    sample_event,
)
from stripe_lifecycle.mail.templates import Brand, TemplateRenderer, load_checked_automations
from stripe_lifecycle.settings import Settings

router = APIRouter(prefix="/v1", tags=["templates"])

Format = Literal["json", "html", "text"]
FormatQuery = Annotated[
    Format,
    Query(
        alias="format",
        description="json (subject, parts, links, samples), html (the page) or text",
    ),
]
AutomationQuery = Annotated[
    str | None,
    Query(description="use this automation's offer (default: a sample offer)"),
]


class TemplateInfo(BaseModel):
    name: str
    lifecycle: str
    # The bundled sample event `GET .../preview` renders it with by default.
    sample_event: str


class TemplateList(BaseModel):
    templates: list[TemplateInfo]
    sample_events: list[str]


class TemplatePreview(BaseModel):
    template: str
    lifecycle: str
    event_type: str
    subject: str
    html: str
    text: str
    links: dict[str, str | None]
    # What the event did not tell, filled with sample values: what → why.
    samples: dict[str, str]


# The JSON model in the docs, and the two other formats.
_PREVIEW_RESPONSES: Responses = {
    200: {"model": TemplatePreview, "content": {"text/html": {}, "text/plain": {}}},
    **not_found("template"),
}


def _renderer(settings: Settings) -> TemplateRenderer:
    # Made per request: previews are rare, and an edited override folder shows at once.
    # (The endpoints are plain functions: FastAPI runs their rendering in a thread.)
    return TemplateRenderer(Brand.from_settings(settings), settings.templates_dir)


@router.get("/templates")
def list_templates(state: AppStateDep, _role: SupportKey) -> TemplateList:
    """Every email template (shipped and overridden), with the sample event it previews with."""
    names = _renderer(state.settings).names()
    return TemplateList(
        templates=[
            TemplateInfo(name=n, lifecycle=lifecycle_of(n), sample_event=default_sample(n))
            for n in names
        ],
        sample_events=list(SAMPLE_EVENTS),
    )


@router.get("/templates/{name:path}/preview", response_model=None, responses=_PREVIEW_RESPONSES)
def preview_template(
    name: str,
    state: AppStateDep,
    _role: SupportKey,
    fixture: Annotated[
        str | None,
        Query(description="a bundled sample event (GET /v1/templates lists them)"),
    ] = None,
    output: FormatQuery = "json",
    automation: AutomationQuery = None,
) -> TemplatePreview | Response:
    """The template rendered against a bundled sample event (by default its lifecycle's)."""
    try:
        event = sample_event(fixture or default_sample(name))
    except PreviewError as exc:
        invalid(("query", "fixture"), str(exc), fixture)
    return _answer(_render(state.settings, name, event, ("query", "fixture"), automation), output)


@router.post(
    "/templates/{name:path}/preview",
    response_model=None,
    responses={**_PREVIEW_RESPONSES, **UNPARSABLE_BODY},
)
def preview_template_with_event(
    name: str,
    event: Annotated[dict[str, Any], Body(description="a Stripe event, as a webhook sends it")],
    state: AppStateDep,
    _role: SupportKey,
    output: FormatQuery = "json",
    automation: AutomationQuery = None,
) -> TemplatePreview | Response:
    """The template rendered against the Stripe event in the body."""
    return _answer(_render(state.settings, name, event, ("body",), automation), output)


def _render(
    settings: Settings,
    name: str,
    event: dict[str, Any],
    event_location: tuple[str, ...],
    automation_name: str | None,
) -> Preview:
    """The preview; 404 for an unknown template, else a 422 naming the parameter at fault:
    the automation, or the event (`event_location`) the template cannot be rendered with."""
    renderer = _renderer(settings)
    automation = None
    if automation_name is not None:
        try:
            _, automations = load_checked_automations(settings)
            automation = find_automation(automations, automation_name)
        except (PreviewError, AutomationsError) as exc:
            invalid(("query", "automation"), str(exc), automation_name)
    try:
        return render_preview(
            renderer,
            name,
            event,
            public_url=settings.public_url,
            automation=automation,
            unsubscribe_billing=settings.unsubscribe_billing,
        )
    except UnknownTemplate as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
    except (PreviewError, AutomationsError) as exc:
        invalid(event_location, str(exc))


def _answer(preview: Preview, output: Format) -> TemplatePreview | Response:
    email = preview.email
    if output == "json":
        return TemplatePreview(
            template=preview.template,
            lifecycle=preview.lifecycle,
            event_type=preview.event_type,
            subject=email.subject,
            html=email.html,
            text=email.text,
            links=preview.links,
            samples=preview.samples,
        )
    notes = "; ".join(f"{what}: {why}" for what, why in preview.samples.items())
    headers = {"X-Preview-Samples": _header_value(notes)}
    if output == "html":
        headers["Content-Security-Policy"] = EMAIL_PREVIEW_POLICY
        return HTMLResponse(email.html, headers=headers)
    return PlainTextResponse(f"Subject: {email.subject}\n\n{email.text}", headers=headers)


def _header_value(text: str) -> str:
    # The notes quote ids from the event: keep the header one line of ASCII.
    return " ".join(text.encode("ascii", "backslashreplace").decode("ascii").split())
