"""What a historical sync reads from Stripe and how its progress is told (pure: the sync
workflow and the activities share it)."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Resource(StrEnum):
    """The list endpoints a sync reads, each in windows of its own."""

    CUSTOMERS = "customers"
    SUBSCRIPTIONS = "subscriptions"
    INVOICES = "invoices"
    CHARGES = "charges"


RESOURCES: tuple[Resource, ...] = tuple(Resource)

# `expand[]` that saves a request per customer: the card each customer is billed with
# comes with the customer (Stripe has no account-wide list of customers' cards).
EXPAND: dict[Resource, list[str]] = {
    Resource.CUSTOMERS: ["data.invoice_settings.default_payment_method", "data.default_source"],
    Resource.SUBSCRIPTIONS: ["data.default_payment_method"],
    Resource.INVOICES: [],
    Resource.CHARGES: [],
}

# Stripe's largest page.
PAGE_SIZE = 100


def estimate_total(read: int, until: int, oldest_read: int | None, since: int | None) -> int | None:
    """How many objects a list holds, judged from how far back in time the `read` newest
    reach (Stripe lists no longer say how many there are): None until that can be told."""
    if oldest_read is None or since is None or until <= since or read == 0:
        return None
    covered = (until - oldest_read) / (until - since)
    if covered <= 0:
        return None
    return max(read, round(read / min(1.0, covered)))


def covered_seconds(spans: Iterable[tuple[int, int]], since: int) -> int:
    """The seconds from `since` on that `spans` of `created` time, (oldest, newest), none
    overlapping, cover."""
    return sum(max(0, newest - max(oldest, since)) for oldest, newest in spans)


def estimate_in_windows(
    read: int, until: int, spans: Iterable[tuple[int, int]], since: int | None, covered: int = 0
) -> int | None:
    """`estimate_total` for a list read in windows side by side: `spans` are the stretches
    of `created` time the open windows have read, `covered` the seconds of those read to
    their end; what lies before `since` (the account's creation) counts for nothing."""
    if since is None:
        return None
    return estimate_total(read, until, until - covered - covered_seconds(spans, since), since)
