"""How an object the historical sync lists becomes a backfill event for the customer
workflow (pure: no I/O, no clock).

A listed object is the present state of something, not news of a change. It is wrapped in
an event envelope of the type whose meaning the ledger already knows (a paid invoice as
`invoice.paid`, a refunded charge as `charge.refunded`) and read by the same normaliser as
a webhook, so there is one reading of every API version's shapes and one MRR rule. The
envelope's `created` is the time of the read: the object is true as of then, so a webhook
of a later change still wins and one of an earlier change does not undo it. Its id is the
object's id and a digest of its content: the same object read again is the same event
(the customer workflow drops it), a changed one a new event.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stripe_lifecycle.domain.events import BillingEvent, lean
from stripe_lifecycle.domain.sync import Resource
from stripe_lifecycle.intake.normalise import (
    UnreadableEvent,
    event_customer_id,
    normalise_event,
)

StripeObject = Mapping[str, Any]


@dataclass(frozen=True)
class Backfill:
    """One backfill event: the Stripe object it stands for, and the event."""

    object_id: str
    resource: Resource
    digest: str
    event: BillingEvent
    # The listed object it was read from (a customer, for the card expanded on it).
    listed_id: str

    def stored_event(self) -> dict[str, Any]:
        """The event as the sync stores it until delivery: its fields that do not hold
        their defaults (`lean`), which Temporal's converter reads back into the same event.
        A third smaller than every field written out on the corpus's objects, and built
        without the deep copy of `dataclasses.asdict`, which py-spy showed as a sixth of
        the worker's busy time while listing."""
        stored: dict[str, Any] = lean(self.event)
        return stored


def digest(obj: StripeObject) -> str:
    """A short fingerprint of an object's content, the same whatever the key order."""
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def backfills(
    resource: Resource, obj: StripeObject, *, read_at: int, account: str | None
) -> list[Backfill]:
    """The backfill events of one listed object; none for what changes no customer's
    state (an unpaid draft, a charge never refunded, an object without a customer)."""
    event_type = _event_type(resource, obj)
    if event_type is None:
        return []
    listed_id = str(obj.get("id"))
    # A legacy Card has no `livemode` of its own: it is in the mode of what it was read on.
    livemode = bool(obj.get("livemode", False))
    found = [_backfill(resource, obj, event_type, read_at, account, listed_id, livemode)]
    if resource in (Resource.CUSTOMERS, Resource.SUBSCRIPTIONS):
        # An expanded default card is its own object: its expiry goes to the card ledger.
        customer = (
            str(obj.get("id"))
            if resource == Resource.CUSTOMERS
            else event_customer_id({"data": {"object": obj}})
        )
        for card in _expanded_cards(resource, obj):
            owned = {**card, "customer": card.get("customer") or customer}
            found.append(
                _backfill(
                    resource,
                    owned,
                    "payment_method.attached",
                    read_at,
                    account,
                    listed_id,
                    livemode,
                )
            )
    return [item for item in found if item is not None]


def _event_type(resource: Resource, obj: StripeObject) -> str | None:
    if resource == Resource.CUSTOMERS:
        return None if obj.get("deleted") else "customer.updated"
    if resource == Resource.SUBSCRIPTIONS:
        return "customer.subscription.updated"
    if resource == Resource.INVOICES:
        status = obj.get("status")
        if status == "paid":
            return "invoice.paid"
        attempts = obj.get("attempt_count")
        if status == "open" and isinstance(attempts, int) and attempts > 0:
            # An open invoice whose charge failed: what dunning is for, when the sync is
            # asked to start lifecycles for situations in progress.
            return "invoice.payment_failed"
        return None
    refunded = obj.get("amount_refunded")
    return "charge.refunded" if isinstance(refunded, int) and refunded > 0 else None


def _expanded_cards(resource: Resource, obj: StripeObject) -> list[StripeObject]:
    if resource == Resource.CUSTOMERS:
        settings = obj.get("invoice_settings")
        candidates = [
            settings.get("default_payment_method") if isinstance(settings, Mapping) else None,
            obj.get("default_source"),
        ]
    else:
        candidates = [obj.get("default_payment_method")]
    return [c for c in candidates if isinstance(c, Mapping) and isinstance(c.get("id"), str)]


def _backfill(
    resource: Resource,
    obj: StripeObject,
    event_type: str,
    read_at: int,
    account: str | None,
    listed_id: str,
    livemode: bool,
) -> Backfill | None:
    object_id = str(obj.get("id"))
    fingerprint = digest(obj)
    envelope: dict[str, Any] = {
        "id": f"sync_{object_id}_{fingerprint}",
        "object": "event",
        "type": event_type,
        "created": read_at,
        "livemode": livemode,
        "account": account,
        "data": {"object": obj},
    }
    try:
        event = normalise_event(envelope)
    except UnreadableEvent:
        # Stripe's API does not send these; one object the sync cannot read is skipped
        # rather than failing the whole page.
        return None
    if event is None:
        return None
    event.backfill = True
    return Backfill(object_id, resource, fingerprint, event, listed_id)
