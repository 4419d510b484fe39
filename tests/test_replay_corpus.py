"""The replay corpus (issue 14, Faults): a month of Stripe events delivered in order, and
again shuffled, every event three times, a share of them a day or two late; the billing
snapshots, message logs, conversions and lifecycle instances must come out the same.

A slice of the corpus runs here; `make replay-corpus` runs the 1,000 customers' month.
"""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from stripe_lifecycle.intake.normalise import normalise_event
from stripe_lifecycle.storage.migrate import upgrade

from . import replay_corpus
from .conftest import temporal_address
from .replay_rig import differences, running_delivery

CUSTOMERS = 40


def test_the_corpus_is_the_same_for_the_same_seed_and_every_event_is_readable() -> None:
    first, again = replay_corpus.month(200), replay_corpus.month(200)
    assert first.events == again.events
    assert [e["created"] for e in first.events] != [
        e["created"] for e in replay_corpus.month(200, 7).events
    ]
    for event in first.events:
        billing = normalise_event(event)
        assert billing is not None, event["type"]
        assert replay_corpus.MONTH_START <= event["created"] < replay_corpus.MONTH_END
    counts = first.counts()
    # Every story in any slice of forty customers (the end-to-end test runs one).
    assert set(replay_corpus.month(40).counts()["stories"]) == set(replay_corpus.WRITERS)
    assert set(counts["versions"]) == {"clover", "basil", "legacy"}
    # Every event of one customer in its own second, so arrival order never breaks a tie.
    for customer in first.customers:
        seconds = [e["created"] for e in customer.events]
        assert len(set(seconds)) == len(seconds), customer.customer_id


def test_the_disordered_delivery_is_late_shuffled_and_triplicated() -> None:
    corpus = replay_corpus.month(200)
    slots, delayed = replay_corpus.disordered(corpus)
    delivered = [event for slot in slots for event in slot]
    assert Counter(e["id"] for e in delivered) == {e["id"]: 3 for e in corpus.events}
    assert delayed > 0.1 * len(corpus.events)
    arrival = {event["id"]: n for n, event in enumerate(delivered)}
    by_created = sorted(corpus.events, key=lambda e: e["created"])
    overtaken = sum(
        1
        for a, b in zip(by_created, by_created[1:], strict=False)
        if arrival[a["id"]] > arrival[b["id"]]
    )
    assert overtaken > 0.3 * len(corpus.events)


async def test_a_month_delivered_out_of_order_ends_as_delivered_in_order(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    corpus = replay_corpus.month(CUSTOMERS)
    address = temporal_address(dev_env)
    outcomes = []
    plans = [
        replay_corpus.in_order(corpus),
        [[[e] for e in slot] for slot in replay_corpus.disordered(corpus)[0]],
    ]
    for n, plan in enumerate(plans):
        url = f"sqlite+aiosqlite:///{tmp_path / f'replay{n}.db'}"
        await upgrade(url)
        namespace = f"replay-{n}-{uuid.uuid4().hex[:8]}"
        async with running_delivery(address, namespace, url, f"tq-{namespace}") as delivery:
            outcomes.append(await delivery.run(plan))
    in_order, disordered = outcomes
    found = differences(in_order, disordered)
    assert not found, "\n".join(found)
    counts = in_order.counts()
    # The month did what a month does: mail sent and accepted once each, money converted.
    assert counts["messages sent"] == in_order.emails_accepted > 0
    kinds = Counter(c["kind"] for c in in_order.conversions.values())
    assert {"trial_converted", "recovered", "expansion"} <= set(kinds)
    assert disordered.deliveries == 3 * len(corpus.events)
