"""A local stand-in for Bill.com's v2 API (see /work/shared/reference/billcom-v2.md, section 2 and the checklist).

One `BillComSandbox` holds an in-memory organisation and exposes it as a raw ASGI app:

- `/api/v2/...`: the v2 surface (form-encoded POST, JSON envelope, sessions, limits, BDC error codes).
- `/connect/v3/...`: the v3 subset AgentCollect uses (reference §3): `POST /v3/login` (JSON, its own sessions,
  then `sessionId` + `devKey` headers) and `POST /v3/invoices/{invoiceId}/payment-link` (`{customerId,
  email, returnUrl}` -> `{"paymentLink": url}`); errors are arrays of {timestamp, code, severity, category,
  message} (401 BDC_1109 for a bad session). The link opens `/p/{token}` here; paying through it
  (`pay_link`, or `POST /sandbox/payment-links/{token}/pay`) records an online ReceivedPay, as BILL would.
- `/sandbox/...`: a JSON control API for processes that cannot reach the Python object (demo, benchmark).

Money is `Decimal` inside and a JSON number with two decimals on the wire. All timestamps come from an
injectable `SandboxClock`, so tests can expire sessions or cross the hourly quota without waiting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import itertools
import json
import operator
import random
import re
import secrets
import sys
import threading
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs, unquote

from agentcollect_pipeline.asgi import read_body
from agentcollect_pipeline.sandboxes.common import (
    Fault,
    FaultQueue,
    SandboxClock,
    SandboxSurface,
    asgi_app,
    serve_lifespan,
)

__all__ = [
    "BillComSandbox",
    "SandboxClock",
    "SandboxConfig",
    "ZERO_ID",
    "fmt_date",
    "fmt_ts",
    "main",
    "parse_ts",
]

API_PREFIX = "/api/v2/"
ZERO_ID = "00000000000000000000"
CENT = Decimal("0.01")
ZERO = Decimal("0.00")

ENTITIES = ("Customer", "Invoice", "CustomerContact", "ReceivedPay", "Message")
LISTABLE = ("Invoice", "Customer", "CustomerContact", "ReceivedPay")
# bdc_1121 / bdc_1130 stand in for a Bill.com that lacks an inferred endpoint or filter (UNVERIFIED ones).
FAULT_KINDS = ("http_500", "http_503", "http_429", "bdc_1322", "bdc_1144", "bdc_1109", "bdc_1121", "bdc_1130",
               "malformed", "delay")
ID_PREFIX = {"Customer": "0cu", "Invoice": "00e", "CustomerContact": "0cc", "ReceivedPay": "0rp",
             "InvoicePay": "0ip", "InvoiceLineItem": "0il", "Message": "act"}


# --------------------------------------------------------------------------------------------------------
# Time


def fmt_ts(moment: datetime) -> str:
    """Bill.com's timestamp form, always in UTC so that string order equals time order."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    # isoformat is C code; the sandbox formats a few hundred thousand of these while seeding.
    return moment.isoformat(timespec="milliseconds")[:-6] + "+0000"


def fmt_date(day: date) -> str:
    return day.isoformat()


_TS_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?)?(Z|[+-]\d{2}:?\d{2})?$"
)


def parse_ts(value: str) -> datetime:
    """Parse `yyyy-MM-dd['T'HH:mm[:ss[.SSS]]][Z|±hhmm|±hh:mm]` to an aware UTC datetime (naive means UTC)."""
    match = _TS_RE.match(value.strip()) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"not a timestamp: {value!r}")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    micro = int((fraction or "0").ljust(6, "0"))
    moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
                      micro, tzinfo=UTC)
    if offset and offset != "Z":
        sign = 1 if offset[0] == "+" else -1
        digits = offset[1:].replace(":", "")
        moment -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return moment


# --------------------------------------------------------------------------------------------------------
# Configuration, errors, wire encoding


@dataclass
class SandboxConfig:
    username: str = "sandbox-user"
    password: str = "sandbox-password"
    org_id: str = "00801SANDBOXORG000001"
    dev_key: str = "sandbox-dev-key"
    max_in_flight: int = 3
    requests_per_hour: int = 20000
    logins_per_hour: int = 200
    session_idle_seconds: float = 35 * 60
    page_max: int = 999
    error_http_status: int = 200
    latency_ms: float = 0.0
    org_name: str = "Sandbox Collections Co"
    user_id: str = "00601SANDBOXUSER0001"
    user_first_name: str = "Sandy"
    user_last_name: str = "Box"


class ApiError(Exception):
    def __init__(self, code: str, message: str, http_status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status


def _missing(field: str) -> ApiError:
    return ApiError("BDC_1108", f"Missing parameter value for parameter: {field}.")


def _invalid(field: str, detail: str) -> ApiError:
    return ApiError("BDC_1119", f"Invalid value for field {field}: {detail}")


_DEC_MARK = "\x1fdec:"
_DEC_RE = re.compile(r'"\\u001fdec:(-?[0-9]+\.[0-9]+)"')


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"{_DEC_MARK}{value.quantize(CENT)}"
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")


def dumps(payload: Any) -> bytes:
    """JSON with Decimal money written as numbers with exactly two decimals (json cannot do that natively)."""
    text = json.dumps(payload, default=_json_default, separators=(",", ":"))
    return _DEC_RE.sub(r"\1", text).encode("utf-8")


def _success(data: Any) -> dict[str, Any]:
    return {"response_status": 0, "response_message": "Success", "response_data": data}


def _failure(code: str, message: str) -> dict[str, Any]:
    return {"response_status": 1, "response_message": "Error",
            "response_data": {"error_code": code, "error_message": message}}


def _money(value: Any, field: str) -> Decimal:
    if isinstance(value, bool) or value is None or isinstance(value, list | dict):
        raise _invalid(field, f"expected a number, got {value!r}")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise _invalid(field, f"expected a number, got {value!r}") from None
    if not amount.is_finite():
        raise _invalid(field, f"expected a number, got {value!r}")
    return amount.quantize(CENT)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


# --------------------------------------------------------------------------------------------------------
# Entity shapes. Records are stored sparse (only what differs per record); templates fill the rest on output.

CUSTOMER_TEMPLATE: dict[str, Any] = {
    "entity": "Customer", "id": "", "isActive": "1", "createdTime": None, "updatedTime": None,
    "name": "", "shortName": "", "parentCustomerId": ZERO_ID, "companyName": "", "contactFirstName": "",
    "contactLastName": "", "accNumber": "",
    "billAddress1": "", "billAddress2": "", "billAddress3": "", "billAddress4": "", "billAddressCity": "",
    "billAddressState": "", "billAddressCountry": "", "billAddressZip": "",
    "shipAddress1": "", "shipAddress2": "", "shipAddress3": "", "shipAddress4": "", "shipAddressCity": "",
    "shipAddressState": "", "shipAddressCountry": "", "shipAddressZip": "",
    "email": "", "phone": "", "altPhone": "", "fax": "", "description": "", "printAs": "",
    "mergedIntoId": ZERO_ID, "hasAuthorizedToCharge": False, "accountType": "1",
}

INVOICE_TEMPLATE: dict[str, Any] = {
    "entity": "Invoice", "id": "", "isActive": "1", "createdTime": None, "updatedTime": None,
    "customerId": ZERO_ID, "invoiceNumber": "", "invoiceDate": None, "dueDate": None, "glPostingDate": None,
    "amount": ZERO, "amountDue": ZERO, "paymentStatus": "1", "description": "", "poNumber": "",
    "isToBePrinted": False, "isToBeEmailed": False, "lastSentTime": None, "itemSalesTax": ZERO_ID,
    "salesTaxPercentage": 0, "salesTaxTotal": ZERO, "terms": "", "salesRep": "", "FOB": "", "shipDate": None,
    "shipMethod": "", "departmentId": ZERO_ID, "locationId": ZERO_ID, "actgClassId": ZERO_ID,
    "jobId": ZERO_ID, "payToBankAccountId": ZERO_ID, "payToChartOfAccountId": ZERO_ID,
    "invoiceTemplateId": ZERO_ID, "hasAutoPay": False, "source": "0", "emailDeliveryOption": "1",
    "mailDeliveryOption": "0", "creditAmount": ZERO,
}

CONTACT_TEMPLATE: dict[str, Any] = {
    "entity": "CustomerContact", "id": "", "customerId": ZERO_ID, "isActive": "1", "createdTime": None,
    "updatedTime": None, "firstName": "", "lastName": "", "email": "", "phone": "",
}

RECEIVED_PAY_TEMPLATE: dict[str, Any] = {
    "entity": "ReceivedPay", "id": "", "createdTime": None, "updatedTime": None, "customerId": ZERO_ID,
    "status": "0", "paymentDate": None, "depositToAccountId": ZERO_ID, "isOnline": False, "paymentType": "1",
    "amount": ZERO, "description": "", "refNumber": "", "convFeeAmount": ZERO, "payToBankAccountId": ZERO_ID,
    "rPConvFee": [], "invoicePays": [],
}

MESSAGE_TEMPLATE: dict[str, Any] = {
    "entity": "Message", "id": "", "objectId": "", "message": "", "isPublic": False, "createdDate": None,
    "usersId": "", "from": {},
}

TEMPLATES = {"Customer": CUSTOMER_TEMPLATE, "Invoice": INVOICE_TEMPLATE, "CustomerContact": CONTACT_TEMPLATE,
             "ReceivedPay": RECEIVED_PAY_TEMPLATE, "Message": MESSAGE_TEMPLATE}
MONEY_FIELDS = {"Invoice": ("amount", "amountDue", "salesTaxTotal", "creditAmount"),
                "ReceivedPay": ("amount", "convFeeAmount"), "Customer": (), "CustomerContact": (), "Message": ()}
TIMESTAMP_FIELDS = ("createdTime", "updatedTime", "lastSentTime", "createdDate")

_DT, _DATE, _STR, _NUM, _BOOL = "datetime", "date", "str", "num", "bool"
_COMMON_FIELDS = {"id": _STR, "createdTime": _DT, "updatedTime": _DT}
FILTER_FIELDS: dict[str, dict[str, str]] = {
    "Invoice": {**_COMMON_FIELDS, "customerId": _STR, "isActive": _STR, "dueDate": _DATE, "invoiceDate": _DATE,
                "paymentStatus": _STR, "invoiceNumber": _STR, "actgClassId": _STR, "amount": _NUM,
                "amountDue": _NUM, "hasAutoPay": _BOOL, "lastSentTime": _DT},
    "Customer": {**_COMMON_FIELDS, "isActive": _STR, "name": _STR, "companyName": _STR, "email": _STR,
                 "parentCustomerId": _STR, "accountType": _STR, "invoiceCurrency": _STR},
    "CustomerContact": {**_COMMON_FIELDS, "customerId": _STR, "isActive": _STR, "email": _STR},
    "ReceivedPay": {**_COMMON_FIELDS, "customerId": _STR, "paymentDate": _DATE, "status": _STR,
                    "paymentType": _STR, "refNumber": _STR, "isOnline": _BOOL, "amount": _NUM},
}
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, ">": operator.gt, "<=": operator.le, ">=": operator.ge,
}
_LINE_ITEMS = ("Consulting services", "Monthly subscription", "Hardware supplies", "Freight and handling",
               "Maintenance contract", "Installation labour", "Software licence", "Training session")


