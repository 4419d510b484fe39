"""What a reconciliation pass asks Stripe for: the event types the customer workflows act
on, in the groups `GET /v1/events` accepts (`types[]` takes at most 20 names)."""

from __future__ import annotations

# Every type the ledger or the lifecycle rules read; a lost webhook of any other type
# changes nothing here, so it is not worth a request.
EVENT_TYPES: tuple[str, ...] = (
    "customer.created",
    "customer.updated",
    "customer.deleted",
    "customer.discount.created",
    "customer.discount.updated",
    "customer.discount.deleted",
    "customer.source.expiring",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.trial_will_end",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "invoice.created",
    "invoice.finalized",
    "invoice.updated",
    "invoice.paid",
    "invoice.payment_succeeded",
    "invoice.payment_failed",
    "invoice.payment_action_required",
    "invoice.overdue",
    "invoice.upcoming",
    "invoice.will_be_due",
    "invoice.voided",
    "invoice.marked_uncollectible",
    "charge.succeeded",
    "charge.refunded",
    "charge.dispute.created",
    "payment_method.attached",
    "payment_method.updated",
    "payment_method.automatically_updated",
    "payment_method.detached",
)

TYPES_PER_REQUEST = 20


def type_groups(types: tuple[str, ...] = EVENT_TYPES) -> list[list[str]]:
    """`types` in request-sized groups, in order."""
    return [list(types[i : i + TYPES_PER_REQUEST]) for i in range(0, len(types), TYPES_PER_REQUEST)]
