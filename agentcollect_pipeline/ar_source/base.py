"""The AR source interface: what the pipeline needs from Bill.com, QuickBooks Online or NetSuite.

Implementations return rows shaped like the warehouse tables (money in minor units plus currency), so
the rules and outreach never see a provider's wire format.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

CurrencyLookup = Callable[[str | None], str | None]


class ARSourceError(Exception):
    """The AR source answered with a definite refusal (an error envelope): nothing was written.

    Carries the provider's code and message, never a secret."""

    def __init__(self, code: str, message: str, operation: str, http_status: int | None = None):
        self.code = code
        self.message = message
        self.operation = operation
        self.http_status = http_status
        super().__init__(f"{operation} failed with {code}: {message}")


class ARRecordNotFoundError(ARSourceError):
    """The record asked for by id does not exist at the AR source. `missing_ids` names them when known, so a
    batched read can go on without them."""

    missing_ids: Sequence[str] = ()


class ARTransportError(Exception):
    """Network failures, timeouts or HTTP 429/5xx that outlasted the retry budget (before any write landed)."""


class AROutcomeUnknownError(Exception):
    """A write may or may not have been applied (timeout or 5xx after sending). Reconcile by reading back."""

    def __init__(self, operation: str, reason: str):
        self.operation = operation
        self.reason = reason
        super().__init__(f"{operation}: outcome unknown ({reason}); read back before trying again")


@dataclass
class ChangeBatch:
    """One page of changed records: rows to upsert, child rows (e.g. payment lines), and rejects."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    children: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PaymentToRecord:
    """A payment received outside the AR source, to be recorded against one invoice."""

    customer_id: str
    invoice_id: str
    amount_cents: int
    currency: str
    payment_date: date
    method: str  # cash | check | card | ach | paypal | other
    reference: str  # carries our idempotency key so a read-back can find the payment
    description: str = ""


class ARSource(abc.ABC):
    name: str  # billcom | qbo | netsuite: prefixes the source's tables and assets
    display_name: str  # what finance reads in notes and logs, e.g. "QuickBooks Online"

    @abc.abstractmethod
    def customers_changed(self, since: datetime | None) -> Iterator[ChangeBatch]: ...

    @abc.abstractmethod
    def contacts_changed(
        self, since: datetime | None, customer_regions: dict[str, str | None]
    ) -> Iterator[ChangeBatch]: ...

    @abc.abstractmethod
    def invoices_changed(self, since: datetime | None, currency_of: CurrencyLookup) -> Iterator[ChangeBatch]: ...

    @abc.abstractmethod
    def received_payments_changed(
        self, since: datetime | None, currency_of: CurrencyLookup, customer_id: str | None = None
    ) -> Iterator[ChangeBatch]: ...

    @abc.abstractmethod
    def read_invoices(self, invoice_ids: Sequence[str], currency_of: CurrencyLookup) -> list[dict[str, Any]]: ...

    def find_invoices(
        self, invoice_number: str, customer_id: str, currency_of: CurrencyLookup
    ) -> list[dict[str, Any]]:
        """Invoices with this number for this customer (payment matching). Not abstract so existing
        sources keep working until they implement it."""
        raise NotImplementedError(f"{type(self).__name__} cannot look invoices up by number")

    @abc.abstractmethod
    def latest_invoice_change(self, since: datetime) -> datetime | None:
        """The newest invoice change after `since`, or None, in ONE call: the paid-invoices poller runs it
        every few minutes, so a quiet book must cost a single request."""

    @abc.abstractmethod
    def record_payment(self, payment: PaymentToRecord) -> dict[str, Any]: ...

    @abc.abstractmethod
    def write_customer_note(self, customer_id: str, text: str) -> str: ...

    @abc.abstractmethod
    def list_customer_notes(self, customer_id: str) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def api_stats(self) -> dict[str, Any]: ...
