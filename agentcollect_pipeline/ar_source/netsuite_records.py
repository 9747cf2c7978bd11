"""NetSuite SuiteQL rows -> rows of the warehouse tables. Pure functions: no I/O, no Dagster.

SuiteQL returns every value as a string and leaves NULL columns out of the item, so every field here is
optional text first and typed second. As for every source (records.py): a row without an id is rejected
(`RecordRejected`); every other problem keeps the row and marks it `invalid` (the collection rules must not
act on it) or `warning` (usable but incomplete), each problem naming the field as "field: problem".

Timestamps are read as the account's local time (SuiteQL renders dates in the integration user's time zone)
and stored as UTC. The queries ask for `TO_CHAR(..., 'YYYY-MM-DD HH24:MI:SS')`; the M/D/YYYY form SuiteQL
uses by default is accepted too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, tzinfo
from typing import Any

from agentcollect_pipeline.ar_source.records import (
    Problems,
    RecordRejected,
    cents,
    check_invoice_amounts,
    contact_checks,
    customer_currency,
    normalise_phone,
    parsed,
    region_for_country,
)
from agentcollect_pipeline.money import MINOR_UNIT_EXPONENT, MoneyError, exponent

__all__ = [
    "CurrencyResolver",
    "RecordRejected",
    "contact_row",
    "customer_row",
    "invoice_row",
    "parse_timestamp",
    "payment_line_row",
    "received_payment_row",
]

# Invoice statuses (the bare letter of CustInvc:X): A open, B paid in full, D pending approval, E rejected,
# V voided. Only A and B are receivables; the others must never be chased.
_INVOICE_STATUS_TEXT = {"open": "A", "paid in full": "B", "pending approval": "D", "rejected": "E", "voided": "V"}
_NOT_RECEIVABLE = {"D", "E", "V"}
_TIMESTAMP_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%m/%d/%Y %I:%M %p", "%m/%d/%Y %H:%M:%S",
                      "%m/%d/%Y %H:%M")
_DATE_FORMATS = ("%Y-%m-%d", "%m/%d/%Y")


@dataclass
class CurrencyResolver:
    """NetSuite's `currency` column holds an internal id; rows need an ISO 4217 code.

    Order: the configured map (id -> code), a value that already is an ISO code, the account's currency table
    (its `symbol` is the ISO code), and, when that table could not be read, the organisation's currency.
    """

    default_currency: str
    configured: Mapping[str, str] = field(default_factory=dict)
    table: Mapping[str, str] | None = None  # id -> symbol; None when the source would not show the table

    def resolve(self, value: Any) -> tuple[str, str | None]:
        """(ISO code, problem or None)."""
        text = "" if value is None else str(value).strip()
        if not text:
            return self.default_currency, None
        if text in self.configured:
            code = self.configured[text].strip().upper()
        elif text.upper() in MINOR_UNIT_EXPONENT:
            code = text.upper()
        elif self.table is not None:
            symbol = self.table.get(text)
            if symbol is None:
                return self.default_currency, f"currency: unknown currency id {text}"
            code = symbol.strip().upper()
        else:
            code = self.default_currency
        try:
            exponent(code)
        except MoneyError as exc:
            return self.default_currency, f"currency: {exc}"
        return code, None


def _record_id(raw: Any, entity: str) -> str:
    if not isinstance(raw, Mapping):
        raise RecordRejected(f"{entity}: expected an object, got {type(raw).__name__}")
    record_id = _text(raw, "id")
    if record_id is None:
        raise RecordRejected(f"{entity} without an id (fields: {sorted(raw)[:8]})")
    return record_id


def _text(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    return text or None


def _flag(raw: Mapping[str, Any], key: str, problems: Problems, *, default: bool) -> bool:
    value = _text(raw, key)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in ("t", "true"):
        return True
    if lowered in ("f", "false"):
        return False
    problems.warnings.append(f"{key}: unrecognised flag {value!r}")
    return default


def parse_timestamp(value: str, zone: tzinfo) -> datetime:
    """A SuiteQL timestamp (local to the account) -> aware UTC. ISO strings with an offset keep theirs."""
    text = value.strip()
    if re.search(r"(Z|[+-]\d{2}:?\d{2})$", text) and "T" in text:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return parsed.astimezone(UTC)
    for pattern in _TIMESTAMP_FORMATS:
        try:
            return datetime.strptime(text, pattern).replace(tzinfo=zone).astimezone(UTC)
        except ValueError:
            pass
    for pattern in _DATE_FORMATS:
        try:
            day = datetime.strptime(text, pattern).date()
        except ValueError:
            continue
        return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)
    raise ValueError(f"not a timestamp: {value!r}")


def _timestamp(raw: Mapping[str, Any], key: str, problems: Problems, zone: tzinfo) -> datetime | None:
    return parsed(_text(raw, key), key, problems, lambda value: parse_timestamp(value, zone), what="timestamp")


def _parse_date(value: str) -> date:
    """A SuiteQL date (yyyy-MM-dd, possibly with a time after it, or M/D/YYYY); ValueError otherwise."""
    for pattern in _DATE_FORMATS:
        try:
            return datetime.strptime(value[:10] if "-" in value[:10] else value, pattern).date()
        except ValueError:
            pass
    raise ValueError(f"not a date: {value!r}")


def _date(raw: Mapping[str, Any], key: str, problems: Problems, *, required: bool) -> date | None:
    return parsed(_text(raw, key), key, problems, _parse_date, what="date", required=required)


def _cents(raw: Mapping[str, Any], key: str, currency: str, problems: Problems) -> int | None:
    return cents(_text(raw, key), key, currency, problems)


def _currency(raw: Mapping[str, Any], currencies: CurrencyResolver, problems: Problems) -> str:
    code, problem = currencies.resolve(raw.get("currency"))
    if problem:
        problems.invalid.append(problem)
    return code


def invoice_status(value: str | None) -> str | None:
    """The bare status letter from 'A', 'CustInvc:A' or the display text 'Invoice : Open'."""
    if value is None:
        return None
    text = value.strip()
    if ":" in text and len(text.rpartition(":")[2].strip()) == 1:
        return text.rpartition(":")[2].strip().upper()
    if len(text) == 1:
        return text.upper()
    return _INVOICE_STATUS_TEXT.get(text.rpartition(":")[2].strip().lower())


# --------------------------------------------------------------------------------------------------------
# Rows


def customer_row(raw: Any, *, currencies: CurrencyResolver, zone: tzinfo, synced_at: datetime) -> dict[str, Any]:
    customer_id = _record_id(raw, "customer")
    problems = Problems()
    person = _flag(raw, "isperson", problems, default=False)
    company = _text(raw, "companyname")
    full_name = " ".join(p for p in (_text(raw, "firstname"), _text(raw, "lastname")) if p) or None
    name = (full_name if person else company) or company or full_name or _text(raw, "entityid")
    country = _text(raw, "country")
    region = region_for_country(country)
    # Texts and calls want a dialable number; a person's mobile is often the only one on file.
    phone = _text(raw, "phone") or _text(raw, "mobilephone")
    alt_phone = _text(raw, "altphone") or (_text(raw, "mobilephone") if _text(raw, "phone") else None)
    phone_e164 = normalise_phone(phone, region)
    email = _text(raw, "email")
    contact_checks(email, phone, phone_e164, problems)
    code, problem = currencies.resolve(raw.get("currency"))
    if problem:
        problems.warnings.append(problem)
    row = {
        "customer_id": customer_id,
        "name": name,
        "company_name": company,
        "email": email,
        "phone": phone,
        "phone_e164": phone_e164,
        "alt_phone": alt_phone,
        "account_type": "person" if person else "business",
        "parent_customer_id": _text(raw, "parent"),
        "bill_address1": _text(raw, "addr1"),
        "bill_address2": _text(raw, "addr2"),
        "bill_city": _text(raw, "city"),
        "bill_state": _text(raw, "state"),
        "bill_zip": _text(raw, "zip"),
        "bill_country": country,
        "currency": code,
        "is_active": not _flag(raw, "isinactive", problems, default=False),
        "has_authorized_to_charge": False,
        "description": _text(raw, "comments"),
        "created_at": _timestamp(raw, "datecreated", problems, zone),
        "updated_at": _timestamp(raw, "lastmodifieddate", problems, zone),
        "synced_at": synced_at,
    }
    if name is None:
        problems.warnings.append("companyname: missing (and no person's name)")
    return {**row, **problems.columns()}


def contact_row(raw: Any, *, customer_regions: Mapping[str, str | None], zone: tzinfo,
                synced_at: datetime) -> dict[str, Any]:
    contact_id = _record_id(raw, "contact")
    problems = Problems()
    customer_id = _text(raw, "company")
    if customer_id is None:
        problems.invalid.append("company: missing")
    phone = _text(raw, "phone") or _text(raw, "mobilephone")
    phone_e164 = normalise_phone(phone, customer_regions.get(customer_id or ""))
    email = _text(raw, "email")
    contact_checks(email, phone, phone_e164, problems)
    row = {
        "contact_id": contact_id,
        "customer_id": customer_id or "",
        "first_name": _text(raw, "firstname"),
        "last_name": _text(raw, "lastname"),
        "email": email,
        "phone": phone,
        "phone_e164": phone_e164,
        "is_active": not _flag(raw, "isinactive", problems, default=False),
        "created_at": _timestamp(raw, "datecreated", problems, zone),
        "updated_at": _timestamp(raw, "lastmodifieddate", problems, zone),
        "synced_at": synced_at,
    }
    return {**row, **problems.columns()}


def _payment_status(amount: int | None, unpaid: int | None) -> str | None:
    """Bill.com's codes, which the rules read: "0" paid, "1" open, "2" partially paid."""
    if amount is None or unpaid is None:
        return None
    if unpaid <= 0 < amount:
        return "0"
    if 0 < unpaid < amount:
        return "2"
    return "1"


