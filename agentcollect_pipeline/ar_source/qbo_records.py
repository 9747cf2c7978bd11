"""QuickBooks Online objects -> rows of the AR warehouse tables. Pure functions: no I/O, no Dagster.

Same conventions as every source (records.py): a record without an Id is rejected; every other problem
keeps the row and marks it `invalid` (the collections rules must not act on it) or `warning` (usable but
incomplete), naming the QBO field so finance can fix it in QuickBooks.

Mapping choices:
- `payment_status` follows Bill.com's codes: "0" paid (Balance 0), "1" open (nothing paid), "2" partial.
- `is_active` is False for a voided invoice (QBO zeroes TotalAmt and writes "Voided" into PrivateNote),
  for a deleted one (CDC `status: Deleted`) and for an inactive customer.
- `account_type` is "business" when the customer has a CompanyName, else "person".
- `updated_at` is MetaData.LastUpdatedTime (the sync watermark), `created_at` MetaData.CreateTime.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any

from agentcollect_pipeline.ar_source.records import (
    Problems,
    RecordRejected,
    cents,
    check_invoice_amounts,
    contact_checks,
    currency_code,
    customer_currency,
    iso_date,
    normalise_phone,
    parsed,
    region_for_country,
)
from agentcollect_pipeline.clients.qbo import parse_timestamp
from agentcollect_pipeline.money import MoneyError, to_decimal

# QBO's PaymentMethodRef names -> the warehouse's payment_type codes (0 cash, 1 check, 2 card, 3 ACH,
# 4 PayPal, 5 other). Payment methods are user-defined lists in QBO, so this is a best-effort reading.
_METHOD_CODES = (
    ("cash", "0"), ("check", "1"), ("cheque", "1"), ("visa", "2"), ("mastercard", "2"), ("master card", "2"),
    ("amex", "2"), ("american express", "2"), ("discover", "2"), ("card", "2"), ("ach", "3"), ("eft", "3"),
    ("bank", "3"), ("transfer", "3"), ("paypal", "4"),
)


def _record_id(raw: Any, entity: str) -> str:
    if not isinstance(raw, Mapping):
        raise RecordRejected(f"{entity}: expected an object, got {type(raw).__name__}")
    record_id = raw.get("Id")
    if isinstance(record_id, int) and not isinstance(record_id, bool):
        record_id = str(record_id)
    if not isinstance(record_id, str) or not record_id.strip():
        raise RecordRejected(f"{entity} without an Id (fields: {sorted(raw)[:8]})")
    return record_id.strip()


def _text(raw: Any, *path: str) -> str | None:
    value = raw
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    if value is None or isinstance(value, Mapping | list):
        return None
    text = str(value).strip()
    return text or None


def _ref(raw: Mapping[str, Any], key: str) -> str | None:
    return _text(raw, key, "value")


def _timestamp(raw: Mapping[str, Any], problems: Problems, *path: str) -> datetime | None:
    return parsed(_text(raw, *path), ".".join(path), problems, parse_timestamp, what="timestamp")


def _date(raw: Mapping[str, Any], key: str, problems: Problems, *, required: bool) -> date | None:
    return parsed(_text(raw, key), key, problems, iso_date, what="yyyy-MM-dd date", required=required)


def _cents(raw: Mapping[str, Any], key: str, currency: str, problems: Problems) -> int | None:
    return cents(raw.get(key), key, currency, problems)


def _currency(code: str | None, fallback: str, problems: Problems) -> str:
    return currency_code(code, "CurrencyRef", fallback, problems)


def _active(raw: Mapping[str, Any], problems: Problems) -> bool:
    value = raw.get("Active", True)
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    problems.invalid.append(f"Active: unrecognised value {value!r}")
    return False


def _txn_currency(raw: Mapping[str, Any], customer_id: str | None, currency_of: Callable[[str | None], str | None],
                  default_currency: str, problems: Problems) -> str:
    """The transaction's own CurrencyRef, else the customer's currency; an unknown customer is invalid."""
    fallback = customer_currency(customer_id, currency_of, "CustomerRef", problems) or default_currency
    return _currency(_ref(raw, "CurrencyRef"), fallback, problems)


def is_voided(raw: Mapping[str, Any]) -> bool:
    """QBO's void zeroes the amounts and puts "Voided" at the start of PrivateNote (§1.4 / void docs)."""
    note = (_text(raw, "PrivateNote") or "").lower()
    try:
        zero = raw.get("TotalAmt") is not None and to_decimal(raw["TotalAmt"]) == 0
    except MoneyError:
        zero = False
    return zero and note.startswith("voided")


