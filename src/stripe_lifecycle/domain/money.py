"""Stripe amounts (integer minor units) as people read them, for email copy.

Stripe sends every amount in the currency's smallest unit: cents for `usd`, whole yen for
`jpy`, fils (thousandths) for `kwd`. The exponent lists follow Stripe's currency guide;
ISK, HUF and TWD are zero-decimal for payouts but two-decimal in the API, so they need no
special case here.

Pure: stdlib only, no locale (the output must not change with the worker's environment).
"""

from __future__ import annotations

from decimal import Decimal

ZERO_DECIMAL_CURRENCIES = frozenset(
    {
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    }
)
THREE_DECIMAL_CURRENCIES = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})

# Symbols written before the number with no space, as en-US formatting does. Only symbols
# that cannot be misread: a bare "$" is the US dollar, other dollars carry their prefix.
# Every other currency is written "49.00 CHF".
_PREFIX_SYMBOLS = {
    "usd": "$",
    "eur": "€",
    "gbp": "£",
    "jpy": "¥",
    "cny": "CN¥",
    "cad": "CA$",
    "aud": "A$",
    "nzd": "NZ$",
    "hkd": "HK$",
    "mxn": "MX$",
    "twd": "NT$",
    "brl": "R$",
    "inr": "₹",
    "ils": "₪",
    "krw": "₩",
    "vnd": "₫",
    "php": "₱",
}


def currency_exponent(currency: str) -> int:
    """How many decimal places the currency's minor unit stands for (0, 2 or 3)."""
    code = _code(currency)
    if code in ZERO_DECIMAL_CURRENCIES:
        return 0
    if code in THREE_DECIMAL_CURRENCIES:
        return 3
    return 2


def minor_to_major(minor: int, currency: str) -> Decimal:
    """An amount in minor units as an exact Decimal in the major unit: (4900, "usd") → 49.00."""
    exponent = currency_exponent(currency)
    return Decimal(minor).scaleb(-exponent)


def format_amount(minor_units: int, currency: str) -> str:
    """A human amount: "$49.00", "€1,234.50", "¥1,000", "-$5.00", "12.345 KWD", "49.00 CHF"."""
    code = _code(currency)
    exponent = currency_exponent(code)
    major = Decimal(abs(minor_units)).scaleb(-exponent)
    number = f"{major:,.{exponent}f}"
    sign = "-" if minor_units < 0 else ""
    symbol = _PREFIX_SYMBOLS.get(code)
    if symbol is not None:
        return f"{sign}{symbol}{number}"
    return f"{sign}{number} {code.upper()}"


def _code(currency: str) -> str:
    code = currency.strip().lower()
    if len(code) != 3 or not code.isascii() or not code.isalpha():
        raise ValueError(f"currency must be a three-letter ISO 4217 code, got {currency!r}")
    return code