def invoice_row(
    raw: Any,
    *,
    currency_of: Callable[[str | None], str | None],
    currencies: CurrencyResolver,
    zone: tzinfo,
    synced_at: datetime,
) -> dict[str, Any]:
    """`currency_of(customer_id)` is None when the customer is unknown to the warehouse."""
    invoice_id = _record_id(raw, "invoice")
    problems = Problems()
    customer_id = _text(raw, "entity")
    customer_currency(customer_id, currency_of, "entity", problems)
    currency = _currency(raw, currencies, problems)
    amount = _cents(raw, "foreigntotal", currency, problems)
    # foreignamountunpaid is the open balance in the invoice's currency; there is no foreignamountremaining.
    unpaid = _cents(raw, "foreignamountunpaid", currency, problems)
    check_invoice_amounts(raw, problems, "foreigntotal", amount, "foreignamountunpaid", unpaid)
    status = invoice_status(_text(raw, "status"))
    if status is None and _text(raw, "status") is not None:
        problems.warnings.append(f"status: unrecognised {raw.get('status')!r}")
    voided = _flag(raw, "voided", problems, default=False)
    row = {
        "invoice_id": invoice_id,
        "invoice_number": _text(raw, "tranid"),
        "customer_id": customer_id,
        "invoice_date": _date(raw, "trandate", problems, required=False),
        "due_date": _date(raw, "duedate", problems, required=True),
        "amount_cents": amount,
        "amount_due_cents": unpaid,
        "currency": currency,
        "payment_status": _payment_status(amount, unpaid),
        "is_active": not voided and status not in _NOT_RECEIVABLE,
        "actg_class_id": _text(raw, "classid"),
        "has_auto_pay": False,
        "last_sent_at": None,
        "description": _text(raw, "memo"),
        "created_at": _timestamp(raw, "createddate", problems, zone),
        "updated_at": _timestamp(raw, "lastmodifieddate", problems, zone),
        "synced_at": synced_at,
    }
    if row["invoice_number"] is None:
        problems.invalid.append("tranid: missing")
    return {**row, **problems.columns()}


