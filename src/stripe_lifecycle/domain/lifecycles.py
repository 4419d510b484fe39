"""The lifecycle keys: automation files, template folders, the `Lifecycle` search
attribute and the API all use these values (DESIGN.md, "Lifecycles")."""

from enum import StrEnum


class Lifecycle(StrEnum):
    DUNNING = "dunning"
    PAYMENT_ACTION = "payment_action"
    TRIAL = "trial"
    WINBACK = "winback"
    SCHEDULED_CANCEL = "scheduled_cancel"
    RENEWAL = "renewal"
    CARD_EXPIRING = "card_expiring"
    PLAN_CHANGE = "plan_change"
    UPGRADE = "upgrade"
    INVOICE_DUE = "invoice_due"
    INVOICE_OVERDUE = "invoice_overdue"
    INVOICE_FINALIZED = "invoice_finalized"
    QUOTE_EXPIRING = "quote_expiring"
    EVENT = "event"


# Lifecycles about one failed payment: support's "stop dunning" stops both, the dashboard
# lists both.
INVOICE_LIFECYCLES = (Lifecycle.DUNNING, Lifecycle.PAYMENT_ACTION)
# Lifecycles about one invoice the customer pays by its due date (or any finalized one).
BILLED_INVOICE_LIFECYCLES = (
    Lifecycle.INVOICE_DUE,
    Lifecycle.INVOICE_OVERDUE,
    Lifecycle.INVOICE_FINALIZED,
)

# The links each lifecycle's templates use, by name (see mail/templates.py).
LINKS: dict[Lifecycle, tuple[str, ...]] = {
    Lifecycle.DUNNING: ("update_payment",),
    Lifecycle.PAYMENT_ACTION: ("update_payment",),
    Lifecycle.TRIAL: ("update_payment",),
    Lifecycle.WINBACK: ("survey", "offer"),
    Lifecycle.SCHEDULED_CANCEL: ("offer", "update_payment"),
    Lifecycle.RENEWAL: ("update_payment",),
    Lifecycle.CARD_EXPIRING: ("update_payment",),
    Lifecycle.PLAN_CHANGE: ("survey",),
    Lifecycle.UPGRADE: ("offer",),
    Lifecycle.INVOICE_DUE: ("update_payment",),
    Lifecycle.INVOICE_OVERDUE: ("update_payment",),
    Lifecycle.INVOICE_FINALIZED: ("update_payment",),
    Lifecycle.QUOTE_EXPIRING: (),
    Lifecycle.EVENT: (),
}
