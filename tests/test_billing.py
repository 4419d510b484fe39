"""The billing snapshot rules: dedup, Stripe order, MRR and status across subscriptions."""

from __future__ import annotations

from stripe_lifecycle.domain.events import (
    BillingEvent,
    CustomerInfo,
    InvoiceInfo,
    SubscriptionInfo,
    SubscriptionItemInfo,
)
from stripe_lifecycle.domain.ledger import CustomerLedger, new_state

CUS = "cus_A"


def sub_event(
    event_id: str, created: int, status: str, mrr: int, sub_id: str = "sub_1", plan: str = "Pro"
) -> BillingEvent:
    item = SubscriptionItemInfo(price_id=f"price_{plan}", nickname=plan, mrr_cents=mrr)
    return BillingEvent(
        event_id=event_id,
        type="customer.subscription.updated",
        created=created,
        livemode=True,
        customer_id=CUS,
        subscription=SubscriptionInfo(
            id=sub_id, customer_id=CUS, status=status, currency="usd", items=[item], mrr_cents=mrr
        ),
    )


def paid_event(
    event_id: str, created: int, invoice_id: str, amount: int, type_: str
) -> BillingEvent:
    return BillingEvent(
        event_id=event_id,
        type=type_,
        created=created,
        livemode=True,
        customer_id=CUS,
        invoice=InvoiceInfo(id=invoice_id, customer_id=CUS, amount_paid=amount, currency="usd"),
    )


def test_duplicate_event_is_applied_once() -> None:
    ledger = CustomerLedger(new_state(CUS))
    assert ledger.apply(paid_event("evt_1", 100, "in_1", 4900, "invoice.paid"))
    assert not ledger.apply(paid_event("evt_1", 100, "in_1", 4900, "invoice.paid"))
    assert ledger.snapshot.ltv_cents == 4900
    assert ledger.snapshot.events_applied == 1


def test_paid_and_payment_succeeded_count_one_invoice_once() -> None:
    ledger = CustomerLedger(new_state(CUS))
    ledger.apply(paid_event("evt_1", 100, "in_1", 4900, "invoice.payment_succeeded"))
    ledger.apply(paid_event("evt_2", 100, "in_1", 4900, "invoice.paid"))
    ledger.apply(paid_event("evt_3", 200, "in_2", 4900, "invoice.paid"))
    assert ledger.snapshot.ltv_cents == 9800


def test_older_subscription_event_arriving_late_does_not_overwrite_newer_state() -> None:
    ledger = CustomerLedger(new_state(CUS))
    ledger.apply(sub_event("evt_new", 200, "past_due", 4900))
    ledger.apply(sub_event("evt_old", 100, "active", 2900, plan="Starter"))
    assert ledger.snapshot.status == "past_due"
    assert ledger.snapshot.plan == "Pro"
    assert ledger.snapshot.mrr_cents == 4900


def test_older_customer_details_do_not_overwrite_newer() -> None:
    ledger = CustomerLedger(new_state(CUS))
    for event_id, created, email in (
        ("evt_2", 200, "new@example.com"),
        ("evt_1", 100, "old@example.com"),
    ):
        ledger.apply(
            BillingEvent(
                event_id=event_id,
                type="customer.updated",
                created=created,
                livemode=False,
                customer_id=CUS,
                customer=CustomerInfo(id=CUS, email=email, created=50),
            )
        )
    assert ledger.snapshot.email == "new@example.com"
    assert ledger.snapshot.customer_since == 50


def test_mrr_counts_billed_subscriptions_and_status_shows_what_needs_attention() -> None:
    ledger = CustomerLedger(new_state(CUS))
    ledger.apply(sub_event("evt_1", 100, "active", 4900, sub_id="sub_a"))
    ledger.apply(sub_event("evt_2", 101, "trialing", 9900, sub_id="sub_b", plan="Scale"))
    assert (ledger.snapshot.mrr_cents, ledger.snapshot.status) == (4900, "active")
    ledger.apply(sub_event("evt_3", 102, "past_due", 4900, sub_id="sub_a"))
    assert (ledger.snapshot.mrr_cents, ledger.snapshot.status) == (4900, "past_due")


def test_deleted_subscription_leaves_no_mrr() -> None:
    ledger = CustomerLedger(new_state(CUS))
    ledger.apply(sub_event("evt_1", 100, "active", 4900))
    deleted = sub_event("evt_2", 200, "active", 4900)
    deleted.type = "customer.subscription.deleted"
    ledger.apply(deleted)
    assert (ledger.snapshot.status, ledger.snapshot.mrr_cents) == ("canceled", 0)


def test_recent_event_window_survives_export_and_stays_bounded() -> None:
    ledger = CustomerLedger(new_state(CUS))
    for n in range(600):
        ledger.apply(paid_event(f"evt_{n}", n, f"in_{n}", 1, "invoice.paid"))
    state = ledger.export()
    assert len(state.recent_event_ids) == 500
    resumed = CustomerLedger(state)
    assert not resumed.apply(paid_event("evt_599", 599, "in_599", 1, "invoice.paid"))
    assert resumed.snapshot.ltv_cents == 600
