"""The project's own Stripe events, in each API-version family (`tests/payloads/`).

Every payload is a full event envelope written from Stripe's documented object layout
(see `tests/payloads/README.md`), once per family: `legacy` (API 2024-06-20, before
basil), `basil` (2025-03-31.basil) and `clover` (2025-09-30.clover, whose shapes also
stand for the 2026 versions). A name is the event type, plus a variant after it where
one type has several (`invoice.payment_failed.final_attempt`). The corpus ships with the
repository, so the tests need nothing beside it.
"""

from __future__ import annotations

import copy
import itertools
import json
import uuid
from functools import cache
from pathlib import Path
from typing import Any

from stripe_lifecycle.domain.events import BillingEvents
from stripe_lifecycle.intake.normalise import normalise_event

PAYLOADS_DIR = Path(__file__).resolve().parent / "payloads"
VERSIONS = ("legacy", "basil", "clover")
# Objects that name their customer only through another object (their charge).
_NAMES_NO_CUSTOMER = frozenset({"dispute", "refund"})

_counter = itertools.count(1)


def path(name: str, version: str) -> Path:
    """The file of one corpus event, for what reads payloads from disk (the CLI)."""
    if version not in VERSIONS:
        raise ValueError(f"unknown version {version!r}; versions: {', '.join(VERSIONS)}")
    file = PAYLOADS_DIR / version / f"{name}.json"
    if not file.is_file():
        known = ", ".join(names(version))
        raise FileNotFoundError(f"no corpus event {name!r} in {version}; {version} has: {known}")
    return file


def load(name: str, version: str) -> dict[str, Any]:
    """A copy of one corpus event, the caller's to change."""
    return copy.deepcopy(_read(path(name, version)))


def available(name: str) -> tuple[str, ...]:
    """The versions `name` exists in (Accounts v2 customers only in clover, for instance)."""
    return tuple(v for v in VERSIONS if (PAYLOADS_DIR / v / f"{name}.json").is_file())


def names(version: str | None = None) -> list[str]:
    """Every corpus name, or those of one version, sorted."""
    folders = VERSIONS if version is None else (version,)
    return sorted({file.stem for v in folders for file in (PAYLOADS_DIR / v).glob("*.json")})


def event_id() -> str:
    return f"evt_T{uuid.uuid4().hex[:20]}{next(_counter)}"


def event(
    name: str,
    version: str,
    customer_id: str,
    *,
    created: int,
    event_id_: str | None = None,
    livemode: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """A corpus event re-addressed to a test's customer: a new event id, `created` and
    `livemode`, the customer (the id of a customer object, else its `customer`), and
    `overrides` replacing top-level fields of `data.object`.

    An object that names no customer of its own (a dispute, a refund) stays so, as Stripe
    sends it; when its charge is expanded, the charge is the one re-addressed. A guest
    Checkout Session is given the customer too: pass `customer=None` to keep it a guest.
    """
    payload = load(name, version)
    payload["id"] = event_id_ or event_id()
    payload["created"] = created
    payload["livemode"] = livemode
    obj = payload["data"]["object"]
    charge = obj.get("charge")
    if obj.get("object") == "customer":
        obj["id"] = customer_id
    elif "customer" in obj:
        obj["customer"] = customer_id
    elif isinstance(charge, dict):
        charge["customer"] = customer_id
    elif obj.get("object") not in _NAMES_NO_CUSTOMER:
        obj["customer"] = customer_id
    obj.update(overrides)
    return payload


@cache
def _read(file: Path) -> dict[str, Any]:
    with file.open(encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise TypeError(f"{file} is not a JSON object")
    return data


def invoice_event(
    name: str,
    version: str,
    customer_id: str,
    *,
    created: int,
    subscription: str | None,
    **overrides: Any,
) -> dict[str, Any]:
    """An invoice event of the corpus, about `subscription` (None: a one-off invoice), in
    the version's own shape: named at the top level before basil, through
    `parent.subscription_details` since."""
    payload = event(name, version, customer_id, created=created, **overrides)
    obj = payload["data"]["object"]
    if version == "legacy":
        obj["subscription"] = subscription
    elif subscription is None:
        obj["parent"] = None
    else:
        obj["parent"] = {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {
                "metadata": {},
                "subscription": subscription,
                "subscription_proration_date": None,
            },
        }
    return payload


def billing_batch(version: str) -> BillingEvents:
    """Every corpus event of one API version, normalised, as one `billing_events` signal."""
    events = []
    for name in names(version):
        billing = normalise_event(event(name, version, "cus_lean", created=1_750_000_000))
        if billing is not None:
            events.append(billing)
    return BillingEvents(events=events)
