"""QuickBooks Online Accounting API v3 client (AR only), following shared/reference/qbo-netsuite.md §1.

What this module guarantees, and why:
- OAuth 2.0 refresh (§1.1): the access token is cached until shortly before `expires_in`. QBO rotates the
  refresh token, and a rotated token that is not saved is how integrations end up disconnected, so the
  newest refresh token is written to the `TokenStore` *before* the new access token is used. Refreshes are
  single-writer: a lock in this process, and the store's compare-and-set across processes. When QBO answers
  `invalid_grant`, the store is re-read (another process may have rotated the token) and the refresh is
  tried once more with the newest token; only then does `QBOReconnectRequiredError` tell the operator to
  reconnect the company.
- Crash windows. A crash after the store write loses nothing. A crash after the token endpoint answered
  but before the store write (or a token response lost in transit) loses the rotated token: the store
  still holds the old one. Whether QBO still honours the old token for a while is UNVERIFIED (§1.1); if it
  does, the next refresh simply works, and if it does not, the next refresh fails with
  `QBOReconnectRequiredError` naming the cause: never silent data loss, never a retry loop. A store write
  that fails (database down) keeps the rotated token in memory, refuses to use the access token, and is
  retried before any later refresh in this process.
- Every request carries `minorversion=75`, a timeout, and is retried with exponential backoff and full
  jitter on 429 (honouring Retry-After when sent), 5xx and transport errors, a bounded number of times.
  At most 10 requests are in flight and at most `requests_per_minute` (below QBO's 500) are sent per
  realm per process (§1.6). A 401 refreshes the access token once and replays.
- Writes carry a deterministic `requestid` (§1.4): QBO answers a repeated requestid with the original
  response, so a write whose answer was lost is retried with the same id. Only when the retry budget runs
  out after the write may have landed does `QBOOutcomeUnknownError` ask the caller to read back.
- Queries are built from `Condition`s whose values are quoted and escaped here: no statement is ever
  assembled from caller text.
- AR only: reads of AR entities; creates of Payment and Attachable only.
- Client secret, refresh and access tokens never appear in logs, exception messages or reprs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote as url_quote

import httpx

from agentcollect_pipeline.ar_source.base import (
    AROutcomeUnknownError,
    ARRecordNotFoundError,
    ARSourceError,
    ARTransportError,
)
from agentcollect_pipeline.clients.retry import RetryPolicy, retry_after_seconds
from agentcollect_pipeline.clients.token_store import StoredToken, TokenStore, TokenVersionConflict

log = logging.getLogger(__name__)

MINOR_VERSION = "75"
PAGE_MAX = 1000
DEFAULT_BASE_URL = "https://quickbooks.api.intuit.com"
DEFAULT_TOKEN_URL = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
REQUEST_ID_MAX = 50
MAX_RETRY_AFTER_S = 60.0
# Fixed namespace of our requestids: the same payment always maps to the same id.
REQUEST_ID_NAMESPACE = uuid.UUID("8f6f7c1e-3f7a-4b8e-9a55-2f1d3c0b7a11")

READABLE_ENTITIES = frozenset({"Invoice", "Customer", "Payment", "Attachable", "CustomerType", "CompanyInfo"})
CREATABLE_ENTITIES = frozenset({"Payment", "Attachable"})
CDC_ENTITIES = frozenset({"Invoice", "Customer", "Payment"})


# -- errors ----------------------------------------------------------------------------------------------


class QBOError(ARSourceError):
    """QBO answered with a Fault envelope: a definite refusal. Carries QBO's code and message."""

    def __init__(self, code: str, message: str, operation: str, http_status: int | None = None,
                 detail: str | None = None):
        text = f"{message} ({detail})" if detail and detail != message else message
        super().__init__(code, text, f"QuickBooks {operation}", http_status)
        self.detail = detail


