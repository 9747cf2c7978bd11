"""Dagster resources: one ConfigurableResource per external system, secrets bound through dg.EnvVar."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, TypeVar

import dagster as dg
import httpx
from pydantic import Field

from agentcollect_pipeline.ar_source.billcom import BillComARSource
from agentcollect_pipeline.clients.billcom import BillComClient
from agentcollect_pipeline.clients.retry import RetryPolicy
from agentcollect_pipeline.money import exponent
from agentcollect_pipeline.warehouse.store import Warehouse, WarehouseSessionStore

log = logging.getLogger(__name__)

ClientT = TypeVar("ClientT")


class WarehouseResource(dg.ConfigurableResource):
    """The project's database (SQLite file by default, PostgreSQL via AGENTCOLLECT_DATABASE_URL)."""

    database_url: str = Field(description="SQLAlchemy URL; PostgreSQL must use postgresql+psycopg2://")

    def get_warehouse(self) -> Warehouse:
        return _warehouse(self.database_url)


_WAREHOUSES: dict[str, Warehouse] = {}
_WAREHOUSES_LOCK = threading.Lock()


def _warehouse(url: str) -> Warehouse:
    with _WAREHOUSES_LOCK:
        if url not in _WAREHOUSES:
            warehouse = Warehouse(url)
            warehouse.ensure_schema()
            _WAREHOUSES[url] = warehouse
        return _WAREHOUSES[url]


class ARSyncSettings(dg.ConfigurableResource):
    """Organisation-level facts the AR source does not state itself."""

    org_currency: str = Field(default="USD", description="currency of invoices whose customer names none")
    org_timezone: str = Field(default="America/New_York", description="decides 'today' for overdue")
    overlap_seconds: int = Field(default=120, ge=0, description="re-read window before the high-water mark")
    max_invalid_share: float = Field(
        default=0.05, ge=0, le=1, description="asset checks fail when more records than this are invalid"
    )

    def validated_currency(self) -> str:
        exponent(self.org_currency)
        return self.org_currency


class PaymentSettings(dg.ConfigurableResource):
    """Knobs of the payments lane (sensor batches, retries, matching, the posting lease)."""

    batch_size: int = Field(default=50, ge=1, description="payment events per post_payment run")
    retry_after_minutes: float = Field(default=5, ge=0, description="re-request an event still unposted this long after its last request")
    max_attempts: int = Field(default=4, ge=1, description="run requests per event before it is shown as failed in needs_review")
    match_window_days: int = Field(default=7, ge=0, description="a payment already in Bill.com matches an event dated this close")
    reservation_lease_seconds: float = Field(
        default=600, ge=0, description="a posting reservation older than this is taken over; must outlast any Bill.com call"
    )
    outcome_unknown_max_checks: int = Field(default=5, ge=1, description="look-ups of an outcome-unknown write before review")
    # A string, not a float: the percentage is applied to money in Decimal (see payments/fees.py).
    fee_percent: str = Field(default="10", description="success-only fee, percent of attributed amounts collected, e.g. '12.5'")
    fee_attribution_window_days: int = Field(
        default=30, ge=0, description="payments this many days after a case's last active day still count as ours"
    )

    def policy(self):
        from agentcollect_pipeline.payments.posting import PostingPolicy

        return PostingPolicy(
            match_window_days=self.match_window_days,
            reservation_lease_s=self.reservation_lease_seconds,
            outcome_unknown_max_checks=self.outcome_unknown_max_checks,
        )


