"""The local Stripe's list endpoints, driven through the real stripe library as a sync would
drive Stripe: pages newest first with no gap between them, cursors both ways, created and
status filters, payment methods expanded, per-endpoint rate limits, refused keys, and the
computed benchmark account (bench/stripe_synthetic.py) at a small size."""

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import stripe
from stripe.params import InvoiceListParams, SubscriptionListParams

from bench.stripe_synthetic import SyntheticAccount
from stripe_lifecycle.settings import Settings
from stripe_lifecycle.stripe_api.client import build_stripe_client

from .fakes import (
    RATE_LIMITED_REASON,
    STRIPE_API_KEY,
    STRIPE_KEY_WITHOUT_INVOICES,
    StripeHttpServer,
    StripeState,
    serving,
)

T0 = 1_750_000_000
STATUSES = ("active", "trialing", "past_due", "canceled", "incomplete_expired", "unpaid")
CONNECTED = "acct_1ListConnected"


def card(pm_id: str, exp_month: int) -> dict[str, Any]:
    return {
        "id": pm_id,
        "object": "payment_method",
        "type": "card",
        "card": {"brand": "visa", "last4": "4242", "exp_month": exp_month, "exp_year": 2030},
    }


def stored_account() -> StripeState:
    """37 customers, two of them signing up in each second (so ties go by id), each with a
    subscription, two invoices and a charge; every third customer's card is on file."""
    state = StripeState()
    for n in range(37):
        cus, created = f"cus_L{n:03d}", T0 + n // 2 * 60
        pm = f"pm_L{n:03d}" if n % 3 else "pm_unknown"
        state.customers[cus] = {
            "id": cus,
            "object": "customer",
            "created": created,
            "default_source": f"card_L{n:03d}",
            "invoice_settings": {"default_payment_method": pm},
        }
        state.payment_methods[pm] = card(pm, 1 + n % 12)
        state.payment_methods[f"card_L{n:03d}"] = {"id": f"card_L{n:03d}", "object": "card"}
        sub = f"sub_L{n:03d}"
        state.subscriptions[sub] = {
            "id": sub,
            "object": "subscription",
            "customer": cus,
            "created": created,
            "status": STATUSES[n % len(STATUSES)],
            "default_payment_method": pm,
        }
        for m in range(2):
            state.invoices[f"in_L{n:03d}_{m}"] = {
                "id": f"in_L{n:03d}_{m}",
                "object": "invoice",
                "customer": cus,
                "created": created + m * 86_400,
                "status": "paid",
            }
        state.charges[f"ch_L{n:03d}"] = {
            "id": f"ch_L{n:03d}",
            "object": "charge",
            "customer": cus,
            "created": created + 1,
        }
    # Stored objects are not rewritten by expansion.
    state.payment_methods.pop("pm_unknown")
    return state


def newest_first(objects: dict[str, dict[str, Any]]) -> list[str]:
    ordered = sorted(objects.values(), key=lambda o: (o["created"], o["id"]), reverse=True)
    return [o["id"] for o in ordered]


@pytest.fixture
def stripe_api() -> Iterator[StripeHttpServer]:
    state = stored_account()
    state.connected[CONNECTED] = StripeState(
        customers={"cus_Conn": {"id": "cus_Conn", "object": "customer", "created": T0}}
    )
    with serving(StripeHttpServer(state)) as server:
        yield server


def default_payment_method(customer: stripe.Customer) -> object:
    assert customer.invoice_settings is not None
    return customer.invoice_settings.default_payment_method


def exp_month(method: object) -> int:
    assert isinstance(method, stripe.PaymentMethod) and method.card is not None
    return method.card.exp_month


def client_for(server: StripeHttpServer, api_key: str = STRIPE_API_KEY) -> stripe.StripeClient:
    client = build_stripe_client(Settings(stripe_api_key=api_key, stripe_api_base=server.url))
    assert client is not None
    return client


def test_pages_newest_first_join_with_no_gap_or_duplicate(stripe_api: StripeHttpServer) -> None:
    client = client_for(stripe_api)
    state = stripe_api.state

    customers = [c.id for c in client.v1.customers.list({"limit": 5}).auto_paging_iter()]
    invoices = [i.id for i in client.v1.invoices.list({"limit": 7}).auto_paging_iter()]

    assert customers == newest_first(state.customers)
    assert invoices == newest_first(state.invoices)
    asked = [r for r in state.requests if r.path == "/v1/customers"]
    # 37 customers in pages of 5: the eighth page is the last, each after the one before.
    assert [r.query.get("starting_after") for r in asked] == [None] + customers[4:35:5]
    assert state.served == {"/v1/customers": 8, "/v1/invoices": 11}  # 74 by 7