def _conv(kind: str, value: Any, field: str) -> Any:
    """Normalise a filter value to the stored representation so that plain comparisons work."""
    try:
        if kind == _DT:
            return fmt_ts(parse_ts(value))
        if kind == _DATE:
            if isinstance(value, str) and len(value.strip()) == 10:
                return date.fromisoformat(value.strip()).isoformat()
            return parse_ts(value).date().isoformat()
        if kind == _NUM:
            if isinstance(value, bool):
                raise ValueError
            return Decimal(str(value))
        if kind == _BOOL:
            if value in (True, "true", "True", "1", 1):
                return True
            if value in (False, "false", "False", "0", 0):
                return False
            raise ValueError
        if isinstance(value, list | dict) or value is None:
            raise ValueError
        return value if isinstance(value, str) else str(value)
    except (ValueError, TypeError, InvalidOperation):
        raise ApiError("BDC_1129", f"Invalid parameter value: {value!r} for filter field {field}.") from None


class _Session:
    __slots__ = ("calls", "dev_key", "id", "last_used", "org_id")

    def __init__(self, session_id: str, dev_key: str, org_id: str, now: datetime) -> None:
        self.id = session_id
        self.dev_key = dev_key
        self.org_id = org_id
        self.last_used = now
        self.calls = 0


def _op_name(path: str) -> str:
    """Stats/fault key of a request path: "/api/v2/List/Invoice.json" -> "List/Invoice"."""
    name = path[len(API_PREFIX):] if path.startswith(API_PREFIX) else path.lstrip("/")
    return name[:-5] if name.endswith(".json") else name


def _norm_fault_path(path: str | None) -> str | None:
    return None if path in (None, "") else _op_name(path if path.startswith("/") else "/api/v2/" + path)


# --------------------------------------------------------------------------------------------------------
# The sandbox


