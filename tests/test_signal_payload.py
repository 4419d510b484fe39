"""The `billing_events` signal's lean shape: every field holding its default left out, and
decoded by Temporal's data converter into the same events as the full shape (which the
histories of running workflows hold)."""

from __future__ import annotations

import json

import pytest
from temporalio.converter import DataConverter

from stripe_lifecycle.domain.events import BillingEvents, lean
from tests import corpus

CONVERTER = DataConverter.default.payload_converter


@pytest.mark.parametrize("version", corpus.VERSIONS)
def test_the_lean_shape_decodes_to_the_same_events_as_the_full_one(version: str) -> None:
    batch = corpus.billing_batch(version)
    assert len(batch.events) > 20
    [full] = CONVERTER.to_payloads([batch])
    [small] = CONVERTER.to_payloads([lean(batch)])
    [from_full] = CONVERTER.from_payloads([full], [BillingEvents])
    [from_small] = CONVERTER.from_payloads([small], [BillingEvents])
    assert from_small == batch
    assert from_full == batch
    # Many of an event's fields are empty: a third of the corpus's bytes go.
    assert len(small.data) < len(full.data) * 3 / 4


def test_defaults_are_left_out_and_set_values_kept_whatever_they_equal() -> None:
    [event] = corpus.billing_batch("basil").events[:1]
    event.livemode = False
    event.backfill = False
    event.previous_attributes = []
    event.account = "acct_1"
    shape = lean(event)
    # Required fields stay even when falsy; defaulted ones go, unless changed.
    assert shape["livemode"] is False
    assert "backfill" not in shape
    assert "previous_attributes" not in shape
    assert shape["account"] == "acct_1"
    # A value equal to the default in another type (0 for False) is a value, kept.
    event.backfill = 0  # type: ignore[assignment]
    assert lean(event)["backfill"] == 0
    json.dumps(lean(event))
