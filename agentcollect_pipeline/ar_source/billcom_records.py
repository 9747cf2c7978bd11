"""Bill.com v2 objects -> rows of the warehouse tables. Pure functions: no I/O, no Dagster.

A record that cannot be keyed (no id) is rejected; every other problem keeps the row and marks it:
`invalid` when the collections rules must not act on it (bad amount, unknown customer, bad dates),
`warning` when it is usable but incomplete (missing email, undialable phone). Each problem names the
field, so finance can fix it in Bill.com.
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
from agentcollect_pipeline.clients.billcom import parse_timestamp

ZERO_ID = "00000000000000000000"


def _record_id(raw: Any, entity: str) -> str:
    if not isinstance(raw, Mapping):
        raise RecordRejected(f"{entity}: expected an object, got {type(raw).__name__}")
    record_id = raw.get("id")
    if not isinstance(record_id, str) or not record_id.strip():
        raise RecordRejected(f"{entity} without an id (fields: {sorted(raw)[:8]})")
    return record_id


def _text(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _ref(raw: Mapping[str, Any], key: str) -> str | None:
    """An id reference; Bill.com writes unset references as zero-ids or "0"."""
    value = _text(raw, key)
    return None if value in (None, "0", ZERO_ID) else value


def _flag(raw: Mapping[str, Any], key: str, problems: Problems, *, default: bool = False) -> bool:
    value = raw.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1"):
        return True
    if str(value).lower() in ("false", "0"):
        return False
    problems.warnings.append(f"{key}: unrecognised flag {value!r}")
    return default


def _is_active(raw: Mapping[str, Any], problems: Problems) -> bool:
    # v2 uses "1" active / "2" inactive (string); accept booleans from servers that send them.
    value = raw.get("isActive")
    if value in ("1", 1, True, "true"):
        return True
    if value in ("2", 2, False, "false", "0", 0):
        return False
    problems.invalid.append(f"isActive: unrecognised value {value!r}")
    return False


def _timestamp(raw: Mapping[str, Any], key: str, problems: Problems) -> datetime | None:
    return parsed(raw.get(key), key, problems, lambda value: parse_timestamp(str(value)), what="timestamp")


def _date(raw: Mapping[str, Any], key: str, problems: Problems, *, required: bool) -> date | None:
    return parsed(raw.get(key), key, problems, iso_date, what="yyyy-MM-dd date", required=required)


def _cents(raw: Mapping[str, Any], key: str, currency: str, problems: Problems) -> int | None:
    return cents(raw.get(key), key, currency, problems)


def customer_row(raw: Any, *, default_currency: str, synced_at: datetime) -> dict[str, Any]:
    customer_id = _record_id(raw, "Customer")
    problems = Problems()
    country = _text(raw, "billAddressCountry")
    phone = _text(raw, "phone")
    phone_e164 = normalise_phone(phone, region_for_country(country))
    email = _text(raw, "email")
    contact_checks(email, phone, phone_e164, problems)
    row = {
        "customer_id": customer_id,
        "name": _text(raw, "name"),
        "company_name": _text(raw, "companyName"),
        "email": email,
        "phone": phone,
        "phone_e164": phone_e164,
        "alt_phone": _text(raw, "altPhone"),
        "account_type": _text(raw, "accountType"),
        "parent_customer_id": _ref(raw, "parentCustomerId"),
        "bill_address1": _text(raw, "billAddress1"),
        "bill_address2": _text(raw, "billAddress2"),
        "bill_city": _text(raw, "billAddressCity"),
        "bill_state": _text(raw, "billAddressState"),
        "bill_zip": _text(raw, "billAddressZip"),
        "bill_country": country,
        "currency": currency_code(raw.get("invoiceCurrency"), "invoiceCurrency", default_currency, problems),
        "is_active": _is_active(raw, problems),
        "has_authorized_to_charge": _flag(raw, "hasAuthorizedToCharge", problems),
        "description": _text(raw, "description"),
        "created_at": _timestamp(raw, "createdTime", problems),
        "updated_at": _timestamp(raw, "updatedTime", problems),
        "synced_at": synced_at,
    }
    if row["name"] is None:
        problems.warnings.append("name: missing")
    return {**row, **problems.columns()}


def contact_row(raw: Any, *, customer_regions: Mapping[str, str | None], synced_at: datetime) -> dict[str, Any]:
    contact_id = _record_id(raw, "CustomerContact")
    problems = Problems()
    customer_id = _ref(raw, "customerId")
    if customer_id is None:
        problems.invalid.append("customerId: missing")
    phone = _text(raw, "phone")
    phone_e164 = normalise_phone(phone, customer_regions.get(customer_id or ""))
    email = _text(raw, "email")
    contact_checks(email, phone, phone_e164, problems)
    row = {
        "contact_id": contact_id,
        "customer_id": customer_id or "",
        "first_name": _text(raw, "firstName"),
        "last_name": _text(raw, "lastName"),
        "email": email,
        "phone": phone,
        "phone_e164": phone_e164,
        "is_active": _is_active(raw, problems),
        "created_at": _timestamp(raw, "createdTime", problems),
        "updated_at": _timestamp(raw, "updatedTime", problems),
        "synced_at": synced_at,
    }
    return {**row, **problems.columns()}


def invoice_row(
    raw: Any,
    *,
    currency_of: Callable[[str | None], str | None],
    default_currency: str,
    synced_at: datetime,
) -> dict[str, Any]:
    """`currency_of(customer_id)` gives the customer's currency, or None when the customer is unknown."""
    invoice_id = _record_id(raw, "Invoice")
    problems = Problems()
    customer_id = _ref(raw, "customerId")
    currency = customer_currency(customer_id, currency_of, "customerId", problems) or default_currency
    amount = _cents(raw, "amount", currency, problems)
    amount_due = _cents(raw, "amountDue", currency, problems)
    check_invoice_amounts(raw, problems, "amount", amount, "amountDue", amount_due)
    row = {
        "invoice_id": invoice_id,
        "invoice_number": _text(raw, "invoiceNumber"),
        "customer_id": customer_id,
        "invoice_date": _date(raw, "invoiceDate", problems, required=False),
        "due_date": _date(raw, "dueDate", problems, required=True),
        "amount_cents": amount,
        "amount_due_cents": amount_due,
        "currency": currency,
        "payment_status": _text(raw, "paymentStatus"),
        "is_active": _is_active(raw, problems),
        "actg_class_id": _ref(raw, "actgClassId"),
        "has_auto_pay": _flag(raw, "hasAutoPay", problems),
        "last_sent_at": _timestamp(raw, "lastSentTime", problems),
        "description": _text(raw, "description"),
        "created_at": _timestamp(raw, "createdTime", problems),
        "updated_at": _timestamp(raw, "updatedTime", problems),
        "synced_at": synced_at,
    }
    if row["invoice_number"] is None:
        problems.invalid.append("invoiceNumber: missing")
    return {**row, **problems.columns()}