def test_ending_before_gives_the_newer_page_nearest_the_cursor(
    stripe_api: StripeHttpServer,
) -> None:
    client = client_for(stripe_api)
    ordered = newest_first(stripe_api.state.charges)

    page = client.v1.charges.list({"limit": 4, "ending_before": ordered[10]})
    newest = client.v1.charges.list({"limit": 4, "ending_before": ordered[2]})

    assert [c.id for c in page.data] == ordered[6:10]
    assert page.has_more
    assert [c.id for c in newest.data] == ordered[:2]
    assert not newest.has_more


def test_created_and_customer_filters(stripe_api: StripeHttpServer) -> None:
    client = client_for(stripe_api)
    state = stripe_api.state

    window = client.v1.invoices.list({"limit": 100, "created": {"gte": T0 + 120, "lt": T0 + 300}})
    after = client.v1.subscriptions.list({"limit": 100, "status": "all", "created": {"gt": T0}})
    own = client.v1.invoices.list({"customer": "cus_L005"})

    assert [i.id for i in window.data] == [
        i
        for i in newest_first(state.invoices)
        if T0 + 120 <= state.invoices[i]["created"] < T0 + 300
    ]
    assert [i.id for i in window.data][:2] == ["in_L009_0", "in_L008_0"]
    assert len(after.data) == 35  # all but the two that signed up at T0 itself
    assert [i.id for i in own.data] == ["in_L005_1", "in_L005_0"]


def test_subscriptions_leave_out_ended_ones_unless_asked(stripe_api: StripeHttpServer) -> None:
    client = client_for(stripe_api)

    def statuses(params: SubscriptionListParams) -> Counter[str]:
        listed = client.v1.subscriptions.list(params)
        return Counter(s.status for s in listed.auto_paging_iter())

    everything = statuses({"status": "all"})
    assert sum(everything.values()) == 37
    assert statuses({}) == everything - Counter(canceled=6, incomplete_expired=6)
    assert statuses({"status": "past_due"}) == Counter(past_due=6)
    assert statuses({"status": "ended"}) == Counter(canceled=6, incomplete_expired=6)


def test_payment_methods_expand_on_customers_and_subscriptions(
    stripe_api: StripeHttpServer,
) -> None:
    client = client_for(stripe_api)

    customers = client.v1.customers.list(
        {
            "limit": 100,
            "expand": ["data.invoice_settings.default_payment_method", "data.default_source"],
        }
    )
    subscriptions = client.v1.subscriptions.list(
        {"status": "all", "customer": "cus_L004", "expand": ["data.default_payment_method"]}
    )
    plain = client.v1.customers.list({"limit": 2})

    by_id = {c.id: c for c in customers.data}
    expanded = default_payment_method(by_id["cus_L004"])
    assert isinstance(expanded, stripe.PaymentMethod)
    assert (expanded.id, exp_month(expanded)) == ("pm_L004", 5)
    assert isinstance(by_id["cus_L004"].default_source, stripe.Card)
    # An id the account does not hold stays an id, as a deleted payment method's does.
    assert default_payment_method(by_id["cus_L003"]) == "pm_unknown"
    [sub] = subscriptions.data
    assert isinstance(sub.default_payment_method, stripe.PaymentMethod)
    assert default_payment_method(plain.data[1]) == "pm_L035"
    assert stripe_api.state.subscriptions["sub_L004"]["default_payment_method"] == "pm_L004"


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"expand": ["data.payment_intent"]}, 400, "This property cannot be expanded"),
        ({"limit": 101}, 400, "Invalid limit"),
        ({"starting_after": "in_Nope"}, 404, "No such invoice: 'in_Nope'"),
        ({"ending_before": "in_Nope"}, 404, "No such invoice: 'in_Nope'"),
        ({"starting_after": "in_L001_0", "ending_before": "in_L002_0"}, 400, "only specify one of"),
        ({"status": "finished"}, 400, "Invalid status"),
    ],
    ids=["expand", "limit", "after-unknown", "before-unknown", "both-cursors", "status"],
)
def test_a_list_request_stripe_refuses(
    stripe_api: StripeHttpServer, params: InvoiceListParams, status: int, message: str
) -> None:
    client = client_for(stripe_api)

    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.invoices.list(params)

    assert refused.value.http_status == status
    assert message in str(refused.value.user_message)


