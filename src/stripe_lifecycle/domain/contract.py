"""Names engineers see in the Temporal UI: search attributes and signal names (workflow
ids are built in `ids.py`).

Part of the public contract (DESIGN.md); pure, so workflows can import it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from temporalio.common import SearchAttributeKey

CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
CUSTOMER_EMAIL = SearchAttributeKey.for_keyword("CustomerEmail")
LIFECYCLE = SearchAttributeKey.for_keyword("Lifecycle")
AUTOMATION = SearchAttributeKey.for_keyword("Automation")
BILLING_STATUS = SearchAttributeKey.for_keyword("BillingStatus")
PLAN = SearchAttributeKey.for_keyword("Plan")
MRR_CENTS = SearchAttributeKey.for_int("MrrCents")
LIVEMODE = SearchAttributeKey.for_bool("Livemode")
# The segments a customer is in now, on the customer workflow (filter by segment in the UI:
# `Segments = 'starter-3-months'`).
SEGMENTS = SearchAttributeKey.for_keyword_list("Segments")

SEARCH_ATTRIBUTES: tuple[
    SearchAttributeKey[str]
    | SearchAttributeKey[int]
    | SearchAttributeKey[bool]
    | SearchAttributeKey[Sequence[str]],
    ...,
] = (
    CUSTOMER_ID,
    CUSTOMER_EMAIL,
    LIFECYCLE,
    AUTOMATION,
    BILLING_STATUS,
    PLAN,
    MRR_CENTS,
    LIVEMODE,
    SEGMENTS,
)

BILLING_EVENTS_SIGNAL = "billing_events"
# Something a customer's segments read outside Stripe changed (usage reported, time passed
# for a condition like "90+ days"): the customer workflow evaluates them again.
SEGMENTS_CHANGED_SIGNAL = "segments_changed"
# The read-only query every workflow answers with its state (DESIGN.md).
STATE_QUERY = "state"
# The memo key an invoice lifecycle is started with: readers find its invoice there, never
# by parsing the workflow id.
MEMO_INVOICE_ID = "invoice_id"
# The memo key a historical sync keeps its progress under: read without a worker, which a
# query needs (and waits for behind every task of a saturated one).
MEMO_SYNC_PROGRESS = "sync_progress"


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
