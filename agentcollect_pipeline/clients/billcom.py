"""Bill.com v2 API client (AR only), following shared/reference/billcom-v2.md.

What this module guarantees, and why:
- One session per (base URL, org, user) per process, persisted through a `SessionStore` so the next run
  reuses it while fresh: Bill.com allows 200 logins an hour and sessions live 35 minutes idle.
- At most `max_in_flight` (3) requests in flight per org in this process: Bill.com answers `BDC_1322`
  beyond that. Across runs a Dagster concurrency pool does the same job.
- Reads and login retry with exponential backoff and full jitter on HTTP 429/5xx, timeouts and
  `BDC_1322`, bounded in count. `BDC_1144` (hourly quota) fails at once: retrying inside the hour is useless.
- Writes are never retried once the request may have reached Bill.com: there is no idempotency key, so a
  timeout or 5xx raises `BillComOutcomeUnknownError` for the caller to reconcile by reading back.
- AR only: an explicit allowlist of operations; anything else (bills, vendors, AP payments, approvals,
  bank accounts) raises `ARScopeError` before a byte is sent.
- v3 (JSON, `gateway.*.bill.com/connect/v3`, its own login and session) only for what v2 lacks: the invoice
  payment link (`POST /v3/invoices/{invoiceId}/payment-link`), under the same allowlist, semaphore and retries.
- Credentials and the session id never appear in logs, exception messages or reprs.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

import httpx

from agentcollect_pipeline.ar_source.base import (
    AROutcomeUnknownError,
    ARRecordNotFoundError,
    ARSourceError,
    ARTransportError,
)
from agentcollect_pipeline.clients.retry import RetryPolicy

log = logging.getLogger(__name__)

PAGE_MAX = 999  # the documented server maximum for v2 List calls (one page says 1000; 999 is safe for both)
SESSION_IDLE_LIMIT = timedelta(minutes=35)

# Every operation this client may perform. Reads of AR objects, the AR payment write and customer notes.
READ_OPERATIONS = frozenset(
    {
        "Login",
        "Logout",
        "GetSessionInfo",
        "List/Invoice",
        "List/Customer",
        "List/CustomerContact",
        "List/ReceivedPay",
        "Crud/Read/Invoice",
        "ListMessage",
    }
)
WRITE_OPERATIONS = frozenset({"RecordARPayment", "SendMessage"})
# v3 operations, as path templates under the v3 base URL. Only the invoice payment link (no v2 equivalent);
# v3's AP side (bills, vendors, payments, approvals) is outside the list like everything else.
V3_OPERATIONS = frozenset({"v3/login", "v3/invoices/{invoiceId}/payment-link"})
# Path ids a v3 operation accepts, by their AR prefix: an invoice is 00e…, a bill (AP) 00n… and is refused.
V3_ID_PREFIXES = {"invoiceId": "00e"}
ALLOWED_OPERATIONS = READ_OPERATIONS | WRITE_OPERATIONS | V3_OPERATIONS

# Objects whose notes we may write: AR customers and invoices, recognised by Bill.com's id prefixes.
NOTE_OBJECT_PREFIXES = ("0cu", "00e")


class BillComError(ARSourceError):
    """Bill.com answered with an error envelope. Carries Bill.com's code and message, nothing secret."""

    def __init__(self, code: str, message: str, operation: str, http_status: int | None = None):
        super().__init__(code, message, f"Bill.com {operation}", http_status)
        self.operation = operation


class BillComAuthError(BillComError):
    """Credentials, developer key or account state rejected (BDC_1101-1104, 1107, 1110): never retried."""


class BillComSessionInvalidError(BillComError):
    """BDC_1109: the session expired or was logged out."""


class BillComQuotaExceededError(BillComError):
    """BDC_1144: the hourly request (or login) quota is spent; nothing helps until the next hour."""


class BillComNotFoundError(BillComError, ARRecordNotFoundError):
    """BDC_1120: no data found for the id asked for."""


