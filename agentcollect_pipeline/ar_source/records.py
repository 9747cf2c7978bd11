"""What every AR source's record mapping shares. Pure functions: no I/O, no Dagster.

A record that cannot be keyed (no id) is rejected with `RecordRejected`; every other problem keeps the row
and marks it through `Problems`: `invalid` when the collections rules must not act on it (bad amount,
unknown customer, bad dates), `warning` when it is usable but incomplete (missing email, undialable phone).
Each problem names the source's field ("field: problem"), so finance can fix it where it lives.

Reading a source's raw shape (flat keys, nested refs, SuiteQL strings) stays in that source's module; the
helpers here take the value already read and the field name to report.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, TypeVar

import phonenumbers

from agentcollect_pipeline.money import MoneyError, exponent, to_minor_units

__all__ = [
    "COUNTRY_REGIONS",
    "EMAIL_PATTERN",
    "Problems",
    "RecordRejected",
    "cents",
    "check_invoice_amounts",
    "contact_checks",
    "currency_code",
    "customer_currency",
    "iso_date",
    "normalise_phone",
    "parsed",
    "region_for_country",
]

EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
COUNTRY_REGIONS = {
    "US": "US", "USA": "US", "UNITED STATES": "US", "UNITED STATES OF AMERICA": "US",
    "CA": "CA", "CAN": "CA", "CANADA": "CA",
    "GB": "GB", "UK": "GB", "UNITED KINGDOM": "GB", "ENGLAND": "GB",
}

T = TypeVar("T")


class RecordRejected(ValueError):
    """A record that cannot be stored at all (it has no usable id)."""


@dataclass
class Problems:
    """The problems found in one record; `columns()` gives its validation columns."""

    invalid: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def columns(self) -> dict[str, Any]:
        status = "invalid" if self.invalid else "warning" if self.warnings else "valid"
        problems = self.invalid + self.warnings
        return {"validation_status": status, "validation_errors": "; ".join(problems) or None}


def parsed(value: Any, key: str, problems: Problems, parse: Callable[[Any], T], *, what: str,
           required: bool = False) -> T | None:
    """`parse(value)`, or None: absent (None or "") is "key: missing" when required; a ValueError from
    `parse` is "key: not a <what>: value"."""
    if value in (None, ""):
        if required:
            problems.invalid.append(f"{key}: missing")
        return None
    try:
        return parse(value)
    except ValueError:
        problems.invalid.append(f"{key}: not a {what}: {value!r}")
        return None


def iso_date(value: Any) -> date:
    """The yyyy-MM-dd date at the start of `value` (a date or a timestamp); ValueError otherwise."""
    return date.fromisoformat(str(value)[:10])


def cents(value: Any, key: str, currency: str, problems: Problems, *, required: bool = True) -> int | None:
    """An amount in `currency`'s minor units, or None with the problem noted (None counts as missing)."""
    if value is None:
        if required:
            problems.invalid.append(f"{key}: missing")
        return None
    try:
        return to_minor_units(value, currency)
    except MoneyError as exc:
        problems.invalid.append(f"{key}: {exc}")
        return None


def check_invoice_amounts(raw: Mapping[str, Any], problems: Problems, total_key: str, total: int | None,
                          due_key: str, due: int | None, *, zero_total_ok: bool = False) -> None:
    """An invoice's total must be positive (unless `zero_total_ok`, e.g. voided) and its open balance
    between 0 and the total; the problems quote the raw values of `total_key` and `due_key`."""
    if total is not None and total <= 0 and not zero_total_ok:
        problems.invalid.append(f"{total_key}: must be positive, got {raw.get(total_key)}")
    if due is not None and due < 0:
        problems.invalid.append(f"{due_key}: negative ({raw.get(due_key)})")
    if total is not None and due is not None and total > 0 and due > total:
        problems.invalid.append(f"{due_key}: {raw.get(due_key)} exceeds {total_key} {raw.get(total_key)}")


def currency_code(value: Any, key: str, fallback: str, problems: Problems) -> str:
    """An ISO 4217 code the money module knows, else `fallback` (absent silently, unknown as invalid)."""
    if value in (None, ""):
        return fallback
    code = str(value).strip().upper()
    try:
        exponent(code)
    except MoneyError as exc:
        problems.invalid.append(f"{key}: {exc}")
        return fallback
    return code


def customer_currency(customer_id: str | None, currency_of: Callable[[str | None], str | None], key: str,
                      problems: Problems) -> str | None:
    """The customer's currency from `currency_of`; a missing or unknown customer makes the record invalid."""
    currency = currency_of(customer_id)
    if customer_id is None:
        problems.invalid.append(f"{key}: missing")
    elif currency is None:
        problems.invalid.append(f"{key}: unknown customer {customer_id}")
    return currency


def normalise_phone(number: str | None, region: str | None) -> str | None:
    """E.164 form of a dialable number, else None. Region comes from the billing country."""
    if not number:
        return None
    try:
        parsed_number = phonenumbers.parse(number, region or "US")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed_number):
        return None
    return phonenumbers.format_number(parsed_number, phonenumbers.PhoneNumberFormat.E164)


def region_for_country(country: str | None) -> str | None:
    if not country:
        return None
    return COUNTRY_REGIONS.get(country.strip().upper(), country.strip().upper() if len(country.strip()) == 2 else None)


def contact_checks(email: str | None, phone: str | None, phone_e164: str | None, problems: Problems, *,
                   email_key: str = "email", phone_key: str = "phone") -> None:
    """Warnings for a missing or malformed email and for a phone number that cannot be dialled."""
    if email is None:
        problems.warnings.append(f"{email_key}: missing")
    elif not EMAIL_PATTERN.match(email):
        problems.warnings.append(f"{email_key}: not an address: {email!r}")
    if phone is not None and phone_e164 is None:
        problems.warnings.append(f"{phone_key}: not a dialable number: {phone!r}")
