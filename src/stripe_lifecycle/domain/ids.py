"""Every workflow id, built in one place (DESIGN.md, "Temporal, as engineers see it").

Ids are built, never parsed back: whatever a reader needs from an instance (its invoice,
its subscription) is stored beside it.
"""


def customer_workflow_id(customer_id: str) -> str:
    return f"customer-{customer_id}"


def dunning_id(invoice_id: str) -> str:
    return f"dunning-{invoice_id}"


def payment_action_id(invoice_id: str) -> str:
    return f"payment-action-{invoice_id}"


def trial_id(subscription_id: str) -> str:
    return f"trial-{subscription_id}"


def winback_id(customer_id: str, subscription_id: str) -> str:
    return f"winback-{customer_id}-{subscription_id}"


def scheduled_cancel_id(subscription_id: str) -> str:
    return f"scheduled-cancel-{subscription_id}"


def renewal_id(subscription_id: str, period_end: int) -> str:
    return f"renewal-{subscription_id}-{period_end}"


def card_expiring_id(card_id: str, exp_year: int, exp_month: int) -> str:
    return f"card-expiring-{card_id}-{exp_year:04d}{exp_month:02d}"


def plan_change_id(subscription_id: str, created: int) -> str:
    return f"plan-change-{subscription_id}-{created}"


def invoice_due_id(invoice_id: str) -> str:
    return f"invoice-due-{invoice_id}"


def invoice_overdue_id(invoice_id: str) -> str:
    return f"invoice-overdue-{invoice_id}"


def invoice_finalized_id(invoice_id: str) -> str:
    return f"invoice-finalized-{invoice_id}"


def quote_expiring_id(quote_id: str) -> str:
    return f"quote-expiring-{quote_id}"


def event_sequence_id(automation: str, event_id: str) -> str:
    """The sequence an `event` automation runs for one Stripe event."""
    return f"event-{automation}-{event_id}"


def upgrade_id(customer_id: str, automation: str, n: int) -> str:
    """The customer's `n`th instance (from 1) of an upgrade campaign."""
    return f"upgrade-{customer_id}-{automation}-{n}"


# The Schedule that re-evaluates segments whose conditions turn with time alone.
SEGMENT_SWEEP_SCHEDULE_ID = "segments-sweep"


# The Schedule that runs a reconciliation pass every LIFECYCLE_RECONCILE_INTERVAL; Temporal
# ids its runs `stripe-reconcile-<scheduled time>`.
RECONCILE_SCHEDULE_ID = "stripe-reconcile"


def reconcile_now_id(started_at: int) -> str:
    """A pass started by hand (`lifecycle reconcile`), at this Unix time."""
    return f"stripe-reconcile-now-{started_at}"


def sync_workflow_id(account: str | None) -> str:
    """The one historical sync of a Stripe account (a connected account's id), or of the
    key's own account (`default`)."""
    return f"stripe-sync-{account or 'default'}"