def customer_row(raw: Any, *, default_currency: str, synced_at: datetime) -> dict[str, Any]:
    customer_id = _record_id(raw, "Customer")
    problems = Problems()
    country = _text(raw, "BillAddr", "Country")
    phone = _text(raw, "PrimaryPhone", "FreeFormNumber")
    phone_e164 = normalise_phone(phone, region_for_country(country))
    email = _text(raw, "PrimaryEmailAddr", "Address")
    contact_checks(email, phone, phone_e164, problems, email_key="PrimaryEmailAddr", phone_key="PrimaryPhone")
    company = _text(raw, "CompanyName")
    row = {
        "customer_id": customer_id,
        "name": _text(raw, "DisplayName"),
        "company_name": company,
        "email": email,
        "phone": phone,
        "phone_e164": phone_e164,
        "alt_phone": _text(raw, "Mobile", "FreeFormNumber") or _text(raw, "AlternatePhone", "FreeFormNumber"),
        "account_type": "business" if company else "person",
        "parent_customer_id": _ref(raw, "ParentRef"),
        "bill_address1": _text(raw, "BillAddr", "Line1"),
        "bill_address2": _text(raw, "BillAddr", "Line2"),
        "bill_city": _text(raw, "BillAddr", "City"),
        "bill_state": _text(raw, "BillAddr", "CountrySubDivisionCode"),
        "bill_zip": _text(raw, "BillAddr", "PostalCode"),
        "bill_country": country,
        "currency": _currency(_ref(raw, "CurrencyRef"), default_currency, problems),
        "is_active": _active(raw, problems),
        "has_authorized_to_charge": False,
        "description": _text(raw, "Notes"),
        "created_at": _timestamp(raw, problems, "MetaData", "CreateTime"),
        "updated_at": _timestamp(raw, problems, "MetaData", "LastUpdatedTime"),
        "synced_at": synced_at,
    }
    if row["name"] is None:
        problems.warnings.append("DisplayName: missing")
    return {**row, **problems.columns()}


def _payment_status(amount: int | None, balance: int | None) -> str | None:
    if amount is None or balance is None:
        return None
    if balance <= 0:
        return "0"
    return "1" if balance >= amount else "2"


def invoice_row(
    raw: Any,
    *,
    currency_of: Callable[[str | None], str | None],
    default_currency: str,
    synced_at: datetime,
) -> dict[str, Any]:
    """`currency_of(customer_id)` gives the customer's currency, or None when the customer is unknown."""
    invoice_id = _record_id(raw, "Invoice")
    if raw.get("status") == "Deleted":
        return invoice_tombstone(raw, default_currency=default_currency, synced_at=synced_at)
    problems = Problems()
    customer_id = _ref(raw, "CustomerRef")
    currency = _txn_currency(raw, customer_id, currency_of, default_currency, problems)
    voided = is_voided(raw)
    amount = _cents(raw, "TotalAmt", currency, problems)
    balance = _cents(raw, "Balance", currency, problems)
    check_invoice_amounts(raw, problems, "TotalAmt", amount, "Balance", balance, zero_total_ok=voided)
    row = {
        "invoice_id": invoice_id,
        "invoice_number": _text(raw, "DocNumber"),
        "customer_id": customer_id,
        "invoice_date": _date(raw, "TxnDate", problems, required=False),
        "due_date": _date(raw, "DueDate", problems, required=not voided),
        "amount_cents": amount,
        "amount_due_cents": balance,
        "currency": currency,
        "payment_status": _payment_status(amount, balance),
        "is_active": not voided,
        "actg_class_id": _ref(raw, "ClassRef"),
        "has_auto_pay": False,
        "last_sent_at": _timestamp(raw, problems, "DeliveryInfo", "DeliveryTime"),
        "description": _text(raw, "CustomerMemo", "value") or _first_line_description(raw),
        "created_at": _timestamp(raw, problems, "MetaData", "CreateTime"),
        "updated_at": _timestamp(raw, problems, "MetaData", "LastUpdatedTime"),
        "synced_at": synced_at,
    }
    if row["invoice_number"] is None:
        problems.invalid.append("DocNumber: missing")
    return {**row, **problems.columns()}


def _first_line_description(raw: Mapping[str, Any]) -> str | None:
    lines = raw.get("Line")
    if isinstance(lines, list):
        for line in lines:
            if isinstance(line, Mapping) and (text := _text(line, "Description")):
                return text
    return None


