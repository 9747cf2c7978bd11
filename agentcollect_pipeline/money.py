"""Money at the edges: Decimal in and out of APIs, integer minor units everywhere else.

Tables and DataFrames carry `*_cents` integers plus a `currency` column; floats never hold money.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

# ISO 4217 minor-unit exponents for the currencies an AR book is likely to hold. A currency that is not
# listed is refused rather than guessed: a wrong exponent silently scales every amount by 100.
MINOR_UNIT_EXPONENT: dict[str, int] = {
    "USD": 2, "CAD": 2, "EUR": 2, "GBP": 2, "AUD": 2, "NZD": 2, "CHF": 2, "SEK": 2, "NOK": 2, "DKK": 2,
    "MXN": 2, "BRL": 2, "INR": 2, "SGD": 2, "HKD": 2, "ZAR": 2, "PLN": 2, "CZK": 2, "ILS": 2, "CNY": 2,
    "PHP": 2, "AED": 2, "JPY": 0, "KRW": 0, "CLP": 0, "ISK": 0, "BHD": 3, "KWD": 3, "OMR": 3, "JOD": 3,
}


class MoneyError(ValueError):
    """An amount that cannot be represented exactly in the currency's minor units."""


def exponent(currency: str) -> int:
    try:
        return MINOR_UNIT_EXPONENT[currency]
    except KeyError:
        raise MoneyError(f"unknown currency {currency!r}: add its ISO 4217 exponent to MINOR_UNIT_EXPONENT") from None


def to_decimal(value: object) -> Decimal:
    """Parse an API amount (JSON number already read as Decimal, int or numeric string) exactly."""
    if isinstance(value, bool) or value is None:
        raise MoneyError(f"expected a number, got {value!r}")
    if isinstance(value, float):
        # JSON is parsed with parse_float=Decimal; a float here means someone bypassed that.
        raise MoneyError(f"refusing float amount {value!r}: parse JSON numbers as Decimal")
    try:
        amount = Decimal(str(value).strip()) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise MoneyError(f"expected a number, got {value!r}") from None
    if not amount.is_finite():
        raise MoneyError(f"expected a finite number, got {value!r}")
    return amount


def to_minor_units(value: object, currency: str) -> int:
    """Decimal amount -> integer minor units; sub-minor-unit precision is an error, not a rounding."""
    amount = to_decimal(value)
    scaled = amount.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise MoneyError(f"{amount} has more precision than {currency} minor units allow")
    return int(scaled)


def from_minor_units(minor: int, currency: str) -> Decimal:
    """Integer minor units -> Decimal with the currency's exact number of places (for API requests)."""
    exp = exponent(currency)
    return (Decimal(int(minor)).scaleb(-exp)).quantize(Decimal(1).scaleb(-exp), rounding=ROUND_HALF_EVEN)


def format_money(minor: int, currency: str) -> str:
    return f"{from_minor_units(minor, currency):,} {currency}"
