"""Names engineers see in the Temporal UI: search attributes and signal names (workflow
ids are built in `ids.py`).

Part of the public contract (DESIGN.md); pure, so workflows can import it.
"""

from __future__ import annotations

from collections.abc import Iterable

from temporalio.common import SearchAttributeKey

CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
CUSTOMER_EMAIL = SearchAttributeKey.for_keyword("CustomerEmail")
LIFECYCLE = SearchAttributeKey.for_keyword("Lifecycle")
AUTOMATION = SearchAttributeKey.for_keyword("Automation")
BILLING_STATUS = SearchAttributeKey.for_keyword("BillingStatus")
PLAN = SearchAttributeKey.for_keyword("Plan")
MRR_CENTS = SearchAttributeKey.for_int("MrrCents")
LIVEMODE = SearchAttributeKey.for_bool("Livemode")

SEARCH_ATTRIBUTES: tuple[
    SearchAttributeKey[str] | SearchAttributeKey[int] | SearchAttributeKey[bool], ...
] = (
    CUSTOMER_ID,
    CUSTOMER_EMAIL,
    LIFECYCLE,
    AUTOMATION,
    BILLING_STATUS,
    PLAN,
    MRR_CENTS,
    LIVEMODE,
)

BILLING_EVENTS_SIGNAL = "billing_events"
# The read-only query every workflow answers with its state (DESIGN.md).
STATE_QUERY = "state"
# The memo key an invoice lifecycle is started with: readers find its invoice there, never
# by parsing the workflow id.
MEMO_INVOICE_ID = "invoice_id"


def visibility_literal(value: str) -> str:
    """A string literal for a Temporal visibility (list filter) query."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def visibility_in(key: SearchAttributeKey[str], values: Iterable[str]) -> str:
    """`Key IN ('a', 'b')`: a visibility query term matching any of `values`."""
    return f"{key.name} IN ({', '.join(visibility_literal(v) for v in values)})"


def stripe_reads_queue(task_queue: str) -> str:
    """The task queue of bulk Stripe reads (sync pages, reconciliation pages): its own, so
    that Temporal can cap its rate (`LIFECYCLE_STRIPE_READ_RATE`) across every worker."""
    return f"{task_queue}-stripe-reads"
