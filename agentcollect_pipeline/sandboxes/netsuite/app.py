"""A local stand-in for NetSuite's REST web services and SuiteQL (/work/shared/reference/qbo-netsuite.md §2, §4.2).

One `NetSuiteSandbox` holds an in-memory NetSuite account and serves it as a raw ASGI app (`.app`):

- `POST /services/rest/auth/oauth2/v1/token`: OAuth 2.0 client credentials with a JWT assertion, verified
  against registered certificates (kid, PS/ES algorithms, iss, aud, iat/exp, scope).
- `POST /services/rest/query/v1/suiteql`: SuiteQL over transaction, customer, contact, entityaddress,
  currency, classification, customercategory, nexttransactionlinelink and deletedrecord (see suiteql.py).
- `/services/rest/record/v1/...`: customer GET/PATCH, invoice GET and `!transform/customerPayment`,
  customerPayment GET/POST/PATCH and the `PUT .../eid:<externalId>` upsert. `note` is not a REST record.
- `GET /services/rest/system/v1/governanceLimits` and `GET /services/rest/record/v1/metadata-catalog`.
- `/sandbox/...`: a JSON control API for processes that cannot reach the Python object (demo, benchmark).

Concurrency is governed like NetSuite's: requests beyond the account limit in flight get 429. Faults are
scripted through `inject()`: 429, 500 UNEXPECTED_ERROR, 503, 401, dropped connections (also after the
write committed), delays and malformed bodies. Business time comes from an injectable `SandboxClock`;
JWT `iat`/`exp` are checked against real time, because the client signs them with its own clock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs, unquote
from zoneinfo import ZoneInfo

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from agentcollect_pipeline.asgi import read_body
from agentcollect_pipeline.sandboxes.common import (
    Fault,
    FaultQueue,
    SandboxClock,
    SandboxSurface,
    asgi_app,
    serve_lifespan,
)

from . import seed as seed_module
from .suiteql import (
    BOOL,
    DATE,
    DATETIME,
    INT,
    MONEY,
    TEXT,
    Catalog,
    SuiteQLError,
    Table,
    check_limit,
    execute,
    render,
)

__all__ = ["NetSuiteSandbox", "SandboxClock", "SandboxConfig", "account_slug", "main"]

TOKEN_PATH = "/services/rest/auth/oauth2/v1/token"
SUITEQL_PATH = "/services/rest/query/v1/suiteql"
RECORD_PREFIX = "/services/rest/record/v1/"
GOVERNANCE_PATH = "/services/rest/system/v1/governanceLimits"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
JWT_ALGORITHMS = ("PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
FAULT_KINDS = ("http_429", "http_500", "http_503", "http_401", "drop", "delay", "malformed")
CENT = Decimal("0.01")
ZERO = Decimal("0.00")
_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}
_RFC_SECTIONS = {400: "15.5.1", 401: "15.5.2", 403: "15.5.4", 404: "15.5.5", 405: "15.5.6", 429: "6",
                 500: "15.6.1", 503: "15.6.4"}
_LOGIN_FAILED = ("Invalid login attempt. For more details, see the Login Audit Trail in the NetSuite UI at "
                 "Setup > Users/Roles > User Management > View Login Audit Trail.")
_NOT_FOUND = "The record instance does not exist. Provide a valid record instance ID."


def account_slug(account_id: str) -> str:
    """The host form of an account id: lowercase, `_` -> `-` (1234567_SB1 -> 1234567-sb1)."""
    return account_id.strip().lower().replace("_", "-")


# --------------------------------------------------------------------------------------------------------
# Configuration, keys, errors


@dataclass
class SandboxConfig:
    account_id: str = "1234567_SB1"
    client_id: str = "c0ffee0ddba11d5ea5eb1ade5a1ad0c0ffee0ddba11d5ea5eb1ade5a1ad0c0f"
    certificate_id: str = "AGENTCOLLECT_SANDBOX_CERT_1"
    concurrency_limit: int = 5  # developer accounts' limit (reference §2.6)
    row_cap: int = 100_000  # SuiteQL results reachable by paging (reference §2.2)
    account_timezone: str = "America/Los_Angeles"  # the integration user's time zone: SuiteQL renders in it
    token_lifetime_s: int = 3600
    jwt_leeway_s: int = 60
    latency_ms: float = 0.0
    require_prefer_transient: bool = True
    # The custom entity field an admin creates for collection notes (reference §2.5 option 1); None = not created.
    note_field: str | None = "custentity_agentcollect_notes"
    note_field_max_length: int = 4000  # a Text Area custom field
    comments_max_length: int = 999  # UNVERIFIED: the standard Comments field's limit


_KEY_LOCK = threading.Lock()
_DEFAULT_KEY: list[rsa.RSAPrivateKey] = []


def _default_private_key() -> rsa.RSAPrivateKey:
    # Generating an RSA key takes tens of milliseconds; tests start many sandboxes, so share one per process.
    with _KEY_LOCK:
        if not _DEFAULT_KEY:
            _DEFAULT_KEY.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        return _DEFAULT_KEY[0]


def private_key_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str, error_path: str | None = None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.error_path = error_path


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


def _user_error(detail: str, path: str | None = None) -> ApiError:
    return ApiError(400, "USER_ERROR", detail, path)


def error_body(status: int, code: str, detail: str, error_path: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"detail": detail, "o:errorCode": code}
    if error_path:
        item["o:errorPath"] = error_path
    return {"type": f"https://www.rfc-editor.org/rfc/rfc9110.html#section-{_RFC_SECTIONS.get(status, '15.5.1')}",
            "title": _TITLES.get(status, "Error"), "status": status, "o:errorDetails": [item]}


_DEC_MARK = "\x1fdec:"
_DEC_RE = re.compile(r'"\\u001fdec:(-?[0-9]+(?:\.[0-9]+)?)"')


def dumps(payload: Any) -> bytes:
    """JSON with Decimal money as exact numbers (json cannot write Decimal natively)."""

    def default(value: Any) -> Any:
        if isinstance(value, Decimal):
            return f"{_DEC_MARK}{value:f}"
        if isinstance(value, datetime):
            return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if isinstance(value, date):
            return value.isoformat()
        raise TypeError(f"cannot encode {type(value).__name__}")

    text = json.dumps(payload, default=default, separators=(",", ":"))
    return _DEC_RE.sub(r"\1", text).encode("utf-8")


def _money(value: Any, path: str) -> Decimal:
    if isinstance(value, bool) or value is None or isinstance(value, list | dict | float):
        raise ApiError(400, "INVALID_FLD_VALUE", f"Invalid number {value!r}.", path)
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ApiError(400, "INVALID_FLD_VALUE", f"Invalid number {value!r}.", path) from None
    if not amount.is_finite() or amount != amount.quantize(CENT):
        raise ApiError(400, "INVALID_FLD_VALUE", f"Invalid amount {value!r}: at most two decimal places.", path)
    return amount.quantize(CENT)


def _ref_id(value: Any, path: str) -> int:
    """`{"id": "123"}` (or a bare id) -> 123."""
    raw = value.get("id") if isinstance(value, dict) else value
    try:
        return int(str(raw))
    except (TypeError, ValueError):
        raise ApiError(400, "INVALID_FLD_VALUE", f"Invalid reference {value!r}: expected {{\"id\": \"...\"}}.",
                       path) from None


def _flag(value: str | None) -> bool:
    return value == "T"


def _tf(value: Any) -> str:
    return "T" if value in (True, "T", "true", "True") else "F"


# --------------------------------------------------------------------------------------------------------
# SuiteQL schemas: column -> type. Only these are queryable; anything else is "not found" as in NetSuite.

TRANSACTION_COLUMNS = {
    "id": INT, "tranid": TEXT, "type": TEXT, "recordtype": TEXT, "entity": INT, "trandate": DATE,
    "duedate": DATE, "currency": INT, "exchangerate": MONEY, "foreigntotal": MONEY, "foreignamountpaid": MONEY,
    "foreignamountunpaid": MONEY, "status": TEXT, "voided": BOOL, "class": INT, "memo": TEXT, "terms": INT,
    "otherrefnum": TEXT, "externalid": TEXT, "posting": BOOL, "daysoverduesearch": INT, "createddate": DATETIME,
    "lastmodifieddate": DATETIME,
}
CUSTOMER_COLUMNS = {
    "id": INT, "entityid": TEXT, "altname": TEXT, "companyname": TEXT, "isperson": BOOL, "firstname": TEXT,
    "lastname": TEXT, "email": TEXT, "phone": TEXT, "altphone": TEXT, "mobilephone": TEXT, "comments": TEXT,
    "category": INT, "entitystatus": INT, "terms": INT, "creditlimit": MONEY, "balancesearch": MONEY,
    "overduebalancesearch": MONEY, "isinactive": BOOL, "parent": INT, "currency": INT,
    "defaultbillingaddress": INT, "externalid": TEXT, "datecreated": DATETIME, "lastmodifieddate": DATETIME,
}
CONTACT_COLUMNS = {
    "id": INT, "entityid": TEXT, "company": INT, "firstname": TEXT, "lastname": TEXT, "email": TEXT,
    "phone": TEXT, "mobilephone": TEXT, "title": TEXT, "isinactive": BOOL, "datecreated": DATETIME,
    "lastmodifieddate": DATETIME,
}
ADDRESS_COLUMNS = {"nkey": INT, "addressee": TEXT, "addr1": TEXT, "addr2": TEXT, "city": TEXT, "state": TEXT,
                   "zip": TEXT, "country": TEXT}
CURRENCY_COLUMNS = {"id": INT, "name": TEXT, "symbol": TEXT, "displaysymbol": TEXT, "isbasecurrency": BOOL,
                    "isinactive": BOOL, "exchangerate": MONEY}
LINK_COLUMNS = {"previousdoc": INT, "previousline": INT, "previoustype": TEXT, "nextdoc": INT, "nextline": INT,
                "nexttype": TEXT, "linktype": TEXT, "foreignamount": MONEY, "amount": MONEY, "linkdate": DATE}
DELETED_COLUMNS = {"recordid": INT, "recordtypeid": TEXT, "type": TEXT, "name": TEXT, "deleteddate": DATETIME}

CUSTOMER_WRITABLE = {"companyName": "companyname", "email": "email", "phone": "phone", "altPhone": "altphone",
                     "mobilePhone": "mobilephone", "comments": "comments", "firstName": "firstname",
                     "lastName": "lastname", "externalId": "externalid", "isInactive": "isinactive"}
CUSTOMER_READ_ONLY = {"id", "entityId", "dateCreated", "lastModifiedDate", "isPerson", "links", "balance",
                      "overdueBalance", "currency", "category", "parent", "defaultAddress", "altName"}
PAYMENT_FIELDS = {"customer", "payment", "tranDate", "memo", "externalId", "apply", "account", "currency",
                  "undepFunds", "paymentMethod", "checkNum", "exchangeRate", "autoApply", "links", "id"}


def _op_name(path: str) -> str:
    """Stats/fault key of a request path: "token", "suiteql", "record/customerpayment", "governance"..."""
    if path.startswith(TOKEN_PATH):
        return "token"
    if path.startswith(SUITEQL_PATH):
        return "suiteql"
    if path.startswith(RECORD_PREFIX):
        record = path[len(RECORD_PREFIX):].split("/", 1)[0].lower()
        return f"record/{record}"
    if path.startswith(GOVERNANCE_PATH):
        return "governance"
    return path.strip("/")


def _norm_fault_path(path: str) -> str:
    return _op_name(path) if path.startswith("/") else path.lower()


def _by_value(display: Callable[[Any], str | None]) -> Callable[[Any, Any], str | None]:
    """A BUILTIN.DF hook that needs only the referenced id, not the rest of the row."""
    return lambda value, row: display(value)


# --------------------------------------------------------------------------------------------------------
# The sandbox


class NetSuiteSandbox(SandboxSurface):
    """In-memory NetSuite account served as an ASGI app (`.app`). Thread-safe for test-side calls."""

    def __init__(self, config: SandboxConfig | None = None, clock: SandboxClock | None = None, *,
                 jwt_clock: Callable[[], float] = time.time) -> None:
        self.config = config or SandboxConfig()
        self.clock = clock or SandboxClock()
        self.timezone = ZoneInfo(self.config.account_timezone)
        self._jwt_clock = jwt_clock
        self._lock = threading.RLock()
        self._customers: dict[int, dict[str, Any]] = {}
        self._contacts: dict[int, dict[str, Any]] = {}
        self._addresses: dict[int, dict[str, Any]] = {}
        self._transactions: dict[int, dict[str, Any]] = {}
        self._applications: dict[int, dict[int, Decimal]] = {}
        self._deleted: list[dict[str, Any]] = []
        self._next_entity = seed_module.FIRST_ENTITY_ID
        self._next_transaction = seed_module.FIRST_TRANSACTION_ID
        self._payment_number = 0
        self._tokens: dict[str, datetime] = {}
        self._private_key = _default_private_key()
        self._certificates: dict[str, tuple[Any, str]] = {}  # kid -> (public key, client id)
        self.register_certificate(self._private_key.public_key(), self.config.certificate_id)
        self._faults = FaultQueue(FAULT_KINDS, _norm_fault_path)
        self._latency_ms = float(self.config.latency_ms)
        self._in_flight = 0
        self._version = 0  # bumped by every change; keys the query-result cache
        self._results: dict[tuple[str, date, int], list[dict[str, Any]]] = {}
        self.queries: deque[str] = deque(maxlen=1000)  # the latest SuiteQL texts, for tests and debugging
        self.reset_stats()

        self._app = asgi_app(self._asgi)

    # ---- public Python surface --------------------------------------------------------------------------

    @property
    def credentials(self) -> dict[str, str]:
        """What an integration is configured with: ids, the certificate's private key (PEM), and the time
        zone SuiteQL renders dates in (the integration user's preference)."""
        cfg = self.config
        return {"account_id": cfg.account_id, "client_id": cfg.client_id, "certificate_id": cfg.certificate_id,
                "private_key": private_key_pem(self._private_key),
                "algorithm": "PS256" if isinstance(self._private_key, rsa.RSAPrivateKey) else "ES256",
                "account_timezone": cfg.account_timezone}

    def register_certificate(self, public_key: Any, certificate_id: str | None = None,
                             client_id: str | None = None) -> str:
        """Map a certificate (public key object or PEM) to the integration, as the M2M setup page does."""
        if isinstance(public_key, str | bytes):
            data = public_key.encode() if isinstance(public_key, str) else public_key
            public_key = (serialization.load_pem_public_key(data) if b"PUBLIC KEY" in data
                          else serialization.load_pem_private_key(data, password=None).public_key())
        kid = certificate_id or f"CERT_{secrets.token_hex(8).upper()}"
        with self._lock:
            self._certificates[kid] = (public_key, client_id or self.config.client_id)
        return kid

    def use_private_key(self, pem: bytes | str) -> None:
        """Make `pem` the integration's key (its certificate registered under the configured id)."""
        data = pem.encode() if isinstance(pem, str) else pem
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ValueError("the private key must be RSA or EC")
        with self._lock:
            self._private_key = key
            self._certificates[self.config.certificate_id] = (key.public_key(), self.config.client_id)

    def revoke_certificate(self, certificate_id: str) -> None:
        with self._lock:
            self._certificates.pop(certificate_id, None)

    def expire_tokens(self) -> None:
        """Invalidate every issued access token (as if an hour had passed for all of them)."""
        with self._lock:
            self._tokens.clear()

    def reset_stats(self) -> None:
        with self._lock:
            self._stats: dict[str, Any] = {"calls": {}, "total_calls": 0, "tokens_issued": 0,
                                           "max_in_flight_seen": self._in_flight, "rejected_concurrent": 0,
                                           "errors": {}, "faults_injected": 0}
            self.queries.clear()

    def seed(self, seed: int = 7, invoices: int = 2000, customers: int = 400) -> dict[str, int]:
        """Replace the account's data with a deterministic generated book (see seed.py)."""
        with self._lock:
            self._version += 1
            book = seed_module.generate(seed=seed, invoices=invoices, customers=customers, now=self.clock.now())
            self._customers = {c["id"]: c for c in book.customers}
            self._contacts = {c["id"]: c for c in book.contacts}
            self._addresses = {a["nkey"]: a for a in book.addresses}
            self._transactions = {t["id"]: t for t in book.transactions}
            self._applications = book.applications
            self._deleted = []
            self._next_entity = max([seed_module.FIRST_ENTITY_ID - 1, *self._customers, *self._contacts]) + 1
            self._next_transaction = max([seed_module.FIRST_TRANSACTION_ID - 1, *self._transactions]) + 1
            self._payment_number = sum(1 for t in self._transactions.values() if t["type"] == "CustPymt")
            return self.counts()

    def counts(self) -> dict[str, int]:
        with self._lock:
            invoices = sum(1 for t in self._transactions.values() if t["type"] == "CustInvc")
            return {"customers": len(self._customers), "contacts": len(self._contacts), "invoices": invoices,
                    "payments": len(self._transactions) - invoices}

    def inject(self, kind: str, path: str | None = None, times: int = 1, delay_s: float = 0.0,
               after_processing: bool = False, method: str | None = None) -> None:
        """Queue `times` faults for requests to `path` ("suiteql", "token", "record/customerpayment",
        or a URL path). `after_processing=True` applies the fault after the request took effect."""
        with self._lock:
            self._faults.add(kind, path, times, delay_s, after_processing, method)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._latency_ms = float(self.config.latency_ms)

    def set_latency(self, latency_ms: float) -> None:
        with self._lock:
            self._latency_ms = max(float(latency_ms), 0.0)

    # Read-only views for tests: copies of the stored records (ids are ints, money Decimal).

    @property
    def customers(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(c) for c in self._customers.values()]

    @property
    def invoices(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(t) for t in self._transactions.values() if t["type"] == "CustInvc"]

    @property
    def payments(self) -> list[dict[str, Any]]:
        """Customer payments, each with `apply`: {invoice id: amount applied}."""
        with self._lock:
            return [self._payment_view(t) for t in self._transactions.values() if t["type"] == "CustPymt"]

    @property
    def contacts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(c) for c in self._contacts.values()]

    def customer(self, customer_id: int | str) -> dict[str, Any]:
        with self._lock:
            return dict(self._require(self._customers, customer_id, "customer"))

    def invoice(self, invoice_id: int | str) -> dict[str, Any]:
        with self._lock:
            return dict(self._require_invoice(int(invoice_id)))

    def payment(self, payment_id: int | str) -> dict[str, Any]:
        with self._lock:
            record = self._transactions.get(int(payment_id))
            if record is None or record["type"] != "CustPymt":
                raise KeyError(f"customer payment {payment_id} not found")
            return self._payment_view(record)

    def address(self, nkey: int | str) -> dict[str, Any]:
        with self._lock:
            return dict(self._require(self._addresses, nkey, "address"))

    # Changes made "in the NetSuite UI": they bump lastmodifieddate like real edits.

    def pay_invoice(self, invoice_id: int | str, amount: Decimal | str | None = None, *,
                    external_id: str | None = None, memo: str | None = None) -> dict[str, Any]:
        """A customer's payment recorded in NetSuite itself (not through our integration)."""
        with self._lock:
            invoice = self._require_invoice(int(invoice_id))
            value = invoice["foreignamountunpaid"] if amount is None else _money(amount, "payment")
            body = {"customer": {"id": invoice["entity"]}, "payment": value, "memo": memo,
                    "apply": {"items": [{"doc": {"id": invoice["id"]}, "apply": True, "amount": value}]}}
            if external_id:
                body["externalId"] = external_id
            payment = self._create_payment(body, external_id=external_id)
            return self._payment_view(payment)

    def add_customer(self, **fields: Any) -> dict[str, Any]:
        with self._lock:
            now = self._write_time()
            customer_id = self._new_entity_id()
            name = fields.get("companyname") or f"Customer {customer_id}"
            record = {column: None for column in CUSTOMER_COLUMNS if column not in ("balancesearch",
                                                                                     "overduebalancesearch")}
            record.update(id=customer_id, entityid=f"CUST{customer_id} {name}", altname=name, companyname=name,
                          isperson="F", isinactive="F", currency=1, datecreated=now, lastmodifieddate=now)
            address = fields.pop("address", None)
            record.update(fields)
            if address:
                nkey = max(self._addresses, default=0) + 1
                self._addresses[nkey] = {"nkey": nkey, "addressee": name, **address}
                record["defaultbillingaddress"] = nkey
            self._customers[customer_id] = record
            return dict(record)

    def add_invoice(self, customer_id: int | str, total: Decimal | str = "100.00", **fields: Any) -> dict[str, Any]:
        with self._lock:
            customer = self._require(self._customers, customer_id, "customer")
            now, today = self._write_time(), self._today()
            amount = _money(total, "total")
            invoice_id = self._new_transaction_id()
            record = {
                "id": invoice_id, "tranid": f"INV{invoice_id + 5000}", "type": "CustInvc", "recordtype": "invoice",
                "entity": customer["id"], "trandate": today, "duedate": today + timedelta(days=30),
                "currency": customer.get("currency") or 1, "exchangerate": Decimal("1.00"), "foreigntotal": amount,
                "foreignamountpaid": ZERO, "foreignamountunpaid": amount, "status": "A", "voided": "F",
                "class": None, "memo": None, "terms": None, "otherrefnum": None, "externalid": None, "posting": "T",
                "createddate": now, "lastmodifieddate": now,
            }
            record.update(fields)
            self._transactions[invoice_id] = record
            return dict(record)

    def update_invoice(self, invoice_id: int | str, **fields: Any) -> dict[str, Any]:
        """Set raw column values (even malformed ones, e.g. foreigntotal="12.345"); bumps lastmodifieddate."""
        with self._lock:
            record = self._require_invoice(int(invoice_id))
            now = self._write_time()
            record.update(fields)
            if "lastmodifieddate" not in fields:
                record["lastmodifieddate"] = now
            return dict(record)

    def update_customer(self, customer_id: int | str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            record = self._require(self._customers, customer_id, "customer")
            now = self._write_time()
            record.update(fields)
            if "lastmodifieddate" not in fields:
                record["lastmodifieddate"] = now
            return dict(record)

    def void_invoice(self, invoice_id: int | str) -> dict[str, Any]:
        with self._lock:
            record = self._require_invoice(int(invoice_id))
            record.update(voided="T", status="V", lastmodifieddate=self._write_time())
            return dict(record)

    def delete_invoice(self, invoice_id: int | str) -> None:
        with self._lock:
            record = self._require_invoice(int(invoice_id))
            del self._transactions[record["id"]]
            self._deleted.append({"recordid": record["id"], "recordtypeid": "invoice", "type": "Invoice",
                                  "name": record["tranid"], "deleteddate": self._write_time()})

    def mutate(self, count: int = 10, seed: int = 1) -> list[int]:
        """Edit `count` random invoices' memos, as day-to-day activity would; returns their ids."""
        with self._lock:
            rng = random.Random(seed)
            ids = sorted(t["id"] for t in self._transactions.values() if t["type"] == "CustInvc")
            chosen = rng.sample(ids, min(count, len(ids)))
            now = self._write_time()
            for invoice_id in chosen:
                record = self._transactions[invoice_id]
                record["memo"] = f"Revised {now:%Y-%m-%d %H:%M}: {record.get('memo') or ''}"[:999]
                record["lastmodifieddate"] = now
            return chosen

    # ---- internals: records -----------------------------------------------------------------------------

    def _write_time(self) -> datetime:
        """The time of a change being made now; also invalidates cached query results."""
        self._version += 1
        return self.clock.now().astimezone(UTC).replace(microsecond=0)

    def _today(self) -> date:
        return self.clock.now().astimezone(self.timezone).date()

    def _new_entity_id(self) -> int:
        self._next_entity += 1
        return self._next_entity - 1

    def _new_transaction_id(self) -> int:
        self._next_transaction += 1
        return self._next_transaction - 1

    @staticmethod
    def _require(store: dict[int, dict[str, Any]], record_id: int | str, what: str) -> dict[str, Any]:
        try:
            return store[int(record_id)]
        except (KeyError, ValueError):
            raise KeyError(f"{what} {record_id} not found") from None

    def _require_invoice(self, invoice_id: int) -> dict[str, Any]:
        record = self._transactions.get(invoice_id)
        if record is None or record["type"] != "CustInvc":
            raise KeyError(f"invoice {invoice_id} not found")
        return record

    def _payment_view(self, record: dict[str, Any]) -> dict[str, Any]:
        return {**record, "apply": dict(self._applications.get(record["id"], {}))}

    # ---- SuiteQL catalog ----------------------------------------------------------------------------------

    def _catalog(self) -> Catalog:
        today = self._today()
        tables = {
            "transaction": Table("transaction", TRANSACTION_COLUMNS, lambda: self._transaction_rows(today), {
                "status": lambda value, row: seed_module.status_display(row.get("type", ""), value) or value,
                "entity": _by_value(self._entity_name), "currency": _by_value(self._currency_name),
                "class": _by_value(self._class_name),
            }),
            "customer": Table("customer", CUSTOMER_COLUMNS, lambda: self._customer_rows(today), {
                "category": _by_value(self._category_name), "currency": _by_value(self._currency_name),
                "parent": _by_value(self._entity_name), "defaultbillingaddress": _by_value(self._address_text),
            }),
            "contact": Table("contact", CONTACT_COLUMNS, lambda: self._contacts.values(),
                             {"company": _by_value(self._entity_name)}),
            "entityaddress": Table("entityaddress", ADDRESS_COLUMNS, lambda: self._addresses.values()),
            "currency": Table("currency", CURRENCY_COLUMNS, lambda: seed_module.CURRENCIES),
            "classification": Table("classification", {"id": INT, "name": TEXT, "isinactive": BOOL},
                                    lambda: seed_module.CLASSES),
            "customercategory": Table("customercategory", {"id": INT, "name": TEXT}, lambda: seed_module.CATEGORIES),
            "nexttransactionlinelink": Table("nexttransactionlinelink", LINK_COLUMNS, self._link_rows, {
                "previousdoc": _by_value(self._transaction_name), "nextdoc": _by_value(self._transaction_name),
            }),
            "deletedrecord": Table("deletedrecord", DELETED_COLUMNS, lambda: self._deleted),
        }
        return Catalog(tables, self.timezone, self.clock.now)

    def _transaction_rows(self, today: date) -> Iterable[dict[str, Any]]:
        for record in self._transactions.values():
            row = dict(record)
            due = record.get("duedate")
            unpaid = record.get("foreignamountunpaid")
            if record["type"] == "CustInvc" and isinstance(due, date) and isinstance(unpaid, Decimal) and unpaid > 0:
                row["daysoverduesearch"] = max((today - due).days, 0)
            else:
                row["daysoverduesearch"] = None
            yield row

    def _customer_rows(self, today: date) -> Iterable[dict[str, Any]]:
        balances: dict[int, Decimal] = {}
        overdue: dict[int, Decimal] = {}
        for record in self._transactions.values():
            unpaid = record.get("foreignamountunpaid")
            if record["type"] != "CustInvc" or record.get("voided") == "T" or not isinstance(unpaid, Decimal):
                continue
            balances[record["entity"]] = balances.get(record["entity"], ZERO) + unpaid
            due = record.get("duedate")
            if isinstance(due, date) and due < today:
                overdue[record["entity"]] = overdue.get(record["entity"], ZERO) + unpaid
        for record in self._customers.values():
            yield {**record, "balancesearch": balances.get(record["id"], ZERO),
                   "overduebalancesearch": overdue.get(record["id"], ZERO)}

    def _link_rows(self) -> Iterable[dict[str, Any]]:
        for payment_id, applications in self._applications.items():
            payment = self._transactions.get(payment_id)
            if payment is None:
                continue
            for line, (invoice_id, amount) in enumerate(sorted(applications.items()), start=1):
                yield {"previousdoc": invoice_id, "previousline": 0, "previoustype": "CustInvc",
                       "nextdoc": payment_id, "nextline": line, "nexttype": "CustPymt", "linktype": "Payment",
                       "foreignamount": amount, "amount": amount, "linkdate": payment["trandate"]}

    def _entity_name(self, value: Any) -> str | None:
        record = self._customers.get(value) or self._contacts.get(value)
        return None if record is None else record.get("entityid")

    def _transaction_name(self, value: Any) -> str | None:
        record = self._transactions.get(value)
        if record is None:
            return None
        label = "Invoice" if record["type"] == "CustInvc" else "Payment"
        return f"{label} #{record['tranid']}"

    @staticmethod
    def _currency_name(value: Any) -> str | None:
        return next((c["name"] for c in seed_module.CURRENCIES if c["id"] == value), None)

    @staticmethod
    def _class_name(value: Any) -> str | None:
        return next((c["name"] for c in seed_module.CLASSES if c["id"] == value), None)

    @staticmethod
    def _category_name(value: Any) -> str | None:
        return next((c["name"] for c in seed_module.CATEGORIES if c["id"] == value), None)

    def _address_text(self, value: Any) -> str | None:
        address = self._addresses.get(value)
        if address is None:
            return None
        parts = [address.get(k) for k in ("addressee", "addr1", "addr2", "city", "state", "zip", "country")]
        return "\n".join(str(p) for p in parts if p)

    # ---- SuiteQL endpoint -------------------------------------------------------------------------------

    def _suiteql(self, request: _Request) -> tuple[int, Any, dict[str, str]]:
        if request.method != "POST":
            raise ApiError(405, "INVALID_REQUEST", "SuiteQL queries are sent with POST.")
        if self.config.require_prefer_transient and "transient" not in request.header("prefer").lower():
            raise ApiError(400, "INVALID_HEADER", "The header Prefer: transient is required for SuiteQL queries.")
        body = request.json()
        query = body.get("q") if isinstance(body, dict) else None
        if not isinstance(query, str) or not query.strip():
            raise ApiError(400, "INVALID_CONTENT", "The request body must be a JSON object with the query in 'q'.")
        try:
            limit, offset = check_limit(request.param("limit"), request.param("offset"))
            if offset >= self.config.row_cap:
                raise SuiteQLError(f"Invalid offset {offset}: at most {self.config.row_cap} results can be "
                                   "retrieved by paging.", search_error=False)
            self.queries.append(query)
            rows = self._run(query)
        except SuiteQLError as exc:
            raise ApiError(400, "INVALID_PARAMETER", exc.detail, None) from None
        total = len(rows)
        reachable = min(total, self.config.row_cap)
        page = rows[offset:min(offset + limit, reachable)]
        items = [{"links": [], **{k: render(v, self.timezone) for k, v in row.items() if v is not None}}
                 for row in page]
        has_more = offset + len(page) < reachable
        return 200, {"links": self._page_links(request, limit, offset, reachable, has_more), "count": len(page),
                     "hasMore": has_more, "offset": offset, "totalResults": total, "items": items}, {}

    def _run(self, query: str) -> list[dict[str, Any]]:
        # Paging re-sends the same query for every page; on a 100k-row book re-running it each time would
        # make a full read quadratic, so results are kept until the next change (or the next day).
        key = (query, self._today(), self._version)
        rows = self._results.get(key)
        if rows is None:
            rows = execute(self._catalog(), query)
            if len(self._results) >= 16:
                self._results.clear()
            self._results[key] = rows
        return rows

    @staticmethod
    def _page_links(request: _Request, limit: int, offset: int, reachable: int,
                    has_more: bool) -> list[dict[str, str]]:
        def href(at: int) -> str:
            return f"{request.base_url}{SUITEQL_PATH}?limit={limit}&offset={at}"

        last = max(((reachable - 1) // limit) * limit, 0)
        links = [{"rel": "first", "href": href(0)}]
        if offset > 0:
            links.append({"rel": "prev", "href": href(max(offset - limit, 0))})
        if has_more:
            links.append({"rel": "next", "href": href(offset + limit)})
        links += [{"rel": "last", "href": href(last)}, {"rel": "self", "href": href(offset)}]
        return links

    # ---- record API -------------------------------------------------------------------------------------

    def _record(self, request: _Request) -> tuple[int, Any, dict[str, str]]:
        segments = [unquote(s) for s in request.path[len(RECORD_PREFIX):].split("/") if s]
        if not segments:
            raise ApiError(404, "NONEXISTENT_ID", "Provide a record type.")
        record_type = segments[0].lower()
        if record_type == "metadata-catalog":
            return self._metadata(request, segments[1:])
        handlers = {"customer": self._customer_route, "invoice": self._invoice_route,
                    "customerpayment": self._payment_route}
        handler = handlers.get(record_type)
        if handler is None:
            raise ApiError(400, "INVALID_RCRD_TYPE",
                           f"Record type '{segments[0]}' is not supported by REST web services.")
        return handler(request, segments)

    def _find(self, kind: str, key: str) -> dict[str, Any]:
        """`123` or `eid:ABC` -> the stored record of this kind, else 404."""
        if kind == "customer":
            store: Iterable[dict[str, Any]] = self._customers.values()
        else:
            wanted = {"invoice": "CustInvc", "customerpayment": "CustPymt"}[kind]
            store = (t for t in self._transactions.values() if t["type"] == wanted)
        if key.startswith("eid:"):
            external = key[4:]
            found = next((r for r in store if r.get("externalid") == external), None)
        else:
            found = next((r for r in store if str(r["id"]) == key), None) if key.isdigit() else None
        if found is None:
            raise ApiError(404, "NONEXISTENT_ID", _NOT_FOUND)
        return found

    def _customer_route(self, request: _Request, segments: list[str]) -> tuple[int, Any, dict[str, str]]:
        if len(segments) != 2:
            raise ApiError(404, "NONEXISTENT_ID", _NOT_FOUND)
        record = self._find("customer", segments[1])
        if request.method == "GET":
            return 200, self._select_fields(request, self._customer_json(request, record)), {}
        if request.method == "PATCH":
            self._patch_customer(request, record)
            return 204, None, {"Location": f"{request.base_url}{RECORD_PREFIX}customer/{record['id']}"}
        raise ApiError(405, "INVALID_REQUEST", f"{request.method} is not allowed on a customer.")

    def _customer_json(self, request: _Request, record: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "links": [{"rel": "self", "href": f"{request.base_url}{RECORD_PREFIX}customer/{record['id']}"}],
            "id": str(record["id"]), "entityId": record.get("entityid"), "altName": record.get("altname"),
            "companyName": record.get("companyname"), "isPerson": _flag(record.get("isperson")),
            "firstName": record.get("firstname"), "lastName": record.get("lastname"), "email": record.get("email"),
            "phone": record.get("phone"), "altPhone": record.get("altphone"),
            "mobilePhone": record.get("mobilephone"), "comments": record.get("comments"),
            "isInactive": _flag(record.get("isinactive")), "externalId": record.get("externalid"),
            "dateCreated": record.get("datecreated"), "lastModifiedDate": record.get("lastmodifieddate"),
            "defaultAddress": self._address_text(record.get("defaultbillingaddress")),
        }
        for column in ("parent", "category", "currency"):
            if record.get(column) is not None:
                name = {"parent": self._entity_name, "category": self._category_name,
                        "currency": self._currency_name}[column](record[column])
                out[column] = {"id": str(record[column]), "refName": name}
        if self.config.note_field and record.get(self.config.note_field) is not None:
            out[self.config.note_field] = record[self.config.note_field]
        return {k: v for k, v in out.items() if v is not None}

    @staticmethod
    def _select_fields(request: _Request, body: dict[str, Any]) -> dict[str, Any]:
        fields = request.param("fields")
        if not fields:
            return body
        wanted = {f.strip() for f in fields.split(",") if f.strip()} | {"links", "id"}
        return {k: v for k, v in body.items() if k in wanted}

    def _patch_customer(self, request: _Request, record: dict[str, Any]) -> None:
        body = request.json()
        if not isinstance(body, dict):
            raise ApiError(400, "INVALID_CONTENT", "The request body must be a JSON object.")
        writable = dict(CUSTOMER_WRITABLE)
        if self.config.note_field:
            writable[self.config.note_field] = self.config.note_field
        changes: dict[str, Any] = {}
        unknown = []
        for key, value in body.items():
            if key in writable:
                changes[writable[key]] = value
            elif key not in CUSTOMER_READ_ONLY:
                unknown.append(key)
        self._check_property_names(request, unknown, "customer")
        for column, value in changes.items():
            if column == "isinactive":
                changes[column] = _tf(value)
            elif value is not None and not isinstance(value, str):
                raise ApiError(400, "INVALID_FLD_VALUE", f"Invalid value for {column}: expected text.", column)
            limit = self._text_limit(column)
            if isinstance(value, str) and limit is not None and len(value) > limit:
                raise _user_error(f"Error while accessing a resource. The field {column} contained more than the "
                                  f"maximum number ( {limit} ) of characters allowed.", column)
        record.update(changes)
        record["lastmodifieddate"] = self._write_time()

    def _text_limit(self, column: str) -> int | None:
        if column == self.config.note_field:
            return self.config.note_field_max_length
        if column == "comments":
            return self.config.comments_max_length
        return 999 if column in ("email", "phone", "altphone", "mobilephone") else None

    @staticmethod
    def _check_property_names(request: _Request, unknown: list[str], record_type: str) -> None:
        if not unknown:
            return
        mode = request.header("x-netsuite-propertynamevalidation").strip().lower() or "warning"
        if mode == "error":
            raise ApiError(400, "INVALID_KEY_OR_REF",
                           f"Invalid field name(s) for record type '{record_type}': {', '.join(sorted(unknown))}.",
                           sorted(unknown)[0])

    def _invoice_route(self, request: _Request, segments: list[str]) -> tuple[int, Any, dict[str, str]]:
        if len(segments) == 2 and request.method == "GET":
            record = self._find("invoice", segments[1])
            return 200, self._select_fields(request, self._invoice_json(request, record)), {}
        if len(segments) == 4 and segments[2].lower() == "!transform" and segments[3].lower() == "customerpayment":
            if request.method != "POST":
                raise ApiError(405, "INVALID_REQUEST", "Transforms are sent with POST.")
            invoice = self._find("invoice", segments[1])
            payment = self._transform_to_payment(request, invoice)
            return 204, None, {"Location": f"{request.base_url}{RECORD_PREFIX}customerPayment/{payment['id']}"}
        raise ApiError(404, "NONEXISTENT_ID", _NOT_FOUND)

    def _invoice_json(self, request: _Request, record: dict[str, Any]) -> dict[str, Any]:
        status = seed_module.status_display("CustInvc", record.get("status", "")) or record.get("status")
        out = {
            "links": [{"rel": "self", "href": f"{request.base_url}{RECORD_PREFIX}invoice/{record['id']}"}],
            "id": str(record["id"]), "tranId": record.get("tranid"),
            "entity": {"id": str(record["entity"]), "refName": self._entity_name(record["entity"])},
            "tranDate": record.get("trandate"), "dueDate": record.get("duedate"), "total": record.get("foreigntotal"),
            "amountPaid": record.get("foreignamountpaid"), "amountRemaining": record.get("foreignamountunpaid"),
            "status": {"id": str(status).split(" : ")[-1], "refName": str(status).split(" : ")[-1]},
            "currency": {"id": str(record.get("currency")), "refName": self._currency_name(record.get("currency"))},
            "externalId": record.get("externalid"), "memo": record.get("memo"),
            "createdDate": record.get("createddate"), "lastModifiedDate": record.get("lastmodifieddate"),
        }
        if record.get("class") is not None:
            out["class"] = {"id": str(record["class"]), "refName": self._class_name(record["class"])}
        return {k: v for k, v in out.items() if v is not None}

    def _payment_route(self, request: _Request, segments: list[str]) -> tuple[int, Any, dict[str, str]]:
        def location(payment: dict[str, Any]) -> dict[str, str]:
            return {"Location": f"{request.base_url}{RECORD_PREFIX}{segments[0]}/{payment['id']}"}

        if len(segments) == 1:
            if request.method != "POST":
                raise ApiError(405, "INVALID_REQUEST", "Create customer payments with POST.")
            body = self._payment_body(request)
            return 204, None, location(self._create_payment(body, external_id=body.get("externalId")))
        key = segments[1]
        if len(segments) == 3 and segments[2].lower() == "apply" and request.method == "GET":
            payment = self._find("customerpayment", key)
            return 200, self._apply_json(payment), {}
        if len(segments) != 2:
            raise ApiError(404, "NONEXISTENT_ID", _NOT_FOUND)
        if request.method == "GET":
            payment = self._find("customerpayment", key)
            expand = request.param("expandSubResources").lower() == "true"
            return 200, self._select_fields(request, self._payment_json(request, payment, expand)), {}
        if request.method == "PUT":
            if not key.startswith("eid:"):
                raise ApiError(400, "INVALID_REQUEST", "PUT (upsert) needs an external id: .../eid:<externalId>.")
            external_id = key[4:]
            body = self._payment_body(request)
            if body.get("externalId") not in (None, external_id):
                raise _user_error("The externalId in the body differs from the one in the URL.", "externalId")
            existing = next((t for t in self._transactions.values()
                             if t["type"] == "CustPymt" and t.get("externalid") == external_id), None)
            if existing is None:
                return 204, None, location(self._create_payment(body, external_id=external_id))
            self._update_payment(existing, body)
            return 204, None, location(existing)
        if request.method == "PATCH":
            payment = self._find("customerpayment", key)
            self._update_payment(payment, self._payment_body(request))
            return 204, None, location(payment)
        raise ApiError(405, "INVALID_REQUEST", f"{request.method} is not allowed on a customer payment.")

    def _payment_body(self, request: _Request) -> dict[str, Any]:
        body = request.json()
        if not isinstance(body, dict):
            raise ApiError(400, "INVALID_CONTENT", "The request body must be a JSON object.")
        self._check_property_names(request, [k for k in body if k not in PAYMENT_FIELDS], "customerPayment")
        return body

    def _payment_json(self, request: _Request, payment: dict[str, Any], expand: bool) -> dict[str, Any]:
        applied = sum(self._applications.get(payment["id"], {}).values(), ZERO)
        status = seed_module.status_display("CustPymt", payment.get("status", "")) or payment.get("status")
        href = f"{request.base_url}{RECORD_PREFIX}customerPayment/{payment['id']}"
        out = {
            "links": [{"rel": "self", "href": href}], "id": str(payment["id"]), "tranId": payment.get("tranid"),
            "customer": {"id": str(payment["entity"]), "refName": self._entity_name(payment["entity"])},
            "payment": payment["foreigntotal"], "total": payment["foreigntotal"], "applied": applied,
            "unapplied": payment["foreigntotal"] - applied, "tranDate": payment.get("trandate"),
            "memo": payment.get("memo"), "externalId": payment.get("externalid"),
            "status": {"id": str(status).split(" : ")[-1], "refName": str(status).split(" : ")[-1]},
            "currency": {"id": str(payment.get("currency")), "refName": self._currency_name(payment.get("currency"))},
            "createdDate": payment.get("createddate"), "lastModifiedDate": payment.get("lastmodifieddate"),
            "apply": self._apply_json(payment) if expand else {"links": [{"rel": "self", "href": f"{href}/apply"}]},
        }
        return {k: v for k, v in out.items() if v is not None}

    def _apply_json(self, payment: dict[str, Any]) -> dict[str, Any]:
        """The apply sublist as NetSuite shows it: the applied invoices, then the customer's other open ones."""
        applications = self._applications.get(payment["id"], {})
        items = []
        open_invoices = [t for t in self._transactions.values() if t["type"] == "CustInvc"
                         and t["entity"] == payment["entity"] and t.get("voided") != "T"
                         and isinstance(t.get("foreignamountunpaid"), Decimal) and t["foreignamountunpaid"] > 0]
        for invoice_id in [*sorted(applications), *(t["id"] for t in open_invoices if t["id"] not in applications)]:
            invoice = self._transactions.get(invoice_id)
            if invoice is None:
                continue
            items.append({
                "links": [], "doc": {"id": str(invoice_id), "refName": self._transaction_name(invoice_id)},
                "line": 0, "apply": invoice_id in applications, "amount": applications.get(invoice_id, ZERO),
                "due": invoice.get("foreignamountunpaid"), "total": invoice.get("foreigntotal"),
                "refNum": invoice.get("tranid"), "type": "Invoice", "applyDate": invoice.get("trandate"),
                "currency": self._currency_name(invoice.get("currency")),
            })
        return {"links": [], "items": items, "totalResults": len(items), "count": len(items), "hasMore": False,
                "offset": 0}

    # ---- payments: validation and effects ----------------------------------------------------------------

    def _create_payment(self, body: dict[str, Any], *, external_id: str | None) -> dict[str, Any]:
        customer_id = self._payment_customer(body, None)
        if external_id is not None and any(t.get("externalid") == external_id and t["type"] == "CustPymt"
                                           for t in self._transactions.values()):
            raise _user_error(f"A customer payment with external ID {external_id} already exists.", "externalId")
        applications = self._requested_applications(body, customer_id, current={})
        amount = self._payment_amount(body, applications, None)
        now = self._write_time()
        self._payment_number += 1
        payment = {
            "id": self._new_transaction_id(), "tranid": f"PYMT{self._payment_number:05d}", "type": "CustPymt",
            "recordtype": "customerpayment", "entity": customer_id, "trandate": self._tran_date(body, None),
            "duedate": None, "currency": self._customers[customer_id].get("currency") or 1,
            "exchangerate": Decimal("1.00"), "foreigntotal": amount, "foreignamountpaid": None,
            "foreignamountunpaid": None, "status": "B", "voided": "F", "class": None, "memo": body.get("memo"),
            "terms": None, "otherrefnum": None, "externalid": external_id, "posting": "T", "createddate": now,
            "lastmodifieddate": now,
        }
        if isinstance(body.get("account"), dict):
            payment["account"] = _ref_id(body["account"], "account")
        self._transactions[payment["id"]] = payment
        self._apply(payment["id"], {}, applications)
        return payment

    def _update_payment(self, payment: dict[str, Any], body: dict[str, Any]) -> None:
        customer_id = self._payment_customer(body, payment["entity"])
        if customer_id != payment["entity"]:
            raise _user_error("The customer of a payment cannot be changed.", "customer")
        current = dict(self._applications.get(payment["id"], {}))
        requested = self._requested_applications(body, customer_id, current=current)
        # Lines not named keep their application: sublists merge unless replaced (reference §2.5).
        wanted = {**current, **requested}
        wanted = {invoice: amount for invoice, amount in wanted.items() if amount > 0}
        amount = self._payment_amount(body, wanted, payment["foreigntotal"])
        payment.update(foreigntotal=amount, trandate=self._tran_date(body, payment["trandate"]),
                       lastmodifieddate=self._write_time())
        if "memo" in body:
            payment["memo"] = body["memo"]
        self._apply(payment["id"], current, wanted)

    def _payment_customer(self, body: dict[str, Any], default: int | None) -> int:
        if body.get("customer") is None:
            if default is None:
                raise _user_error("Please enter value(s) for: Customer", "customer")
            return default
        customer_id = _ref_id(body["customer"], "customer")
        if customer_id not in self._customers:
            raise _user_error(f"Invalid customer reference key {customer_id}.", "customer")
        return customer_id

    def _requested_applications(self, body: dict[str, Any], customer_id: int,
                                current: dict[int, Decimal]) -> dict[int, Decimal]:
        """{invoice: amount} asked for in `apply.items` (0 means unapply), validated against open balances."""
        apply = body.get("apply")
        if apply is None:
            return {}
        items = apply.get("items") if isinstance(apply, dict) else apply
        if not isinstance(items, list):
            raise ApiError(400, "INVALID_CONTENT", "apply must be {\"items\": [...]}", "apply")
        requested: dict[int, Decimal] = {}
        for index, item in enumerate(items):
            path = f"apply.items[{index}]"
            if not isinstance(item, dict) or item.get("doc") is None:
                raise _user_error("Each apply line needs a doc reference.", f"{path}.doc")
            invoice_id = _ref_id(item["doc"], f"{path}.doc")
            invoice = self._transactions.get(invoice_id)
            if invoice is None or invoice["type"] != "CustInvc" or invoice["entity"] != customer_id:
                raise _user_error(f"Invalid apply reference key {invoice_id}: not an invoice of customer "
                                  f"{customer_id}.", f"{path}.doc")
            if item.get("apply", True) not in (True, "true", "T"):
                requested[invoice_id] = ZERO
                continue
            if invoice.get("voided") == "T" or invoice.get("status") not in ("A", "B"):
                raise _user_error(f"Invoice {invoice['tranid']} is not open for payment.", f"{path}.doc")
            available = _money(invoice["foreignamountunpaid"], "due") + current.get(invoice_id, ZERO)
            amount = available if item.get("amount") is None else _money(item["amount"], f"{path}.amount")
            if amount <= 0:
                raise _user_error("The amount applied must be greater than zero.", f"{path}.amount")
            if amount > available:
                raise _user_error(f"The amount applied to invoice {invoice['tranid']} ({amount}) exceeds its amount "
                                  f"remaining ({available}).", f"{path}.amount")
            requested[invoice_id] = amount
        return requested

    @staticmethod
    def _payment_amount(body: dict[str, Any], applications: dict[int, Decimal], default: Decimal | None) -> Decimal:
        applied = sum(applications.values(), ZERO)
        if body.get("payment") is None:
            amount = default if default is not None and default >= applied else applied
        else:
            amount = _money(body["payment"], "payment")
        if amount <= 0:
            raise _user_error("Please enter value(s) for: Payment Amount", "payment")
        if applied > amount:
            raise _user_error(f"The total applied ({applied}) exceeds the payment amount ({amount}).", "payment")
        return amount

    def _tran_date(self, body: dict[str, Any], default: date | None) -> date:
        value = body.get("tranDate")
        if value is None:
            return default or self._today()
        try:
            return date.fromisoformat(str(value)[:10])
        except ValueError:
            raise ApiError(400, "INVALID_FLD_VALUE", f"Invalid date {value!r}: expected YYYY-MM-DD.",
                           "tranDate") from None

    def _apply(self, payment_id: int, before: dict[int, Decimal], after: dict[int, Decimal]) -> None:
        """Move invoice balances from one application state to the other; the amount is set, never added."""
        now = self._write_time()
        for invoice_id in set(before) | set(after):
            delta = after.get(invoice_id, ZERO) - before.get(invoice_id, ZERO)
            if delta == 0:
                continue
            invoice = self._transactions[invoice_id]
            invoice["foreignamountunpaid"] = invoice["foreignamountunpaid"] - delta
            invoice["foreignamountpaid"] = (invoice.get("foreignamountpaid") or ZERO) + delta
            invoice["status"] = "B" if invoice["foreignamountunpaid"] <= 0 else "A"
            invoice["lastmodifieddate"] = now
        if after:
            self._applications[payment_id] = dict(after)
        else:
            self._applications.pop(payment_id, None)

    def _transform_to_payment(self, request: _Request, invoice: dict[str, Any]) -> dict[str, Any]:
        body = self._payment_body(request)
        unpaid = invoice.get("foreignamountunpaid") or ZERO
        if invoice.get("voided") == "T" or unpaid <= 0:
            raise _user_error(f"Invoice {invoice['tranid']} has no amount remaining to pay.")
        merged = {"customer": {"id": invoice["entity"]}, **body}
        if "apply" not in body:
            amount = unpaid if body.get("payment") is None else min(_money(body["payment"], "payment"), unpaid)
            merged["apply"] = {"items": [{"doc": {"id": invoice["id"]}, "apply": True, "amount": amount}]}
        return self._create_payment(merged, external_id=body.get("externalId"))

    # ---- metadata and governance ---------------------------------------------------------------------------

    def _metadata(self, request: _Request, rest: list[str]) -> tuple[int, Any, dict[str, str]]:
        records = ("customer", "invoice", "customerPayment")
        accept = request.header("accept").lower()
        if not rest and "swagger" not in accept:
            base = f"{request.base_url}{RECORD_PREFIX}metadata-catalog"
            return 200, {"items": [{"name": name, "links": [
                {"rel": "canonical", "href": f"{base}/{name.lower()}", "mediaType": "application/json"},
                {"rel": "alternate", "href": f"{base}/{name.lower()}", "mediaType": "application/swagger+json"},
                {"rel": "describes", "href": f"{base}/{name.lower()}", "mediaType": "application/schema+json"},
            ]} for name in records]}, {}
        schemas = {name: self._json_schema(name) for name in records}
        if rest:
            name = next((n for n in records if n.lower() == rest[0].lower()), None)
            if name is None:
                raise ApiError(404, "NONEXISTENT_ID", f"Record type '{rest[0]}' was not found in the catalog.")
            if "swagger" not in accept:
                return 200, schemas[name], {}
            schemas = {name: schemas[name]}
        return 200, {"openapi": "3.0.1", "info": {"title": "NetSuite REST Record API (sandbox)", "version": "v1"},
                     "paths": {f"/{name.lower()}/{{id}}": {} for name in schemas},
                     "components": {"schemas": schemas}}, {}

    def _json_schema(self, name: str) -> dict[str, Any]:
        text = {"type": "string", "nullable": True}
        properties: dict[str, Any]
        if name == "customer":
            properties = {key: text for key in CUSTOMER_WRITABLE}
            properties.update(isInactive={"type": "boolean"}, isPerson={"type": "boolean"},
                              entityId=text, id=text)
            if self.config.note_field:
                properties[self.config.note_field] = {**text, "title": "AgentCollect notes",
                                                      "maxLength": self.config.note_field_max_length,
                                                      "x-ns-custom-field": True}
        elif name == "invoice":
            properties = {"id": text, "tranId": text, "entity": {"type": "object"}, "total": {"type": "number"},
                          "amountRemaining": {"type": "number"}, "dueDate": {"type": "string", "format": "date"}}
        else:
            properties = {"id": text, "customer": {"type": "object"}, "payment": {"type": "number"},
                          "tranDate": {"type": "string", "format": "date"}, "memo": text, "externalId": text,
                          "apply": {"type": "object"}}
        return {"type": "object", "title": name, "properties": properties}

    def _governance(self, request: _Request) -> tuple[int, Any, dict[str, str]]:
        limit = self.config.concurrency_limit
        return 200, {"accountConcurrencyLimit": limit, "accountUnallocatedConcurrencyLimit": limit,
                     "concurrencyLimitType": "ACCOUNT"}, {}

    # ---- OAuth 2.0 client credentials --------------------------------------------------------------------

    def _token(self, request: _Request) -> tuple[int, Any, dict[str, str]]:
        if request.method != "POST":
            raise OAuthError("invalid_request", "use POST", 405)
        form = request.form()
        if form.get("grant_type") != "client_credentials":
            raise OAuthError("unsupported_grant_type", "grant_type must be client_credentials")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise OAuthError("invalid_request", "client_assertion_type must be the jwt-bearer assertion type")
        assertion = form.get("client_assertion")
        if not assertion:
            raise OAuthError("invalid_request", "client_assertion is missing")
        self._verify_assertion(assertion, request)
        token = secrets.token_urlsafe(48)
        self._tokens[token] = self.clock.now() + timedelta(seconds=self.config.token_lifetime_s)
        self._stats["tokens_issued"] += 1
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": self.config.token_lifetime_s}, {
            "Cache-Control": "no-store"}

    def _verify_assertion(self, assertion: str, request: _Request) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            raise OAuthError("invalid_request", "client_assertion is not a JWT") from None
        if str(header.get("typ", "")).upper() != "JWT":
            raise OAuthError("invalid_grant", "the JWT header must have typ JWT")
        algorithm = header.get("alg")
        if algorithm not in JWT_ALGORITHMS:
            raise OAuthError("invalid_grant", f"alg must be one of {', '.join(JWT_ALGORITHMS)}")
        registered = self._certificates.get(str(header.get("kid", "")))
        if registered is None:
            raise OAuthError("invalid_client", "kid is not a certificate id mapped to this integration")
        public_key, client_id = registered
        audiences = [f"{request.base_url}{TOKEN_PATH}",
                     f"https://{account_slug(self.config.account_id)}.suitetalk.api.netsuite.com{TOKEN_PATH}"]
        try:
            claims = jwt.decode(assertion, public_key, algorithms=[algorithm], audience=audiences,
                                options={"require": ["iss", "aud", "iat", "exp"], "verify_exp": False,
                                         "verify_iat": False, "verify_nbf": False})
        except jwt.InvalidAudienceError:
            raise OAuthError("invalid_grant", "aud must be the token endpoint URL") from None
        except jwt.InvalidSignatureError:
            raise OAuthError("invalid_grant", "the signature does not verify with the certificate") from None
        except jwt.PyJWTError as exc:
            raise OAuthError("invalid_grant", f"the assertion is not valid ({type(exc).__name__})") from None
        if claims.get("iss") != client_id:
            raise OAuthError("invalid_client", "iss must be the integration's client id")
        self._check_times(claims)
        scopes = claims.get("scope")
        scope_list = scopes if isinstance(scopes, list) else re.split(r"[,\s]+", str(scopes or ""))
        if "rest_webservices" not in scope_list:
            raise OAuthError("invalid_grant", "scope must include rest_webservices")
        return claims

    def _check_times(self, claims: dict[str, Any]) -> None:
        try:
            issued, expires = float(claims["iat"]), float(claims["exp"])
        except (TypeError, ValueError):
            raise OAuthError("invalid_grant", "iat and exp must be numbers") from None
        now, leeway = self._jwt_clock(), self.config.jwt_leeway_s
        if expires - issued > 3600:
            raise OAuthError("invalid_grant", "exp must be at most 60 minutes after iat")
        if expires <= issued:
            raise OAuthError("invalid_grant", "exp must be after iat")
        if expires < now - leeway:
            raise OAuthError("invalid_grant", "the assertion has expired")
        if issued > now + leeway:
            raise OAuthError("invalid_grant", "iat is in the future")

    def _authenticate(self, request: _Request) -> None:
        header = request.header("authorization")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        expiry = self._tokens.get(token) if token else None
        if expiry is None or expiry <= self.clock.now():
            if expiry is not None:
                del self._tokens[token]
            raise ApiError(401, "INVALID_LOGIN", _LOGIN_FAILED)
        host = request.header("host").split(":")[0].lower()
        if host.endswith(".suitetalk.api.netsuite.com") and host.split(".")[0] != account_slug(self.config.account_id):
            raise ApiError(401, "INVALID_LOGIN", _LOGIN_FAILED)

    # ---- HTTP plumbing ---------------------------------------------------------------------------------------

    def _route(self, request: _Request) -> tuple[int, Any, dict[str, str]]:
        if request.path.startswith(SUITEQL_PATH):
            return self._suiteql(request)
        if request.path.startswith(RECORD_PREFIX):
            return self._record(request)
        if request.path.startswith(GOVERNANCE_PATH) and request.method == "GET":
            return self._governance(request)
        raise ApiError(404, "NONEXISTENT_ID", f"No REST resource at {request.path}.")

    def _count_error(self, code: str) -> None:
        errors = self._stats["errors"]
        errors[code] = errors.get(code, 0) + 1

    def _api_error(self, error: ApiError) -> tuple[int, bytes, dict[str, str]]:
        self._count_error(error.code)
        body = error_body(error.status, error.code, error.detail, error.error_path)
        return error.status, dumps(body), {"Content-Type": "application/vnd.oracle.resource+json; type=error"}

    def _fault_response(self, fault: Fault) -> tuple[int, bytes, dict[str, str]]:
        self._stats["faults_injected"] += 1
        if fault.kind == "http_429":
            return self._api_error(ApiError(429, "CONCURRENCY_LIMIT_EXCEEDED",
                                            "Concurrent request limit exceeded. Request blocked."))
        if fault.kind == "http_500":
            return self._api_error(ApiError(500, "UNEXPECTED_ERROR",
                                            "An unexpected error occurred. Error ID: sandbox-injected"))
        if fault.kind == "http_401":
            return self._api_error(ApiError(401, "INVALID_LOGIN", _LOGIN_FAILED))
        if fault.kind == "http_503":
            return 503, b"<html><body><h1>503 Service Unavailable</h1></body></html>", {"Content-Type": "text/html"}
        return 200, b'{"links":[],"count":3,"hasMore":false,"items":[{"links":[],"id":"5', {
            "Content-Type": "application/json"}

    async def _asgi(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        request = _Request(scope, body or b"")
        if request.path == "/sandbox" or request.path.startswith("/sandbox/"):
            status, payload = self._control(request)
            await _respond(send, status, dumps(payload), {"Content-Type": "application/json"})
            return
        await self._serve(request, send)

    async def _serve(self, request: _Request, send: Callable[..., Any]) -> None:
        op = _op_name(request.path)
        governed = op != "token"
        with self._lock:
            calls = self._stats["calls"]
            calls[op] = calls.get(op, 0) + 1
            self._stats["total_calls"] += 1
            if governed and self._in_flight >= self.config.concurrency_limit:
                self._stats["rejected_concurrent"] += 1
                rejected = self._api_error(ApiError(
                    429, "CONCURRENCY_LIMIT_EXCEEDED",
                    f"Concurrent request limit exceeded ({self.config.concurrency_limit}). Request blocked."))
            else:
                rejected = None
                if governed:
                    self._in_flight += 1
                    self._stats["max_in_flight_seen"] = max(self._stats["max_in_flight_seen"], self._in_flight)
            latency = self._latency_ms / 1000.0
        if rejected is not None:
            await _respond(send, *rejected)
            return
        released = not governed

        def release() -> None:
            # Before the response is written: a client that frees its own slot on reading the answer may
            # send its next request at once and must not meet a stale in-flight count.
            nonlocal released
            if not released:
                released = True
                with self._lock:
                    self._in_flight -= 1

        try:
            if latency > 0:
                await asyncio.sleep(latency)
            outcome = await self._handle(request, op)
            release()
            if outcome == "drop":
                await _drop_connection(send)
            else:
                await _respond(send, *outcome)
        finally:
            release()

    async def _handle(self, request: _Request, op: str) -> tuple[int, bytes, dict[str, str]] | str:
        """The response to send, or "drop" to close the connection without one."""
        with self._lock:
            fault = self._faults.take(op, request.method)
        if fault is not None and fault.kind == "delay" and not fault.after_processing:
            await asyncio.sleep(fault.delay_s)
            fault = None
        if fault is not None and not fault.after_processing:
            return self._fault_outcome(fault)
        with self._lock:
            response = self._process(request, op)
        if fault is None:
            return response
        if fault.kind == "delay":
            await asyncio.sleep(fault.delay_s)
            return response
        # The request took effect (e.g. a payment was committed) and the client never learns it.
        return self._fault_outcome(fault)

    def _fault_outcome(self, fault: Fault) -> tuple[int, bytes, dict[str, str]] | str:
        with self._lock:
            if fault.kind == "drop":
                self._stats["faults_injected"] += 1
                return "drop"
            return self._fault_response(fault)

    def _process(self, request: _Request, op: str) -> tuple[int, bytes, dict[str, str]]:
        try:
            if op == "token":
                status, payload, headers = self._token(request)
            else:
                self._authenticate(request)
                status, payload, headers = self._route(request)
        except OAuthError as error:
            self._count_error(error.error)
            return error.status, dumps({"error": error.error, "error_description": error.description}), {
                "Content-Type": "application/json", "Cache-Control": "no-store"}
        except ApiError as error:
            return self._api_error(error)
        if payload is None:
            return status, b"", headers
        return status, dumps(payload), {"Content-Type": "application/json", **headers}

    # ---- control API ----------------------------------------------------------------------------------------

    def _control(self, request: _Request) -> tuple[int, Any]:
        try:
            payload = request.json() if request.body.strip() else {}
        except ApiError:
            return 400, {"error": "body must be JSON"}
        parts = [unquote(p) for p in request.path.strip("/").split("/")[1:]]
        try:
            return 200, self._control_route(request.method, parts, payload if isinstance(payload, dict) else {})
        except KeyError as exc:
            return 404, {"error": str(exc.args[0] if exc.args else exc)}
        except (ValueError, TypeError, ApiError) as exc:
            return 400, {"error": str(exc)}

    def _control_route(self, method: str, parts: list[str], body: dict[str, Any]) -> Any:
        match (method, *parts):
            case ("GET", "stats"):
                return self.stats
            case ("POST", "stats", "reset"):
                self.reset_stats()
                return self.stats
            case ("GET", "clock"):
                return {"now": self.clock.now().isoformat()}
            case ("POST", "clock"):
                if "now" in body:
                    self.clock.set(datetime.fromisoformat(str(body["now"])))
                if "advance_seconds" in body:
                    self.clock.advance(float(body["advance_seconds"]))
                return {"now": self.clock.now().isoformat()}
            case ("POST", "inject"):
                self.inject(body["kind"], path=body.get("path"), times=int(body.get("times", 1)),
                            delay_s=float(body.get("delay_s", 0.0)),
                            after_processing=bool(body.get("after_processing", False)), method=body.get("method"))
                return {"queued": len(self._faults)}
            case ("POST", "faults", "clear"):
                self.clear_faults()
                return {"queued": 0}
            case ("POST", "latency"):
                self.set_latency(float(body.get("latency_ms", 0)))
                return {"latency_ms": self._latency_ms}
            case ("POST", "seed"):
                return self.seed(seed=int(body.get("seed", 7)), invoices=int(body.get("invoices", 2000)),
                                 customers=int(body.get("customers", 400)))
            case ("GET", "counts"):
                return self.counts()
            case ("GET", "credentials"):
                return self.credentials
            case ("POST", "invoices", invoice_id, "pay"):
                return self.pay_invoice(invoice_id, body.get("amount"), external_id=body.get("external_id"))
            case ("POST", "invoices", invoice_id, "void"):
                return self.void_invoice(invoice_id)
            case ("POST", "mutate"):
                return {"ids": self.mutate(count=int(body.get("count", 10)), seed=int(body.get("seed", 1)))}
        raise KeyError(f"no control route {method} /sandbox/{'/'.join(parts)}")


class _Request:
    """The parts of an ASGI HTTP request the sandbox reads."""

    def __init__(self, scope: dict[str, Any], body: bytes) -> None:
        self.method: str = scope["method"].upper()
        self.path: str = scope["path"]
        self.body = body
        self._headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        query = scope.get("query_string", b"").decode("latin-1")
        self._params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
        scheme = scope.get("scheme", "http")
        self.base_url = f"{scheme}://{self.header('host') or 'localhost'}"

    def header(self, name: str) -> str:
        return self._headers.get(name.lower(), "")

    def param(self, name: str) -> str:
        return self._params.get(name, "")

    def json(self) -> Any:
        if not self.body.strip():
            return {}
        try:
            return json.loads(self.body, parse_float=Decimal)
        except ValueError:
            raise ApiError(400, "INVALID_CONTENT", "The request body is not valid JSON.") from None

    def form(self) -> dict[str, str]:
        parsed = parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)
        return {key: values[0] for key, values in parsed.items()}


async def _respond(send: Callable[..., Any], status: int, body: bytes, headers: dict[str, str]) -> None:
    head = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    head.append((b"content-length", str(len(body)).encode()))
    try:
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": body})
    except OSError:
        pass  # the client gave up (e.g. timed out during an injected delay); nothing left to tell it


async def _drop_connection(send: Callable[..., Any]) -> None:
    # Announce a body and never send it: the server closes the socket (logging one line, no traceback) and
    # the client sees a broken response, as when a connection drops after NetSuite did the work.
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"64")]})