class BillComResource(dg.ConfigurableResource):
    """Bill.com v2 (AR only). One client and one session per org per process, shared by every asset."""

    base_url: str = Field(description="e.g. https://api.bill.com/api/v2 or https://api-stage.bill.com/api/v2")
    username: str
    password: str
    org_id: str
    dev_key: str
    max_in_flight: int = Field(default=3, ge=1, le=3, description="Bill.com allows 3 concurrent requests per org")
    page_size: int = Field(default=999, ge=1, le=999)
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    max_attempts: int = Field(default=6, ge=1, description="bounded retries on 429/5xx/timeouts/BDC_1322")
    retry_base_delay_s: float = 0.25
    v3_base_url: str | None = Field(
        default=None, description="Bill.com v3 base, e.g. https://gateway.prod.bill.com/connect: invoice payment links"
    )
    warehouse: WarehouseResource

    def get_client(self) -> BillComClient:
        return shared_client(
            (
                "billcom", self.base_url, self.org_id, self.username, self.password, self.dev_key,
                self.warehouse.database_url, self.max_in_flight, self.page_size, self.read_timeout_s,
                self.max_attempts, self.v3_base_url or "",
            ),
            self._new_client,
        )

    def _new_client(self) -> BillComClient:
        return BillComClient(
            base_url=self.base_url,
            username=self.username,
            password=self.password,
            org_id=self.org_id,
            dev_key=self.dev_key,
            session_store=WarehouseSessionStore(self.warehouse.get_warehouse()),
            max_in_flight=self.max_in_flight,
            page_size=self.page_size,
            connect_timeout_s=self.connect_timeout_s,
            read_timeout_s=self.read_timeout_s,
            retry=RetryPolicy(max_attempts=self.max_attempts, base_delay_s=self.retry_base_delay_s),
            v3_base_url=self.v3_base_url,
        )

    def get_source(self, settings: ARSyncSettings) -> BillComARSource:
        return BillComARSource(
            self.get_client(),
            default_currency=settings.validated_currency(),
            overlap=timedelta(seconds=settings.overlap_seconds),
        )


# One client per resource settings per process, shared by every asset and run in it; each has a `close()`.
_CLIENTS: dict[str, Any] = {}
_CLIENTS_LOCK = threading.Lock()


def shared_client(fingerprint_parts: Iterable[Any], factory: Callable[[], ClientT]) -> ClientT:
    """The process's client for these settings, made by `factory()` on first use and closed at exit.

    `fingerprint_parts` are every setting the client depends on, led by the source's name so two sources
    never share a key. The key is their hash, so secrets among them are not kept in clear.
    """
    fingerprint = hashlib.sha256(json.dumps([str(part) for part in fingerprint_parts]).encode()).hexdigest()
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(fingerprint)
        if client is None:
            client = factory()
            _CLIENTS[fingerprint] = client
        return client


@atexit.register
def _close_clients() -> None:
    with _CLIENTS_LOCK:
        for client in _CLIENTS.values():
            # Best effort at interpreter exit: a failure here must not mask the run's own outcome.
            with contextlib.suppress(Exception):
                client.close()


class AlertWebhookResource(dg.ConfigurableResource):
    """Slack-compatible incoming webhook for failed runs and checks. Without a URL, alerts are only logged."""

    url: str | None = Field(default=None, description="incoming-webhook URL (a secret: bind with EnvVar)")
    timeout_s: float = 10.0
    max_attempts: int = 4

    def send(self, text: str) -> bool:
        """Post `{"text": ...}`; retries 429/5xx with backoff. Returns whether the webhook accepted it."""
        if not self.url:
            log.warning("alert (no AGENTCOLLECT_ALERT_WEBHOOK_URL configured): %s", text)
            return False
        payload = {"text": text}
        with httpx.Client(timeout=self.timeout_s) as http:
            for attempt in range(self.max_attempts):
                try:
                    response = http.post(self.url, json=payload)
                except httpx.TransportError as exc:
                    problem = type(exc).__name__
                else:
                    if response.status_code < 300:
                        return True
                    if response.status_code != 429 and response.status_code < 500:
                        log.error("alert webhook refused the alert with HTTP %s", response.status_code)
                        return False
                    problem = f"HTTP {response.status_code}"
                delay = min(8.0, 0.5 * 2**attempt)
                log.warning("alert webhook: %s; retrying in %.1fs", problem, delay)
                time.sleep(delay)
        log.error("alert webhook unreachable after %d attempts; alert was: %s", self.max_attempts, text)
        return False
