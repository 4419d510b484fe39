"""What may enter a customer workflow (`intake/bounds.py`): free text trimmed to Stripe's
own limits, ids and sizes no Stripe object has refused."""

from __future__ import annotations

import pytest

from stripe_lifecycle.domain.events import (
    BillingEvent,
    CustomerInfo,
    InvoiceInfo,
    ObjectInfo,
    SubscriptionInfo,
    SubscriptionItemInfo,
)
from stripe_lifecycle.intake.bounds import (
    MAX_EVENT_BYTES,
    Admitted,
    Refused,
    admit,
)
from stripe_lifecycle.intake.normalise import normalise_event

from .events import customer_event

CUS = "cus_Bounds1"


def event(**fields: object) -> BillingEvent:
    values: dict[str, object] = {
        "event_id": "evt_1",
        "type": "customer.updated",
        "created": 1_790_000_000,
        "livemode": False,
        "customer_id": CUS,
    }
    values.update(fields)
    return BillingEvent(**values)  # type: ignore[arg-type]


def admitted(e: BillingEvent) -> Admitted:
    result = admit(e)
    assert isinstance(result, Admitted), result
    return result


def test_an_ordinary_event_passes_unchanged_and_small() -> None:
    normalised = normalise_event(customer_event(CUS, "ada@example.com", created=1_790_000_000))
    assert normalised is not None
    result = admitted(normalised)
    assert result.event is normalised
    assert result.trimmed == ()
    # An upper bound of the serialised size, and a real one: never below the payload.
    assert 0 < result.size < 64 * 1024


@pytest.mark.parametrize(
    ("customer", "trimmed_name", "path"),
    [
        (CustomerInfo(id=CUS, name="N" * 3 * 1024 * 1024), "N" * 255 + "…", "customer.name"),
        (CustomerInfo(id=CUS, name="Ada Lovelace"), "Ada Lovelace", None),
        (CustomerInfo(id=CUS, name="é" * 256), "é" * 256, None),
        (CustomerInfo(id=CUS, name="é" * 257), "é" * 255 + "…", "customer.name"),
    ],
)
def test_a_name_is_trimmed_to_256_characters(
    customer: CustomerInfo, trimmed_name: str, path: str | None
) -> None:
    result = admitted(event(customer=customer))
    assert result.event.customer is not None
    assert result.event.customer.name == trimmed_name
    assert result.trimmed == ((path,) if path else ())


def test_metadata_keeps_stripes_limits() -> None:
    metadata = {f"k{i}": "v" * 600 for i in range(60)}
    metadata = {"k" * 41: "dropped", **metadata}
    result = admitted(event(invoice=InvoiceInfo(id="in_1", metadata=metadata)))
    assert result.event.invoice is not None
    kept = result.event.invoice.metadata
    assert list(kept) == [f"k{i}" for i in range(50)]
    assert all(len(v) == 500 and v.endswith("…") for v in kept.values())
    assert result.trimmed == ("invoice.metadata",)


def test_other_free_text_is_trimmed_to_5000_characters() -> None:
    item = SubscriptionItemInfo(id="si_1", nickname="P" * 300)
    sub = SubscriptionInfo(id="sub_1", cancellation_reason="r" * 9000, items=[item])
    result = admitted(event(subscription=sub))
    assert result.event.subscription is not None
    assert len(result.event.subscription.cancellation_reason or "") == 5000
    assert len(result.event.subscription.items[0].nickname or "") == 256
    assert set(result.trimmed) == {
        "subscription.cancellation_reason",
        "subscription.items.nickname",
    }
    # The input is left as it was.
    assert len(sub.cancellation_reason or "") == 9000


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"customer_id": "cus_" + "x" * 10 * 1024}, "customer_id is 10244 characters long"),
        ({"subscription": SubscriptionInfo(id="sub_" + "y" * 300)}, "subscription.id is 304"),
        ({"invoice": InvoiceInfo(id="in_1", price_ids=["p" * 256])}, "invoice.price_ids is 256"),
        ({"account": "acct_" + "z" * 251}, "account is 256"),
        (
            {"object": ObjectInfo(type="dispute", id="dp_1", related={"charge": "c" * 999})},
            "object.related is 999",
        ),
        ({"customer": CustomerInfo(id=CUS, email="a" * 600 + "@x.io")}, "customer.email is 605"),
    ],
)
def test_what_no_stripe_object_has_is_refused(fields: dict[str, object], reason: str) -> None:
    result = admit(event(**fields))
    assert isinstance(result, Refused)
    assert reason in result.reason


def test_ids_as_long_as_stripes_pass() -> None:
    result = admitted(event(customer_id="cus_" + "x" * 251))
    assert result.event.customer_id == "cus_" + "x" * 251


def test_an_event_too_large_even_trimmed_is_refused() -> None:
    # 60 changed fields of 5,000 characters: each within the text bound, 300 KB together.
    many = event(previous_attributes=[f"{i:03d}" + "a" * 4997 for i in range(60)])
    result = admit(many)
    assert isinstance(result, Refused)
    assert f"over the {MAX_EVENT_BYTES}-byte bound" in result.reason


def test_a_large_event_within_the_bound_is_measured_not_refused() -> None:
    # About 150 KB: over the estimate's threshold, under the bound once measured.
    e = event(previous_attributes=[f"{i:03d}" + "a" * 4997 for i in range(30)])
    result = admitted(e)
    assert 150_000 <= result.size <= MAX_EVENT_BYTES


def test_non_ascii_text_is_counted_as_json_escapes_it() -> None:
    # JSON sends "😀" as a 12-byte escape pair: 40,000 of them are 480 KB.
    e = event(previous_attributes=["😀" * 4000 for _ in range(10)])
    result = admit(e)
    assert isinstance(result, Refused)