class BillComSandbox(SandboxSurface):
    """In-memory Bill.com organisation served as an ASGI app (`.app`). Thread-safe for test-side calls."""

    def __init__(self, config: SandboxConfig | None = None, clock: SandboxClock | None = None) -> None:
        self.config = config or SandboxConfig()
        self.clock = clock or SandboxClock()
        self._lock = threading.RLock()
        self._store: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in ENTITIES}
        self._messages_by_object: dict[str, list[str]] = {}
        self._customer_credit: dict[str, Decimal] = {}
        self._id_counters: dict[str, itertools.count[int]] = {}
        self._list_cache: dict[str, dict[str, list[str]]] = {name: {} for name in ENTITIES}
        self._invoice_numbers: set[str] = set()
        self._sessions: dict[str, _Session] = {}
        self._in_flight: dict[tuple[str, str], int] = {}
        self._hourly: dict[tuple[str, str, datetime], int] = {}
        self._faults = FaultQueue(FAULT_KINDS, _norm_fault_path)
        self._latency_ms = float(self.config.latency_ms)
        self._expire_after_calls: int | None = None
        self._v3_sessions: dict[str, _Session] = {}
        self._payment_links: dict[str, dict[str, Any]] = {}  # token -> invoiceId, customerId, email, ...
        self.reset_stats()

        self._app = asgi_app(self._asgi)

    # ---- public Python surface ------------------------------------------------------------------------

    @property
    def credentials(self) -> dict[str, str]:
        cfg = self.config
        return {"username": cfg.username, "password": cfg.password, "org_id": cfg.org_id, "dev_key": cfg.dev_key}

    def reset_stats(self) -> None:
        with self._lock:
            in_flight = sum(getattr(self, "_in_flight", {}).values())
            self._stats: dict[str, Any] = {"calls": {}, "total_calls": 0, "logins": 0,
                                           "max_in_flight_seen": in_flight, "rejected_concurrent": 0,
                                           "errors": {}, "faults_injected": 0}

    def seed(self, seed: int = 7, invoices: int = 2000, customers: int = 400) -> dict[str, int]:
        """Replace the organisation with a deterministic generated book (see seed.py)."""
        from .seed import generate

        with self._lock:
            for name in ENTITIES:
                self._store[name].clear()
                self._list_cache[name].clear()
            self._messages_by_object.clear()
            self._customer_credit.clear()
            self._invoice_numbers.clear()
            self._id_counters.clear()
            book = generate(seed=seed, invoices=invoices, customers=customers, now=self.clock.now(),
                            new_id=self._new_id)
            for entity, records in book.items():
                store = self._store[entity]
                for record in records:
                    store[record["id"]] = record
            self._invoice_numbers.update(r["invoiceNumber"] for r in self._store["Invoice"].values())
            return {entity: len(records) for entity, records in self._store.items()}

    def inject(self, kind: str, path: str | None = None, times: int = 1, delay_s: float = 0.0,
               after_processing: bool = False) -> None:
        """Queue `times` scripted faults for requests to `path` ("RecordARPayment", "List/Invoice.json"...)."""
        with self._lock:
            self._faults.add(kind, path, times, delay_s, after_processing)

    def clear_faults(self) -> None:
        """Drop queued faults and return standing ones to the configured defaults."""
        with self._lock:
            self._faults.clear()
            self._latency_ms = float(self.config.latency_ms)
            self._expire_after_calls = None

    def set_faults(self, latency_ms: float | None = None, expire_sessions_after_calls: int | None = None) -> None:
        """Set standing faults. None leaves a setting as it is; 0 turns it off.

        Leaving unnamed settings alone matters for the benchmark: a server started with --latency-ms must
        keep that latency when a later call only asks for session expiry.
        """
        with self._lock:
            if latency_ms is not None:
                self._latency_ms = max(float(latency_ms), 0.0)
            if expire_sessions_after_calls is not None:
                self._expire_after_calls = int(expire_sessions_after_calls) or None

    def counts(self) -> dict[str, int]:
        """Records per entity: what a benchmark needs without downloading the whole book."""
        with self._lock:
            return {entity: len(records) for entity, records in self._store.items()}

    def entities(self, entity: str) -> list[dict[str, Any]]:
        with self._lock:
            store = self._entity_store(entity)
            return [self._materialize(entity, record, nested=True) for record in store.values()]

    def get(self, entity: str, object_id: str) -> dict[str, Any]:
        with self._lock:
            record = self._entity_store(entity).get(object_id)
            if record is None:
                raise KeyError(f"{entity} {object_id} not found")
            return self._materialize(entity, record, nested=True)

    def customer_credit(self, customer_id: str) -> Decimal:
        """Unapplied money recorded for a customer (payments larger than what they were applied to)."""
        with self._lock:
            return self._customer_credit.get(customer_id, ZERO)

    def add_customer(self, **fields: Any) -> dict[str, Any]:
        with self._lock:
            record = self._new_record("Customer", fields)
            record.setdefault("name", f"Customer {record['id'][-6:]}")
            record.setdefault("companyName", record["name"])
            self._insert("Customer", record)
            return self._materialize("Customer", record, nested=True)

    def add_invoice(self, **fields: Any) -> dict[str, Any]:
        with self._lock:
            record = self._new_record("Invoice", fields)
            today = self.clock.now().date()
            if "customerId" not in record:
                record["customerId"] = next(iter(self._store["Customer"]), ZERO_ID)
            record.setdefault("amount", Decimal("100.00"))
            record.setdefault("amountDue", record["amount"])
            record.setdefault("invoiceDate", fmt_date(today))
            record.setdefault("dueDate", fmt_date(today + timedelta(days=30)))
            if "paymentStatus" not in record:
                record["paymentStatus"] = self._status_for(record["amount"], record["amountDue"], "1")
            if "invoiceNumber" not in record:
                record["invoiceNumber"] = self._next_invoice_number()
            self._invoice_numbers.add(record["invoiceNumber"])
            self._insert("Invoice", record)
            return self._materialize("Invoice", record, nested=True)

    def add_contact(self, **fields: Any) -> dict[str, Any]:
        with self._lock:
            record = self._new_record("CustomerContact", fields)
            if "customerId" not in record:
                record["customerId"] = next(iter(self._store["Customer"]), ZERO_ID)
            self._insert("CustomerContact", record)
            return self._materialize("CustomerContact", record, nested=True)

    def update_invoice(self, invoice_id: str, **fields: Any) -> dict[str, Any]:
        """Change fields as Bill.com's own UI would; paymentStatus follows amountDue unless given."""
        with self._lock:
            record = self._require("Invoice", invoice_id)
            clean = self._clean_fields("Invoice", fields)
            record.update(clean)
            if "paymentStatus" not in clean and ("amountDue" in clean or "amount" in clean):
                record["paymentStatus"] = self._status_for(record["amount"], record["amountDue"],
                                                           record.get("paymentStatus", "1"))
            self._touch("Invoice", record)
            return self._materialize("Invoice", record, nested=True)

    def void_invoice(self, invoice_id: str) -> dict[str, Any]:
        with self._lock:
            record = self._require("Invoice", invoice_id)
            record["isActive"] = "2"
            self._touch("Invoice", record)
            return self._materialize("Invoice", record, nested=True)

    def pay_online(self, invoice_id: str, amount: Decimal | None = None) -> dict[str, Any]:
        """A customer pays through BILL's own payment link: a ReceivedPay appears without any API call."""
        with self._lock:
            invoice = self._require("Invoice", invoice_id)
            amount = invoice["amountDue"] if amount is None else _money(amount, "amount")
            if amount <= 0:
                raise ValueError(f"invoice {invoice_id} has nothing due; pass an explicit positive amount")
            today = fmt_date(self.clock.now().date())
            payment = self._record_payment(
                customer_id=invoice["customerId"], payment_date=today, payment_type="3", amount=amount,
                pays=[(invoice_id, amount)], description="Paid online via BILL payment link",
                ref_number="", online=True, deposit_to=ZERO_ID)
            return payment

    def mutate(self, entity: str = "Invoice", count: int = 1000, seed: int = 1) -> list[str]:
        """Edit `count` random records the way day-to-day activity would, bumping their updatedTime."""
        with self._lock:
            store = self._entity_store(entity)
            rng = random.Random(seed)
            ids = rng.sample(sorted(store), min(count, len(store)))
            stamp = self.clock.now().strftime("%Y-%m-%d %H:%M")
            for object_id in ids:
                record = store[object_id]
                if entity == "Invoice":
                    due = record.get("amountDue", ZERO)
                    if (record.get("isActive", "1") == "1" and due > CENT
                            and record.get("paymentStatus") in ("1", "2") and rng.random() < 0.4):
                        # A credit memo applied in BILL: the balance drops with no ReceivedPay.
                        credit = (due * Decimal(rng.randint(10, 60)) / 100).quantize(CENT)
                        record["amountDue"] = due - credit
                        record["creditAmount"] = record.get("creditAmount", ZERO) + credit
                        record["paymentStatus"] = self._status_for(record["amount"], record["amountDue"], "1")
                    else:
                        record["description"] = f"Revised {stamp}: {record.get('description', '')}"[:200]
                elif entity == "Customer":
                    record["description"] = f"Account reviewed {stamp}"
                elif entity == "CustomerContact":
                    record["phone"] = f"(415) 555-01{rng.randint(0, 99):02d}"
                elif entity == "ReceivedPay":
                    record["description"] = f"Memo updated {stamp}"
                else:
                    raise ValueError(f"cannot mutate {entity}")
                self._touch(entity, record)
            return ids

    # ---- internals: records -----------------------------------------------------------------------------

    def _entity_store(self, entity: str) -> dict[str, dict[str, Any]]:
        try:
            return self._store[entity]
        except KeyError:
            raise KeyError(f"unknown entity {entity!r}; expected one of {ENTITIES}") from None

    def _require(self, entity: str, object_id: str) -> dict[str, Any]:
        record = self._entity_store(entity).get(object_id)
        if record is None:
            raise KeyError(f"{entity} {object_id} not found")
        return record

    def _new_id(self, kind: str) -> str:
        """20-character ids with the entity's prefix; a bijective scramble of a counter keeps them unique."""
        counter = self._id_counters.setdefault(kind, itertools.count(1))
        n = (next(counter) * _ID_MULTIPLIER + zlib.crc32(kind.encode())) % _ID_SPACE
        table = _base62_triples()
        a, e = divmod(n, 238328)
        a, d = divmod(a, 238328)
        a, c = divmod(a, 238328)
        a, b = divmod(a, 238328)
        return ID_PREFIX[kind] + "01" + table[a] + table[b] + table[c] + table[d] + table[e]

    def _next_invoice_number(self) -> str:
        n = len(self._invoice_numbers) + 1
        while f"INV-{n:06d}" in self._invoice_numbers:
            n += 1
        return f"INV-{n:06d}"

    def _clean_fields(self, entity: str, fields: dict[str, Any]) -> dict[str, Any]:
        clean: dict[str, Any] = {}
        for key, value in fields.items():
            if key in ("entity", "id"):
                continue
            if key in MONEY_FIELDS.get(entity, ()):
                value = _money(value, key)
            elif key in TIMESTAMP_FIELDS and value is not None:
                value = fmt_ts(value if isinstance(value, datetime) else parse_ts(value))
            elif isinstance(value, date) and not isinstance(value, datetime):
                value = fmt_date(value)
            clean[key] = value
        return clean

    def _new_record(self, entity: str, fields: dict[str, Any]) -> dict[str, Any]:
        now = fmt_ts(self.clock.now())
        record: dict[str, Any] = {"id": fields.get("id") or self._new_id(entity)}
        record.update(self._clean_fields(entity, fields))
        record.setdefault("createdTime", now)
        record.setdefault("updatedTime", now)
        return record

    def _insert(self, entity: str, record: dict[str, Any]) -> None:
        self._store[entity][record["id"]] = record
        self._list_cache[entity].clear()

    def _touch(self, entity: str, record: dict[str, Any]) -> None:
        record["updatedTime"] = fmt_ts(self.clock.now())
        self._list_cache[entity].clear()

    @staticmethod
    def _status_for(amount: Decimal, amount_due: Decimal, current: str) -> str:
        if amount_due <= 0 and amount > 0:
            return "0"
        if 0 < amount_due < amount:
            return "2"
        return "4" if current == "4" else "1"

    def _materialize(self, entity: str, record: dict[str, Any], nested: bool) -> dict[str, Any]:
        out = dict(TEMPLATES[entity])
        out.update(record)
        if entity == "Invoice":
            if out["glPostingDate"] is None:
                out["glPostingDate"] = out["invoiceDate"]
            if nested:
                out["invoiceLineItems"] = copy.deepcopy(record["_lines"]) if "_lines" in record \
                    else self._derived_lines(out)
        elif entity in ("ReceivedPay", "Message"):
            out = copy.deepcopy(out)
        for key in [k for k in out if k.startswith("_")]:
            del out[key]
        return out

    @staticmethod
    def _derived_lines(invoice: dict[str, Any]) -> list[dict[str, Any]]:
        # Line items are derived from the invoice so 100k invoices need not store ~200k extra dicts,
        # and they stay consistent with `amount` whatever edits happen later.
        invoice_id, amount = invoice["id"], invoice["amount"]
        h = zlib.crc32(invoice_id.encode())
        n = 1 if amount <= 0 else 1 + h % 3
        share = (amount / n).quantize(CENT)
        lines = []
        for k in range(n):
            part = amount - share * (n - 1) if k == n - 1 else share
            lines.append({
                "entity": "InvoiceLineItem", "id": f"0il{invoice_id[3:19]}{k}", "invoiceId": invoice_id,
                "itemId": f"0ii01SANDBOXITEM{(h >> k) % 8:04d}", "quantity": 1, "amount": part, "price": part,
                "serviceDate": None, "ratePercent": None, "chartOfAccountId": ZERO_ID, "departmentId": ZERO_ID,
                "locationId": ZERO_ID, "actgClassId": invoice["actgClassId"], "jobId": ZERO_ID,
                "description": _LINE_ITEMS[(h >> (3 * k)) % len(_LINE_ITEMS)], "taxable": False,
                "taxCode": "Non",
            })
        return lines

    # ---- internals: queries -----------------------------------------------------------------------------

    def _query(self, entity: str, filters: list[Any], sort: list[Any]) -> list[str]:
        key = json.dumps([filters, sort], sort_keys=True, default=str)
        cache = self._list_cache[entity]
        ids = cache.get(key)
        if ids is not None:
            return ids
        predicates = [self._compile_filter(entity, spec) for spec in filters]
        sorters = [self._compile_sort(entity, spec) for spec in sort]
        records: Iterable[dict[str, Any]] = self._store[entity].values()
        for predicate in predicates:
            records = filter(predicate, records)
        selected = list(records)
        # Python's sort is stable, so sorting by the keys last-to-first yields a multi-key order whose
        # ties keep insertion order: a stable default that makes start/max paging deterministic.
        for getter, asc in reversed(sorters):
            try:
                selected.sort(key=getter, reverse=not asc)
            except TypeError:  # nulls (e.g. lastSentTime) cannot compare with strings: nulls sort first
                selected.sort(key=lambda r, g=getter: (g(r) is not None, g(r) or ""), reverse=not asc)
        ids = [record["id"] for record in selected]
        if len(cache) > 64:
            cache.clear()
        cache[key] = ids
        return ids

    def _compile_filter(self, entity: str, spec: Any) -> Callable[[dict[str, Any]], bool]:
        if not isinstance(spec, dict) or not {"field", "op", "value"} <= set(spec):
            raise ApiError("BDC_1129", f"Invalid parameter value: each filter needs field, op and value: {spec!r}.")
        field, op, value = spec["field"], spec["op"], spec["value"]
        kind = FILTER_FIELDS[entity].get(field)
        if kind is None:
            raise ApiError("BDC_1130", f"Invalid list filter field: {field}.")
        default = TEMPLATES[entity].get(field)
        if op in ("in", "nin"):
            raw = value if isinstance(value, list) else str(value).split(",")
            wanted = {_conv(kind, item.strip() if isinstance(item, str) else item, field) for item in raw}
            if op == "in":
                return lambda r: r.get(field, default) in wanted
            return lambda r: r.get(field, default) not in wanted
        compare = _OPS.get(op)
        if compare is None:
            raise ApiError("BDC_1131", f"Invalid list filter operator: {op}.")
        target = _conv(kind, value, field)
        if op == "!=":
            return lambda r: r.get(field, default) != target

        def predicate(record: dict[str, Any]) -> bool:
            current = record.get(field, default)
            return current is not None and compare(current, target)

        return predicate

    def _compile_sort(self, entity: str, spec: Any) -> tuple[Callable[[dict[str, Any]], Any], bool]:
        if not isinstance(spec, dict) or "field" not in spec:
            raise ApiError("BDC_1129", f"Invalid parameter value: sort entries need a field: {spec!r}.")
        field = spec["field"]
        if field not in FILTER_FIELDS[entity] and field not in TEMPLATES[entity]:
            raise ApiError("BDC_1130", f"Invalid list sort field: {field}.")
        asc_raw = spec.get("asc", True)
        if isinstance(asc_raw, str):
            if asc_raw.strip().lower() not in ("true", "false"):
                raise ApiError("BDC_1129", f"Invalid parameter value: asc={asc_raw!r}.")
            asc = asc_raw.strip().lower() == "true"
        else:
            asc = bool(asc_raw)
        default = TEMPLATES[entity].get(field)

        def getter(record: dict[str, Any]) -> Any:
            return record.get(field, default)

        return getter, asc

    # ---- internals: payments ----------------------------------------------------------------------------

    def _record_payment(self, *, customer_id: str, payment_date: str, payment_type: str, amount: Decimal,
                        pays: list[tuple[str, Decimal]], description: str, ref_number: str, online: bool,
                        deposit_to: str) -> dict[str, Any]:
        now = fmt_ts(self.clock.now())
        invoice_pays = []
        for invoice_id, applied in pays:
            invoice = self._store["Invoice"][invoice_id]
            # Applying more than is due is accepted (the excess becomes credit) rather than rejected,
            # so that a client double-posting is always visible as a second ReceivedPay.
            invoice["amountDue"] = max(invoice["amountDue"] - applied, ZERO)
            invoice["paymentStatus"] = "0" if invoice["amountDue"] <= 0 else "2"
            self._touch("Invoice", invoice)
            invoice_pays.append({"entity": "InvoicePay", "id": self._new_id("InvoicePay"), "invoiceId": invoice_id,
                                 "amount": applied, "createdTime": now, "updatedTime": now})
        unapplied = amount - sum((applied for _, applied in pays), ZERO)
        if unapplied > 0:
            self._customer_credit[customer_id] = self._customer_credit.get(customer_id, ZERO) + unapplied
        record: dict[str, Any] = {
            "id": self._new_id("ReceivedPay"), "createdTime": now, "updatedTime": now, "customerId": customer_id,
            "status": "0", "paymentDate": payment_date, "depositToAccountId": deposit_to, "isOnline": online,
            "paymentType": payment_type, "amount": amount, "description": description, "refNumber": ref_number,
            "invoicePays": invoice_pays,
        }
        if online:
            record["onlinePayment"] = True
        self._insert("ReceivedPay", record)
        return self._materialize("ReceivedPay", record, nested=True)

    # ---- v2 operations ------------------------------------------------------------------------------------

    def _check_credentials(self, form: dict[str, str], fields: tuple[str, ...]) -> None:
        """Shared by Login and ListOrgs, which also share the hourly login quota."""
        cfg = self.config
        for field in fields:
            if not form.get(field):
                raise _missing(field)
        if form["devKey"] != cfg.dev_key:
            raise ApiError("BDC_1102", "Developer key is invalid.")
        self._count_hourly("login", form["devKey"], cfg.logins_per_hour)
        if form["userName"] != cfg.username or form["password"] != cfg.password:
            raise ApiError("BDC_1101", "User name and/or password do not match our records.")

    def _op_login(self, form: dict[str, str], scope: dict[str, Any]) -> dict[str, Any]:
        cfg = self.config
        self._check_credentials(form, ("userName", "password", "orgId", "devKey"))
        if form["orgId"] != cfg.org_id:
            raise ApiError("BDC_1101", "User name and/or password do not match our records for this orgId.")
        session_id = f"!{secrets.token_urlsafe(24)}"
        self._sessions[session_id] = _Session(session_id, form["devKey"], cfg.org_id, self.clock.now())
        self._stats["logins"] += 1
        return {"sessionId": session_id, "orgId": cfg.org_id, "apiEndPoint": self._api_endpoint(scope),
                "usersId": cfg.user_id}

    def _op_logout(self, session: _Session, data: dict[str, Any]) -> dict[str, Any]:
        self._sessions.pop(session.id, None)
        return {}

    def _op_session_info(self, session: _Session, data: dict[str, Any]) -> dict[str, Any]:
        cfg = self.config
        return {"orgId": cfg.org_id, "orgName": cfg.org_name, "userId": cfg.user_id, "usersId": cfg.user_id,
                "userName": cfg.username, "firstName": cfg.user_first_name, "lastName": cfg.user_last_name}

    def _op_list(self, entity: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        start = self._int_param(data, "start", 0, minimum=0)
        limit = self._int_param(data, "max", 999, minimum=1)
        if limit > self.config.page_max:
            raise ApiError("BDC_1129", f"Invalid parameter value: max={limit} exceeds {self.config.page_max}.")
        filters = data.get("filters") or []
        sort = data.get("sort") or []
        if not isinstance(filters, list) or not isinstance(sort, list):
            raise ApiError("BDC_1129", "Invalid parameter value: filters and sort must be arrays.")
        ids = self._query(entity, filters, sort)
        nested = _truthy(data.get("nested", False))
        store = self._store[entity]
        return [self._materialize(entity, store[i], nested) for i in ids[start:start + limit]]

    @staticmethod
    def _int_param(data: dict[str, Any], name: str, default: int, minimum: int) -> int:
        value = data.get(name, default)
        try:
            if isinstance(value, bool | list | dict):
                raise ValueError
            number = value if isinstance(value, int) else int(str(value).strip())
        except (TypeError, ValueError):
            number = None
        if number is None or number < minimum:
            raise ApiError("BDC_1129", f"Invalid parameter value: {name}={value!r}.")
        return number

    def _op_read(self, entity: str, data: dict[str, Any]) -> dict[str, Any]:
        object_id = data.get("id")
        if not object_id:
            raise ApiError("BDC_1116", "Missing required data: id.")
        record = self._store[entity].get(str(object_id))
        if record is None:
            raise ApiError("BDC_1120", "No data found.")
        return self._materialize(entity, record, nested=True)

    def _op_create(self, entity: str, data: dict[str, Any]) -> dict[str, Any]:
        obj = self._obj_param(entity, data)
        if "id" in obj:
            raise _invalid("id", "must not be set on Create")
        if entity == "Customer":
            if not obj.get("name"):
                raise ApiError("BDC_1116", "Missing required data: name.")
            return self.add_customer(**obj)
        self._check_customer(obj.get("customerId"))
        if entity == "CustomerContact":
            return self.add_contact(**obj)
        for field in ("invoiceNumber", "invoiceDate", "dueDate"):
            if not obj.get(field):
                raise ApiError("BDC_1116", f"Missing required data: {field}.")
        if obj["invoiceNumber"] in self._invoice_numbers:
            raise _invalid("invoiceNumber", f"{obj['invoiceNumber']} already exists")
        for field in ("invoiceDate", "dueDate"):
            self._check_date(field, obj[field])
        lines = obj.pop("invoiceLineItems", None) or []
        if lines:
            total = ZERO
            stored = []
            for line in lines:
                line_amount = _money(line.get("amount", Decimal(str(line.get("quantity", 1))) *
                                             _money(line.get("price", 0), "price")), "amount")
                total += line_amount
                stored.append({"entity": "InvoiceLineItem", **line, "id": self._new_id("InvoiceLineItem"),
                               "amount": line_amount})
            obj.setdefault("amount", total)
            obj["_lines"] = stored
        elif "amount" not in obj:
            raise ApiError("BDC_1116", "Missing required data: invoiceLineItems.")
        obj["amount"] = _money(obj["amount"], "amount")
        obj["amountDue"] = obj["amount"]
        obj.pop("paymentStatus", None)
        return self.add_invoice(**obj)

    def _op_update(self, entity: str, data: dict[str, Any]) -> dict[str, Any]:
        obj = self._obj_param(entity, data)
        object_id = obj.get("id")
        if not object_id:
            raise ApiError("BDC_1116", "Missing required data: id.")
        record = self._store[entity].get(object_id)
        if record is None:
            raise ApiError("BDC_1120", "No data found.")
        # Amounts and payment state move only through payments, as in BILL; ignore them on Update.
        protected = {"createdTime", "updatedTime", "amountDue", "paymentStatus", "creditAmount", "invoicePays"}
        changes = self._clean_fields(entity, {k: v for k, v in obj.items() if k not in protected})
        if entity != "Customer" and "customerId" in changes:
            self._check_customer(changes["customerId"])
        record.update(changes)
        self._touch(entity, record)
        return self._materialize(entity, record, nested=True)

    def _obj_param(self, entity: str, data: dict[str, Any]) -> dict[str, Any]:
        obj = data.get("obj")
        if not isinstance(obj, dict):
            raise ApiError("BDC_1116", "Missing required data: obj.")
        if obj.get("entity") not in (None, entity):
            raise ApiError("BDC_1117", f"Entity mismatch: obj.entity is {obj.get('entity')!r}, expected {entity}.")
        return dict(obj)

    def _check_customer(self, customer_id: Any) -> dict[str, Any]:
        if not customer_id:
            raise ApiError("BDC_1116", "Missing required data: customerId.")
        customer = self._store["Customer"].get(str(customer_id))
        if customer is None:
            raise _invalid("customerId", f"no customer with id {customer_id}")
        return customer

    @staticmethod
    def _check_date(field: str, value: Any) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise _invalid(field, f"expected yyyy-MM-dd, got {value!r}")
        try:
            date.fromisoformat(value)
        except ValueError:
            raise _invalid(field, f"not a calendar date: {value!r}") from None
        return value

    def _op_record_ar_payment(self, session: _Session, data: dict[str, Any]) -> dict[str, Any]:
        for field in ("customerId", "paymentDate", "paymentType", "amount"):
            if data.get(field) in (None, ""):
                raise ApiError("BDC_1116", f"Missing required data: {field}.")
        customer_id = str(data["customerId"])
        self._check_customer(customer_id)
        payment_date = self._check_date("paymentDate", data["paymentDate"])
        payment_type = str(data["paymentType"])
        if payment_type not in ("0", "1", "2", "3", "4", "5"):
            raise _invalid("paymentType", f"expected one of \"0\"..\"5\", got {data['paymentType']!r}")
        amount = _money(data["amount"], "amount")
        if amount <= 0:
            raise _invalid("amount", f"must be greater than 0, got {amount}")
        raw_pays = data.get("invoicePays") or []
        if not isinstance(raw_pays, list):
            raise _invalid("invoicePays", "expected an array")
        pays: list[tuple[str, Decimal]] = []
        seen: set[str] = set()
        for index, pay in enumerate(raw_pays):
            where = f"invoicePays[{index}]"
            if not isinstance(pay, dict) or pay.get("invoiceId") in (None, "") or pay.get("amount") in (None, ""):
                raise ApiError("BDC_1116", f"Missing required data: {where} needs invoiceId and amount.")
            invoice_id = str(pay["invoiceId"])
            invoice = self._store["Invoice"].get(invoice_id)
            if invoice is None:
                raise _invalid(f"{where}.invoiceId", f"no invoice with id {invoice_id}")
            if invoice["customerId"] != customer_id:
                raise ApiError("BDC_1117", f"Entity mismatch: {where}.invoiceId {invoice_id} belongs to customer "
                                           f"{invoice['customerId']}, not {customer_id}.")
            if invoice.get("isActive", "1") != "1":
                raise _invalid(f"{where}.invoiceId", f"invoice {invoice_id} is inactive")
            if invoice_id in seen:
                raise _invalid(f"{where}.invoiceId", f"invoice {invoice_id} appears twice")
            seen.add(invoice_id)
            applied = _money(pay["amount"], f"{where}.amount")
            if applied <= 0:
                raise _invalid(f"{where}.amount", f"must be greater than 0, got {applied}")
            pays.append((invoice_id, applied))
        if sum((applied for _, applied in pays), ZERO) > amount:
            raise _invalid("invoicePays", f"applied total exceeds the payment amount {amount}")
        deposit_to = str(data.get("depositToAccountId") or ZERO_ID)
        return self._record_payment(
            customer_id=customer_id, payment_date=payment_date, payment_type=payment_type, amount=amount,
            pays=pays, description=str(data.get("description") or ""), ref_number=str(data.get("refNumber") or ""),
            online=False, deposit_to=deposit_to)

    def _op_send_message(self, session: _Session, data: dict[str, Any]) -> list[dict[str, Any]]:
        object_id = data.get("objectId")
        if not object_id:
            raise ApiError("BDC_1116", "Missing required data: objectId.")
        object_id = str(object_id)
        if object_id not in self._store["Customer"] and object_id not in self._store["Invoice"]:
            raise ApiError("BDC_1120", "No data found.")
        text = data.get("message")
        if not isinstance(text, str) or not text.strip():
            raise ApiError("BDC_1116", "Missing required data: message.")
        cfg = self.config
        record = {"id": self._new_id("Message"), "objectId": object_id, "message": text,
                  "isPublic": _truthy(data.get("isPublic", False)), "createdDate": fmt_ts(self.clock.now()),
                  "usersId": cfg.user_id,
                  "from": {"usersOrgName": cfg.org_name, "usersFirstName": cfg.user_first_name,
                           "usersLastName": cfg.user_last_name}}
        self._insert("Message", record)
        self._messages_by_object.setdefault(object_id, []).append(record["id"])
        return [self._materialize("Message", record, nested=True)]

    def _op_list_message(self, session: _Session, data: dict[str, Any]) -> list[dict[str, Any]]:
        object_id = data.get("objectId")
        if not object_id:
            raise ApiError("BDC_1116", "Missing required data: objectId.")
        object_id = str(object_id)
        if object_id not in self._store["Customer"] and object_id not in self._store["Invoice"]:
            raise ApiError("BDC_1120", "No data found.")
        start = self._int_param(data, "start", 0, minimum=0)
        limit = self._int_param(data, "max", 999, minimum=1)
        if limit > self.config.page_max:
            raise ApiError("BDC_1129", f"Invalid parameter value: max={limit} exceeds {self.config.page_max}.")
        ids = self._messages_by_object.get(object_id, [])[start:start + limit]
        return [self._materialize("Message", self._store["Message"][i], nested=True) for i in ids]

    def _op_ar_summary(self, session: _Session, data: dict[str, Any]) -> dict[str, Any]:
        today = self.clock.now().date()
        t, t7 = fmt_date(today), fmt_date(today + timedelta(days=7))
        buckets = {name: [0, ZERO] for name in ("overdue", "dueToday", "due7Days", "due7PlusDays", "all")}
        for inv in self._store["Invoice"].values():
            due = inv.get("amountDue", ZERO)
            if inv.get("isActive", "1") != "1" or due <= 0:
                continue
            day = inv.get("dueDate") or t
            name = "overdue" if day < t else "dueToday" if day == t else "due7Days" if day <= t7 else "due7PlusDays"
            for bucket in (name, "all"):
                buckets[bucket][0] += 1
                buckets[bucket][1] += due
        month = today.replace(day=1)
        last_month = (month - timedelta(days=1)).replace(day=1)
        windows = {"lastMonth": (last_month, month - timedelta(days=1)), "currentMonth": (month, today),
                   "last7Days": (today - timedelta(days=7), today), "today": (today, today),
                   "next7Days": (today + timedelta(days=1), today + timedelta(days=7)),
                   "future": (today + timedelta(days=1), date.max)}
        payments: dict[str, Any] = {}
        for name, (low, high) in windows.items():
            hits = [p["amount"] for p in self._store["ReceivedPay"].values()
                    if fmt_date(low) <= (p.get("paymentDate") or "") <= fmt_date(high)]
            payments[f"{name}Count"] = len(hits)
            payments[f"{name}Total"] = _dollars(sum(hits, ZERO))
        invoices: dict[str, Any] = {}
        for name, (count, total) in buckets.items():
            invoices[f"{name}Count"] = count
            invoices[f"{name}Total"] = _dollars(total)
        return {"invoices": invoices, "payments": payments}

    # ---- v3 subset: login and the invoice payment link ------------------------------------------------------

    def payment_links(self) -> list[dict[str, Any]]:
        """Every payment link handed out (token, invoiceId, customerId, email, returnUrl, createdTime)."""
        with self._lock:
            return [dict(link, token=token) for token, link in self._payment_links.items()]

    def pay_link(self, link_or_token: str, amount: Decimal | None = None) -> dict[str, Any]:
        """The debtor pays through a payment link we handed out: an online ReceivedPay, no API call."""
        token = link_or_token.rstrip("/").rsplit("/", 1)[-1]
        with self._lock:
            link = self._payment_links.get(token)
            if link is None:
                raise KeyError(f"no payment link {token}")
            return self.pay_online(link["invoiceId"], amount)

    def _v3_error(self, status: int, code: str, message: str, category: str = "REQUEST") -> tuple[int, bytes, str]:
        errors = self._stats["errors"]
        errors[code] = errors.get(code, 0) + 1
        body = [{"timestamp": fmt_ts(self.clock.now()), "code": code, "severity": "ERROR", "category": category,
                 "message": message}]
        return status, dumps(body), "application/json"

    def _v3_login(self, data: dict[str, Any]) -> dict[str, Any]:
        cfg = self.config
        for field in ("username", "password", "organizationId", "devKey"):
            if not data.get(field):
                raise ApiError("BDC_1108", f"Missing parameter value for parameter: {field}.", 400)
        if data["devKey"] != cfg.dev_key:
            raise ApiError("BDC_1102", "Developer key is invalid.", 401)
        self._count_hourly("login", data["devKey"], cfg.logins_per_hour)
        if data["username"] != cfg.username or data["password"] != cfg.password or data["organizationId"] != cfg.org_id:
            raise ApiError("BDC_1101", "User name and/or password do not match our records.", 401)
        session_id = f"v3!{secrets.token_urlsafe(24)}"
        self._v3_sessions[session_id] = _Session(session_id, data["devKey"], cfg.org_id, self.clock.now())
        self._stats["logins"] += 1
        return {"organizationId": cfg.org_id, "sessionId": session_id, "trusted": False, "userId": cfg.user_id}

    def _v3_authenticate(self, headers: dict[str, str]) -> _Session:
        dev_key = headers.get("devkey")
        if not dev_key or dev_key != self.config.dev_key:
            raise ApiError("BDC_1102", "Developer key is invalid.", 401)
        self._count_hourly("request", dev_key, self.config.requests_per_hour)
        invalid = ApiError("BDC_1109", "Session is invalid.  Please log in.", 401)
        session = self._v3_sessions.get(headers.get("sessionid") or "")
        if session is None or session.dev_key != dev_key:
            raise invalid
        now = self.clock.now()
        expired_by_calls = self._expire_after_calls is not None and session.calls >= self._expire_after_calls
        if (now - session.last_used).total_seconds() > self.config.session_idle_seconds or expired_by_calls:
            del self._v3_sessions[session.id]
            raise invalid
        session.last_used = now
        session.calls += 1
        return session

    def _v3_payment_link(self, invoice_id: str, data: dict[str, Any], scope: dict[str, Any]) -> dict[str, Any]:
        invoice = self._store["Invoice"].get(invoice_id)
        if invoice is None:
            raise ApiError("BDC_1120", "No data found.", 404)  # (U) 400 or 404 for an unknown id
        for field in ("customerId", "email"):
            if not isinstance(data.get(field), str) or not data[field].strip():
                raise ApiError("BDC_1108", f"Missing parameter value for parameter: {field}.", 400)
        if data["customerId"] != invoice["customerId"]:
            raise ApiError("BDC_1117", f"customerId {data['customerId']} is not the customer of invoice {invoice_id}.",
                           400)
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", data["email"].strip()):
            raise ApiError("BDC_1119", f"Invalid value for field email: {data['email']!r}", 400)
        if invoice.get("isActive", "1") != "1":
            raise ApiError("BDC_1119", f"Invalid value for field invoiceId: invoice {invoice_id} is archived", 400)
        token = secrets.token_urlsafe(12)
        self._payment_links[token] = {"invoiceId": invoice_id, "customerId": invoice["customerId"],
                                      "email": data["email"].strip(), "returnUrl": data.get("returnUrl"),
                                      "createdTime": fmt_ts(self.clock.now())}
        host = dict(scope.get("headers") or []).get(b"host", b"127.0.0.1").decode("latin-1")
        return {"paymentLink": f"{scope.get('scheme', 'http')}://{host}/p/{token}"}

    def _link_page(self, token: str) -> tuple[int, bytes, str]:
        with self._lock:
            link = self._payment_links.get(token)
            invoice = self._store["Invoice"].get(link["invoiceId"]) if link else None
            if invoice is None:
                return 404, b"<html><body><h1>Payment link not found</h1></body></html>", "text/html"
            text = (f"<html><body><h1>{self.config.org_name}</h1><p>Invoice {invoice['invoiceNumber']}: "
                    f"{_dollars(invoice['amountDue'])} due {invoice.get('dueDate')}</p></body></html>")
        return 200, text.encode(), "text/html"

    async def _api_v3(self, scope: dict[str, Any], path: str, body: bytes, send: Callable[..., Any]) -> None:
        op = _v3_op(path)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        with self._lock:
            calls = self._stats["calls"]
            calls[op or path] = calls.get(op or path, 0) + 1
            self._stats["total_calls"] += 1
            if op is None or scope["method"] != "POST":
                early = self._v3_error(404, "BDC_1121", "API not supported.")
                slot = None
            else:
                try:
                    data = json.loads(body, parse_float=Decimal) if body.strip() else {}
                except ValueError:
                    data = None
                if not isinstance(data, dict):
                    early, slot = self._v3_error(400, "BDC_1122", "Error Parsing Json Object."), None
                else:
                    dev_key = data.get("devKey") if op == "v3/login" else headers.get("devkey")
                    slot = (str(dev_key or ""), self.config.org_id)
                    in_flight = self._in_flight.get(slot, 0)
                    if in_flight >= self.config.max_in_flight:
                        self._stats["rejected_concurrent"] += 1
                        early = self._v3_error(422, "BDC_1322",
                                                         "Max number of concurrent requests per organization reached.")
                        slot = None
                    else:
                        self._in_flight[slot] = in_flight + 1
                        self._stats["max_in_flight_seen"] = max(self._stats["max_in_flight_seen"], in_flight + 1)
                        early = None
            latency = self._latency_ms / 1000.0
        if early is not None:
            await _respond(send, *early)
            return
        try:
            if latency > 0:
                await asyncio.sleep(latency)
            with self._lock:
                fault = self._take_fault(op)
            if fault is not None and fault.kind == "delay":
                await asyncio.sleep(fault.delay_s)
                fault = None
            with self._lock:
                if fault is not None:
                    response = self._v3_fault_response(fault)
                else:
                    try:
                        if op == "v3/login":
                            result = self._v3_login(data)
                        else:
                            self._v3_authenticate(headers)
                            result = self._v3_payment_link(path.split("/")[-2], data, scope)
                        response = (200, dumps(result), "application/json")
                    except ApiError as error:
                        response = self._v3_error(error.http_status or 400, error.code, error.message)
        finally:
            with self._lock:
                self._in_flight[slot] -= 1
        await _respond(send, *response)

    def _v3_fault_response(self, fault: Fault) -> tuple[int, bytes, str]:
        if fault.kind.startswith("http_"):
            return self._fault_response(fault)
        if fault.kind == "malformed":
            return 200, b'{"paymentLink": "http', "application/json"
        limits = {"bdc_1322": (422, "Max number of concurrent requests per organization reached."),
                  "bdc_1144": (422, f"Max number of allowed requests per hour reached: {self.config.requests_per_hour}."),
                  "bdc_1109": (401, "Session is invalid.  Please log in."),
                  "bdc_1121": (404, "API not supported."), "bdc_1130": (400, "Invalid list filter field.")}
        status, message = limits[fault.kind]
        return self._v3_error(status, fault.kind.upper(), message)

    # ---- request pipeline ---------------------------------------------------------------------------------

    def _api_endpoint(self, scope: dict[str, Any]) -> str:
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        if not host:
            server = scope.get("server") or ("127.0.0.1", 80)
            host = f"{server[0]}:{server[1]}"
        return f"{scope.get('scheme', 'http')}://{host}/api/v2"

    def _count_hourly(self, kind: str, dev_key: str, limit: int) -> None:
        hour = self.clock.now().replace(minute=0, second=0, microsecond=0)
        key = (kind, dev_key, hour)
        if len(self._hourly) > 1000:
            self._hourly = {k: v for k, v in self._hourly.items() if k[2] == hour}
        self._hourly[key] = self._hourly.get(key, 0) + 1
        if self._hourly[key] > limit:
            raise ApiError("BDC_1144", f"Max number of allowed requests per hour reached: {limit}.")

    def _authenticate(self, form: dict[str, str]) -> _Session:
        dev_key = form.get("devKey")
        if not dev_key:
            raise _missing("devKey")
        if dev_key != self.config.dev_key:
            raise ApiError("BDC_1102", "Developer key is invalid.")
        self._count_hourly("request", dev_key, self.config.requests_per_hour)
        invalid = ApiError("BDC_1109", "Session is invalid. Please log in.")
        session = self._sessions.get(form.get("sessionId") or "")
        if session is None or session.dev_key != dev_key:
            raise invalid
        now = self.clock.now()
        idle = (now - session.last_used).total_seconds()
        expired_by_calls = self._expire_after_calls is not None and session.calls >= self._expire_after_calls
        if idle > self.config.session_idle_seconds or expired_by_calls:
            del self._sessions[session.id]
            raise invalid
        session.last_used = now
        session.calls += 1
        return session

    def _dispatch(self, op: str, form: dict[str, str], scope: dict[str, Any]) -> Any:
        """Run one v2 operation under the state lock; returns response_data or raises ApiError."""
        if op == "Login":
            return self._op_login(form, scope)
        if op == "ListOrgs":
            self._check_credentials(form, ("userName", "password", "devKey"))
            return [{"orgId": self.config.org_id, "orgName": self.config.org_name}]
        session = self._authenticate(form)
        raw = form.get("data")
        data: Any = {}
        if raw not in (None, ""):
            try:
                data = json.loads(raw, parse_float=Decimal)
            except ValueError:
                raise ApiError("BDC_1122", "Error Parsing Json Object.") from None
            if not isinstance(data, dict):
                raise ApiError("BDC_1122", "Error Parsing Json Object.")
        handler = _SIMPLE_OPS.get(op)
        if handler is not None:
            return handler(self, session, data)
        family, _, entity = op.partition("/")
        if family == "List":
            if entity not in LISTABLE:
                raise ApiError("BDC_1128", f"Invalid List entity: {entity}.")
            return self._op_list(entity, data)
        if family == "Crud":
            verb, _, entity = entity.partition("/")
            if entity not in LISTABLE:
                raise ApiError("BDC_1114", f"Invalid entity type: {entity}.")
            if verb == "Read":
                return self._op_read(entity, data)
            if verb == "Create" and entity in ("Customer", "Invoice", "CustomerContact"):
                return self._op_create(entity, data)
            if verb == "Update" and entity in ("Customer", "Invoice", "CustomerContact"):
                return self._op_update(entity, data)
            raise ApiError("BDC_1115", f"Invalid CRUD operation: {verb} on {entity}.")
        raise ApiError("BDC_1121", "API not supported.", http_status=404)

    @staticmethod
    def _is_known(op: str) -> bool:
        if op in _SIMPLE_OPS or op in ("Login", "ListOrgs"):
            return True
        parts = op.split("/")
        return (len(parts) == 2 and parts[0] == "List") or (
            len(parts) == 3 and parts[0] == "Crud" and parts[1] in ("Create", "Read", "Update", "Delete"))

    def _take_fault(self, op: str) -> Fault | None:
        fault = self._faults.take(op)
        if fault is not None:
            self._stats["faults_injected"] += 1
        return fault

    def _error_response(self, error: ApiError) -> tuple[int, bytes, str]:
        errors = self._stats["errors"]
        errors[error.code] = errors.get(error.code, 0) + 1
        status = error.http_status or self.config.error_http_status
        return status, dumps(_failure(error.code, error.message)), "application/json"

    def _fault_response(self, fault: Fault) -> tuple[int, bytes, str]:
        if fault.kind.startswith("http_"):
            status = int(fault.kind[5:])
            reason = {500: "Internal Server Error", 503: "Service Unavailable", 429: "Too Many Requests"}[status]
            return status, f"<html><body><h1>{status} {reason}</h1></body></html>".encode(), "text/html"
        if fault.kind == "malformed":
            return 200, b'{"response_status":0,"response_message":"Success","response_data":[{"entity":"Inv', \
                "application/json"
        messages = {
            "bdc_1322": "Max number of concurrent requests per organization reached.",
            "bdc_1144": f"Max number of allowed requests per hour reached: {self.config.requests_per_hour}.",
            "bdc_1109": "Session is invalid. Please log in.",
            "bdc_1121": "API not supported.",
            "bdc_1130": "Invalid list filter field.",
        }
        code = fault.kind.upper()
        http_status = 404 if fault.kind == "bdc_1121" else None
        return self._error_response(ApiError(code, messages[fault.kind], http_status))

    async def _asgi(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        body = await read_body(receive)
        if path == "/sandbox" or path.startswith("/sandbox/"):
            status, payload = self._control(scope["method"], path, body)
            await _respond(send, status, dumps(payload), "application/json")
            return
        if path.startswith(V3_PREFIX):
            await self._api_v3(scope, path, body, send)
            return
        if path.startswith("/p/") and scope["method"] == "GET":
            await _respond(send, *self._link_page(path[3:]))
            return
        await self._api(scope, path, body, send)

    def _admit(self, scope: dict[str, Any], path: str, op: str,
               body: bytes) -> tuple[tuple[int, bytes, str] | None, tuple[str, str], dict[str, str]]:
        """Reject at once (unknown path, too many in flight) or take an in-flight slot for the request."""
        if not path.startswith(API_PREFIX) or not self._is_known(op) or scope["method"] != "POST":
            return self._error_response(ApiError("BDC_1121", "API not supported.", 404)), ("", ""), {}
        content_type = dict(scope.get("headers") or []).get(b"content-type", b"").decode("latin-1")
        form = _parse_form(body) if ("x-www-form-urlencoded" in content_type or not content_type) else {}
        slot = (form.get("devKey", ""), self.config.org_id)
        in_flight = self._in_flight.get(slot, 0)
        if in_flight >= self.config.max_in_flight:
            self._stats["rejected_concurrent"] += 1
            error = ApiError("BDC_1322", "Max number of concurrent requests per organization reached.")
            return self._error_response(error), slot, form
        self._in_flight[slot] = in_flight + 1
        self._stats["max_in_flight_seen"] = max(self._stats["max_in_flight_seen"], in_flight + 1)
        return None, slot, form

    async def _api(self, scope: dict[str, Any], path: str, body: bytes, send: Callable[..., Any]) -> None:
        op = _op_name(path)
        with self._lock:
            calls = self._stats["calls"]
            calls[op] = calls.get(op, 0) + 1
            self._stats["total_calls"] += 1
            early, slot, form = self._admit(scope, path, op, body)
            latency = self._latency_ms / 1000.0
        if early is not None:
            await _respond(send, *early)
            return

        released = False

        def release() -> None:
            # Done before the response is written: a client that frees its own slot on receiving the
            # response may send its next request at once and must not meet a stale in-flight count.
            nonlocal released
            if not released:
                released = True
                with self._lock:
                    self._in_flight[slot] -= 1

        try:
            if latency > 0:
                await asyncio.sleep(latency)
            with self._lock:
                fault = self._take_fault(op)
            if fault is not None and not fault.after_processing:
                if fault.kind == "delay":
                    await asyncio.sleep(fault.delay_s)
                    fault = None
                else:
                    with self._lock:
                        response = self._fault_response(fault)
                    release()
                    await _respond(send, *response)
                    return
            with self._lock:
                try:
                    response = (200, dumps(_success(self._dispatch(op, form, scope))), "application/json")
                except ApiError as error:
                    response = self._error_response(error)
            if fault is not None:
                if fault.kind == "delay":
                    await asyncio.sleep(fault.delay_s)
                else:
                    with self._lock:
                        response = self._fault_response(fault)
            release()
            await _respond(send, *response)
        finally:
            release()

    # ---- control API ----------------------------------------------------------------------------------------

    def _control(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        try:
            payload = json.loads(body, parse_float=Decimal) if body.strip() else {}
        except ValueError:
            return 400, {"error": "body must be JSON"}
        parts = [unquote(p) for p in path.strip("/").split("/")[1:]]
        try:
            return 200, self._control_route(method, parts, payload if isinstance(payload, dict) else {})
        except KeyError as exc:
            return 404, {"error": str(exc.args[0] if exc.args else exc)}
        except (ValueError, TypeError, ApiError) as exc:
            return 400, {"error": str(exc)}

    def _control_route(self, method: str, parts: list[str], body: dict[str, Any]) -> Any:
        route = (method, *parts)
        match route:
            case ("GET", "stats"):
                return self.stats
            case ("POST", "stats", "reset"):
                self.reset_stats()
                return self.stats
            case ("GET", "clock"):
                return {"now": fmt_ts(self.clock.now())}
            case ("POST", "clock"):
                if "now" in body:
                    self.clock.set(parse_ts(body["now"]))
                if "advance_seconds" in body:
                    self.clock.advance(float(body["advance_seconds"]))
                return {"now": fmt_ts(self.clock.now())}
            case ("POST", "faults"):
                self.set_faults(latency_ms=body.get("latency_ms"),
                                expire_sessions_after_calls=body.get("expire_sessions_after_calls"))
                return {"latency_ms": self._latency_ms, "expire_sessions_after_calls": self._expire_after_calls}
            case ("POST", "inject"):
                self.inject(body["kind"], path=body.get("path"), times=int(body.get("times", 1)),
                            delay_s=float(body.get("delay_s", 0.0)),
                            after_processing=bool(body.get("after_processing", False)))
                return {"queued": len(self._faults)}
            case ("POST", "faults", "clear") | ("POST", "inject", "clear"):
                self.clear_faults()
                return {"queued": 0, "latency_ms": self._latency_ms, "expire_sessions_after_calls": None}
            case ("POST", "seed"):
                return self.seed(seed=int(body.get("seed", 7)), invoices=int(body.get("invoices", 2000)),
                                 customers=int(body.get("customers", 400)))
            case ("POST", "invoices"):
                return self.add_invoice(**body)
            case ("POST", "customers"):
                return self.add_customer(**body)
            case ("POST", "invoices", invoice_id):
                return self.update_invoice(invoice_id, **body)
            case ("POST", "invoices", invoice_id, "void"):
                return self.void_invoice(invoice_id)
            case ("POST", "invoices", invoice_id, "pay-online"):
                amount = body.get("amount")
                return self.pay_online(invoice_id, None if amount is None else _money(amount, "amount"))
            case ("POST", "mutate"):
                return {"ids": self.mutate(entity=body.get("entity", "Invoice"), count=int(body.get("count", 1000)),
                                           seed=int(body.get("seed", 1)))}
            case ("GET", "counts"):
                return self.counts()
            case ("GET", "entities", entity):
                return self.entities(entity)
            case ("GET", "entities", entity, object_id):
                return self.get(entity, object_id)
            case ("GET", "payment-links"):
                return self.payment_links()
            case ("POST", "payment-links", token, "pay"):
                amount = body.get("amount")
                return self.pay_link(token, None if amount is None else _money(amount, "amount"))
            case ("GET", "credentials"):
                return self.credentials
        raise KeyError(f"no control route {method} /sandbox/{'/'.join(parts)}")


_ID_SPACE = 62 ** 15
# Odd and not a multiple of 31, hence coprime to 62**15: multiplying by it permutes the id space.
_ID_MULTIPLIER = 492_187_345_811_302_845_772_219_891
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_TRIPLES: list[str] = []


def _base62_triples() -> list[str]:
    if not _TRIPLES:
        _TRIPLES.extend(a + b + c for a in _BASE62 for b in _BASE62 for c in _BASE62)
    return _TRIPLES


def _dollars(amount: Decimal) -> str:
    return f"${amount.quantize(CENT):,}"


_SIMPLE_OPS: dict[str, Callable[[BillComSandbox, _Session, dict[str, Any]], Any]] = {
    "Logout": BillComSandbox._op_logout,
    "GetSessionInfo": BillComSandbox._op_session_info,
    "RecordARPayment": BillComSandbox._op_record_ar_payment,
    "SendMessage": BillComSandbox._op_send_message,
    "ListMessage": BillComSandbox._op_list_message,
    "GetARSummary": BillComSandbox._op_ar_summary,
}


V3_PREFIX = "/connect/v3/"
_V3_LINK = re.compile(r"^/connect/v3/invoices/[0-9A-Za-z]+/payment-link$")


def _v3_op(path: str) -> str | None:
    """Stats/fault key of a v3 path (ids dropped): "v3/login", "v3/invoices/payment-link"; None if unknown."""
    if path == "/connect/v3/login":
        return "v3/login"
    if _V3_LINK.match(path):
        return "v3/invoices/payment-link"
    return None


def _parse_form(body: bytes) -> dict[str, str]:
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[0] for key, values in parsed.items()}


async def _respond(send: Callable[..., Any], status: int, body: bytes, content_type: str) -> None:
    try:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", f"{content_type}; charset=utf-8".encode()),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
    except OSError:
        pass  # the client gave up (e.g. timed out during an injected delay); nothing left to tell it


# --------------------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    """Seed a sandbox and serve it until killed; prints one "listening on" line once the port is live."""
    from ..server import serve_forever

    parser = argparse.ArgumentParser(prog="billcom-sandbox", description="Local Bill.com v2 API sandbox.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--invoices", type=int, default=2000)
    parser.add_argument("--customers", type=int, default=400)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--max-in-flight", type=int, default=3)
    parser.add_argument("--requests-per-hour", type=int, default=20000)
    parser.add_argument("--logins-per-hour", type=int, default=200)
    args = parser.parse_args(argv)

    config = SandboxConfig(latency_ms=args.latency_ms, max_in_flight=args.max_in_flight,
                           requests_per_hour=args.requests_per_hour, logins_per_hour=args.logins_per_hour)
    sandbox = BillComSandbox(config=config)
    sandbox.seed(seed=args.seed, invoices=args.invoices, customers=args.customers)

    def announce(url: str) -> None:
        print(f"billcom sandbox listening on {url}", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        serve_forever(sandbox.app, host=args.host, port=args.port, on_started=announce)
    return 0


if __name__ == "__main__":
    sys.exit(main())
