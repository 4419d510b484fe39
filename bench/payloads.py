"""Payload conversion: the worker's converter (`payload_converter.LifecyclePayloadConverter`)
against the SDK's default, in one process, on the messages the ingest benchmark's
customers make, as ratios of the default's CPU per conversion.

    make bench-payloads    # or: .venv/bin/python -m bench.payloads --rounds 7

The messages, built as the worker builds them from `bench.ingest`'s events: a signal of
one billing event (the forwarder's `BillingEvents`, lean); the input of a batch's local
activity (`StoreBatch`: the snapshot after five events, as stored, and the segment
evaluation asked for); and its result (`StoredBatch`). Each round encodes and decodes
each message `--conversions` times with each converter in turn, the converters
interleaved; it prints the median CPU microseconds per conversion over the rounds
(`time.process_time`), the spread, and ours as a multiple of the default's. Both
converters write the same bytes and read the same values (`tests/test_payload_converter.py`):
the bench checks that too before it measures.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from temporalio.converter import DataConverter, PayloadConverter

from bench.ingest import make_event
from stripe_lifecycle.activities.interface import (
    EvaluateSegments,
    SegmentsEvaluation,
    StoreBatch,
    StoredBatch,
)
from stripe_lifecycle.domain import rules
from stripe_lifecycle.domain.events import BillingEvent, BillingEvents, lean
from stripe_lifecycle.domain.ledger import CustomerLedger, new_state
from stripe_lifecycle.domain.segments import billing_facts
from stripe_lifecycle.intake.normalise import normalise_event
from stripe_lifecycle.payload_codec import data_converter

CUSTOMER = "cus_benchpayloads"


def messages() -> dict[str, tuple[Any, type]]:
    """Each message the bench converts, with the type it is read as."""
    events: list[BillingEvent] = []
    for n in range(5):
        event = normalise_event(make_event(CUSTOMER, n))
        assert event is not None
        events.append(event)
    ledger = CustomerLedger(new_state(CUSTOMER))
    assert rules.apply_batch(ledger, events)
    snapshot = ledger.snapshot
    # As the workflow hands it to the store: without each subscription's payload.
    stored = dataclasses.replace(
        snapshot,
        subscriptions={
            key: dataclasses.replace(sub, subscription=None)
            for key, sub in snapshot.subscriptions.items()
        },
    )
    evaluation = EvaluateSegments(
        customer_id=CUSTOMER, facts=billing_facts(snapshot, []), now=datetime.now(UTC)
    )
    answer = SegmentsEvaluation(
        segments=["pro-seats"],
        known=["pro-seats", "past-due", "heavy-users"],
        usage={"metrics": {}, "seats_used": 3, "seat_limit": None, "seat_usage": None},
    )
    return {
        "signal: one billing event": (lean(BillingEvents(events=[events[0]])), BillingEvents),
        "local activity input: StoreBatch": (
            StoreBatch(snapshot=stored, quiet_unless=[], evaluation=evaluation),
            StoreBatch,
        ),
        "local activity result: StoredBatch": (
            StoredBatch(event_triggers=[], quiet=True, evaluation=answer),
            StoredBatch,
        ),
    }


def per_conversion(work: Callable[[], object], conversions: int) -> float:
    """CPU microseconds per call of `work`."""
    started = time.process_time()
    for _ in range(conversions):
        work()
    return (time.process_time() - started) * 1e6 / conversions


def main(args: argparse.Namespace) -> None:
    converters: dict[str, PayloadConverter] = {
        "default": DataConverter.default.payload_converter,
        "ours": data_converter(None).payload_converter,
    }
    print(
        f"bench: {args.rounds} rounds of {args.conversions} conversions of each message "
        "with each converter, interleaved; CPU us per conversion, median (min-max)"
    )
    for name, (value, hint) in messages().items():
        [written] = converters["default"].to_payloads([value])
        [ours_written] = converters["ours"].to_payloads([value])
        assert ours_written == written, f"{name}: the converters write different bytes"
        read = [c.from_payloads([written], [hint]) for c in converters.values()]
        assert read[0] == read[1], f"{name}: the converters read different values"
        figures: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for label, converter in converters.items():
                encode = partial(converter.to_payloads, [value])
                decode = partial(converter.from_payloads, [written], [hint])
                figures.setdefault(("encode", label), []).append(
                    per_conversion(encode, args.conversions)
                )
                figures.setdefault(("decode", label), []).append(
                    per_conversion(decode, args.conversions)
                )
        print(f"{name} ({len(written.data):,} bytes of JSON):")
        for way in ("encode", "decode"):
            default = statistics.median(figures[way, "default"])
            ours = statistics.median(figures[way, "ours"])
            print(
                f"  {way}: default {spread(figures[way, 'default'])}, "
                f"ours {spread(figures[way, 'ours'])} = {ours / default:.2f}x"
            )


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--conversions", type=int, default=500)
    return parser.parse_args()


if __name__ == "__main__":
    main(parse_args())
