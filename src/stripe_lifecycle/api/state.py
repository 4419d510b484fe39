"""What the API process holds for its lifetime, created in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field

import stripe
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from stripe_lifecycle.api.rate_limit import LinkRateLimits, LoginThrottle
from stripe_lifecycle.intake.forwarder import InboxForwarder
from stripe_lifecycle.intake.inbox import InboxWriter
from stripe_lifecycle.settings import ApiKey, Settings
from stripe_lifecycle.storage.db import SessionMaker


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: SessionMaker
    temporal: Client
    inbox: InboxWriter
    forwarder: InboxForwarder
    api_keys: list[ApiKey]
    # None without LIFECYCLE_STRIPE_API_KEY: tracked links then go to their stored target.
    stripe: stripe.StripeClient | None = None
    # The holdout share (percent) of each automation of the file in force that has one.
    holdouts: dict[str, float] = field(default_factory=dict)
    # The rate limits of the pages behind email links, per process.
    link_limits: LinkRateLimits = field(default_factory=LinkRateLimits)
    # Failed dashboard sign-ins, per process.
    login_limits: LoginThrottle = field(default_factory=LoginThrottle)
