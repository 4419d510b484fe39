"""Amounts in Stripe minor units as email copy shows them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from stripe_lifecycle.domain.money import currency_exponent, format_amount, minor_to_major


@pytest.mark.parametrize(
    ("minor", "currency", "expected"),
    [
        (4900, "usd", "$49.00"),
        (4900, "USD", "$49.00"),
        (4900, "eur", "€49.00"),
        (4950, "gbp", "£49.50"),
        (0, "usd", "$0.00"),
        (1, "usd", "$0.01"),
        (123456789, "usd", "$1,234,567.89"),
        (-500, "usd", "-$5.00"),
        (-123456, "eur", "-€1,234.56"),
        # zero-decimal: the amount is already in whole units
        (1000, "jpy", "¥1,000"),
        (50, "jpy", "¥50"),
        (1500000, "krw", "₩1,500,000"),
        (25000, "clp", "25,000 CLP"),
        (1000, "xof", "1,000 XOF"),
        (-1000, "jpy", "-¥1,000"),
        # three-decimal
        (12345, "kwd", "12.345 KWD"),
        (1000, "bhd", "1.000 BHD"),
        (-1234560, "tnd", "-1,234.560 TND"),
        # other dollars are never a bare "$"
        (4900, "cad", "CA$49.00"),
        (4900, "aud", "A$49.00"),
        # two-decimal currencies without a symbol here, or unknown to Stripe
        (4900, "chf", "49.00 CHF"),
        (4900, "xyz", "49.00 XYZ"),
        (-4900, "xyz", "-49.00 XYZ"),
        (123456, "sek", "1,234.56 SEK"),
        # ISK is two-decimal in Stripe's API
        (10000, "isk", "100.00 ISK"),
    ],
)
def test_format_amount(minor: int, currency: str, expected: str) -> None:
    assert format_amount(minor, currency) == expected


@pytest.mark.parametrize(
    ("minor", "currency", "expected"),
    [
        (4900, "usd", Decimal("49.00")),
        (1, "eur", Decimal("0.01")),
        (-250, "usd", Decimal("-2.50")),
        (1000, "jpy", Decimal("1000")),
        (1000, "VND", Decimal("1000")),
        (12345, "kwd", Decimal("12.345")),
        (10, "omr", Decimal("0.010")),
        (4900, "xyz", Decimal("49.00")),
    ],
)
def test_minor_to_major(minor: int, currency: str, expected: Decimal) -> None:
    result = minor_to_major(minor, currency)
    assert result == expected
    # Exact, with the currency's own number of places (no float rounding anywhere).
    assert result.as_tuple().exponent == expected.as_tuple().exponent


@pytest.mark.parametrize(
    ("currency", "exponent"),
    [
        *(
            (code, 0)
            for code in "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()
        ),
        *((code, 3) for code in "bhd jod kwd omr tnd".split()),
        ("usd", 2),
        ("huf", 2),
        ("twd", 2),
    ],
)
def test_currency_exponent_follows_stripe(currency: str, exponent: int) -> None:
    assert currency_exponent(currency) == exponent


@pytest.mark.parametrize("currency", ["", "us", "usdollar", "12$", "€€€"])
def test_malformed_currency_is_an_error_naming_it(currency: str) -> None:
    with pytest.raises(ValueError, match="three-letter"):
        format_amount(100, currency)
