"""A Stripe account computed from indexes, for the local Stripe server of tests/fakes.py to
list at benchmark scale (50,000 customers, 600,000 invoices) without holding any of it.

Customer `i` (0-based) signs up at `start + i * spacing`, its subscription with it, and pays
one invoice a month; every customer signs up within the first month, so invoice `m` of
customer `i` sits at list position `m * customers + i` and `created` rises strictly with
every list position. Order, cursors and `created[...]` bounds are then index arithmetic and
bisection. Objects are in the 2025-03-31.basil shape (periods on subscription items, the
invoice's subscription under `parent`, no `invoice` on charges).

    state = StripeState(synthetic=SyntheticAccount(customers=50_000, start=1_735_689_600))
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tests.fakes import ListPage, ListQuery, page_of

MONTH = 30 * 86_400
PRODUCT = "prod_synSaaS"
# Monthly unit prices in cents; a customer's plan and seat count come from its hash.
PLANS = (900, 2_900, 4_900, 9_900)
BRANDS = ("visa", "mastercard", "amex")


@dataclass(frozen=True)
class SyncTotals:
    """What a sync of the whole account must arrive at."""

    customers: int
    subscriptions: int
    subscriptions_by_status: dict[str, int]
    invoices: int
    paid_invoices: int
    charges: int
    # Per currency: the invoices' amount_paid less the charges' amount_refunded, in cents.
    ltv: dict[str, int]


def _mix(seed: int, n: int) -> int:
    """A well-spread 64-bit hash of (seed, n) (splitmix64's finaliser): per-object variety
    that is the same on every run and cheap to recompute."""
    z = (seed * 0x9E3779B97F4A7C15 + n + 1) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


@dataclass(frozen=True)
class SyntheticAccount:
    """A `tests.fakes.ListedAccount` of `customers` customers, each with one subscription,
    one card PaymentMethod and `invoices_per_customer` monthly invoices with a charge each.

    The status mix goes by index: every 20th subscription (i % 20 == 7) was canceled after
    its last paid period; every 25th (i % 25 == 3) is past_due, its last invoice open and
    that charge declined; every 10th (i % 10 == 5) is trialing again on a free month
    granted after its paid ones. About 1 charge in 20 is partly refunded, and every 10th
    customer (i % 10 == 9) also has a legacy card as `default_source`."""

    customers: int
    invoices_per_customer: int = 12
    start: int = 1_735_689_600  # 2025-01-01T00:00:00Z
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.customers <= MONTH:
            raise ValueError(f"customers must be between 1 and {MONTH}")
        if self.invoices_per_customer < 1:
            raise ValueError("invoices_per_customer must be at least 1")

    @property
    def spacing(self) -> int:
        """Seconds between two sign-ups: all of them fall within the first month."""
        return MONTH // self.customers

    # --- ListedAccount -------------------------------------------------------------------

    def account(self) -> dict[str, Any]:
        return {
            "id": f"acct_syn{self.seed:06d}",
            "object": "account",
            "created": self.start - 365 * 86_400,
            "country": "US",
            "default_currency": "usd",
            "charges_enabled": True,
            "payouts_enabled": True,
            "business_profile": {"name": "Synthetic SaaS"},
        }

    def list_page(self, resource: str, query: ListQuery) -> ListPage | None:
        n = self.customers
        load: Callable[[int], dict[str, Any]]
        if resource in ("customers", "subscriptions"):
            load = self.customer if resource == "customers" else self.subscription
            prefix = "cus_syn" if resource == "customers" else "sub_syn"
            positions: Sequence[int] = range(n)
            if query.customer is not None:
                owner = self._index(query.customer, "cus_syn")
                positions = [] if owner is None else [owner]
            return page_of(
                positions,
                self._signed_up,
                load,
                lambda object_id: self._index(object_id, prefix),
                query,
            )
        if resource in ("invoices", "charges"):
            load = self._invoice_at if resource == "invoices" else self._charge_at
            prefix = "in_syn" if resource == "invoices" else "ch_syn"
            # A charge follows its invoice by a second.
            delay = 1 if resource == "charges" else 0
            positions = range(n * self.invoices_per_customer)
            if query.customer is not None:
                owner = self._index(query.customer, "cus_syn")
                positions = (
                    [] if owner is None else range(owner, len(positions), n)  # one a month
                )
            return page_of(
                positions,
                lambda g: self._billed(g % n, g // n) + delay,
                load,
                lambda object_id: self._position(object_id, prefix),
                query,
            )
        raise ValueError(f"no synthetic {resource}")

    def payment_method(self, object_id: str) -> dict[str, Any] | None:
        i = self._index(object_id, "pm_syn")
        if i is not None:
            return {
                "id": object_id,
                "object": "payment_method",
                "type": "card",
                "created": self._signed_up(i),
                "customer": f"cus_syn{i:06d}",
                "livemode": False,
                "billing_details": {"email": self._email(i), "name": None},
                "card": self._card(i),
                "metadata": {},
            }
        i = self._index(object_id, "card_syn")
        if i is not None and i % 10 == 9:
            return {
                "id": object_id,
                "object": "card",
                "customer": f"cus_syn{i:06d}",
                **self._card(i),
            }
        return None

    # --- objects by index ----------------------------------------------------------------

    def customer(self, i: int) -> dict[str, Any]:
        return {
            "id": f"cus_syn{i:06d}",
            "object": "customer",
            "created": self._signed_up(i),
            "email": self._email(i),
            "name": f"Synthetic Customer {i}",
            "currency": "usd",
            "balance": 0,
            "delinquent": self._status(i) == "past_due",
            "default_source": f"card_syn{i:06d}" if i % 10 == 9 else None,
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": f"pm_syn{i:06d}",
                "footer": None,
                "rendering_options": None,
            },
            "livemode": False,
            "metadata": {},
        }

    def subscription(self, i: int) -> dict[str, Any]:
        signed_up = self._signed_up(i)
        status = self._status(i)
        paid_until = signed_up + self.invoices_per_customer * MONTH
        trial = (paid_until, paid_until + MONTH) if status == "trialing" else (None, None)
        ended = paid_until if status == "canceled" else None
        period_start = paid_until if status == "trialing" else paid_until - MONTH
        unit, quantity = self._plan(i)
        sub_id = f"sub_syn{i:06d}"
        return {
            "id": sub_id,
            "object": "subscription",
            "customer": f"cus_syn{i:06d}",
            "created": signed_up,
            "start_date": signed_up,
            "billing_cycle_anchor": signed_up,
            "status": status,
            "currency": "usd",
            "collection_method": "charge_automatically",
            "default_payment_method": f"pm_syn{i:06d}",
            "default_source": None,
            "cancel_at": None,
            "cancel_at_period_end": False,
            "canceled_at": ended,
            "ended_at": ended,
            "trial_start": trial[0],
            "trial_end": trial[1],
            "latest_invoice": f"in_syn{i:06d}_{self.invoices_per_customer - 1:02d}",
            "discounts": [],
            "livemode": False,
            "metadata": {},
            "items": {
                "object": "list",
                "data": [
                    {
                        "id": f"si_syn{i:06d}",
                        "object": "subscription_item",
                        "subscription": sub_id,
                        "created": signed_up,
                        "quantity": quantity,
                        "current_period_start": period_start,
                        "current_period_end": period_start + MONTH,
                        "discounts": [],
                        "price": self._price(unit),
                    }
                ],
                "has_more": False,
                "total_count": 1,
                "url": f"/v1/subscription_items?subscription={sub_id}",
            },
        }

    def invoice(self, i: int, m: int) -> dict[str, Any]:
        created = self._billed(i, m)
        unit, quantity = self._plan(i)
        amount = unit * quantity
        paid = self._paid(i, m)
        sub_id = f"sub_syn{i:06d}"
        return {
            "id": f"in_syn{i:06d}_{m:02d}",
            "object": "invoice",
            "customer": f"cus_syn{i:06d}",
            "created": created,
            "number": f"SYN{i:06d}-{m + 1:04d}",
            "status": "paid" if paid else "open",
            "currency": "usd",
            "collection_method": "charge_automatically",
            "billing_reason": "subscription_create" if m == 0 else "subscription_cycle",
            "subtotal": amount,
            "total": amount,
            "amount_due": amount,
            "amount_paid": amount if paid else 0,
            "amount_remaining": 0 if paid else amount,
            "attempt_count": 1,
            "attempted": True,
            "period_start": created if m == 0 else created - MONTH,
            "period_end": created,
            "status_transitions": {
                "finalized_at": created,
                "paid_at": created + 1 if paid else None,
                "marked_uncollectible_at": None,
                "voided_at": None,
            },
            "parent": {
                "type": "subscription_details",
                "quote_details": None,
                "subscription_details": {"subscription": sub_id, "metadata": {}},
            },
            "lines": {
                "object": "list",
                "data": [
                    {
                        "id": f"il_syn{i:06d}_{m:02d}",
                        "object": "line_item",
                        "amount": amount,
                        "currency": "usd",
                        "quantity": quantity,
                        "period": {"start": created, "end": created + MONTH},
                        "parent": {
                            "type": "subscription_item_details",
                            "subscription_item_details": {
                                "subscription": sub_id,
                                "subscription_item": f"si_syn{i:06d}",
                                "invoice_item": None,
                                "proration": False,
                            },
                        },
                        "pricing": {
                            "type": "price_details",
                            "price_details": {"price": f"price_syn{unit}", "product": PRODUCT},
                            "unit_amount_decimal": str(unit),
                        },
                    }
                ],
                "has_more": False,
                "total_count": 1,
                "url": f"/v1/invoices/in_syn{i:06d}_{m:02d}/lines",
            },
            "livemode": False,
            "metadata": {},
        }

    def charge(self, i: int, m: int) -> dict[str, Any]:
        unit, quantity = self._plan(i)
        amount = unit * quantity
        paid = self._paid(i, m)
        return {
            "id": f"ch_syn{i:06d}_{m:02d}",
            "object": "charge",
            "customer": f"cus_syn{i:06d}",
            "created": self._billed(i, m) + 1,
            "amount": amount,
            "amount_captured": amount if paid else 0,
            "amount_refunded": self._refunded(i, m),
            "refunded": False,
            "captured": paid,
            "paid": paid,
            "status": "succeeded" if paid else "failed",
            "failure_code": None if paid else "card_declined",
            "failure_message": None if paid else "Your card was declined.",
            "currency": "usd",
            "description": "Subscription creation" if m == 0 else "Subscription update",
            "payment_intent": f"pi_syn{i:06d}_{m:02d}",
            "payment_method": f"pm_syn{i:06d}",
            "payment_method_details": {"type": "card", "card": self._card(i)},
            "balance_transaction": None,
            "livemode": False,
            "metadata": {},
        }

    def expected(self) -> SyncTotals:
        """The totals, summed from the same rules the objects follow (O(invoices) work)."""
        statuses = Counter(self._status(i) for i in range(self.customers))
        paid_invoices = 0
        ltv = 0
        for i in range(self.customers):
            unit, quantity = self._plan(i)
            for m in range(self.invoices_per_customer):
                if self._paid(i, m):
                    paid_invoices += 1
                    ltv += unit * quantity - self._refunded(i, m)
        invoices = self.customers * self.invoices_per_customer
        return SyncTotals(
            customers=self.customers,
            subscriptions=self.customers,
            subscriptions_by_status=dict(statuses),
            invoices=invoices,
            paid_invoices=paid_invoices,
            charges=invoices,
            ltv={"usd": ltv},
        )

    # --- the rules -----------------------------------------------------------------------

    def _signed_up(self, i: int) -> int:
        return self.start + i * self.spacing

    def _billed(self, i: int, m: int) -> int:
        return self._signed_up(i) + m * MONTH

    def _status(self, i: int) -> str:
        if i % 20 == 7:
            return "canceled"
        if i % 25 == 3:
            return "past_due"
        if i % 10 == 5:
            return "trialing"
        return "active"

    def _paid(self, i: int, m: int) -> bool:
        """Every invoice is paid but a past_due subscription's last."""
        return not (m == self.invoices_per_customer - 1 and self._status(i) == "past_due")

    def _refunded(self, i: int, m: int) -> int:
        """A quarter refunded on about 1 paid charge in 20."""
        if not self._paid(i, m) or _mix(self.seed, m * self.customers + i) % 20:
            return 0
        unit, quantity = self._plan(i)
        return unit * quantity // 4

    def _plan(self, i: int) -> tuple[int, int]:
        """(monthly unit price in cents, seats)."""
        h = _mix(self.seed, -1 - i)
        return PLANS[h % len(PLANS)], 1 + (h >> 8) % 3

    def _email(self, i: int) -> str:
        return f"customer{i:06d}@synthetic.example"

    def _card(self, i: int) -> dict[str, Any]:
        h = _mix(self.seed, -1 - i) >> 16
        return {
            "brand": BRANDS[h % len(BRANDS)],
            "last4": f"{i % 10_000:04d}",
            "exp_month": 1 + (h >> 4) % 12,
            "exp_year": 2026 + (h >> 8) % 5,
            "funding": "credit",
            "country": "US",
        }

    def _price(self, unit: int) -> dict[str, Any]:
        return {
            "id": f"price_syn{unit}",
            "object": "price",
            "product": PRODUCT,
            "currency": "usd",
            "unit_amount": unit,
            "unit_amount_decimal": str(unit),
            "billing_scheme": "per_unit",
            "type": "recurring",
            "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
            "tax_behavior": "exclusive",
            "livemode": False,
        }

    def _invoice_at(self, g: int) -> dict[str, Any]:
        return self.invoice(g % self.customers, g // self.customers)

    def _charge_at(self, g: int) -> dict[str, Any]:
        return self.charge(g % self.customers, g // self.customers)

    def _index(self, object_id: str, prefix: str) -> int | None:
        """The customer index in an id like `cus_syn000123`, None for any other id."""
        digits = object_id.removeprefix(prefix)
        if digits == object_id or not digits.isdigit():
            return None
        i = int(digits)
        return i if i < self.customers and object_id == f"{prefix}{i:06d}" else None

    def _position(self, object_id: str, prefix: str) -> int | None:
        """The list position of an id like `in_syn000123_07`, None for any other id."""
        owner, _, month = object_id.rpartition("_")
        i = self._index(owner, prefix)
        if i is None or not month.isdigit():
            return None
        m = int(month)
        if m >= self.invoices_per_customer or object_id != f"{owner}_{m:02d}":
            return None
        return m * self.customers + i