class QBONotFoundError(QBOError, ARRecordNotFoundError):
    """Fault 610 (object not found), or ids asked for that QBO did not return."""

    def __init__(self, code: str, message: str, operation: str, http_status: int | None = None,
                 detail: str | None = None, missing_ids: Sequence[str] = ()):
        super().__init__(code, message, operation, http_status, detail)
        self.missing_ids = list(missing_ids)


class QBOAuthError(QBOError):
    """Authentication or authorization refused (401/403, invalid_client)."""


class QBOReconnectRequiredError(QBOAuthError):
    """The refresh token is rejected (invalid_grant) and no newer one exists: a person must reconnect."""


class QBOStaleObjectError(QBOError):
    """Fault 5010: the SyncToken is stale; read the object again before updating it."""


class QBOScopeError(PermissionError):
    """The call is outside the AR allowlist. Nothing was sent."""


class QBOProtocolError(Exception):
    """The answer was not something QBO sends (not JSON, wrong shape)."""


class QBOTransportError(ARTransportError):
    """Network failures, timeouts or HTTP 429/5xx that outlasted the retry budget (no write landed)."""


class QBOOutcomeUnknownError(AROutcomeUnknownError):
    """A write may have landed (timeout or 5xx after sending, retries exhausted). Read back by reference."""


class QBOTokenPersistError(RuntimeError):
    """The rotated refresh token could not be saved; the new access token is not used until it is."""


class _InvalidGrant(Exception):
    pass


# -- query building --------------------------------------------------------------------------------------