def test_an_endpoint_over_its_rate_is_refused_alone_and_counted(
    stripe_api: StripeHttpServer,
) -> None:
    client = client_for(stripe_api)
    state = stripe_api.state
    state.endpoint_rate = 3

    for _ in range(3):
        client.v1.customers.list()
    with pytest.raises(stripe.RateLimitError) as limited:
        client.v1.customers.list()
    client.v1.invoices.list()

    assert limited.value.http_status == 429
    assert limited.value.error is not None
    assert limited.value.error.code == "rate_limit"
    assert limited.value.headers is not None
    assert limited.value.headers[RATE_LIMITED_REASON] == "endpoint-rate"
    assert state.over_limit == {"/v1/customers": 1}
    assert state.served == {"/v1/customers": 3, "/v1/invoices": 1}


def test_a_rate_limit_storm_names_the_global_limiter(stripe_api: StripeHttpServer) -> None:
    client = client_for(stripe_api)
    stripe_api.state.rate_limited = 1

    with pytest.raises(stripe.RateLimitError) as limited:
        client.v1.customers.list()
    client.v1.customers.list()

    assert limited.value.headers is not None
    assert limited.value.headers[RATE_LIMITED_REASON] == "global-rate"
    assert stripe_api.state.served == {"/v1/customers": 1}


def test_a_key_without_invoice_read_is_refused_on_invoices_only(
    stripe_api: StripeHttpServer,
) -> None:
    client = client_for(stripe_api, STRIPE_KEY_WITHOUT_INVOICES)

    customers = client.v1.customers.list()
    events = client.v1.events.list()
    with pytest.raises(stripe.PermissionError) as refused:
        client.v1.invoices.list()

    assert len(customers.data) == 10
    assert events.data == []
    assert refused.value.http_status == 403
    assert "'rak_invoice_read' permission" in str(refused.value.user_message)


def test_a_key_revoked_mid_sync_fails_the_next_page(stripe_api: StripeHttpServer) -> None:
    client = client_for(stripe_api)
    pages = client.v1.customers.list({"limit": 10}).auto_paging_iter()
    first = [next(pages).id for _ in range(10)]

    stripe_api.state.revoked = True
    with pytest.raises(stripe.AuthenticationError) as refused:
        next(pages)

    assert first == newest_first(stripe_api.state.customers)[:10]
    assert str(refused.value.user_message).startswith("Expired API Key provided: sk_test_")


def test_the_account_and_a_connected_accounts_list(stripe_api: StripeHttpServer) -> None:
    client = client_for(stripe_api)

    account = client.v1.accounts.retrieve_current()
    connected = client.v1.customers.list(options={"stripe_account": CONNECTED})

    assert (account.id, account.object) == ("acct_test_platform", "account")
    assert [c.id for c in connected.data] == ["cus_Conn"]


def test_the_synthetic_account_lists_whole_and_matches_its_totals() -> None:
    account = SyntheticAccount(customers=250, invoices_per_customer=3, seed=7)
    expected = account.expected()
    with serving(StripeHttpServer(StripeState(synthetic=account))) as server:
        client = client_for(server)
        customers = list(client.v1.customers.list({"limit": 100}).auto_paging_iter())
        subscriptions = list(
            client.v1.subscriptions.list({"limit": 100, "status": "all"}).auto_paging_iter()
        )
        invoices = list(client.v1.invoices.list({"limit": 100}).auto_paging_iter())
        charges = list(client.v1.charges.list({"limit": 100}).auto_paging_iter())
        live = list(client.v1.subscriptions.list({"limit": 100}).auto_paging_iter())
        window = client.v1.invoices.list(
            {
                "limit": 100,
                "created": {"gte": invoices[-10].created, "lte": invoices[-20].created},
            }
        )
        expanded = client.v1.customers.list(
            {"limit": 1, "expand": ["data.invoice_settings.default_payment_method"]}
        )
        identity = client.v1.accounts.retrieve_current()

    assert [c.id for c in customers] == [f"cus_syn{i:06d}" for i in reversed(range(250))]
    assert len({i.id for i in invoices}) == len(invoices) == expected.invoices == 750
    assert [i.created for i in invoices] == sorted((i.created for i in invoices), reverse=True)
    assert (len(customers), len(subscriptions)) == (expected.customers, expected.subscriptions)
    assert Counter(s.status for s in subscriptions) == expected.subscriptions_by_status
    assert len(live) == 250 - expected.subscriptions_by_status["canceled"]
    paid = [i for i in invoices if i.status == "paid"]
    assert len(paid) == expected.paid_invoices
    refunded = sum(c.amount_refunded for c in charges)
    assert refunded > 0
    assert {"usd": sum(i.amount_paid for i in paid) - refunded} == expected.ltv
    assert [i.id for i in window.data] == [i.id for i in invoices[-20:-9]]
    pm = default_payment_method(expanded.data[0])
    assert isinstance(pm, stripe.PaymentMethod)
    assert pm.id == "pm_syn000249" and 1 <= exp_month(pm) <= 12
    assert identity.id == "acct_syn000007"