class BillComTooManyRequestsError(BillComError):
    """BDC_1322 persisted past the retry budget."""


class BillComProtocolError(Exception):
    """The answer was not a Bill.com envelope we can trust (not JSON, wrong shape, missing fields)."""


class BillComTransportError(ARTransportError):
    """Network failures, timeouts or HTTP 429/5xx that outlasted the retry budget."""


class BillComOutcomeUnknownError(AROutcomeUnknownError):
    """A write may or may not have been applied (timeout or 5xx after sending). Reconcile by reading back."""

    def __init__(self, operation: str, reason: str):
        super().__init__(operation, reason)
        Exception.__init__(
            self,
            f"Bill.com {operation}: outcome unknown ({reason}); not retried because Bill.com has no "
            "idempotency key. Read back before trying again.",
        )


class BillComV3NotConfiguredError(Exception):
    """No v3 base URL is configured: v3-only features (the invoice payment link) are unavailable."""


class ARScopeError(PermissionError):
    """The call is outside the AR allowlist (e.g. bills, vendors, AP payments). Nothing was sent."""


_AUTH_CODES = {"BDC_1101", "BDC_1102", "BDC_1103", "BDC_1104", "BDC_1107", "BDC_1110"}


def _error_for(code: str, message: str, operation: str, http_status: int | None) -> BillComError:
    if code in _AUTH_CODES:
        cls: type[BillComError] = BillComAuthError
    elif code == "BDC_1109":
        cls = BillComSessionInvalidError
    elif code == "BDC_1144":
        cls = BillComQuotaExceededError
        message = (
            f"{message} Bill.com's hourly quota (20,000 requests, 200 logins per developer key) is spent; "
            "the sync stops here and succeeds after the top of the hour."
        )
    elif code == "BDC_1120":
        cls = BillComNotFoundError
    elif code == "BDC_1322":
        cls = BillComTooManyRequestsError
    else:
        cls = BillComError
    return cls(code, message, operation, http_status)


@dataclass
class StoredSession:
    session_id: str = field(repr=False)
    logged_in_at: datetime
    last_used_at: datetime


class SessionStore(Protocol):
    """Where a session outlives the process: the project's database in production."""

    def load_session(self, key: str) -> StoredSession | None: ...

    def save_session(self, key: str, session: StoredSession) -> None: ...

    def delete_session(self, key: str, session_id: str) -> None: ...


class InMemorySessionStore:
    def __init__(self) -> None:
        self._sessions: dict[str, StoredSession] = {}

    def load_session(self, key: str) -> StoredSession | None:
        return self._sessions.get(key)

    def save_session(self, key: str, session: StoredSession) -> None:
        self._sessions[key] = session

    def delete_session(self, key: str, session_id: str) -> None:
        if (current := self._sessions.get(key)) and current.session_id == session_id:
            del self._sessions[key]


def format_timestamp(moment: datetime) -> str:
    """Bill.com's wire format: 2026-01-01T00:00:00.000+0000."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def parse_timestamp(value: str) -> datetime:
    """Accepts the documented `...000+0000` form and the other ISO-8601 offsets a server may send."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


# One semaphore per org per process, shared by every client object talking to that org.
_ORG_SEMAPHORES: dict[tuple[str, str], threading.BoundedSemaphore] = {}
_ORG_SEMAPHORES_LOCK = threading.Lock()


def _org_semaphore(base_url: str, org_id: str, limit: int) -> threading.BoundedSemaphore:
    with _ORG_SEMAPHORES_LOCK:
        key = (base_url, org_id)
        if key not in _ORG_SEMAPHORES:
            _ORG_SEMAPHORES[key] = threading.BoundedSemaphore(limit)
        return _ORG_SEMAPHORES[key]


