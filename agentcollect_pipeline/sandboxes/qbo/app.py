"""A local stand-in for QuickBooks Online's Accounting API v3 and Intuit's OAuth 2.0 token endpoint.

Implements the emulator checklist of /work/shared/reference/qbo-netsuite.md §4.1. One `QBOSandbox` holds an
in-memory company and exposes it as a raw ASGI app (`.app`):

- `POST /oauth2/v1/tokens/bearer`: refresh-token rotation (the old token dies at once, or after a
  configurable grace period during which it yields the same successor), `invalid_grant` for stale,
  revoked or expired tokens, `authorization_code` for reconnects. `/oauth2/v1/tokens/revoke` and the
  discovery document are there too.
- `/v3/company/{realm}/...`: query (GET `?query=` or POST `application/text`), reads by id, payment
  create, customer sparse/full update, attachable create, CDC; Bearer auth; `requestid` replay of the
  byte-identical original answer; per-realm throttling (500/min, 10 in flight) with the ThrottleExceeded
  body; Fault envelopes with QBO's codes.
- `/sandbox/...`: a small JSON control API for processes that cannot reach the Python object.

The query language lives in query.py.

Money is `Decimal` inside and a JSON number on the wire (QBO writes `362.5`, not `362.50`). Timestamps are
aware datetimes inside and the company's local time with offset on the wire, as QBO does. "Now" comes from
an injectable `SandboxClock`; throttling windows use real time, because they are about request rates.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import hmac
import itertools
import json
import re
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs, unquote
from zoneinfo import ZoneInfo

from agentcollect_pipeline.asgi import read_body
from agentcollect_pipeline.sandboxes.common import (
    Fault,
    FaultQueue,
    SandboxClock,
    SandboxSurface,
    asgi_app,
    serve_lifespan,
)
from agentcollect_pipeline.sandboxes.qbo.query import (
    COMMON_FIELDS,
    COMPARE,
    QUERYABLE,
    ApiError,
    comparable,
    invalid_query,
    like_pattern,
    parse_error,
    parse_query,
    validation_fault,
    values_at,
)

__all__ = ["QBOSandbox", "SandboxClock", "SandboxConfig", "main", "parse_query"]

API_PREFIX = "/v3/company/"
TOKEN_PATH = "/oauth2/v1/tokens/bearer"
REVOKE_PATH = "/oauth2/v1/tokens/revoke"
DISCOVERY_PATH = "/.well-known/openid_configuration"
FAULT_KINDS = ("http_429", "http_500", "http_503", "drop", "delay", "malformed")
ENTITIES = ("Customer", "Invoice", "Payment", "Attachable", "CustomerType", "CompanyInfo")
NAME_LISTS = ("Customer", "CustomerType")
CDC_ENTITIES = ("Customer", "Invoice", "Payment", "Attachable", "CustomerType")
PATH_ENTITY = {name.lower(): name for name in ENTITIES}
THROTTLE_MESSAGE = "message=ThrottleExceeded; errorCode=003001; statusCode=429"
AUTH_FAILED_MESSAGE = "message=AuthenticationFailed; errorCode=003200; statusCode=401"
ZERO = Decimal("0")
CENT = Decimal("0.01")


@dataclass
class SandboxConfig:
    client_id: str = "qbo-sandbox-client-id"
    client_secret: str = "qbo-sandbox-client-secret"
    realm_id: str = "9341453050000001"
    company_name: str = "Sandbox Collections Co (QBO)"
    company_timezone: str = "America/Los_Angeles"
    home_currency: str = "USD"
    access_token_ttl_s: int = 3600
    refresh_token_ttl_s: int = 100 * 24 * 3600  # rolling 100 days (§1.1)
    refresh_grace_s: float = 0.0  # 0: a rotated refresh token dies at once
    requests_per_minute: int = 500
    max_in_flight: int = 10
    max_results: int = 1000
    default_results: int = 100
    customer_notes_max_length: int = 2000  # 1024 per the XSD, 2000 per the API reference (§1.5)
    attachable_note_max_length: int = 4000
    payment_ref_max_length: int = 100
    request_id_retention_s: float = 7 * 24 * 3600
    cdc_max_days: int = 30
    cdc_max_objects: int = 1000
    retry_after_s: int | None = None  # a Retry-After header on 429 (UNVERIFIED that QBO sends one)
    latency_ms: float = 0.0


def _business(detail: str) -> ApiError:
    return validation_fault("6000", "A business validation error has occurred while processing your request", detail)


def _not_found(detail: str) -> ApiError:
    return validation_fault("610", "Object Not Found", detail)


# --------------------------------------------------------------------------------------------------------
# Wire encoding


def _number(amount: Decimal) -> str:
    text = format(amount.normalize(), "f")
    return text if "." not in text else text.rstrip("0").rstrip(".")


def make_dumps(zone: ZoneInfo) -> Callable[[Any], bytes]:
    mark = "\x1fdec:"
    pattern = re.compile(r'"\\u001fdec:(-?[0-9]+(?:\.[0-9]+)?)"')

    def default(value: Any) -> Any:
        if isinstance(value, Decimal):
            return f"{mark}{_number(value)}"
        if isinstance(value, datetime):
            return value.astimezone(zone).isoformat(timespec="seconds")
        if isinstance(value, date):
            return value.isoformat()
        raise TypeError(f"cannot encode {type(value).__name__}")

    def dumps(payload: Any) -> bytes:
        return pattern.sub(r"\1", json.dumps(payload, default=default, separators=(",", ":"))).encode()

    return dumps


def _money(value: Any, element: str) -> Decimal:
    if isinstance(value, bool) or value is None or isinstance(value, list | dict | float):
        raise validation_fault("2010", "Request has invalid or unsupported property",
                          f"{element}: expected a number, got {value!r}", element)
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise validation_fault("2010", "Request has invalid or unsupported property",
                          f"{element}: expected a number, got {value!r}", element) from None
    if not amount.is_finite():
        raise validation_fault("2010", "Request has invalid or unsupported property", f"{element}: not finite", element)
    return amount


def _ref_value(body: dict[str, Any], key: str) -> str | None:
    ref = body.get(key)
    value = ref.get("value") if isinstance(ref, dict) else None
    return str(value) if value not in (None, "") else None


# --------------------------------------------------------------------------------------------------------
# OAuth state


@dataclass
class _RefreshToken:
    family: int
    expires_at: datetime
    rotated_at: datetime | None = None
    successor: str | None = None
    revoked: bool = False


@dataclass
class _AccessToken:
    family: int
    realm_id: str
    expires_at: datetime


@dataclass
class _Stored:
    status: int
    body: bytes
    at: float


# --------------------------------------------------------------------------------------------------------
# The sandbox


class QBOSandbox(SandboxSurface):
    """In-memory QBO company served as an ASGI app (`.app`). Thread-safe for test-side calls."""

    def __init__(self, config: SandboxConfig | None = None, clock: SandboxClock | None = None) -> None:
        self.config = config or SandboxConfig()
        self.clock = clock or SandboxClock()
        self.zone = ZoneInfo(self.config.company_timezone)
        self._dumps = make_dumps(self.zone)
        self._lock = threading.RLock()
        self._store: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in ENTITIES}
        self._deleted: dict[str, dict[str, datetime]] = {name: {} for name in ENTITIES}
        self._ids = itertools.count(1)
        self._refresh_tokens: dict[str, _RefreshToken] = {}
        self._access_tokens: dict[str, _AccessToken] = {}
        self._auth_codes: set[str] = set()
        self._families = itertools.count(1)
        self._requests: dict[tuple[str, str], _Stored] = {}
        self._in_flight: dict[str, int] = {}
        self._sent: dict[str, deque[float]] = {}
        self._faults = FaultQueue(FAULT_KINDS, _fault_op)
        self._latency_ms = float(self.config.latency_ms)
        self.reset_stats()
        self._initial_refresh_token = self._issue_family()[0]
        self._add_company_info()

        self._app = asgi_app(self._asgi)

    # ---- public Python surface ------------------------------------------------------------------------

    @property
    def credentials(self) -> dict[str, str]:
        cfg = self.config
        return {"client_id": cfg.client_id, "client_secret": cfg.client_secret, "realm_id": cfg.realm_id,
                "refresh_token": self._initial_refresh_token}

    def reset_stats(self) -> None:
        with self._lock:
            self._stats: dict[str, Any] = {
                "calls": {}, "queries": {}, "total_calls": 0, "token_requests": 0, "refreshes": 0,
                "throttled": 0, "max_in_flight_seen": 0, "replays": 0, "errors": {}, "faults_injected": 0,
                "minor_versions": {},
            }

    def seed(self, seed: int = 7, invoices: int = 300, customers: int = 60) -> dict[str, int]:
        """Replace the company's books with a deterministic generated book (see seed.py)."""
        from .seed import generate

        with self._lock:
            for name in ENTITIES:
                self._store[name].clear()
                self._deleted[name].clear()
            self._ids = itertools.count(1)
            self._add_company_info()
            book = generate(seed=seed, invoices=invoices, customers=customers, now=self.clock.now(),
                            zone=self.zone, new_id=lambda: str(next(self._ids)))
            for entity, records in book.items():
                for record in records:
                    self._store[entity][record["Id"]] = record
            for customer_id in self._store["Customer"]:
                self._recompute_customer_balance(customer_id)
            return self.counts()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {name: len(records) for name, records in self._store.items()}

    def inject(self, kind: str, path: str | None = None, times: int = 1, delay_s: float = 0.0,
               after_processing: bool = False, method: str | None = None) -> None:
        """Queue faults for requests to `path` ("query", "payment", "invoice", "cdc", "token", ...)."""
        with self._lock:
            self._faults.add(kind, path, times, delay_s, after_processing, method)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._latency_ms = float(self.config.latency_ms)

    def set_latency(self, latency_ms: float) -> None:
        with self._lock:
            self._latency_ms = max(float(latency_ms), 0.0)

    def entities(self, entity: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(r) for r in self._table(entity).values()]

    def get(self, entity: str, entity_id: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._require(entity, str(entity_id)))

    @property
    def payments(self) -> list[dict[str, Any]]:
        return self.entities("Payment")

    @property
    def attachables(self) -> list[dict[str, Any]]:
        return self.entities("Attachable")

    def add_customer(self, **fields: Any) -> dict[str, Any]:
        with self._lock:
            record = self._new_record(fields)
            record.setdefault("DisplayName", f"Customer {record['Id']}")
            record.setdefault("Active", True)
            record.setdefault("Balance", ZERO)
            record.setdefault("CurrencyRef", {"value": self.config.home_currency})
            self._store["Customer"][record["Id"]] = record
            return copy.deepcopy(record)

    def add_invoice(self, **fields: Any) -> dict[str, Any]:
        with self._lock:
            record = self._new_record(fields)
            today = self._today()
            if "CustomerRef" not in record:
                record["CustomerRef"] = {"value": next(iter(self._store["Customer"]), "1")}
            record.setdefault("TotalAmt", Decimal("100.00"))
            record.setdefault("Balance", record["TotalAmt"])
            record.setdefault("TxnDate", today.isoformat())
            record.setdefault("DueDate", (today + timedelta(days=30)).isoformat())
            record.setdefault("DocNumber", self._next_doc_number())
            record.setdefault("CurrencyRef", {"value": self.config.home_currency})
            record.setdefault("LinkedTxn", [])
            self._store["Invoice"][record["Id"]] = record
            self._recompute_customer_balance(_ref_value(record, "CustomerRef"))
            return copy.deepcopy(record)

    def update_raw(self, entity: str, entity_id: str, **fields: Any) -> dict[str, Any]:
        """Set fields as someone editing in QBO would, unvalidated (None removes one); bumps the record.
        Tests use it to plant malformed data too."""
        with self._lock:
            record = self._require(entity, str(entity_id))
            for key, value in fields.items():
                if value is None:
                    record.pop(key, None)
                else:
                    record[key] = value
            self._touch(record)
            return copy.deepcopy(record)

    def void_invoice(self, invoice_id: str) -> dict[str, Any]:
        """QBO's void: amounts zeroed, "Voided" prepended to PrivateNote, the record stays."""
        with self._lock:
            record = self._require("Invoice", invoice_id)
            record["TotalAmt"] = ZERO
            record["Balance"] = ZERO
            note = record.get("PrivateNote")
            record["PrivateNote"] = f"Voided - {note}" if note else "Voided"
            self._touch(record)
            self._recompute_customer_balance(_ref_value(record, "CustomerRef"))
            return copy.deepcopy(record)

    def delete_invoice(self, invoice_id: str) -> None:
        with self._lock:
            record = self._require("Invoice", invoice_id)
            del self._store["Invoice"][invoice_id]
            self._deleted["Invoice"][invoice_id] = self.clock.now()
            self._recompute_customer_balance(_ref_value(record, "CustomerRef"))

    def delete_payment(self, payment_id: str) -> None:
        """Delete a payment in QBO: its invoices get their balance back."""
        with self._lock:
            payment = self._require("Payment", payment_id)
            for invoice_id, amount in _invoice_links(payment):
                invoice = self._store["Invoice"].get(invoice_id)
                if invoice is None:
                    continue
                invoice["Balance"] = invoice["Balance"] + amount
                invoice["LinkedTxn"] = [t for t in invoice.get("LinkedTxn", []) if t.get("TxnId") != payment_id]
                self._touch(invoice)
            del self._store["Payment"][payment_id]
            self._deleted["Payment"][payment_id] = self.clock.now()
            self._recompute_customer_balance(_ref_value(payment, "CustomerRef"))

    def pay_invoice(self, invoice_id: str, amount: Decimal | str | None = None, *, ref: str | None = None,
                    note: str = "Received in QuickBooks") -> dict[str, Any]:
        """A customer pays in QBO itself (QuickBooks Payments link or a bookkeeper): no API call."""
        with self._lock:
            invoice = self._require("Invoice", invoice_id)
            paid = invoice["Balance"] if amount is None else Decimal(str(amount))
            customer_id = _ref_value(invoice, "CustomerRef") or ""
            body = {"CustomerRef": {"value": customer_id}, "TotalAmt": paid, "PrivateNote": note,
                    "ProcessPayment": ref is None,
                    "Line": [{"Amount": paid, "LinkedTxn": [{"TxnId": invoice_id, "TxnType": "Invoice"}]}]}
            if ref is not None:
                body["PaymentRefNum"] = ref
            return copy.deepcopy(self._create_payment(body))

    def connect(self) -> str:
        """A person reconnects the app (authorization-code flow): a new refresh-token family."""
        with self._lock:
            return self._issue_family()[0]

    def issue_authorization_code(self) -> str:
        with self._lock:
            code = "AB" + secrets.token_urlsafe(24)
            self._auth_codes.add(code)
            return code

    def revoke_all(self) -> None:
        """The user disconnects the app: every refresh and access token stops working."""
        with self._lock:
            for state in self._refresh_tokens.values():
                state.revoked = True
            self._access_tokens.clear()

    def expire_access_tokens(self) -> None:
        with self._lock:
            self._access_tokens.clear()

    def current_refresh_tokens(self) -> list[str]:
        """Refresh tokens that would be honoured right now."""
        with self._lock:
            now = self.clock.now()
            return [t for t, s in self._refresh_tokens.items() if self._refresh_usable(s, now)]

    # ---- internals: records -----------------------------------------------------------------------------

    def _table(self, entity: str) -> dict[str, dict[str, Any]]:
        try:
            return self._store[entity]
        except KeyError:
            raise KeyError(f"unknown entity {entity!r}; expected one of {ENTITIES}") from None

    def _require(self, entity: str, entity_id: str) -> dict[str, Any]:
        record = self._table(entity).get(entity_id)
        if record is None:
            raise KeyError(f"{entity} {entity_id} not found")
        return record

    def _today(self) -> date:
        return self.clock.now().astimezone(self.zone).date()

    def _new_record(self, fields: dict[str, Any]) -> dict[str, Any]:
        now = self.clock.now()
        record: dict[str, Any] = {"Id": str(next(self._ids)), "SyncToken": "0", "domain": "QBO", "sparse": False,
                                  "MetaData": {"CreateTime": now, "LastUpdatedTime": now}}
        record.update(copy.deepcopy(fields))
        return record

    def _next_doc_number(self) -> str:
        used = {str(i.get("DocNumber")) for i in self._store["Invoice"].values()}
        number = 1001 + len(used)
        while str(number) in used:
            number += 1
        return str(number)

    def _touch(self, record: dict[str, Any]) -> None:
        record["SyncToken"] = str(int(record.get("SyncToken") or 0) + 1)
        record.setdefault("MetaData", {})["LastUpdatedTime"] = self.clock.now()

    def _add_company_info(self) -> None:
        self._store["CompanyInfo"][self.config.realm_id] = {
            "Id": self.config.realm_id, "SyncToken": "0", "CompanyName": self.config.company_name,
            "Country": "US", "domain": "QBO", "MetaData": {"CreateTime": self.clock.now() - timedelta(days=900),
                                                            "LastUpdatedTime": self.clock.now() - timedelta(days=900)},
        }

    def _recompute_customer_balance(self, customer_id: str | None) -> None:
        customer = self._store["Customer"].get(customer_id or "")
        if customer is not None:
            customer["Balance"] = sum(
                (i["Balance"] for i in self._store["Invoice"].values()
                 if _ref_value(i, "CustomerRef") == customer_id and isinstance(i.get("Balance"), Decimal)), ZERO)

    # ---- internals: OAuth ----------------------------------------------------------------------------------

    def _issue_family(self) -> tuple[str, int]:
        family = next(self._families)
        return self._new_refresh_token(family), family

    def _new_refresh_token(self, family: int) -> str:
        token = f"RT1-{family}-" + secrets.token_urlsafe(32)
        expires = self.clock.now() + timedelta(seconds=self.config.refresh_token_ttl_s)
        self._refresh_tokens[token] = _RefreshToken(family=family, expires_at=expires)
        return token

    def _refresh_usable(self, state: _RefreshToken, now: datetime) -> bool:
        if state.revoked or now >= state.expires_at:
            return False
        if state.rotated_at is None:
            return True
        grace = self.config.refresh_grace_s
        return grace > 0 and (now - state.rotated_at).total_seconds() <= grace

    def _token_answer(self, family: int, refresh_token: str) -> dict[str, Any]:
        now = self.clock.now()
        access = "eyJ-sandbox-" + secrets.token_urlsafe(40)
        self._access_tokens[access] = _AccessToken(
            family=family, realm_id=self.config.realm_id,
            expires_at=now + timedelta(seconds=self.config.access_token_ttl_s))
        state = self._refresh_tokens[refresh_token]
        return {"token_type": "bearer", "access_token": access, "refresh_token": refresh_token,
                "expires_in": self.config.access_token_ttl_s,
                "x_refresh_token_expires_in": max(int((state.expires_at - now).total_seconds()), 0)}

    def _token_endpoint(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        self._stats["token_requests"] += 1
        if not self._client_authenticated(headers.get("authorization", "")):
            return 401, {"error": "invalid_client"}
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        grant = form.get("grant_type")
        if grant == "refresh_token":
            return self._grant_refresh(form.get("refresh_token", ""))
        if grant == "authorization_code":
            code = form.get("code", "")
            if code not in self._auth_codes:
                return 400, {"error": "invalid_grant", "error_description": "unknown or used authorization code"}
            self._auth_codes.discard(code)
            token, family = self._issue_family()
            return 200, self._token_answer(family, token)
        return 400, {"error": "unsupported_grant_type"}

    def _grant_refresh(self, token: str) -> tuple[int, dict[str, Any]]:
        state = self._refresh_tokens.get(token)
        now = self.clock.now()
        if state is None or not self._refresh_usable(state, now):
            return 400, {"error": "invalid_grant", "error_description": "Token invalid"}
        self._stats["refreshes"] += 1
        if state.rotated_at is not None and state.successor is not None:
            # Inside the grace period the old token yields the same successor, not a second lineage.
            return 200, self._token_answer(state.family, state.successor)
        successor = self._new_refresh_token(state.family)
        state.rotated_at, state.successor = now, successor
        return 200, self._token_answer(state.family, successor)

    def _client_authenticated(self, authorization: str) -> bool:
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(client_id, self.config.client_id) and hmac.compare_digest(
            secret, self.config.client_secret)

    def _revoke_endpoint(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        if not self._client_authenticated(headers.get("authorization", "")):
            return 401, {"error": "invalid_client"}
        try:
            token = json.loads(body or b"{}").get("token", "")
        except (ValueError, AttributeError):
            return 400, {"error": "invalid_request"}
        found = self._refresh_tokens.get(token) or self._access_tokens.get(token)
        if found is not None:  # revoking either token ends the whole connection
            for state in self._refresh_tokens.values():
                if state.family == found.family:
                    state.revoked = True
            for access, access_state in list(self._access_tokens.items()):
                if access_state.family == found.family:
                    del self._access_tokens[access]
        return 200, {}

    def _authorize(self, headers: dict[str, str], realm_id: str) -> None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        state = self._access_tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if state is None or self.clock.now() >= state.expires_at:
            raise ApiError(401, "3200", AUTH_FAILED_MESSAGE, fault_type="AUTHENTICATION")
        if state.realm_id != realm_id:
            raise ApiError(403, "3100", "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403",
                           f"the token is not authorized for company {realm_id}", fault_type="AuthorizationFault")

    # ---- internals: API operations ---------------------------------------------------------------------

    def _dispatch(self, method: str, realm_id: str, rest: list[str], params: dict[str, str],
                  body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
        if realm_id != self.config.realm_id:
            raise ApiError(403, "3100", "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403",
                           f"unknown company {realm_id}", fault_type="AuthorizationFault")
        resource = rest[0].lower() if rest else ""
        if resource == "query":
            text = params.get("query") if method == "GET" else body.decode("utf-8", "replace")
            if not text:
                raise parse_error("no query given")
            return 200, self._run_query(text)
        if resource == "cdc" and method == "GET":
            return 200, self._cdc(params)
        entity = PATH_ENTITY.get(resource)
        if entity is not None and method == "GET" and len(rest) == 2:
            record = self._store[entity].get(rest[1])
            if record is None:
                raise _not_found(f"Object Not Found : {entity} {rest[1]} does not exist or has been deleted")
            return 200, {entity: record, "time": self.clock.now()}
        if entity in ("Payment", "Customer", "Attachable") and method == "POST" and len(rest) == 1:
            if "json" not in content_type:
                raise ApiError(415, "2010", "Unsupported Media Type", "POST a JSON body (application/json)")
            return 200, self._write(entity, params, body)
        raise ApiError(400, "500", "Unsupported Operation", f"Operation {method} {'/'.join(rest)} is not supported.")

    def _write(self, entity: str, params: dict[str, str], body: bytes) -> dict[str, Any]:
        if params.get("operation"):
            raise ApiError(400, "500", "Unsupported Operation", f"operation={params['operation']} is not supported")
        try:
            payload = json.loads(body, parse_float=Decimal)
        except ValueError:
            raise validation_fault("2010", "Request has invalid or unsupported property", "the body is not JSON") from None
        if not isinstance(payload, dict):
            raise validation_fault("2010", "Request has invalid or unsupported property", "the body is not an object")
        if entity == "Payment":
            record = self._create_payment(payload)
        elif entity == "Customer":
            record = self._write_customer(payload)
        else:
            record = self._create_attachable(payload)
        return {entity: record, "time": self.clock.now()}

    def _create_payment(self, body: dict[str, Any]) -> dict[str, Any]:
        customer_id = _ref_value(body, "CustomerRef")
        if customer_id is None:
            raise validation_fault("2020", "Required param missing, need to supply the required value for the API",
                              "Required parameter CustomerRef is missing in the request", "CustomerRef")
        customer = self._store["Customer"].get(customer_id)
        if customer is None or not customer.get("Active", True):
            raise validation_fault("2500", "Invalid Reference Id", f"Invalid Reference Id : Customer {customer_id}",
                              "CustomerRef")
        if "TotalAmt" not in body:
            raise validation_fault("2020", "Required param missing, need to supply the required value for the API",
                              "Required parameter TotalAmt is missing in the request", "TotalAmt")
        total = _money(body["TotalAmt"], "TotalAmt")
        if total < 0:
            raise _business("TotalAmt cannot be negative")
        currency = _ref_value(body, "CurrencyRef") or _ref_value(customer, "CurrencyRef") or self.config.home_currency
        if currency != (_ref_value(customer, "CurrencyRef") or self.config.home_currency):
            raise _business(f"the payment currency {currency} is not the customer's currency")
        self._check_length(body, "PaymentRefNum", self.config.payment_ref_max_length)
        self._check_length(body, "PrivateNote", 4000)
        applied = self._applications(body.get("Line", []), customer_id, total)
        payment_id = str(next(self._ids))
        now = self.clock.now()
        lines = [{"Amount": amount, "LinkedTxn": [{"TxnId": invoice_id, "TxnType": "Invoice"}]}
                 for invoice_id, amount in applied]
        record: dict[str, Any] = {
            "Id": payment_id, "SyncToken": "0", "domain": "QBO", "sparse": False,
            "MetaData": {"CreateTime": now, "LastUpdatedTime": now},
            "TxnDate": str(body.get("TxnDate") or self._today().isoformat())[:10],
            "CustomerRef": {"value": customer_id, "name": customer.get("DisplayName", "")},
            "CurrencyRef": {"value": currency}, "TotalAmt": total,
            "UnappliedAmt": total - sum((a for _, a in applied), ZERO),
            "DepositToAccountRef": {"value": "4", "name": "Undeposited Funds"},
            "ProcessPayment": bool(body.get("ProcessPayment", False)), "Line": lines,
        }
        for key in ("PaymentRefNum", "PrivateNote", "PaymentMethodRef"):
            if body.get(key) not in (None, ""):
                record[key] = body[key]
        self._store["Payment"][payment_id] = record
        for invoice_id, amount in applied:
            invoice = self._store["Invoice"][invoice_id]
            invoice["Balance"] = invoice["Balance"] - amount
            invoice.setdefault("LinkedTxn", []).append({"TxnId": payment_id, "TxnType": "Payment"})
            self._touch(invoice)
        self._recompute_customer_balance(customer_id)
        return record

    def _applications(self, lines: Any, customer_id: str, total: Decimal) -> list[tuple[str, Decimal]]:
        """(invoice id, amount) per payment line, validated against the invoices (620, 6000)."""
        if not isinstance(lines, list):
            raise validation_fault("2010", "Request has invalid or unsupported property", "Line must be an array", "Line")
        applied: list[tuple[str, Decimal]] = []
        per_invoice: dict[str, Decimal] = {}
        for position, line in enumerate(lines):
            if not isinstance(line, dict):
                raise validation_fault("2010", "Request has invalid or unsupported property", f"Line[{position}]", "Line")
            amount = _money(line.get("Amount"), f"Line[{position}].Amount")
            if amount < 0:
                raise _business(f"Line[{position}].Amount cannot be negative")
            for link in line.get("LinkedTxn") or []:
                if not isinstance(link, dict) or link.get("TxnType") != "Invoice":
                    raise _business(f"Line[{position}]: only invoices can be paid in this sandbox")
                invoice_id = str(link.get("TxnId", ""))
                invoice = self._store["Invoice"].get(invoice_id)
                if invoice is None:
                    raise validation_fault("2500", "Invalid Reference Id", f"Invalid Reference Id : Invoice {invoice_id}",
                                      "LinkedTxn")
                if _ref_value(invoice, "CustomerRef") != customer_id:
                    raise validation_fault("620", "Transaction Detail object with ID could not be linked",
                                      f"TxnID Cannot Be Linked : Invoice {invoice_id} belongs to another customer",
                                      "LinkedTxn")
                per_invoice[invoice_id] = per_invoice.get(invoice_id, ZERO) + amount
                if per_invoice[invoice_id] > invoice["Balance"]:
                    raise _business(f"the amount applied to invoice {invoice_id} exceeds its open balance "
                                    f"{_number(invoice['Balance'])}")
                applied.append((invoice_id, amount))
        if sum((a for _, a in applied), ZERO) > total:
            raise _business("the amounts applied exceed TotalAmt")
        return applied

    def _check_length(self, body: dict[str, Any], key: str, limit: int) -> None:
        value = body.get(key)
        if value is not None and len(str(value)) > limit:
            raise validation_fault("2050", "String length is either shorter or longer than supported by specification",
                              f"{key}: String length specified does not match the supported length. Max: {limit}", key)

    _CUSTOMER_WRITABLE = ("DisplayName", "CompanyName", "GivenName", "FamilyName", "PrimaryEmailAddr",
                          "PrimaryPhone", "Mobile", "AlternatePhone", "BillAddr", "ShipAddr", "Notes", "Active",
                          "CustomerTypeRef", "ParentRef", "Job", "CurrencyRef")

    def _write_customer(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_length(body, "Notes", self.config.customer_notes_max_length)
        if not body.get("Id"):
            if not body.get("DisplayName"):
                raise validation_fault("2020", "Required param missing", "DisplayName is required", "DisplayName")
            if any(c.get("DisplayName") == body["DisplayName"] for c in self._store["Customer"].values()):
                raise validation_fault("6240", "Duplicate Name Exists Error", "The name supplied already exists.")
            return self.add_customer(**{k: body[k] for k in self._CUSTOMER_WRITABLE if k in body})
        record = self._store["Customer"].get(str(body["Id"]))
        if record is None:
            raise _not_found(f"Object Not Found : Customer {body['Id']}")
        if str(body.get("SyncToken")) != record["SyncToken"]:
            raise validation_fault("5010", "Stale Object Error",
                              f"Stale Object Error : You and {self.config.company_name} were working on this at "
                              "the same time. Please read the object again and retry.")
        if not body.get("sparse"):
            for key in self._CUSTOMER_WRITABLE:
                if key not in body:
                    record.pop(key, None)  # a full update nulls what it omits (§1.5)
        for key in self._CUSTOMER_WRITABLE:
            if key in body:
                record[key] = body[key]
        self._touch(record)
        return record

    def _create_attachable(self, body: dict[str, Any]) -> dict[str, Any]:
        note = body.get("Note")
        if not isinstance(note, str) or not note:
            raise validation_fault("2020", "Required param missing", "Note (or an upload) is required", "Note")
        self._check_length(body, "Note", self.config.attachable_note_max_length)
        refs = body.get("AttachableRef") or []
        if not isinstance(refs, list):
            raise validation_fault("2010", "Request has invalid or unsupported property", "AttachableRef", "AttachableRef")
        for ref in refs:
            entity_ref = ref.get("EntityRef") if isinstance(ref, dict) else None
            kind = str((entity_ref or {}).get("type", ""))
            target = PATH_ENTITY.get(kind.lower())
            if target is None or str(entity_ref.get("value")) not in self._store[target]:
                raise validation_fault("2500", "Invalid Reference Id", f"Invalid Reference Id : {kind} "
                                  f"{(entity_ref or {}).get('value')}", "AttachableRef")
        record = self._new_record({"Note": note, "AttachableRef": refs})
        self._store["Attachable"][record["Id"]] = record
        return record

    # ---- internals: query and CDC ----------------------------------------------------------------------------

    def _run_query(self, text: str) -> dict[str, Any]:
        query = parse_query(text)
        entity = next((e for e in ENTITIES if e.lower() == query.entity.lower()), None)
        if entity is None:
            raise invalid_query(f"Entity {query.entity} is not queryable")
        self._stats["queries"][entity] = self._stats["queries"].get(entity, 0) + 1
        predicates = [self._predicate(entity, *condition) for condition in query.conditions]
        if entity in NAME_LISTS and not any(c[0].lower() == "active" for c in query.conditions):
            predicates.append(lambda r: r.get("Active", True) is True)  # name lists default to active only
        rows = [r for r in self._store[entity].values() if all(p(r) for p in predicates)]
        if query.count:
            return {"QueryResponse": {"totalCount": len(rows)}, "time": self.clock.now()}
        rows = self._sorted(entity, rows, query.order)
        limit = min(query.max_results if query.max_results is not None else self.config.default_results,
                    self.config.max_results)
        page = rows[query.start - 1: query.start - 1 + max(limit, 0)]
        response: dict[str, Any] = {}
        if page:
            response = {entity: page, "startPosition": query.start, "maxResults": len(page)}
        return {"QueryResponse": response, "time": self.clock.now()}

    def _field(self, entity: str, name: str) -> tuple[tuple[str, ...], str]:
        spec = {**COMMON_FIELDS, **QUERYABLE[entity]}.get(name.lower())
        if spec is None:
            raise invalid_query(f"property '{name}' is not queryable on {entity}")
        return spec

    def _predicate(self, entity: str, name: str, op: str, literals: list[Any]) -> Callable[[dict[str, Any]], bool]:
        path, kind = self._field(entity, name)
        if op == "LIKE":
            pattern = like_pattern(str(literals[0]))
            return lambda r: any(pattern.match(str(v)) for v in values_at(r, path))
        try:
            wanted = [comparable(kind, literal, self.zone) for literal in literals]
        except (ValueError, TypeError, InvalidOperation):
            raise invalid_query(f"value {literals[0]!r} is not valid for property '{name}'") from None
        zone = self.zone

        def stored(record: dict[str, Any]) -> list[Any]:
            out = []
            for value in values_at(record, path):
                with contextlib.suppress(ValueError, TypeError, InvalidOperation):
                    out.append(comparable(kind, value, zone))
            return out

        if op == "IN":
            return lambda r: any(v in wanted for v in stored(r))
        compare = COMPARE[op]
        return lambda r: any(compare(v, wanted[0]) for v in stored(r))

    def _sorted(self, entity: str, rows: list[dict[str, Any]], order: list[tuple[str, bool]]) -> list[dict[str, Any]]:
        rows = sorted(rows, key=lambda r: comparable("id", r["Id"], self.zone))
        for name, descending in reversed(order):
            path, kind = self._field(entity, name)

            def key(record: dict[str, Any], path: tuple[str, ...] = path, kind: str = kind) -> tuple[int, Any]:
                try:
                    values = [comparable(kind, v, self.zone) for v in values_at(record, path)]
                except (ValueError, TypeError, InvalidOperation):
                    values = []
                return (1, values[0]) if values else (0, None)

            present = [r for r in rows if key(r)[0]]
            missing = [r for r in rows if not key(r)[0]]
            present.sort(key=lambda r: key(r)[1], reverse=descending)
            rows = missing + present if not descending else present + missing
        return rows

    def _cdc(self, params: dict[str, str]) -> dict[str, Any]:
        names = [n.strip() for n in params.get("entities", "").split(",") if n.strip()]
        since_text = params.get("changedSince", "")
        if not names or not since_text:
            raise validation_fault("2020", "Required param missing", "entities and changedSince are required")
        entities = []
        for name in names:
            entity = next((e for e in CDC_ENTITIES if e.lower() == name.lower()), None)
            if entity is None:
                raise validation_fault("4001", "Invalid query", f"CDC does not support entity {name}")
            entities.append(entity)
        try:
            since = comparable("datetime", since_text, self.zone)
        except ValueError:
            raise validation_fault("4001", "Invalid query", f"changedSince {since_text!r} is not a date-time") from None
        if since < self.clock.now() - timedelta(days=self.config.cdc_max_days):
            raise validation_fault("4001", "Invalid query",
                              f"changedSince must be within the last {self.config.cdc_max_days} days")
        budget = self.config.cdc_max_objects
        parts = []
        for entity in entities:
            changed = [r for r in self._store[entity].values() if r["MetaData"]["LastUpdatedTime"] >= since]
            changed.sort(key=lambda r: r["MetaData"]["LastUpdatedTime"])
            deleted = [{"domain": "QBO", "status": "Deleted", "Id": entity_id,
                        "MetaData": {"LastUpdatedTime": at}}
                       for entity_id, at in self._deleted[entity].items() if at >= since]
            objects = (changed + deleted)[:budget]
            budget -= len(objects)
            parts.append({entity: objects, "startPosition": 1, "maxResults": len(objects)} if objects else {})
        return {"CDCResponse": [{"QueryResponse": parts}], "time": self.clock.now()}

    # ---- HTTP plumbing ------------------------------------------------------------------------------------

    def _error_body(self, error: ApiError) -> dict[str, Any]:
        errors = self._stats["errors"]
        errors[error.code] = errors.get(error.code, 0) + 1
        if error.status == 401:
            return {"fault": {"error": [{"message": error.message}], "type": "AUTHENTICATION"},
                    "time": self.clock.now()}
        return {"Fault": {"Error": [{"Message": error.message, "Detail": error.detail, "code": error.code,
                                     "element": error.element}], "type": error.fault_type},
                "time": self.clock.now()}

    def _throttle_answer(self) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        self._stats["throttled"] += 1
        body = {"Fault": {"Error": [{"Message": THROTTLE_MESSAGE, "Detail": "ThrottleExceeded", "code": "3001"}],
                          "type": "SERVICE"}, "time": self.clock.now()}
        headers = [(b"retry-after", str(self.config.retry_after_s).encode())] if self.config.retry_after_s else []
        return 429, self._dumps(body), headers

    def _fault_answer(self, fault: Fault) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        if fault.kind == "http_429":
            return self._throttle_answer()
        if fault.kind == "malformed":
            return 200, b'{"QueryResponse":{"Invoice":[{"Id":"1","TotalAmt":12', []
        status = int(fault.kind[5:])
        body = {"Fault": {"Error": [{"Message": "An application error has occurred while processing your request",
                                     "Detail": "System Failure Error", "code": "10000"}], "type": "SystemFault"},
                "time": self.clock.now()}
        return status, self._dumps(body), []

    def _admit(self, realm_id: str) -> bool:
        """Per-realm limits (§1.6): at most max_in_flight at once and requests_per_minute in any minute."""
        now = time.monotonic()
        window = self._sent.setdefault(realm_id, deque())
        while window and window[0] <= now - 60.0:
            window.popleft()
        in_flight = self._in_flight.get(realm_id, 0)
        if in_flight >= self.config.max_in_flight or len(window) >= self.config.requests_per_minute:
            return False
        window.append(now)
        self._in_flight[realm_id] = in_flight + 1
        self._stats["max_in_flight_seen"] = max(self._stats["max_in_flight_seen"], in_flight + 1)
        return True

    def _handle_api(self, method: str, path: str, params: dict[str, str], headers: dict[str, str],
                    body: bytes) -> tuple[int, bytes]:
        """One API request past admission: auth, requestid replay, dispatch. Returns (status, bytes)."""
        realm_id, _, rest = path[len(API_PREFIX):].partition("/")
        if "minorversion" in params:
            versions = self._stats["minor_versions"]
            versions[params["minorversion"]] = versions.get(params["minorversion"], 0) + 1
        try:
            self._authorize(headers, realm_id)
            request_id = params.get("requestid") if method == "POST" else None
            if request_id is not None and not 0 < len(request_id) <= 50:
                raise validation_fault("2010", "Request has invalid or unsupported property",
                                  "requestid must be 1-50 characters", "requestid")
            if request_id is not None:
                stored = self._requests.get((realm_id, request_id))
                if stored is not None and time.monotonic() - stored.at <= self.config.request_id_retention_s:
                    self._stats["replays"] += 1
                    return stored.status, stored.body
            try:
                status, payload = self._dispatch(method, realm_id, [p for p in rest.split("/") if p], params, body,
                                                 headers.get("content-type", ""))
                answer = (status, self._dumps(payload))
            except ApiError as error:
                if error.status in (401, 403):
                    raise
                answer = (error.status, self._dumps(self._error_body(error)))
            if request_id is not None:
                self._requests[(realm_id, request_id)] = _Stored(answer[0], answer[1], time.monotonic())
            return answer
        except ApiError as error:
            return error.status, self._dumps(self._error_body(error))

    async def _asgi(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        body = await read_body(receive, limit=2_000_000) or b""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        params = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode(), keep_blank_values=True).items()}
        if path == "/sandbox" or path.startswith("/sandbox/"):
            status, payload = self._control(method, path, body)
            await _respond(send, status, self._dumps(payload))
            return
        if path.rstrip("/") == DISCOVERY_PATH and method == "GET":
            await _respond(send, 200, self._dumps(self._discovery(scope)))
            return
        if path in (TOKEN_PATH, REVOKE_PATH) and method == "POST":
            handler = self._token_endpoint if path == TOKEN_PATH else self._revoke_endpoint
            await self._serve(send, "token", method, None, lambda: self._oauth(handler, headers, body))
            return
        if path.startswith(API_PREFIX):
            realm_id = path[len(API_PREFIX):].partition("/")[0]
            await self._serve(send, _fault_op(path), method, realm_id,
                              lambda: self._handle_api(method, path, params, headers, body))
            return
        await _respond(send, 404, self._dumps(self._error_body(
            ApiError(404, "500", "Unsupported Operation", f"no route {method} {path}"))))

    def _oauth(self, handler: Callable[[dict[str, str], bytes], tuple[int, dict[str, Any]]],
               headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        status, payload = handler(headers, body)
        return status, self._dumps(payload)

    def _discovery(self, scope: dict[str, Any]) -> dict[str, Any]:
        host = dict(scope.get("headers") or []).get(b"host", b"127.0.0.1").decode("latin-1")
        base = f"http://{host}"
        return {"issuer": base, "authorization_endpoint": f"{base}/connect/oauth2",
                "token_endpoint": f"{base}{TOKEN_PATH}", "revocation_endpoint": f"{base}{REVOKE_PATH}"}

    async def _serve(self, send: Callable[..., Any], op: str, method: str, realm_id: str | None,
                     handle: Callable[[], tuple[int, bytes]]) -> None:
        """Admission, latency, scripted faults before or after processing, then the answer."""
        with self._lock:
            self._stats["calls"][op] = self._stats["calls"].get(op, 0) + 1
            self._stats["total_calls"] += 1
            if realm_id is not None and not self._admit(realm_id):
                status, payload, extra = self._throttle_answer()
                admitted = False
            else:
                admitted = True
            latency = self._latency_ms / 1000.0
        if not admitted:
            await _respond(send, status, payload, extra)
            return
        released = False

        def release() -> None:
            # Before the answer is written: a client that sends its next request on receipt must not meet
            # a stale in-flight count.
            nonlocal released
            if not released and realm_id is not None:
                released = True
                with self._lock:
                    self._in_flight[realm_id] -= 1

        try:
            if latency > 0:
                await asyncio.sleep(latency)
            with self._lock:
                fault = self._faults.take(op, method)
                if fault is not None:
                    self._stats["faults_injected"] += 1
            if fault is not None and not fault.after_processing:
                if fault.kind == "delay":
                    await asyncio.sleep(fault.delay_s)
                    fault = None
                else:
                    release()
                    await self._deliver_fault(send, fault, None)
                    return
            with self._lock:
                status, payload = handle()
            release()
            if fault is not None:
                await self._deliver_fault(send, fault, (status, payload))
                return
            await _respond(send, status, payload)
        finally:
            release()

    async def _deliver_fault(self, send: Callable[..., Any], fault: Fault, processed: tuple[int, bytes] | None) -> None:
        if fault.kind == "drop":
            # Start an answer and hang up mid-body: the client cannot tell whether we processed it.
            with contextlib.suppress(OSError):
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")]})
                await send({"type": "http.response.body", "body": b'{"Pay', "more_body": True})
            return
        if fault.kind == "delay":
            await asyncio.sleep(fault.delay_s)
            if processed is not None:
                await _respond(send, *processed)
            return
        with self._lock:
            status, payload, extra = self._fault_answer(fault)
        await _respond(send, status, payload, extra)

    # ---- control API ----------------------------------------------------------------------------------------

    def _control(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        try:
            payload = json.loads(body, parse_float=Decimal) if body.strip() else {}
        except ValueError:
            return 400, {"error": "body must be JSON"}
        parts = [unquote(p) for p in path.strip("/").split("/")[1:]]
        payload = payload if isinstance(payload, dict) else {}
        try:
            return 200, self._control_route(method, parts, payload)
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
            case ("GET", "credentials"):
                return self.credentials
            case ("GET", "clock"):
                return {"now": self.clock.now()}
            case ("POST", "clock"):
                if "now" in body:
                    self.clock.set(datetime.fromisoformat(str(body["now"]).replace("Z", "+00:00")))
                if "advance_seconds" in body:
                    self.clock.advance(float(body["advance_seconds"]))
                return {"now": self.clock.now()}
            case ("POST", "inject"):
                self.inject(body["kind"], path=body.get("path"), times=int(body.get("times", 1)),
                            delay_s=float(body.get("delay_s", 0.0)),
                            after_processing=bool(body.get("after_processing", False)))
                return {"queued": len(self._faults)}
            case ("POST", "faults", "clear"):
                self.clear_faults()
                return {"queued": 0}
            case ("POST", "seed"):
                return self.seed(seed=int(body.get("seed", 7)), invoices=int(body.get("invoices", 300)),
                                 customers=int(body.get("customers", 60)))
            case ("GET", "counts"):
                return self.counts()
            case ("GET", "entities", entity):
                return self.entities(entity)
            case ("POST", "invoices", invoice_id, "pay"):
                amount = body.get("amount")
                return self.pay_invoice(invoice_id, None if amount is None else Decimal(str(amount)))
            case ("POST", "invoices", invoice_id, "void"):
                return self.void_invoice(invoice_id)
            case ("POST", "tokens", "revoke"):
                self.revoke_all()
                return {"revoked": True}
            case ("POST", "tokens", "connect"):
                return {"refresh_token": self.connect()}
        raise KeyError(f"no control route {method} /sandbox/{'/'.join(parts)}")


def _invoice_links(payment: dict[str, Any]) -> list[tuple[str, Decimal]]:
    links = []
    for line in payment.get("Line") or []:
        for link in line.get("LinkedTxn") or []:
            if link.get("TxnType") == "Invoice":
                links.append((str(link.get("TxnId")), Decimal(str(line.get("Amount", 0)))))
    return links


def _fault_op(path: str) -> str:
    """Stats/fault key: "/v3/company/1/query" -> "query", "/v3/company/1/invoice/7" -> "invoice"."""
    if path in (TOKEN_PATH, REVOKE_PATH, "token"):
        return "token"
    if path.startswith(API_PREFIX):
        rest = [p for p in path[len(API_PREFIX):].split("/") if p]
        return rest[1].lower() if len(rest) > 1 else ""
    return path.strip("/").lower()


async def _respond(send: Callable[..., Any], status: int, body: bytes,
                   extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", b"application/json;charset=UTF-8"), (b"content-length", str(len(body)).encode()),
               (b"intuit_tid", secrets.token_hex(8).encode()), *(extra_headers or [])]
    with contextlib.suppress(OSError):
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


# --------------------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    """Seed a sandbox and serve it until killed; prints "qbo sandbox listening on URL" and the settings."""
    from ..server import serve_forever

    parser = argparse.ArgumentParser(prog="qbo-sandbox", description="Local QuickBooks Online API sandbox.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--invoices", type=int, default=2000)
    parser.add_argument("--customers", type=int, default=400)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--refresh-grace-seconds", type=float, default=0.0)
    args = parser.parse_args(argv)

    sandbox = QBOSandbox(SandboxConfig(latency_ms=args.latency_ms, refresh_grace_s=args.refresh_grace_seconds))
    sandbox.seed(seed=args.seed, invoices=args.invoices, customers=args.customers)

    def announce(url: str) -> None:
        credentials = sandbox.credentials
        print(f"qbo sandbox listening on {url}", flush=True)
        # Sandbox credentials only: printed so a demo can point the pipeline at this server.
        print(f"  QBO_BASE_URL={url}", flush=True)
        print(f"  QBO_TOKEN_URL={url}{TOKEN_PATH}", flush=True)
        print(f"  QBO_CLIENT_ID={credentials['client_id']}", flush=True)
        print(f"  QBO_CLIENT_SECRET={credentials['client_secret']}", flush=True)
        print(f"  QBO_REALM_ID={credentials['realm_id']}", flush=True)
        print(f"  QBO_REFRESH_TOKEN={credentials['refresh_token']}", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        serve_forever(sandbox.app, host=args.host, port=args.port, on_started=announce)
    return 0


if __name__ == "__main__":
    sys.exit(main())
