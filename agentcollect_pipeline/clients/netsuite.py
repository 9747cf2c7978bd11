"""NetSuite REST web services + SuiteQL client (AR only), following shared/reference/qbo-netsuite.md §2.

What this module guarantees, and why:
- OAuth 2.0 client credentials (machine to machine), the method Oracle recommends for new integrations:
  a short-lived JWT assertion signed with the certificate's private key (PS256 for RSA keys, ES256/384/512
  for EC keys by curve), `kid` = certificate id. The access token (about an hour) is cached until shortly
  before it expires; a 401 mints a new one once. There is no refresh token and nothing is persisted.
- At most `max_in_flight` requests in flight per account in this process (default 5, developer accounts'
  limit): NetSuite governs concurrent requests, not a rate, and refuses the excess with 429.
- Bounded retries with exponential backoff and full jitter on 429, 5xx (including 500 UNEXPECTED_ERROR)
  and transport errors. Every request this client sends may be repeated safely: reads, SuiteQL, PATCH of a
  whole field value, and the upsert by external id (`PUT .../eid:<id>`), which never creates a second
  record. A write still unanswered after the budget raises `NetSuiteOutcomeUnknownError`.
- Error envelopes (`{"type","title","status","o:errorDetails":[{"detail","o:errorCode"}]}`) become
  `ARSourceError` subclasses carrying NetSuite's code and detail; 404 is `ARRecordNotFoundError`.
- SuiteQL pages of up to 1000 rows, later pages fetched concurrently once `totalResults` is known, and the
  100,000-row cap crossed by restarting from the last row's `lastmodifieddate` (as hotglue's tap does).
- The private key, assertions and access tokens never appear in logs, exception messages or reprs.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Generator, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from agentcollect_pipeline.ar_source.base import (
    AROutcomeUnknownError,
    ARRecordNotFoundError,
    ARSourceError,
    ARTransportError,
)
from agentcollect_pipeline.clients.retry import RetryPolicy, retry_after_seconds

log = logging.getLogger(__name__)

TOKEN_PATH = "/services/rest/auth/oauth2/v1/token"
SUITEQL_PATH = "/services/rest/query/v1/suiteql"
RECORD_PATH = "/services/rest/record/v1"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PAGE_MAX = 1000  # SuiteQL's maximum (and default) page size
ROW_CAP = 100_000  # results reachable by paging one query, without SuiteAnalytics Connect
MAX_ASSERTION_LIFETIME_S = 3600
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_RSA_ALGORITHMS = ("PS256", "PS384", "PS512")
_NOT_FOUND_CODES = {"NONEXISTENT_ID", "RCRD_DSNT_EXIST", "NOT_FOUND"}


def account_slug(account_id: str) -> str:
    """The host form of an account id: lowercase with `_` as `-` (1234567_SB1 -> 1234567-sb1)."""
    slug = account_id.strip().lower().replace("_", "-")
    if not re.fullmatch(r"[a-z0-9-]+", slug):
        raise ValueError(f"NetSuite account id {account_id!r} has characters a host name cannot carry")
    return slug


def default_base_url(account_id: str) -> str:
    return f"https://{account_slug(account_id)}.suitetalk.api.netsuite.com"


def suiteql_literal(value: str) -> str:
    """A SuiteQL string literal: single quotes doubled, so no input can end the string early."""
    if "\x00" in value:
        raise ValueError("SuiteQL strings cannot contain NUL characters")
    return "'" + value.replace("'", "''") + "'"


def suiteql_id(value: str | int) -> str:
    """An internal id as SuiteQL text: a bare integer when it is one, else a quoted literal."""
    text = str(value).strip()
    return text if text.isdigit() else suiteql_literal(text)


# --------------------------------------------------------------------------------------------------------
# Errors


class NetSuiteError(ARSourceError):
    """NetSuite refused the request with an error envelope. Carries its o:errorCode and detail, no secret."""

    def __init__(self, code: str, message: str, operation: str, http_status: int | None = None):
        super().__init__(code, message, f"NetSuite {operation}", http_status)


class NetSuiteNotFoundError(NetSuiteError, ARRecordNotFoundError):
    """The record does not exist (404 / NONEXISTENT_ID), or ids asked for were not returned."""


class NetSuiteAuthError(NetSuiteError):
    """The token request was refused (invalid_grant, invalid_client...) or a fresh token got 401 again."""


class NetSuiteProtocolError(NetSuiteError):
    """The answer was not something NetSuite sends (not JSON, wrong shape): nothing in it can be trusted."""

    def __init__(self, message: str, operation: str, http_status: int | None = None):
        super().__init__("MALFORMED_RESPONSE", message, operation, http_status)


class NetSuiteTransportError(ARTransportError):
    """Network failures, timeouts or HTTP 429/5xx that outlasted the retry budget."""


class NetSuiteOutcomeUnknownError(AROutcomeUnknownError):
    """A write may or may not have been applied. Safe to repeat: our writes are upserts by external id."""


def _error_from(response: httpx.Response, operation: str) -> NetSuiteError:
    """The exception for a 4xx answer, built from the error envelope when there is one."""
    status = response.status_code
    code, detail = f"HTTP_{status}", f"HTTP {status} without a NetSuite error envelope"
    try:
        body = json.loads(response.content, parse_float=Decimal)
    except ValueError:
        body = None
    if isinstance(body, dict):
        details = body.get("o:errorDetails")
        first = details[0] if isinstance(details, list) and details and isinstance(details[0], dict) else {}
        code = str(first.get("o:errorCode") or body.get("error") or code)
        detail = str(first.get("detail") or body.get("error_description") or body.get("title") or detail)
        if first.get("o:errorPath"):
            detail = f"{detail} (at {first['o:errorPath']})"
    detail = detail[:1000]
    if status == 404 or code in _NOT_FOUND_CODES:
        return NetSuiteNotFoundError(code, detail, operation, status)
    if status == 401:
        return NetSuiteAuthError(code, detail, operation, status)
    return NetSuiteError(code, detail, operation, status)


# --------------------------------------------------------------------------------------------------------
# Configuration pieces


@dataclass(frozen=True)
class SuiteQLPage:
    items: list[dict[str, Any]]
    has_more: bool
    total_results: int | None
    offset: int


def load_signing_key(private_key: str, algorithm: str | None) -> tuple[Any, str]:
    """(key object, JWT algorithm) from a PEM private key; the algorithm follows the key type."""
    try:
        key = serialization.load_pem_private_key(private_key.encode(), password=None)
    except (ValueError, TypeError):
        # The message must not quote the key: it is the integration's secret.
        raise ValueError("NetSuite private_key is not an unencrypted PEM private key") from None
    if isinstance(key, rsa.RSAPrivateKey):
        chosen = algorithm or "PS256"
        if chosen not in _RSA_ALGORITHMS:
            raise ValueError(f"an RSA certificate key signs with {'/'.join(_RSA_ALGORITHMS)}, not {chosen}")
        return key, chosen
    if isinstance(key, ec.EllipticCurvePrivateKey):
        matching = _EC_ALGORITHMS.get(key.curve.name)
        if matching is None:
            raise ValueError(f"EC curve {key.curve.name} is not one NetSuite accepts (P-256, P-384, P-521)")
        if algorithm not in (None, matching):
            raise ValueError(f"an EC key on {key.curve.name} signs with {matching}, not {algorithm}")
        return key, matching
    raise ValueError("NetSuite certificate keys are RSA or EC")


# One semaphore per account (and limit) per process, shared by every client object talking to it.
_SEMAPHORES: dict[tuple[str, str, int], threading.BoundedSemaphore] = {}
_SEMAPHORES_LOCK = threading.Lock()


def _account_semaphore(base_url: str, account_id: str, limit: int) -> threading.BoundedSemaphore:
    with _SEMAPHORES_LOCK:
        key = (base_url, account_id.upper(), limit)
        if key not in _SEMAPHORES:
            _SEMAPHORES[key] = threading.BoundedSemaphore(limit)
        return _SEMAPHORES[key]


def encode_json(payload: Any) -> bytes:
    """JSON with Decimal amounts written digit for digit (json.dumps would go through float)."""
    mark = "\x1fdec:"

    def default(value: Any) -> Any:
        if isinstance(value, Decimal):
            if not value.is_finite():
                raise ValueError(f"cannot send non-finite amount {value}")
            return f"{mark}{value:f}"
        raise TypeError(f"cannot encode {type(value).__name__} for NetSuite")

    text = json.dumps(payload, default=default, separators=(",", ":"))
    return re.sub(r'"\\u001fdec:(-?[0-9]+(?:\.[0-9]+)?)"', r"\1", text).encode("utf-8")


# --------------------------------------------------------------------------------------------------------
# The client


class NetSuiteClient:
    """Thread-safe NetSuite client for one account. Create one per account per process (see the resource)."""

    def __init__(
        self,
        *,
        account_id: str,
        client_id: str,
        certificate_id: str,
        private_key: str,
        base_url: str | None = None,
        algorithm: str | None = None,
        max_in_flight: int = 5,
        page_size: int = PAGE_MAX,
        row_cap: int = ROW_CAP,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 120.0,
        retry: RetryPolicy | None = None,
        assertion_lifetime_s: int = 300,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if not 1 <= page_size <= PAGE_MAX:
            raise ValueError(f"page_size must be between 1 and {PAGE_MAX}")
        if row_cap < page_size or row_cap % page_size:
            raise ValueError("row_cap must be a multiple of page_size")
        if not 0 < assertion_lifetime_s <= MAX_ASSERTION_LIFETIME_S:
            raise ValueError("assertion_lifetime_s must be positive and at most 3600 (NetSuite's limit)")
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.account_id = account_id
        self.base_url = (base_url or default_base_url(account_id)).rstrip("/")
        self.token_url = f"{self.base_url}{TOKEN_PATH}"
        self.client_id = client_id
        self.certificate_id = certificate_id
        self._signing_key, self.algorithm = load_signing_key(private_key, algorithm)
        self.max_in_flight = max_in_flight
        self.page_size = page_size
        self.row_cap = row_cap
        self._retry = retry or RetryPolicy()
        self._assertion_lifetime_s = assertion_lifetime_s
        self._clock = clock
        self._sleep = sleep
        self._semaphore = _account_semaphore(self.base_url, account_id, max_in_flight)
        self._http = httpx.Client(
            timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=max_in_flight + 2, max_keepalive_connections=max_in_flight),
            headers={"Accept": "application/json"},
        )
        self._token_lock = threading.Lock()
        self._access_token: str | None = None
        self._token_expires_at = 0.0
        self._stats_lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()
        self.tokens_minted = 0
        self.reauthorisations = 0

    def __repr__(self) -> str:
        return f"NetSuiteClient(base_url={self.base_url!r}, account_id={self.account_id!r})"

    # -- SuiteQL ----------------------------------------------------------------------------------------------

    def suiteql(self, query: str, *, limit: int | None = None, offset: int = 0) -> SuiteQLPage:
        """One page of a SuiteQL query; values come back as strings, absent keys are NULLs."""
        limit = limit or self.page_size
        response = self._request(
            "POST",
            SUITEQL_PATH,
            operation="suiteql",
            params={"limit": limit, "offset": offset},
            json_body={"q": query},
            headers={"Prefer": "transient"},
        )
        return _parse_page(self._json(response, "suiteql"), offset)

    def suiteql_pages(self, query: str) -> Iterator[list[dict[str, Any]]]:
        """Every page of `query` in order. A result beyond the row cap is an error: use
        `suiteql_by_boundary` for reads that can be that large."""
        capped = yield from self._pages_within_cap(query)
        if capped:
            raise NetSuiteError(
                "ROW_CAP", f"the query returns more than {self.row_cap} rows; page it by a boundary", "suiteql"
            )

    def suiteql_all(self, query: str) -> list[dict[str, Any]]:
        return [row for page in self.suiteql_pages(query) for row in page]

    def suiteql_by_boundary(
        self, build_query: Callable[[str | None], str], boundary_key: str
    ) -> Iterator[list[dict[str, Any]]]:
        """Pages of a query ordered by `boundary_key` (then a unique key), past the row cap.

        `build_query(None)` is the first query; `build_query(value)` must select rows whose boundary column is
        >= value. When a query hits the cap, it restarts from the last row's boundary: rows sharing that value
        are read twice (the caller upserts by key), none is skipped.
        """
        boundary: str | None = None
        while True:
            last_row: dict[str, Any] | None = None
            pages = self._pages_within_cap(build_query(boundary))
            while True:
                try:
                    page = next(pages)
                except StopIteration as stop:
                    capped = bool(stop.value)
                    break
                if page:
                    last_row = page[-1]
                yield page
            if not capped:
                return
            following = None if last_row is None else last_row.get(boundary_key)
            if following is None or following == boundary:
                raise NetSuiteError(
                    "ROW_CAP",
                    f"more than {self.row_cap} rows share {boundary_key} {following!r}; cannot page past them",
                    "suiteql",
                )
            log.info("NetSuite SuiteQL reached the %d-row cap; continuing from %s %s", self.row_cap,
                     boundary_key, following)
            boundary = str(following)

    def _pages_within_cap(self, query: str) -> Generator[list[dict[str, Any]], None, bool]:
        """Yield the pages reachable by offset; return True when rows remain beyond the row cap.

        Once the first page tells the total, the following pages are fetched `max_in_flight` at a time (a
        100k-invoice book is 100 pages); without a total, `hasMore` is followed one page at a time.
        """
        page = self.suiteql(query, offset=0)
        yield page.items
        if not page.has_more:
            return _rows_beyond(page)
        known_total = page.total_results is not None
        end = min(page.total_results, self.row_cap) if known_total else self.row_cap  # type: ignore[type-var]
        window = self.max_in_flight if known_total else 1
        next_offset = self.page_size
        with ThreadPoolExecutor(max_workers=self.max_in_flight, thread_name_prefix="netsuite-page") as pool:
            pending: deque[Future[SuiteQLPage]] = deque()
            try:
                while True:
                    while len(pending) < window and next_offset < end:
                        pending.append(pool.submit(self.suiteql, query, offset=next_offset))
                        next_offset += self.page_size
                    if not pending:
                        if page.has_more and next_offset < self.row_cap:
                            # The result grew while we read it: follow hasMore to its real end.
                            end, window = self.row_cap, 1
                            continue
                        return page.has_more or _rows_beyond(page)
                    page = pending.popleft().result()
                    yield page.items
                    if not page.has_more:
                        return _rows_beyond(page)
            finally:
                for future in pending:
                    future.cancel()
                # Pages past the end may still be in flight; their results (or errors) are irrelevant.
                for future in pending:
                    if not future.cancelled():
                        future.exception()

    # -- records ----------------------------------------------------------------------------------------------

    def get_record(self, record_type: str, key: str, *, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """GET a record by internal id or `eid:<external id>`."""
        operation = f"GET {record_type}"
        response = self._request("GET", _record_path(record_type, key), operation=operation, params=params)
        body = self._json(response, operation)
        if not isinstance(body, dict):
            raise NetSuiteProtocolError(f"{record_type} {key}: the body is not a JSON object", operation)
        return body

    def patch_record(self, record_type: str, key: str, body: Mapping[str, Any]) -> None:
        """PATCH the given fields only. Unknown field names fail loudly instead of being dropped."""
        self._request(
            "PATCH",
            _record_path(record_type, key),
            operation=f"PATCH {record_type}",
            json_body=dict(body),
            headers={"X-NetSuite-PropertyNameValidation": "Error"},
            write=True,
        )

    def upsert_record(self, record_type: str, external_id: str, body: Mapping[str, Any]) -> str | None:
        """Create or update the record with this external id (PUT .../eid:<id>). Returns the internal id from
        the Location header, or None when NetSuite did not send one."""
        response = self._request(
            "PUT",
            _record_path(record_type, f"eid:{external_id}"),
            operation=f"upsert {record_type}",
            json_body=dict(body),
            headers={"X-NetSuite-PropertyNameValidation": "Error"},
            write=True,
        )
        match = re.search(r"/(\d+)/?$", response.headers.get("location", ""))
        return match.group(1) if match else None

    # -- housekeeping -----------------------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def stats(self) -> dict[str, Any]:
        with self._stats_lock:
            return {
                "calls": dict(self.calls),
                "total_calls": sum(self.calls.values()),
                "retries": sum(self.retries.values()),
                "retries_by_operation": dict(self.retries),
                "tokens_minted": self.tokens_minted,
                "reauthorisations": self.reauthorisations,
            }

    # -- the one way every API request goes out ---------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        write: bool = False,
    ) -> httpx.Response:
        content = None if json_body is None else encode_json(json_body)
        base_headers = dict(headers or {})
        if content is not None:
            base_headers["Content-Type"] = "application/json"
        attempt = 0
        reauthorised = False
        may_have_landed = False
        while True:
            token = self._token()
            retry_after = None
            try:
                with self._semaphore:
                    self._count(self.calls, operation)
                    response = self._http.request(
                        method,
                        f"{self.base_url}{path}",
                        params=params,
                        content=content,
                        headers={**base_headers, "Authorization": f"Bearer {token}"},
                    )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                failure = f"{type(exc).__name__} connecting to NetSuite"  # nothing reached NetSuite
            except httpx.TransportError as exc:
                may_have_landed = True
                failure = f"{type(exc).__name__} during the request"
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return response
                if status == 401 and not reauthorised:
                    # The token may have expired early or been revoked: mint a new one, once.
                    reauthorised = True
                    self._forget_token(token)
                    with self._stats_lock:
                        self.reauthorisations += 1
                    continue
                if status == 429:
                    failure = "HTTP 429 (concurrency limit)"
                    retry_after = retry_after_seconds(response)
                elif status >= 500:
                    may_have_landed = True
                    failure = f"HTTP {status} {_error_code(response)}".rstrip()
                else:
                    raise _error_from(response, operation)
            attempt += 1
            self._count(self.retries, operation)
            if attempt >= self._retry.max_attempts:
                if write and may_have_landed:
                    raise NetSuiteOutcomeUnknownError(
                        f"NetSuite {operation}", f"{failure}; gave up after {attempt} attempts"
                    )
                raise NetSuiteTransportError(f"NetSuite {operation}: {failure}; gave up after {attempt} attempts")
            delay = self._retry.delay(attempt, retry_after)
            log.warning("NetSuite %s: %s; retry %d in %.2fs", operation, failure, attempt, delay)
            self._sleep(delay)

    def _count(self, counter: Counter[str], operation: str) -> None:
        with self._stats_lock:
            counter[operation] += 1

    @staticmethod
    def _json(response: httpx.Response, operation: str) -> Any:
        try:
            return json.loads(response.content, parse_float=Decimal)
        except ValueError:
            raise NetSuiteProtocolError(
                f"HTTP {response.status_code} with a body that is not JSON ({len(response.content)} bytes)",
                operation,
                response.status_code,
            ) from None

    # -- OAuth 2.0 client credentials ---------------------------------------------------------------------

    def _token(self) -> str:
        with self._token_lock:
            if self._access_token is not None and self._clock() < self._token_expires_at:
                return self._access_token
            token, lifetime = self._mint_token()
            # Renew well before NetSuite's expiry so a long page read never starts with a dying token.
            margin = min(300.0, lifetime / 2)
            self._access_token = token
            self._token_expires_at = self._clock() + lifetime - margin
            return token

    def _forget_token(self, token: str) -> None:
        with self._token_lock:
            if self._access_token == token:
                self._access_token = None

    def _assertion(self) -> str:
        issued = int(self._clock())
        claims = {
            "iss": self.client_id,
            "scope": "rest_webservices",
            "aud": self.token_url,
            "iat": issued,
            "exp": issued + self._assertion_lifetime_s,
        }
        headers = {"kid": self.certificate_id, "typ": "JWT"}
        return jwt.encode(claims, self._signing_key, algorithm=self.algorithm, headers=headers)

    def _mint_token(self) -> tuple[str, float]:
        attempt = 0
        while True:
            form = {
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self._assertion(),  # single use: a fresh one per attempt
            }
            retry_after = None
            try:
                response = self._http.post(self.token_url, data=form)
            except httpx.TransportError as exc:
                failure = f"{type(exc).__name__} requesting a token"
            else:
                if response.status_code == 200:
                    return self._accept_token(response)
                if response.status_code == 429:
                    failure, retry_after = "HTTP 429", retry_after_seconds(response)
                elif response.status_code >= 500:
                    failure = f"HTTP {response.status_code}"
                else:
                    error = _error_from(response, "token request")
                    raise NetSuiteAuthError(error.code, error.message, "token request", response.status_code)
            attempt += 1
            self._count(self.retries, "token")
            if attempt >= self._retry.max_attempts:
                raise NetSuiteTransportError(f"NetSuite token request: {failure}; gave up after {attempt} attempts")
            delay = self._retry.delay(attempt, retry_after)
            log.warning("NetSuite token request: %s; retry %d in %.2fs", failure, attempt, delay)
            self._sleep(delay)

    def _accept_token(self, response: httpx.Response) -> tuple[str, float]:
        body = self._json(response, "token request")
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise NetSuiteProtocolError("the token response has no access_token", "token request", 200)
        try:
            # NetSuite has been seen sending expires_in as a string; both forms mean seconds.
            lifetime = float(str(body.get("expires_in", 3600)))
        except ValueError:
            raise NetSuiteProtocolError("the token response's expires_in is not a number", "token request",
                                        200) from None
        with self._stats_lock:
            self.tokens_minted += 1
        log.info("Minted a NetSuite access token for account %s (valid %ds)", self.account_id, lifetime)
        return token, lifetime


def _record_path(record_type: str, key: str) -> str:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", record_type):
        raise ValueError(f"not a record type: {record_type!r}")
    return f"{RECORD_PATH}/{record_type}/{quote(key, safe=':')}"


def _error_code(response: httpx.Response) -> str:
    try:
        body = json.loads(response.content)
        return str(body["o:errorDetails"][0]["o:errorCode"])
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


def _rows_beyond(page: SuiteQLPage) -> bool:
    """NetSuite stops paging at the row cap with hasMore false while totalResults counts every row (how
    hotglue's tap detects the cap); rows beyond the page then exist but are out of reach by offset."""
    return page.total_results is not None and page.offset + len(page.items) < page.total_results


def _parse_page(body: Any, offset: int) -> SuiteQLPage:
    if not isinstance(body, dict):
        raise NetSuiteProtocolError(f"offset {offset}: the body is not a JSON object", "suiteql")
    items = body.get("items")
    if not isinstance(items, list):
        raise NetSuiteProtocolError(f"offset {offset}: 'items' is not an array", "suiteql")
    rows = []
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            raise NetSuiteProtocolError(f"offset {offset}: items[{position}] is not an object", "suiteql")
        rows.append({key: value for key, value in item.items() if key != "links"})
    has_more = body.get("hasMore")
    if not isinstance(has_more, bool):
        raise NetSuiteProtocolError(f"offset {offset}: 'hasMore' is not a boolean", "suiteql")
    total = body.get("totalResults")
    total_results = total if isinstance(total, int) and not isinstance(total, bool) else None
    return SuiteQLPage(items=rows, has_more=has_more, total_results=total_results, offset=offset)
