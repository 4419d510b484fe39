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


# Lifecycles about one invoice: support's "stop dunning" stops both, the dashboard lists both.
INVOICE_LIFECYCLES = (Lifecycle.DUNNING, Lifecycle.PAYMENT_ACTION)
