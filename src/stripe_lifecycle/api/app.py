"""The FastAPI application and its lifespan (DB engine, Temporal client, forwarder)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from sqlalchemy.exc import SQLAlchemyError

from stripe_lifecycle.api import (
    codec,
    customers,
    dashboard,
    health,
    link_revocation,
    messages,
    postmark,
    reports,
    segments,
    segments_dashboard,
    survey,
    sync,
    templates,
    tracking,
    unsubscribe,
    webhooks,
)
from stripe_lifecycle.api.audit import AuditMutations
from stripe_lifecycle.api.errors import BODY_TOO_LARGE, NO_API_KEY
from stripe_lifecycle.api.guards import AuthenticateApi, BodySizeLimit
from stripe_lifecycle.api.inbox import router as inbox_router
from stripe_lifecycle.api.state import AppState
from stripe_lifecycle.api.unavailable import database_unavailable_handler
from stripe_lifecycle.intake.forwarder import ForwarderConfig, InboxForwarder, temporal_delivery
from stripe_lifecycle.intake.inbox import InboxWriter
from stripe_lifecycle.intake.resolve import PaymentCustomerResolver
from stripe_lifecycle.mail.templates import load_checked_automations
from stripe_lifecycle.settings import Settings, get_settings
from stripe_lifecycle.storage.db import create_engine, create_sessionmaker
from stripe_lifecycle.stripe_api.client import build_stripe_client
from stripe_lifecycle.temporal_setup import connect


def forwarder_config(settings: Settings) -> ForwarderConfig:
    return ForwarderConfig(
        task_queue=settings.task_queue,
        index_email=settings.index_email,
        lanes=settings.forwarder_lanes,
        sweep_seconds=settings.forwarder_sweep_seconds,
        max_backoff_seconds=settings.forwarder_max_backoff_seconds,
    )


async def _strict_transport(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    response = await call_next(request)
    response.headers["Strict-Transport-Security"] = "max-age=31536000"
    return response


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        sessionmaker = create_sessionmaker(engine)
        # Lazy: the API must accept and store webhooks even while Temporal is down.
        client = await connect(settings, lazy=True)
        config = forwarder_config(settings)
        stripe_client = build_stripe_client(settings)
        forwarder = InboxForwarder(
            sessionmaker,
            temporal_delivery(client, config),
            config,
            PaymentCustomerResolver(stripe_client),
        )
        await forwarder.start()
        inbox = InboxWriter(engine)
        inbox.start()
        app.state.lifecycle = AppState(
            settings=settings,
            engine=engine,
            sessionmaker=sessionmaker,
            temporal=client,
            inbox=inbox,
            forwarder=forwarder,
            api_keys=settings.parsed_api_keys(),
            stripe=stripe_client,
            holdouts={
                a.name: a.holdout_percent
                for a in load_checked_automations(settings)[1]
                if a.holdout_basis_points
            },
        )
        try:
            yield
        finally:
            await inbox.stop()
            await forwarder.stop()
            await engine.dispose()

    app = FastAPI(
        title="stripe-lifecycle",
        summary="Durable customer-lifecycle automations for Stripe billing, on Temporal.",
        version="0.1.0",
        lifespan=lifespan,
        responses=BODY_TOO_LARGE,
    )
    if settings.public_url.startswith("https://"):
        # Browsers that came once over TLS never come back in clear text.
        app.middleware("http")(_strict_transport)
    # Both answer before a body is read; the size limit is the outermost. The audit log is
    # inside them: it records the calls of the keys AuthenticateApi identified.
    app.add_middleware(AuditMutations)
    app.add_middleware(AuthenticateApi)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    # Outermost: the Web UI's preflight (no credentials) is answered before any check.
    app.add_middleware(codec.CodecCors, ui_origin=settings.temporal_ui_origin())
    # asyncpg's connect errors reach the routes unwrapped, as OSError.
    app.add_exception_handler(OSError, database_unavailable_handler)
    app.add_exception_handler(SQLAlchemyError, database_unavailable_handler)
    app.include_router(health.router)
    app.include_router(webhooks.router)
    # Every route of these is under /v1, where AuthenticateApi answers 401 first.
    for api_router in (
        inbox_router,
        customers.router,
        messages.router,
        link_revocation.router,
        templates.router,
        reports.router,
        segments.router,
        sync.router,
    ):
        app.include_router(api_router, responses=NO_API_KEY)
    app.include_router(codec.router)
    app.include_router(tracking.router)
    app.include_router(survey.router)
    app.include_router(postmark.router)
    # The pages people open in a browser (from an email, or the dashboard) answer HTML
    # forms and redirects, not the JSON API the spec describes: they stay out of it.
    app.include_router(unsubscribe.router, include_in_schema=False)
    app.include_router(dashboard.router, include_in_schema=False)
    app.include_router(segments_dashboard.router, include_in_schema=False)
    return app