def received_payment_rows(
    raw: Any,
    *,
    currency_of: Callable[[str | None], str | None],
    default_currency: str,
    synced_at: datetime,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One ReceivedPay -> (payment row, its invoice-pay lines)."""
    payment_id = _record_id(raw, "ReceivedPay")
    problems = Problems()
    customer_id = _ref(raw, "customerId")
    currency = customer_currency(customer_id, currency_of, "customerId", problems) or default_currency
    row = {
        "received_payment_id": payment_id,
        "customer_id": customer_id,
        "payment_date": _date(raw, "paymentDate", problems, required=True),
        "amount_cents": _cents(raw, "amount", currency, problems),
        "currency": currency,
        "payment_type": _text(raw, "paymentType"),
        "status": _text(raw, "status"),
        "is_online": _flag(raw, "isOnline", problems),
        "ref_number": _text(raw, "refNumber"),
        "description": _text(raw, "description"),
        "created_at": _timestamp(raw, "createdTime", problems),
        "updated_at": _timestamp(raw, "updatedTime", problems),
        "synced_at": synced_at,
    }
    lines = []
    pays = raw.get("invoicePays") or []
    if not isinstance(pays, list):
        problems.invalid.append("invoicePays: not an array")
        pays = []
    for position, pay in enumerate(pays):
        if not isinstance(pay, Mapping) or not _text(pay, "id"):
            problems.invalid.append(f"invoicePays[{position}]: missing id")
            continue
        line_problems = Problems()
        amount = _cents(pay, "amount", currency, line_problems)
        problems.invalid.extend(f"invoicePays[{position}].{p}" for p in line_problems.invalid)
        lines.append(
            {
                "invoice_pay_id": _text(pay, "id"),
                "received_payment_id": payment_id,
                "invoice_id": _ref(pay, "invoiceId"),
                "amount_cents": amount,
                "currency": currency,
                "synced_at": synced_at,
            }
        )
    return {**row, **problems.columns()}, lines