_FIELD = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:\.[A-Za-z][A-Za-z0-9]*)*$")
_ENTITY = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_OPERATORS = frozenset({"=", "<", ">", "<=", ">=", "LIKE"})
_UNSAFE = re.compile(r"[\\\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Condition:
    """One WHERE term, built only by `where`/`where_in`, so its value is always quoted and escaped."""

    text: str


def quote(value: Any) -> str:
    """A QBO query literal. Booleans are bare; everything else is a single-quoted string with `'`
    escaped as `\\'` (QBO's documented escape). Backslashes and control characters are refused because
    QBO documents no escape for them: refusing is safer than guessing."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        value = format_timestamp(value)
    elif isinstance(value, float):
        raise TypeError("refusing a float in a query: pass Decimal or str")
    text = str(value)
    if _UNSAFE.search(text):
        raise ValueError(f"query value {text[:40]!r} contains a backslash or control character")
    return "'" + text.replace("'", "\\'") + "'"


def _field(name: str) -> str:
    if not _FIELD.match(name):
        raise ValueError(f"not a QBO field name: {name!r}")
    return name


def where(field_name: str, op: str, value: Any) -> Condition:
    if op.upper() not in _OPERATORS:
        raise ValueError(f"operator {op!r} is not one of {sorted(_OPERATORS)}")
    return Condition(f"{_field(field_name)} {op.upper()} {quote(value)}")


def where_in(field_name: str, values: Sequence[Any]) -> Condition:
    if not values:
        raise ValueError(f"IN needs at least one value for {field_name}")
    return Condition(f"{_field(field_name)} IN ({', '.join(quote(v) for v in values)})")


def select(
    entity: str,
    conditions: Sequence[Condition] = (),
    *,
    order_by: str | None = None,
    descending: bool = False,
    start: int = 1,
    max_results: int = PAGE_MAX,
    count: bool = False,
) -> str:
    if not _ENTITY.match(entity):
        raise ValueError(f"not a QBO entity name: {entity!r}")
    if not all(isinstance(c, Condition) for c in conditions):
        raise TypeError("conditions must be built with where()/where_in()")
    parts = [f"SELECT {'count(*)' if count else '*'} FROM {entity}"]
    if conditions:
        parts.append("WHERE " + " AND ".join(c.text for c in conditions))
    if order_by:
        parts.append(f"ORDERBY {_field(order_by)} {'DESC' if descending else 'ASC'}")
    if not count:
        parts.append(f"STARTPOSITION {int(start)} MAXRESULTS {int(max_results)}")
    return " ".join(parts)


def format_timestamp(moment: datetime) -> str:
    """QBO's query form of a moment: ISO-8601 to the second with an explicit offset (UTC here)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: QBO timestamps need an offset")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def parse_timestamp(value: str) -> datetime:
    """QBO writes `2016-03-29T14:15:04-07:00` (company time zone); returns aware UTC."""
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def request_id_for(*parts: str) -> str:
    """Deterministic requestid (36 chars): the same logical write always carries the same id."""
    return str(uuid.uuid5(REQUEST_ID_NAMESPACE, "\x1f".join(parts)))


def _encode_json(data: Mapping[str, Any]) -> bytes:
    """JSON with Decimals as numbers carrying exactly their digits (json.dumps would go through float)."""
    mark = f"dec-{uuid.uuid4().hex}:"

    def default(value: Any) -> Any:
        if isinstance(value, Decimal):
            if not value.is_finite():
                raise ValueError(f"cannot send non-finite amount {value}")
            return f"{mark}{value:f}"
        raise TypeError(f"cannot encode {type(value).__name__} for QuickBooks")

    text = json.dumps(data, default=default, separators=(",", ":"))
    return re.sub(f'"{mark}(-?[0-9]+(?:\\.[0-9]+)?)"', r"\1", text).encode()


# -- rate limits shared by every client of a realm in this process -----------------------------------------


class RollingLimiter:
    """At most `limit` acquisitions in any `window_s`; callers wait (outside the lock) for a slot."""

    def __init__(self, limit: int, window_s: float = 60.0, monotonic: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.window_s = window_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._sent: deque[float] = deque()

    def acquire(self, sleep: Callable[[float], None]) -> float:
        """Returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._monotonic()
                while self._sent and self._sent[0] <= now - self.window_s:
                    self._sent.popleft()
                if len(self._sent) < self.limit:
                    self._sent.append(now)
                    return waited
                wait = self._sent[0] + self.window_s - now
            sleep(wait)
            waited += wait


_REALM_LIMITS: dict[tuple[Any, ...], tuple[threading.BoundedSemaphore, RollingLimiter]] = {}
_REALM_LIMITS_LOCK = threading.Lock()


def _realm_limits(base_url: str, realm_id: str, in_flight: int, per_minute: int,
                  monotonic: Callable[[], float]) -> tuple[threading.BoundedSemaphore, RollingLimiter]:
    # Every client of a realm in this process shares one semaphore and one limiter (a test clock gets its own).
    key = (base_url, realm_id, in_flight, per_minute, monotonic)
    with _REALM_LIMITS_LOCK:
        if key not in _REALM_LIMITS:
            _REALM_LIMITS[key] = (threading.BoundedSemaphore(in_flight), RollingLimiter(per_minute, 60.0, monotonic))
        return _REALM_LIMITS[key]


# -- the client --------------------------------------------------------------------------------------------


@dataclass
class _Grant:
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    access_expires_at: datetime
    refresh_expires_at: datetime | None


@dataclass
class _PendingRotation:
    """A rotated refresh token the store refused to take (database down): saved before anything else."""

    based_on: StoredToken
    grant: _Grant
    seeded_from: str | None


class QBOClient:
    """Thread-safe QBO client for one company (realm). Create one per realm per process."""

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_BASE_URL,
        token_url: str = DEFAULT_TOKEN_URL,
        client_id: str,
        client_secret: str,
        realm_id: str,
        token_store: TokenStore,
        bootstrap_refresh_token: str | None = None,
        max_in_flight: int = 10,
        requests_per_minute: int = 490,
        page_size: int = PAGE_MAX,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        refresh_margin: timedelta = timedelta(minutes=5),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        if not 1 <= page_size <= PAGE_MAX:
            raise ValueError(f"page_size must be between 1 and {PAGE_MAX}")
        if not 1 <= max_in_flight <= 10:
            raise ValueError("QBO allows at most 10 requests in flight per realm")
        if not 1 <= requests_per_minute <= 500:
            raise ValueError("QBO allows at most 500 requests per minute per realm")
        self.base_url = base_url.rstrip("/")
        self.token_url = token_url
        self.realm_id = str(realm_id)
        self._api = f"{self.base_url}/v3/company/{url_quote(self.realm_id, safe='')}"
        self._client_id = client_id
        self._client_secret = client_secret
        self._store = token_store
        self._bootstrap = bootstrap_refresh_token or None
        self._token_key = f"qbo:{self.realm_id}"
        self.page_size = page_size
        self._retry = retry or RetryPolicy()
        self._refresh_margin = refresh_margin
        self._clock = clock
        self._sleep = sleep
        self._semaphore, self._limiter = _realm_limits(
            self.base_url, self.realm_id, max_in_flight, requests_per_minute, monotonic
        )
        self._http = httpx.Client(
            timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=max_in_flight + 2, max_keepalive_connections=max_in_flight),
            headers={"Accept": "application/json"},
        )
        self._token_lock = threading.Lock()
        self._access_token: str | None = None
        self._access_expires_at: datetime | None = None
        self._pending: _PendingRotation | None = None
        self._stats_lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()
        self.refreshes = 0
        self.throttled = 0

    def __repr__(self) -> str:
        return f"QBOClient(base_url={self.base_url!r}, realm_id={self.realm_id!r})"

    # -- reads -------------------------------------------------------------------------------------------

    def query(self, statement: str) -> dict[str, Any]:
        """Run one statement built by `select()`; returns the QueryResponse object."""
        body = self._request("POST", "query", operation="query", content=statement.encode(),
                             content_type="application/text")
        response = body.get("QueryResponse") if isinstance(body, dict) else None
        if not isinstance(response, dict):
            raise QBOProtocolError("QuickBooks query: the answer has no QueryResponse object")
        return response

    def query_rows(self, entity: str, conditions: Sequence[Condition] = (), **options: Any) -> list[dict[str, Any]]:
        self._check_readable(entity)
        response = self.query(select(entity, conditions, **options))
        rows = response.get(entity, [])
        if not isinstance(rows, list):
            raise QBOProtocolError(f"QuickBooks query {entity}: QueryResponse.{entity} is not an array")
        return rows

    def iter_changed(
        self, entity: str, conditions: Sequence[Condition] = (), since: datetime | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """Pages of `entity` matching `conditions`, updated at or after `since`, oldest change first.

        Pages resume from the last timestamp seen (keyset) rather than from an offset: a record updated
        while we page jumps to the end of the order, and with offsets the record behind it would slide
        into the page already read and be skipped. Records sharing the last timestamp are skipped by
        count and de-duplicated by id.
        """
        self._check_readable(entity)
        floor, seen_at_floor = since, set()
        while True:
            terms = list(conditions)
            if floor is not None:
                terms.append(where("MetaData.LastUpdatedTime", ">=", floor))
            page = self.query_rows(entity, terms, order_by="MetaData.LastUpdatedTime",
                                   start=len(seen_at_floor) + 1, max_results=self.page_size)
            fresh = [row for row in page if _row_id(row) not in seen_at_floor or _row_id(row) is None]
            if fresh:
                yield fresh
            if len(page) < self.page_size:
                return
            if not fresh:
                raise QBOProtocolError(f"QuickBooks query {entity}: a full page repeated rows already read")
            floor, seen_at_floor = _advance_floor(floor, seen_at_floor, page)

    def read(self, entity: str, entity_id: str) -> dict[str, Any]:
        self._check_readable(entity)
        path = f"{entity.lower()}/{url_quote(str(entity_id), safe='')}"
        body = self._request("GET", path, operation=f"read {entity}")
        record = body.get(entity) if isinstance(body, dict) else None
        if not isinstance(record, dict):
            raise QBOProtocolError(f"QuickBooks read {entity} {entity_id}: the answer has no {entity} object")
        return record

    def change_data_capture(self, entities: Sequence[str], changed_since: datetime) -> dict[str, list[dict[str, Any]]]:
        """CDC (§1.2): full objects changed since `changed_since` (at most 30 days back), deletes included
        as `{"Id", "status": "Deleted"}`. Returns entity -> objects."""
        unknown = set(entities) - CDC_ENTITIES
        if unknown:
            raise QBOScopeError(f"CDC of {sorted(unknown)} is outside the AR allowlist")
        params = {"entities": ",".join(entities), "changedSince": format_timestamp(changed_since)}
        body = self._request("GET", "cdc", operation="cdc", params=params)
        try:
            responses = body["CDCResponse"][0]["QueryResponse"]
        except (KeyError, IndexError, TypeError):
            raise QBOProtocolError("QuickBooks cdc: the answer has no CDCResponse[0].QueryResponse") from None
        found: dict[str, list[dict[str, Any]]] = {name: [] for name in entities}
        for part in responses if isinstance(responses, list) else []:
            for name in entities:
                if isinstance(part, dict) and isinstance(part.get(name), list):
                    found[name].extend(part[name])
        return found

    # -- writes ------------------------------------------------------------------------------------------

    def create(self, entity: str, body: Mapping[str, Any], *, request_id: str) -> dict[str, Any]:
        """POST a new `entity`. Retried with the same `request_id`, which QBO de-duplicates."""
        if entity not in CREATABLE_ENTITIES:
            raise QBOScopeError(
                f"creating {entity!r} is outside AgentCollect's AR allowlist ({sorted(CREATABLE_ENTITIES)}); "
                "no request was sent"
            )
        if not request_id or len(request_id) > REQUEST_ID_MAX:
            raise ValueError(f"requestid must be 1-{REQUEST_ID_MAX} characters")
        answer = self._request(
            "POST", entity.lower(), operation=f"create {entity}", params={"requestid": request_id},
            content=_encode_json(body), content_type="application/json", write=True,
        )
        record = answer.get(entity) if isinstance(answer, dict) else None
        if not isinstance(record, dict) or not record.get("Id"):
            raise QBOOutcomeUnknownError(f"QuickBooks create {entity}", "the answer carries no object id")
        return record

    # -- housekeeping ------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self._stats_lock:
            return {
                "calls": dict(self.calls),
                "total_calls": sum(self.calls.values()),
                "retries": dict(self.retries),
                "total_retries": sum(self.retries.values()),
                "refreshes": self.refreshes,
                "throttled": self.throttled,
            }

    def close(self) -> None:
        self._http.close()

    def _check_readable(self, entity: str) -> None:
        if entity not in READABLE_ENTITIES:
            raise QBOScopeError(f"reading {entity!r} is outside AgentCollect's AR allowlist; no request was sent")

    def _count(self, counter: Counter[str], operation: str) -> None:
        with self._stats_lock:
            counter[operation] += 1

    # -- the one way every API request goes out ------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
        content_type: str | None = None,
        write: bool = False,
    ) -> Any:
        url = f"{self._api}/{path}"
        query = {"minorversion": MINOR_VERSION, **(params or {})}
        attempt, may_have_landed, reauthorised = 0, False, False
        while True:
            token = self._bearer()
            retry_after: float | None = None
            headers = {"Authorization": f"Bearer {token}"}
            if content_type:
                headers["Content-Type"] = content_type
            try:
                self._limiter.acquire(self._sleep)
                with self._semaphore:
                    self._count(self.calls, operation)
                    response = self._http.request(method, url, params=query, content=content, headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                failure = f"{type(exc).__name__} connecting to QuickBooks"  # nothing was sent
            except httpx.TransportError as exc:
                may_have_landed = may_have_landed or write
                failure = f"{type(exc).__name__} waiting for QuickBooks"
            else:
                status = response.status_code
                if status == 401 and not reauthorised:
                    reauthorised = True
                    log.info("QuickBooks %s: access token refused (401); refreshing once", operation)
                    self._refresh_after_401(token)
                    continue
                if status == 429:
                    with self._stats_lock:
                        self.throttled += 1
                    failure, retry_after = "HTTP 429 (ThrottleExceeded)", retry_after_seconds(response)
                elif status >= 500:
                    may_have_landed = may_have_landed or write
                    failure = f"HTTP {status}"
                else:
                    return self._settle(response, operation, write, may_have_landed)
            attempt += 1
            self._count(self.retries, operation)
            if attempt >= self._retry.max_attempts:
                reason = f"{failure}; gave up after {attempt} attempts"
                if may_have_landed:
                    raise QBOOutcomeUnknownError(f"QuickBooks {operation}", reason)
                raise QBOTransportError(f"QuickBooks {operation}: {reason}")
            delay = self._retry.delay(attempt, retry_after, retry_after_cap=MAX_RETRY_AFTER_S)
            log.warning("QuickBooks %s: %s; retry %d in %.2fs", operation, failure, attempt, delay)
            self._sleep(delay)

    @staticmethod
    def _settle(response: httpx.Response, operation: str, write: bool, may_have_landed: bool) -> Any:
        try:
            return _answer(response, operation, write)
        except QBOError as exc:
            if not may_have_landed or isinstance(exc, QBOAuthError):
                raise
            # An earlier attempt may have been applied and QBO no longer matched its requestid: this refusal
            # (e.g. "amount exceeds balance") may be caused by our own first write, so it proves nothing.
            raise QBOOutcomeUnknownError(
                f"QuickBooks {operation}", f"a retry was refused with {exc.code} after an earlier attempt may have landed"
            ) from None

    # -- OAuth -------------------------------------------------------------------------------------------

    def _bearer(self) -> str:
        with self._token_lock:
            if self._access_token and self._access_expires_at and self._clock() < self._access_expires_at:
                return self._access_token
            return self._refresh_locked()

    def _refresh_after_401(self, refused: str) -> str:
        with self._token_lock:
            if self._access_token and self._access_token != refused:
                return self._access_token  # another thread refreshed while this request was out
            self._access_token = None
            return self._refresh_locked()

    def _refresh_locked(self) -> str:
        if self._pending is not None and self._save_pending():
            return self._access_token  # type: ignore[return-value]
        stored = self._load_or_seed()
        grant, based_on, seeded_from = self._grant_with_recovery(stored)
        self._persist(based_on, grant, seeded_from)
        return self._use(grant)

    def _use(self, grant: _Grant) -> str:
        # Renew a margin before expiry so a request never starts with a token about to lapse.
        lifetime = grant.access_expires_at - self._clock()
        margin = min(self._refresh_margin, lifetime / 2)
        self._access_token = grant.access_token
        self._access_expires_at = grant.access_expires_at - margin
        return grant.access_token

    def _fingerprint(self, token: str) -> str:
        return hmac.new(self._client_secret.encode(), token.encode(), hashlib.sha256).hexdigest()[:32]

    def _load_or_seed(self) -> StoredToken:
        stored = self._store.get(self._token_key)
        if stored is not None:
            return stored
        if not self._bootstrap:
            raise QBOReconnectRequiredError(
                "no_refresh_token",
                "no QuickBooks refresh token is stored yet and QBO_REFRESH_TOKEN is not set: connect the "
                "company (OAuth authorization-code flow) and set QBO_REFRESH_TOKEN once",
                "token refresh",
            )
        try:
            return self._store.put(self._token_key, self._bootstrap, expected_version=None,
                                   seeded_from=self._fingerprint(self._bootstrap))
        except TokenVersionConflict:
            stored = self._store.get(self._token_key)  # another process seeded it first
            assert stored is not None
            return stored

    def _grant_with_recovery(self, stored: StoredToken) -> tuple[_Grant, StoredToken, str | None]:
        """(grant, the stored version it rotates, bootstrap fingerprint when the bootstrap was used)."""
        try:
            return self._token_grant(stored.refresh_token), stored, None
        except _InvalidGrant:
            pass
        newest = self._store.get(self._token_key) or stored
        if newest.version != stored.version:
            log.info("QuickBooks refresh token was rotated by another process; retrying once with the newest")
            try:
                return self._token_grant(newest.refresh_token), newest, None
            except _InvalidGrant:
                pass
        if self._bootstrap and self._fingerprint(self._bootstrap) != newest.seeded_from:
            # QBO_REFRESH_TOKEN changed since it last seeded the store: the company was reconnected.
            log.warning("stored QuickBooks refresh token refused; trying the newly configured QBO_REFRESH_TOKEN")
            try:
                return self._token_grant(self._bootstrap), newest, self._fingerprint(self._bootstrap)
            except _InvalidGrant:
                pass
        raise QBOReconnectRequiredError(
            "invalid_grant",
            f"QuickBooks refused the stored refresh token (version {newest.version}) as expired, revoked or "
            "already rotated, and no newer one is stored. Reconnect the company (OAuth authorization-code "
            "flow) and set QBO_REFRESH_TOKEN to the new refresh token. If a process crashed right after a "
            "refresh, this is the rotated token it could not save.",
            "token refresh",
            400,
        )

    def _persist(self, based_on: StoredToken, grant: _Grant, seeded_from: str | None) -> None:
        try:
            self._store.put(self._token_key, grant.refresh_token, expected_version=based_on.version,
                            refresh_expires_at=grant.refresh_expires_at, seeded_from=seeded_from)
        except TokenVersionConflict:
            # Another process refreshed from the same stored version and saved first. QBO answered both of
            # us, so both new refresh tokens are unused: the first saved wins, our access token stays good.
            log.info("QuickBooks refresh token saved by another process first; keeping theirs")
        except Exception as exc:
            self._pending = _PendingRotation(based_on, grant, seeded_from)
            raise QBOTokenPersistError(
                f"the rotated QuickBooks refresh token could not be saved ({type(exc).__name__}); it is kept "
                "in memory and saved before the next request, and the new access token is not used until then"
            ) from None

    def _save_pending(self) -> bool:
        pending = self._pending
        assert pending is not None
        try:
            self._persist(pending.based_on, pending.grant, pending.seeded_from)
        finally:
            if self._pending is pending:  # a failed save has put a fresh pending rotation in its place
                self._pending = None
        if pending.grant.access_expires_at - self._clock() > timedelta(seconds=30):
            self._use(pending.grant)
            return True
        return False

    def _token_grant(self, refresh_token: str) -> _Grant:
        """POST grant_type=refresh_token; retried on transport errors, 429 and 5xx."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        attempt = 0
        while True:
            self._count(self.calls, "token")
            try:
                response = self._http.post(self.token_url, data=form, auth=(self._client_id, self._client_secret))
            except httpx.TransportError as exc:
                failure = f"{type(exc).__name__} talking to the token endpoint"
            else:
                if response.status_code == 200:
                    with self._stats_lock:
                        self.refreshes += 1
                    return self._parse_grant(response, refresh_token)
                if response.status_code != 429 and response.status_code < 500:
                    raise _token_error(response)
                failure = f"HTTP {response.status_code} from the token endpoint"
            attempt += 1
            self._count(self.retries, "token")
            if attempt >= self._retry.max_attempts:
                raise QBOTransportError(f"QuickBooks token refresh: {failure}; gave up after {attempt} attempts")
            self._sleep(self._retry.delay(attempt))

    def _parse_grant(self, response: httpx.Response, used: str) -> _Grant:
        try:
            body = response.json()
            access = body["access_token"]
            expires_in = int(body.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError):
            raise QBOProtocolError("QuickBooks token refresh: the answer lacks access_token/expires_in") from None
        if not isinstance(access, str) or not access:
            raise QBOProtocolError("QuickBooks token refresh: access_token is empty")
        now = self._clock()
        refresh = body.get("refresh_token") or used  # QBO may hand back the same refresh token
        refresh_ttl = body.get("x_refresh_token_expires_in")
        return _Grant(
            access_token=access,
            refresh_token=str(refresh),
            access_expires_at=now + timedelta(seconds=expires_in),
            refresh_expires_at=now + timedelta(seconds=int(refresh_ttl)) if str(refresh_ttl or "").isdigit() else None,
        )


# -- answers -----------------------------------------------------------------------------------------------


def _row_id(row: Any) -> str | None:
    return str(row["Id"]) if isinstance(row, dict) and row.get("Id") not in (None, "") else None


def _row_updated(row: Any) -> datetime | None:
    try:
        return parse_timestamp(row["MetaData"]["LastUpdatedTime"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _advance_floor(
    floor: datetime | None, seen_at_floor: set[str], page: list[dict[str, Any]]
) -> tuple[datetime | None, set[str]]:
    """The next keyset position after `page`: its last timestamp, and the ids already read at it.

    A row without a readable timestamp keeps the floor where it is and is counted at it, so paging
    degrades to plain offsets instead of stalling."""
    last = _row_updated(page[-1])
    if last is None or (floor is not None and last <= floor):
        return floor, seen_at_floor | {i for row in page if (i := _row_id(row))}
    ids = {i for row in page if (i := _row_id(row)) and _row_updated(row) == last}
    return last, ids


def _answer(response: httpx.Response, operation: str, write: bool) -> Any:
    try:
        body = json.loads(response.content, parse_float=Decimal)
    except ValueError:
        if response.status_code == 200 and write:
            raise QBOOutcomeUnknownError(f"QuickBooks {operation}", "HTTP 200 with a body that is not JSON") from None
        if response.status_code == 200:
            raise QBOProtocolError(
                f"QuickBooks {operation}: HTTP 200 with a body that is not JSON ({len(response.content)} bytes)"
            ) from None
        raise QBOError(f"HTTP{response.status_code}", "refused without a Fault body", operation,
                       response.status_code) from None
    if isinstance(body, dict) and ("Fault" in body or "fault" in body):
        raise _fault_error(body, response.status_code, operation)
    if response.status_code != 200:
        raise QBOError(f"HTTP{response.status_code}", "refused without a Fault body", operation, response.status_code)
    if not isinstance(body, dict):
        raise QBOProtocolError(f"QuickBooks {operation}: the answer is not a JSON object")
    return body


_ERROR_CODE_IN_MESSAGE = re.compile(r"errorCode=0*(\d+)")


def _fault_error(body: dict[str, Any], status: int, operation: str) -> QBOError:
    """Both envelopes: `Fault.Error[].{code,Message,Detail}` and the 401 form `fault.error[].message`."""
    fault = body.get("Fault") or body.get("fault") or {}
    errors = (fault.get("Error") or fault.get("error") or []) if isinstance(fault, dict) else []
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    message = str(first.get("Message") or first.get("message") or "no message")[:500]
    detail = first.get("Detail") or first.get("detail")
    code = str(first.get("code") or "")
    if not code and (match := _ERROR_CODE_IN_MESSAGE.search(message)):
        code = match.group(1)
    code = code or f"HTTP{status}"
    detail_text = str(detail)[:500] if detail else None
    if code == "610":
        return QBONotFoundError(code, message, operation, status, detail_text)
    if code == "5010":
        return QBOStaleObjectError(code, message, operation, status, detail_text)
    if status in (401, 403) or (code.isdigit() and (int(code) < 500 or 3100 <= int(code) < 3300)):
        return QBOAuthError(code, message, operation, status, detail_text)
    return QBOError(code, message, operation, status, detail_text)


def _token_error(response: httpx.Response) -> Exception:
    try:
        body = response.json()
    except ValueError:
        body = {}
    error = str(body.get("error") or f"HTTP{response.status_code}") if isinstance(body, dict) else "unknown"
    if error == "invalid_grant":
        return _InvalidGrant()
    description = str(body.get("error_description") or "")[:200] if isinstance(body, dict) else ""
    if error == "invalid_client" or response.status_code == 401:
        return QBOAuthError(error, "the token endpoint refused the client id/secret (QBO_CLIENT_ID, "
                            "QBO_CLIENT_SECRET)", "token refresh", response.status_code)
    return QBOAuthError(error, description or "the token endpoint refused the refresh", "token refresh",
                        response.status_code)