def invoice_tombstone(raw: Any, *, default_currency: str, synced_at: datetime) -> dict[str, Any]:
    """A deleted invoice as CDC reports it (`{"Id", "status": "Deleted"}`): kept, inactive, no amounts."""
    invoice_id = _record_id(raw, "Invoice")
    problems = Problems(warnings=["status: deleted in QuickBooks"])
    return {
        "invoice_id": invoice_id, "invoice_number": None, "customer_id": None, "invoice_date": None,
        "due_date": None, "amount_cents": None, "amount_due_cents": None, "currency": default_currency,
        "payment_status": None, "is_active": False, "actg_class_id": None, "has_auto_pay": False,
        "last_sent_at": None, "description": None, "created_at": None,
        "updated_at": _timestamp(raw, problems, "MetaData", "LastUpdatedTime"), "synced_at": synced_at,
        **problems.columns(),
    }


def _payment_type(raw: Mapping[str, Any]) -> str | None:
    name = (_text(raw, "PaymentMethodRef", "name") or "").lower()
    if not name:
        return None
    return next((code for word, code in _METHOD_CODES if word in name), "5")


def received_payment_rows(
    raw: Any,
    *,
    currency_of: Callable[[str | None], str | None],
    default_currency: str,
    synced_at: datetime,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One Payment -> (payment row, one line row per invoice it is applied to)."""
    payment_id = _record_id(raw, "Payment")
    if raw.get("status") == "Deleted":
        return payment_tombstone(raw, default_currency=default_currency, synced_at=synced_at), []
    problems = Problems()
    customer_id = _ref(raw, "CustomerRef")
    currency = _txn_currency(raw, customer_id, currency_of, default_currency, problems)
    voided = is_voided(raw)
    row = {
        "received_payment_id": payment_id,
        "customer_id": customer_id,
        "payment_date": _date(raw, "TxnDate", problems, required=True),
        "amount_cents": _cents(raw, "TotalAmt", currency, problems),
        "currency": currency,
        "payment_type": _payment_type(raw),
        "status": "voided" if voided else "0",
        "is_online": raw.get("ProcessPayment") is True,
        "ref_number": _text(raw, "PaymentRefNum"),
        "description": _text(raw, "PrivateNote"),
        "created_at": _timestamp(raw, problems, "MetaData", "CreateTime"),
        "updated_at": _timestamp(raw, problems, "MetaData", "LastUpdatedTime"),
        "synced_at": synced_at,
    }
    lines = _payment_lines(raw, payment_id, currency, problems, synced_at)
    return {**row, **problems.columns()}, lines


def _payment_lines(raw: Mapping[str, Any], payment_id: str, currency: str, problems: Problems,
                   synced_at: datetime) -> list[dict[str, Any]]:
    lines = raw.get("Line") or []
    if not isinstance(lines, list):
        problems.invalid.append("Line: not an array")
        return []
    rows = []
    for position, line in enumerate(lines):
        links = line.get("LinkedTxn") if isinstance(line, Mapping) else None
        invoices = [link for link in links or [] if isinstance(link, Mapping) and link.get("TxnType") == "Invoice"]
        if not invoices:
            continue  # e.g. a credit memo applied inside the payment: not money against an invoice
        line_problems = Problems()
        amount = _cents(line, "Amount", currency, line_problems)
        problems.invalid.extend(f"Line[{position}].{p}" for p in line_problems.invalid)
        for extra, link in enumerate(invoices):
            invoice_id = _text(link, "TxnId")
            if invoice_id is None:
                problems.invalid.append(f"Line[{position}].LinkedTxn: missing TxnId")
            rows.append({
                "invoice_pay_id": f"{payment_id}:{position}" + (f".{extra}" if extra else ""),
                "received_payment_id": payment_id,
                "invoice_id": invoice_id,
                "amount_cents": amount,
                "currency": currency,
                "synced_at": synced_at,
            })
    return rows


def payment_tombstone(raw: Any, *, default_currency: str, synced_at: datetime) -> dict[str, Any]:
    payment_id = _record_id(raw, "Payment")
    problems = Problems(warnings=["status: deleted in QuickBooks"])
    return {
        "received_payment_id": payment_id, "customer_id": None, "payment_date": None, "amount_cents": None,
        "currency": default_currency, "payment_type": None, "status": "deleted", "is_online": False,
        "ref_number": None, "description": None, "created_at": None,
        "updated_at": _timestamp(raw, problems, "MetaData", "LastUpdatedTime"), "synced_at": synced_at,
        **problems.columns(),
    }