class BillComClient:
    """Thread-safe Bill.com v2 client. Create one per org per process (see `BillComResource`)."""

    def __init__(
        self,
        *,
        base_url: str,
        username: str,
        password: str,
        org_id: str,
        dev_key: str,
        session_store: SessionStore | None = None,
        max_in_flight: int = 3,
        page_size: int = PAGE_MAX,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        renew_after_idle: timedelta = timedelta(minutes=30),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
        v3_base_url: str | None = None,
    ):
        if not 1 <= page_size <= PAGE_MAX:
            raise ValueError(f"page_size must be between 1 and {PAGE_MAX}")
        if renew_after_idle >= SESSION_IDLE_LIMIT:
            raise ValueError("renew_after_idle must be shorter than Bill.com's 35-minute idle expiry")
        self.base_url = base_url.rstrip("/")
        self.org_id = org_id
        self._username = username
        self._password = password
        self._dev_key = dev_key
        self._store = session_store or InMemorySessionStore()
        self._session_key = f"billcom:{self.base_url}:{org_id}:{username}"
        self.max_in_flight = max_in_flight
        self.page_size = page_size
        self._retry = retry or RetryPolicy()
        self._renew_after_idle = renew_after_idle
        self._clock = clock
        self._sleep = sleep
        # v3: e.g. https://gateway.prod.bill.com/connect (stage: gateway.stage.bill.com); None = not used.
        self.v3_base_url = v3_base_url.rstrip("/") if v3_base_url else None
        self._v3_key = f"billcom-v3:{self.v3_base_url}:{org_id}:{username}"
        self._v3_lock = threading.Lock()
        self._v3_session: StoredSession | None = None
        self._v3_persisted: datetime | None = None
        self._semaphore = _org_semaphore(self.base_url, org_id, max_in_flight)
        self._http = httpx.Client(
            timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=max_in_flight + 2, max_keepalive_connections=max_in_flight),
            headers={"Accept": "application/json"},
        )
        self._session_lock = threading.Lock()
        self._session: StoredSession | None = None
        self._last_persisted_use: datetime | None = None
        self._stats_lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()
        self.logins = 0

    def __repr__(self) -> str:
        return f"BillComClient(base_url={self.base_url!r}, org_id={self.org_id!r})"

    # -- public AR operations -------------------------------------------------------------------------

    def iter_list(
        self,
        entity: str,
        *,
        filters: Sequence[Mapping[str, Any]] = (),
        sort: Sequence[Mapping[str, Any]] = (),
        nested: bool = False,
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield pages of `List/<entity>` in order, keeping `max_in_flight` pages in flight.

        v2 returns no total, so the first short page ends the list; the pages already in flight beyond it
        are the only waste (at most max_in_flight - 1 calls, none when the list fits in one page).
        """
        operation = f"List/{entity}"
        self._check_allowed(operation)
        base = {"max": self.page_size, "filters": list(filters), "sort": list(sort), "nested": nested}

        def fetch(start: int) -> list[dict[str, Any]]:
            data = self.call(operation, {**base, "start": start})
            if not isinstance(data, list):
                raise BillComProtocolError(
                    f"Bill.com {operation} (start={start}): response_data is {type(data).__name__}, expected an array"
                )
            return data

        with ThreadPoolExecutor(max_workers=self.max_in_flight, thread_name_prefix="billcom-page") as pool:
            in_flight: deque[Future[list[dict[str, Any]]]] = deque()
            next_start = 0

            def top_up(target: int) -> None:
                nonlocal next_start
                while len(in_flight) < target:
                    in_flight.append(pool.submit(fetch, next_start))
                    next_start += self.page_size

            # The first page goes alone: most incremental reads fit in one page, and then no call is
            # wasted. Once a page comes back full, `max_in_flight` pages stay in flight.
            top_up(1)
            try:
                while in_flight:
                    page = in_flight.popleft().result()
                    yield page
                    if len(page) < self.page_size:
                        break
                    top_up(self.max_in_flight)
            finally:
                for pending in in_flight:
                    pending.cancel()
                # Pages past the end may still be in flight; their results (or errors) are irrelevant.
                for pending in in_flight:
                    if not pending.cancelled():
                        pending.exception()

    def read(self, entity: str, object_id: str) -> dict[str, Any]:
        data = self.call(f"Crud/Read/{entity}", {"id": object_id})
        if not isinstance(data, dict):
            raise BillComProtocolError(f"Bill.com Crud/Read/{entity} {object_id}: response_data is not an object")
        return data

    def record_ar_payment(self, payment: Mapping[str, Any]) -> dict[str, Any]:
        """RecordARPayment. Never retried after it may have reached Bill.com (see module docstring)."""
        data = self.call("RecordARPayment", dict(payment))
        if not isinstance(data, dict) or not data.get("id"):
            raise BillComProtocolError("Bill.com RecordARPayment: response_data has no ReceivedPay id")
        return data

    def send_message(self, object_id: str, message: str, *, is_public: bool = False) -> dict[str, Any]:
        if not object_id.startswith(NOTE_OBJECT_PREFIXES):
            raise ARScopeError(f"notes may only be written on AR customers or invoices, not on {object_id!r}")
        data = self.call("SendMessage", {"objectId": object_id, "message": message, "isPublic": is_public})
        # The official sample is ambiguous between an object and a one-element array: accept both.
        if isinstance(data, list) and data and isinstance(data[0], dict):
            return data[0]
        if isinstance(data, dict):
            return data
        raise BillComProtocolError("Bill.com SendMessage: response_data is neither a Message nor an array of one")

    def list_messages(self, object_id: str) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        start = 0
        while True:
            page = self.call("ListMessage", {"objectId": object_id, "start": start, "max": self.page_size})
            if not isinstance(page, list):
                raise BillComProtocolError("Bill.com ListMessage: response_data is not an array")
            messages.extend(page)
            if len(page) < self.page_size:
                return messages
            start += self.page_size

    def session_info(self) -> dict[str, Any]:
        data = self.call("GetSessionInfo", {})
        return data if isinstance(data, dict) else {}

    def logout(self) -> None:
        """End the session at Bill.com and forget it. Errors are logged: the session expires anyway."""
        with self._session_lock:
            session, self._session = self._session, None
        if session is None:
            session = self._store.load_session(self._session_key)
        if session is None:
            return
        self._store.delete_session(self._session_key, session.session_id)
        try:
            self._send("Logout", {"devKey": self._dev_key, "sessionId": session.session_id}, write=False)
        except (BillComError, BillComTransportError, BillComProtocolError) as exc:
            log.warning("Bill.com logout failed (%s); the session will expire by itself", exc)

    def close(self) -> None:
        self._persist_last_use(force=True)
        self._http.close()

    def stats(self) -> dict[str, Any]:
        with self._stats_lock:
            return {
                "calls": dict(self.calls),
                "total_calls": sum(self.calls.values()),
                "retries": dict(self.retries),
                "logins": self.logins,
            }

    # -- the one way every request goes out -----------------------------------------------------------

    def call(self, operation: str, data: Mapping[str, Any]) -> Any:
        """Send `operation` with `data` in the current session; re-login and replay once on BDC_1109."""
        self._check_allowed(operation)
        if operation in V3_OPERATIONS:
            raise ARScopeError(f"{operation} is a v3 operation: use call_v3 (its own base URL and session)")
        if operation in ("Login", "Logout"):
            raise ARScopeError(f"{operation} is managed by the client; call logout() to end the session")
        payload = encode_data(data)
        write = operation in WRITE_OPERATIONS
        for replay in (False, True):
            session = self._current_session()
            form = {"devKey": self._dev_key, "sessionId": session.session_id, "data": payload}
            try:
                result = self._send(operation, form, write=write)
            except BillComSessionInvalidError:
                self._drop_session(session)
                if replay:
                    raise
                log.info("Bill.com session expired during %s; logging in again and replaying once", operation)
                continue
            self._touch(session)
            return result
        raise AssertionError("unreachable")

    def _check_allowed(self, operation: str) -> None:
        if operation not in ALLOWED_OPERATIONS:
            raise ARScopeError(
                f"Bill.com operation {operation!r} is outside AgentCollect's AR allowlist "
                f"({', '.join(sorted(ALLOWED_OPERATIONS))}); AP objects such as bills, vendors, vendor "
                "payments and approvals are never touched. No request was sent."
            )

    def _send(self, operation: str, form: Mapping[str, str], *, write: bool) -> Any:
        url = f"{self.base_url}/{operation}.json"
        attempt = 0
        while True:
            try:
                with self._semaphore:
                    with self._stats_lock:
                        self.calls[operation] += 1
                    response = self._http.post(url, data=dict(form))
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # Nothing reached Bill.com: safe to retry, even for a write.
                failure = f"{type(exc).__name__} connecting to Bill.com"
            except httpx.TimeoutException as exc:
                if write:
                    raise BillComOutcomeUnknownError(operation, f"{type(exc).__name__} waiting for the answer") from None
                failure = f"{type(exc).__name__} waiting for Bill.com"
            except httpx.TransportError as exc:
                if write:
                    raise BillComOutcomeUnknownError(operation, f"{type(exc).__name__} during the request") from None
                failure = f"{type(exc).__name__} talking to Bill.com"
            else:
                envelope = _parse_envelope(response, operation)
                if envelope is not None and envelope["response_status"] == 0:
                    return envelope["response_data"]
                if envelope is not None:
                    code, message = _error_fields(envelope, operation)
                    if code != "BDC_1322":
                        raise _error_for(code, message, operation, response.status_code)
                    # The request was refused before processing, so even a write may be retried.
                    failure = "BDC_1322 (more than 3 requests in flight for this org)"
                elif response.status_code == 429:
                    failure = "HTTP 429"
                elif response.status_code >= 500:
                    if write:
                        raise BillComOutcomeUnknownError(operation, f"HTTP {response.status_code}")
                    failure = f"HTTP {response.status_code}"
                else:
                    raise BillComProtocolError(
                        f"Bill.com {operation}: HTTP {response.status_code} without a Bill.com envelope"
                    )
            attempt += 1
            with self._stats_lock:
                self.retries[operation] += 1
            if attempt >= self._retry.max_attempts:
                if failure.startswith("BDC_1322"):
                    raise BillComTooManyRequestsError(
                        "BDC_1322", f"still refused after {attempt} attempts", operation
                    )
                raise BillComTransportError(f"Bill.com {operation}: {failure}; gave up after {attempt} attempts")
            delay = self._retry.delay(attempt)
            log.warning("Bill.com %s: %s; retry %d in %.2fs", operation, failure, attempt, delay)
            self._sleep(delay)

    # -- v3: the invoice payment link (JSON, its own login and session) ----------------------------------

    def invoice_payment_link(self, invoice_id: str, *, customer_id: str, email: str,
                             return_url: str | None = None) -> str:
        """`POST /v3/invoices/{invoiceId}/payment-link` with `{customerId, email[, returnUrl]}`: a link the
        customer pays the invoice through without a BILL account (valid only for customers not connected to
        the org in the BILL network; the receipt goes to `email`). It moves no money, so it is retried like a
        read. The answer's `paymentLink` is the URL."""
        body = {"customerId": customer_id, "email": email}
        if return_url:
            body["returnUrl"] = return_url
        data = self.call_v3("v3/invoices/{invoiceId}/payment-link", body, invoiceId=invoice_id)
        link = data.get("paymentLink") if isinstance(data, dict) else None
        if not isinstance(link, str) or not link.startswith(("https://", "http://")):
            raise BillComProtocolError(f"Bill.com v3 payment-link {invoice_id}: the answer has no paymentLink URL")
        return link

    def invoice_payment_links(self, requests: Sequence[Mapping[str, Any]]) -> list[str | Exception]:
        """`invoice_payment_link` for each {invoice_id, customer_id, email[, return_url]}, `max_in_flight` at a
        time (the org's 3-in-flight limit counts v2 and v3 together); per request, the link or the error.

        Once Bill.com is unreachable or over its limits (retries spent, BDC_1322/1144), the requests not yet
        sent get that error without being sent: a batch costs at most `max_in_flight` failed requests."""
        unavailable: list[Exception] = []

        def one(request: Mapping[str, Any]) -> str | Exception:
            if unavailable:
                return unavailable[0]
            try:
                return self.invoice_payment_link(request["invoice_id"], customer_id=request["customer_id"],
                                                 email=request["email"], return_url=request.get("return_url"))
            except (BillComTransportError, BillComTooManyRequestsError, BillComQuotaExceededError) as exc:
                unavailable.append(exc)
                return exc
            except (BillComError, BillComProtocolError) as exc:
                return exc

        with ThreadPoolExecutor(max_workers=self.max_in_flight, thread_name_prefix="billcom-v3") as pool:
            return list(pool.map(one, requests))

    def call_v3(self, operation: str, body: Mapping[str, Any] | None = None, **ids: str) -> Any:
        """POST an allowlisted v3 operation (a path template) in the v3 session; re-login and replay once on
        HTTP 401 / BDC_1109. Path ids must carry their AR prefix (V3_ID_PREFIXES)."""
        self._check_allowed(operation)
        if operation not in V3_OPERATIONS or operation == "v3/login":
            raise ARScopeError(f"{operation} is not a v3 operation this client sends (login is managed)")
        for name, value in ids.items():
            prefix = V3_ID_PREFIXES.get(name)
            if prefix is None or not re.fullmatch(f"{prefix}[0-9A-Za-z]+", value or ""):
                raise ARScopeError(f"Bill.com {operation}: {name}={value!r} is not an AR id ({prefix}…); nothing sent")
        if self.v3_base_url is None:
            raise BillComV3NotConfiguredError("the Bill.com v3 base URL is not set (BILLCOM_V3_BASE_URL)")
        path = operation.format(**ids)
        for replay in (False, True):
            session = self._current_v3_session()
            try:
                result = self._send_v3(operation, path, body or {}, session_id=session.session_id)
            except BillComSessionInvalidError:
                with self._v3_lock:
                    if self._v3_session is session:
                        self._v3_session = None
                self._store.delete_session(self._v3_key, session.session_id)
                if replay:
                    raise
                log.info("Bill.com v3 session expired during %s; logging in again and replaying once", operation)
                continue
            self._touch_v3(session)
            return result
        raise AssertionError("unreachable")

    def _send_v3(self, operation: str, path: str, body: Mapping[str, Any], *, session_id: str | None) -> Any:
        """One v3 request with the v2 retry rules: 429/5xx, network errors and BDC_1322 retried with backoff,
        BDC_1144 at once; 401 (BDC_1109) means the session. Errors are arrays of {code, message, ...}."""
        url = f"{self.v3_base_url}/{path}"
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if session_id is not None:
            headers.update({"sessionId": session_id, "devKey": self._dev_key})
        content = encode_data(body)
        attempt = 0
        while True:
            try:
                with self._semaphore:
                    with self._stats_lock:
                        self.calls[operation] += 1
                    response = self._http.post(url, content=content, headers=headers)
            except httpx.TransportError as exc:
                failure = f"{type(exc).__name__} talking to Bill.com v3"
            else:
                status = response.status_code
                if status < 300:
                    try:
                        return json.loads(response.content, parse_float=Decimal) if response.content else {}
                    except ValueError:
                        raise BillComProtocolError(f"Bill.com {operation}: HTTP {status} with a body that is not JSON") from None
                code, message = _v3_error(response)
                if status == 401 and code in (None, "BDC_1109"):
                    raise BillComSessionInvalidError("BDC_1109", message or "Session is invalid.", operation, status)
                if code == "BDC_1322":
                    failure = "BDC_1322 (more than 3 requests in flight for this org)"
                elif code != "BDC_1144" and (status == 429 or status >= 500):
                    failure = f"HTTP {status}"
                elif code is not None:
                    raise _error_for(code, message, operation, status)
                else:
                    raise BillComProtocolError(f"Bill.com {operation}: HTTP {status} without a v3 error body")
            attempt += 1
            with self._stats_lock:
                self.retries[operation] += 1
            if attempt >= self._retry.max_attempts:
                if failure.startswith("BDC_1322"):
                    raise BillComTooManyRequestsError("BDC_1322", f"still refused after {attempt} attempts", operation)
                raise BillComTransportError(f"Bill.com {operation}: {failure}; gave up after {attempt} attempts")
            delay = self._retry.delay(attempt)
            log.warning("Bill.com %s: %s; retry %d in %.2fs", operation, failure, attempt, delay)
            self._sleep(delay)

    def _current_v3_session(self) -> StoredSession:
        with self._v3_lock:
            now = self._clock()
            if self._v3_session is not None and now - self._v3_session.last_used_at < self._renew_after_idle:
                return self._v3_session
            stored = self._store.load_session(self._v3_key)
            if stored is not None and now - stored.last_used_at < self._renew_after_idle:
                self._v3_session = stored
                return stored
            body = {"username": self._username, "password": self._password, "organizationId": self.org_id,
                    "devKey": self._dev_key}
            try:
                data = self._send_v3("v3/login", "v3/login", body, session_id=None)
            except BillComSessionInvalidError as exc:  # a 401 on login is about the credentials
                raise BillComAuthError(exc.code, "v3 login refused", "v3/login", exc.http_status) from None
            session_id = data.get("sessionId") if isinstance(data, dict) else None
            if not isinstance(session_id, str) or not session_id:
                raise BillComProtocolError("Bill.com v3/login: the answer has no sessionId")
            now = self._clock()
            self._v3_session = StoredSession(session_id=session_id, logged_in_at=now, last_used_at=now)
            with self._stats_lock:
                self.logins += 1
            self._store.save_session(self._v3_key, self._v3_session)
            self._v3_persisted = now
            log.info("Logged in to Bill.com v3 for org %s", self.org_id)
            return self._v3_session

    def _touch_v3(self, session: StoredSession) -> None:
        session.last_used_at = self._clock()
        if self._v3_persisted is None or session.last_used_at - self._v3_persisted >= timedelta(minutes=1):
            self._store.save_session(self._v3_key, session)
            self._v3_persisted = session.last_used_at

    # -- session lifecycle ----------------------------------------------------------------------------

    def _current_session(self) -> StoredSession:
        with self._session_lock:
            now = self._clock()
            if self._session is not None and now - self._session.last_used_at < self._renew_after_idle:
                return self._session
            stored = self._store.load_session(self._session_key)
            if stored is not None and now - stored.last_used_at < self._renew_after_idle:
                self._session = stored
                return stored
            self._session = self._login()
            return self._session

    def _login(self) -> StoredSession:
        form = {
            "userName": self._username,
            "password": self._password,
            "orgId": self.org_id,
            "devKey": self._dev_key,
        }
        data = self._send("Login", form, write=False)
        session_id = data.get("sessionId") if isinstance(data, dict) else None
        if not isinstance(session_id, str) or not session_id:
            raise BillComProtocolError("Bill.com Login: response_data has no sessionId")
        now = self._clock()
        session = StoredSession(session_id=session_id, logged_in_at=now, last_used_at=now)
        with self._stats_lock:
            self.logins += 1
        self._store.save_session(self._session_key, session)
        self._last_persisted_use = now
        log.info("Logged in to Bill.com org %s", self.org_id)
        return session

    def _drop_session(self, session: StoredSession) -> None:
        with self._session_lock:
            if self._session is not None and self._session.session_id == session.session_id:
                self._session = None
        self._store.delete_session(self._session_key, session.session_id)

    def _touch(self, session: StoredSession) -> None:
        session.last_used_at = self._clock()
        self._persist_last_use()

    def _persist_last_use(self, force: bool = False) -> None:
        # Writing the idle clock on every call would cost a database write per request; once a minute
        # keeps the stored value well inside the renewal margin.
        session = self._session
        if session is None:
            return
        last = self._last_persisted_use
        if force or last is None or session.last_used_at - last >= timedelta(minutes=1):
            self._store.save_session(self._session_key, session)
            self._last_persisted_use = session.last_used_at


def encode_data(data: Mapping[str, Any]) -> str:
    """JSON for the `data` form field. Decimals become JSON numbers with their exact digits.

    json.dumps would print a float's repr; marking Decimals as strings and unquoting them afterwards keeps
    the amount the caller computed, digit for digit. The marker is random per call, so no text in the
    payload can forge it.
    """
    mark = f"dec-{uuid.uuid4().hex}:"

    def default(value: Any) -> Any:
        if isinstance(value, Decimal):
            if not value.is_finite():
                raise ValueError(f"cannot send non-finite amount {value}")
            return f"{mark}{value:f}"
        if isinstance(value, datetime):
            return format_timestamp(value)
        raise TypeError(f"cannot encode {type(value).__name__} for Bill.com")

    text = json.dumps(data, default=default, separators=(",", ":"))
    return re.sub(f'"{mark}(-?[0-9]+(?:\\.[0-9]+)?)"', r"\1", text)


def _parse_envelope(response: httpx.Response, operation: str) -> dict[str, Any] | None:
    """The Bill.com envelope, or None when the body is not one (e.g. a proxy's 502 page).

    Bill.com's HTTP status for errors is undocumented (200 in practice, 404 for unknown paths), so the
    envelope, not the status line, decides.
    """
    try:
        body = json.loads(response.content, parse_float=Decimal)
    except ValueError:
        if response.status_code == 200:
            raise BillComProtocolError(
                f"Bill.com {operation}: HTTP 200 with a body that is not JSON ({len(response.content)} bytes)"
            ) from None
        return None
    if not isinstance(body, dict) or "response_status" not in body:
        if response.status_code == 200:
            raise BillComProtocolError(f"Bill.com {operation}: JSON body lacks response_status")
        return None
    status = body["response_status"]
    if status in (0, "0"):
        body["response_status"] = 0
        if "response_data" not in body:
            raise BillComProtocolError(f"Bill.com {operation}: success envelope lacks response_data")
        return body
    if status in (1, "1"):
        body["response_status"] = 1
        return body
    raise BillComProtocolError(f"Bill.com {operation}: unexpected response_status {status!r}")


def _v3_error(response: httpx.Response) -> tuple[str | None, str]:
    """(code, message) of a v3 error body: an array of {timestamp, code, severity, category, message}, or a
    gateway's {"message": ...} object; (None, "") when the body is neither."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return None, ""
    first = body[0] if isinstance(body, list) and body and isinstance(body[0], dict) else body
    if not isinstance(first, dict):
        return None, ""
    code = first.get("code")
    return (code if isinstance(code, str) and code else None), str(first.get("message") or "")


def _error_fields(envelope: Mapping[str, Any], operation: str) -> tuple[str, str]:
    data = envelope.get("response_data")
    if not isinstance(data, dict) or not isinstance(data.get("error_code"), str):
        raise BillComProtocolError(f"Bill.com {operation}: error envelope lacks response_data.error_code")
    return data["error_code"], str(data.get("error_message", ""))