def received_payment_row(
    raw: Any,
    *,
    currency_of: Callable[[str | None], str | None],
    currencies: CurrencyResolver,
    zone: tzinfo,
    synced_at: datetime,
) -> dict[str, Any]:
    payment_id = _record_id(raw, "customer payment")
    problems = Problems()
    customer_id = _text(raw, "entity")
    customer_currency(customer_id, currency_of, "entity", problems)
    currency = _currency(raw, currencies, problems)
    row = {
        "received_payment_id": payment_id,
        "customer_id": customer_id,
        "payment_date": _date(raw, "trandate", problems, required=True),
        "amount_cents": _cents(raw, "foreigntotal", currency, problems),
        "currency": currency,
        "payment_type": None,  # NetSuite's payment method is not readable the same way (UNVERIFIED in REST)
        "status": _text(raw, "status"),
        "is_online": False,
        "ref_number": _text(raw, "externalid"),
        "description": _text(raw, "memo"),
        "created_at": _timestamp(raw, "createddate", problems, zone),
        "updated_at": _timestamp(raw, "lastmodifieddate", problems, zone),
        "synced_at": synced_at,
    }
    return {**row, **problems.columns()}


def payment_line_row(payment_id: str, invoice_id: Any, amount: Any, *, currency: str,
                     synced_at: datetime) -> tuple[dict[str, Any] | None, str | None]:
    """(line row, problem). One line per (payment, invoice): NetSuite applies a payment per document."""
    invoice = None if invoice_id is None else str(invoice_id).strip() or None
    if invoice is None:
        return None, "apply: an application without an invoice"
    problems = Problems()
    cents = _cents({"amount": amount}, "amount", currency, problems)
    if cents is not None and cents < 0:
        problems.invalid.append(f"amount: negative ({amount})")
    problem = f"apply[{invoice}].{problems.invalid[0]}" if problems.invalid else None
    return {
        "invoice_pay_id": f"{payment_id}:{invoice}",
        "received_payment_id": payment_id,
        "invoice_id": invoice,
        "amount_cents": cents,
        "currency": currency,
        "synced_at": synced_at,
    }, problem


def payment_validation_with_lines(row: dict[str, Any], line_problems: list[str]) -> dict[str, Any]:
    """Fold problems found in a payment's lines into the payment row's validation columns."""
    if not line_problems:
        return row
    errors = "; ".join([*(row["validation_errors"] or "").split("; "), *line_problems]).strip("; ")
    return {**row, "validation_status": "invalid", "validation_errors": errors}