# --------------------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    """Seed a sandbox and serve it until killed; prints one "listening on" line once the port is live."""
    from ..server import serve_forever

    parser = argparse.ArgumentParser(prog="netsuite-sandbox", description="Local NetSuite REST/SuiteQL sandbox.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--invoices", type=int, default=2000)
    parser.add_argument("--customers", type=int, default=400)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--concurrency-limit", type=int, default=5)
    parser.add_argument("--private-key-file", help="PEM key whose certificate is registered (default: generated)")
    parser.add_argument("--credentials-out", help="write the integration credentials (incl. the private key) here")
    args = parser.parse_args(argv)

    sandbox = NetSuiteSandbox(SandboxConfig(latency_ms=args.latency_ms, concurrency_limit=args.concurrency_limit))
    if args.private_key_file:
        with open(args.private_key_file, "rb") as handle:
            sandbox.use_private_key(handle.read())
    sandbox.seed(seed=args.seed, invoices=args.invoices, customers=args.customers)
    if args.credentials_out:
        _write_private(args.credentials_out, json.dumps(sandbox.credentials, indent=2))

    def announce(url: str) -> None:
        print(f"netsuite sandbox listening on {url}", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        serve_forever(sandbox.app, host=args.host, port=args.port, on_started=announce)
    return 0


def _write_private(path: str, text: str) -> None:
    import os

    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


if __name__ == "__main__":
    sys.exit(main())
