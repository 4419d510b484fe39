"""The customer workflow's input and its erase update's request and result.

They live outside `workflows/customer.py`, beside the workflow's other messages, so
that what starts customer workflows and erases through them (the forwarder, the API)
imports them without the workflow's code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stripe_lifecycle.domain.events import BillingEvent
from stripe_lifecycle.domain.ledger import CustomerState


@dataclass
class EraseRequest:
    actor: str


@dataclass
class EraseResult:
    # The lifecycles the erasure ended, and the run whose history it leaves behind.
    ended: list[str]
    run_id: str


@dataclass
class CustomerWorkflowInput:
    customer_id: str
    # Search attributes are stored unencrypted; operators may keep emails out of them.
    index_email: bool = True
    state: CustomerState | None = None
    # Continue as new past this many history events even if the SDK has not suggested it
    # yet: a short history keeps replays on a cold worker cheap. None: only when suggested.
    max_history_events: int | None = 10_000
    pending: list[BillingEvent] = field(default_factory=list)
