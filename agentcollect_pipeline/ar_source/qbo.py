"""QuickBooks Online (Accounting API v3) as the AR source.

- Incremental reads query `MetaData.LastUpdatedTime >= <mark minus overlap>` in timestamp order (the
  client pages by keyset). Deleted invoices and payments never appear in queries; on incremental reads
  they come from one CDC call (30 days of look-back at most) and are stored as inactive tombstones.
- Contacts: QBO has no contact entity for customers (a customer carries its own PrimaryEmailAddr and
  phones, which customer rows already hold), so `contacts_changed` yields nothing.
- Customer notes are written as `Attachable` notes linked to the customer (§1.5 option B), not into
  `Customer.Notes`. Notes is a single field the bookkeeper also types into: writing it means a
  read-merge-write under SyncToken (5010 races with people editing), a 1024/2000-character cap that a
  growing collection history would hit, and a merge that can clobber their text. An Attachable is
  append-only, needs no SyncToken, leaves the bookkeeper's text alone, and can be listed per customer to
  look before writing again after a crash.
- Payments (§1.4, §0): before posting, a `PaymentRefNum = <reference>` query returns a payment we already
  posted; the create carries a requestid derived from the reference and invoice, so its retries are
  de-duplicated by QBO.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from agentcollect_pipeline.ar_source import qbo_records as records
from agentcollect_pipeline.ar_source.base import ARSource, ChangeBatch, CurrencyLookup, PaymentToRecord
from agentcollect_pipeline.ar_source.records import RecordRejected
from agentcollect_pipeline.clients.qbo import (
    PAGE_MAX,
    QBOClient,
    QBOError,
    QBONotFoundError,
    parse_timestamp,
    request_id_for,
    where,
    where_in,
)
from agentcollect_pipeline.money import from_minor_units
from agentcollect_pipeline.settings import AR_SOURCE_NAMES

log = logging.getLogger(__name__)

PAYMENT_METHODS = ("cash", "check", "card", "ach", "paypal", "other")
PRIVATE_NOTE_MAX = 4000
CDC_LOOKBACK = timedelta(days=29)  # QBO serves 30 days; a day of margin for clock skew


class QBOARSource(ARSource):
    name = "qbo"
    display_name = AR_SOURCE_NAMES[name]

    def __init__(
        self,
        client: QBOClient,
        *,
        default_currency: str = "USD",
        overlap: timedelta = timedelta(minutes=2),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        read_chunk: int = 200,
    ):
        if not 1 <= read_chunk <= PAGE_MAX:
            raise ValueError(f"read_chunk must be between 1 and {PAGE_MAX}")
        self.client = client
        self.default_currency = default_currency
        self.overlap = overlap
        self.read_chunk = read_chunk
        self._clock = clock

    # -- incremental reads ----------------------------------------------------------------------------

    def _from(self, since: datetime | None) -> datetime | None:
        """The overlap re-reads a couple of minutes before the mark: QBO timestamps have one-second
        resolution and a late commit can carry an earlier time. Upserts make the re-read harmless."""
        return None if since is None else since - self.overlap

    def _batches(self, pages: Iterator[list[dict]], to_row: Callable[[Any, datetime], dict]) -> Iterator[ChangeBatch]:
        synced_at = self._clock()
        for page in pages:
            batch = ChangeBatch()
            for raw in page:
                try:
                    batch.rows.append(to_row(raw, synced_at))
                except RecordRejected as exc:
                    batch.rejected.append(str(exc))
            yield batch

    def customers_changed(self, since: datetime | None) -> Iterator[ChangeBatch]:
        # Name lists answer active records only unless Active is in the WHERE clause (§1.2).
        every_customer = where_in("Active", [True, False])
        return self._batches(
            self.client.iter_changed("Customer", [every_customer], self._from(since)),
            lambda raw, at: records.customer_row(raw, default_currency=self.default_currency, synced_at=at),
        )

    def contacts_changed(self, since: datetime | None, customer_regions: dict[str, str | None]) -> Iterator[ChangeBatch]:
        """Nothing: QBO keeps a customer's email and phones on the customer itself (see module docstring)."""
        return iter(())

    def invoices_changed(self, since: datetime | None, currency_of: CurrencyLookup) -> Iterator[ChangeBatch]:
        def to_row(raw: Any, at: datetime) -> dict[str, Any]:
            return records.invoice_row(raw, currency_of=currency_of, default_currency=self.default_currency,
                                       synced_at=at)

        yield from self._batches(self.client.iter_changed("Invoice", [], self._from(since)), to_row)
        if since is not None:
            yield from self._batches(iter([self._deleted("Invoice", since)]), to_row)

    def received_payments_changed(
        self, since: datetime | None, currency_of: CurrencyLookup, customer_id: str | None = None
    ) -> Iterator[ChangeBatch]:
        """Changed payments; with `customer_id`, every payment of that customer (to find ours by reference)."""
        if customer_id is None:
            pages = self.client.iter_changed("Payment", [], self._from(since))
        else:
            pages = self.client.iter_changed("Payment", [where("CustomerRef", "=", customer_id)])
        synced_at = self._clock()
        for page in pages:
            yield self._payment_batch(page, currency_of, synced_at)
        if customer_id is None and since is not None:
            yield self._payment_batch(self._deleted("Payment", since), currency_of, synced_at)

    def _payment_batch(self, page: list[dict], currency_of: CurrencyLookup, synced_at: datetime) -> ChangeBatch:
        batch = ChangeBatch()
        for raw in page:
            try:
                row, lines = records.received_payment_rows(
                    raw, currency_of=currency_of, default_currency=self.default_currency, synced_at=synced_at
                )
            except RecordRejected as exc:
                batch.rejected.append(str(exc))
                continue
            batch.rows.append(row)
            batch.children.extend(lines)
        return batch

    def _deleted(self, entity: str, since: datetime) -> list[dict[str, Any]]:
        """Objects deleted since the mark, from CDC (the only place QBO reports deletes)."""
        changed_since = since - self.overlap
        if self._clock() - changed_since > CDC_LOOKBACK:
            log.warning("QuickBooks CDC reaches back 30 days only: %s deleted before %s are not seen; a full "
                        "refresh re-reads what still exists", entity, changed_since.isoformat())
            return []
        try:
            found = self.client.change_data_capture([entity], changed_since)[entity]
        except QBOError as exc:
            log.warning("QuickBooks CDC of %s refused (%s); deletes are picked up by the next sync", entity, exc)
            return []
        return [obj for obj in found if isinstance(obj, dict) and obj.get("status") == "Deleted"]

    def latest_invoice_change(self, since: datetime) -> datetime | None:
        """The newest invoice LastUpdatedTime after `since`, or None: one query (newest first, one row)."""
        rows = self.client.query_rows(
            "Invoice", [where("MetaData.LastUpdatedTime", ">", since)],
            order_by="MetaData.LastUpdatedTime", descending=True, max_results=1,
        )
        try:
            newest = parse_timestamp(rows[0]["MetaData"]["LastUpdatedTime"]) if rows else None
        except (KeyError, TypeError, ValueError):
            return None
        return newest if newest is not None and newest > since else None

    def read_invoices(self, invoice_ids: Sequence[str], currency_of: CurrencyLookup) -> list[dict[str, Any]]:
        """Fresh rows for `invoice_ids` in `read_chunk`-sized `Id IN (...)` queries (one call per chunk,
        never one per invoice). An id QBO does not return raises QBONotFoundError naming it."""
        wanted = list(dict.fromkeys(str(i) for i in invoice_ids))
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), self.read_chunk):
            chunk = wanted[start:start + self.read_chunk]
            for raw in self.client.query_rows("Invoice", [where_in("Id", chunk)], max_results=len(chunk)):
                if isinstance(raw, dict) and raw.get("Id") is not None:
                    found[str(raw["Id"])] = raw
        missing = [i for i in wanted if i not in found]
        if missing:
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            raise QBONotFoundError("610", f"no invoice {shown} in QuickBooks (deleted?)", "read invoices",
                                   missing_ids=missing)
        synced_at = self._clock()
        return [
            records.invoice_row(found[str(i)], currency_of=currency_of, default_currency=self.default_currency,
                                synced_at=synced_at)
            for i in invoice_ids
        ]

    def find_invoices(self, invoice_number: str, customer_id: str, currency_of: CurrencyLookup) -> list[dict[str, Any]]:
        synced_at = self._clock()
        terms = [where("DocNumber", "=", invoice_number), where("CustomerRef", "=", customer_id)]
        return [
            records.invoice_row(raw, currency_of=currency_of, default_currency=self.default_currency,
                                synced_at=synced_at)
            for page in self.client.iter_changed("Invoice", terms)
            for raw in page
        ]

    # -- writes ---------------------------------------------------------------------------------------

    def payments_with_reference(self, reference: str) -> list[dict[str, Any]]:
        return self.client.query_rows("Payment", [where("PaymentRefNum", "=", reference)], max_results=10)

    def record_payment(self, payment: PaymentToRecord) -> dict[str, Any]:
        """Post `payment` against its invoice once: a payment already carrying the reference is returned
        instead of posting again."""
        if payment.method not in PAYMENT_METHODS:
            raise ValueError(
                f"payment for invoice {payment.invoice_id}: method {payment.method!r} is not one of {list(PAYMENT_METHODS)}"
            )
        existing = self.payments_with_reference(payment.reference)
        if existing:
            log.info("QuickBooks already holds payment %s with reference %s; not posting again",
                     existing[0].get("Id"), payment.reference)
            return {**existing[0], "id": str(existing[0]["Id"]), "already_present": True}
        amount = from_minor_units(payment.amount_cents, payment.currency)
        note = f"{payment.description} (method: {payment.method})".strip()[:PRIVATE_NOTE_MAX]
        body = {
            "CustomerRef": {"value": payment.customer_id},
            "TotalAmt": amount,
            "TxnDate": payment.payment_date.isoformat(),
            "PaymentRefNum": payment.reference,
            "PrivateNote": note,
            "CurrencyRef": {"value": payment.currency},
            "Line": [{"Amount": amount, "LinkedTxn": [{"TxnId": payment.invoice_id, "TxnType": "Invoice"}]}],
        }
        created = self.client.create(
            "Payment", body, request_id=request_id_for("payment", payment.reference, payment.invoice_id)
        )
        return {**created, "id": str(created["Id"])}

    def write_customer_note(self, customer_id: str, text: str) -> str:
        """An Attachable note on the customer (see module docstring). The requestid is new per note, so a
        deliberate second identical note is written, and the same for every retry of this one."""
        body = {
            "Note": text,
            "AttachableRef": [{"EntityRef": {"type": "Customer", "value": customer_id}, "IncludeOnSend": False}],
        }
        created = self.client.create("Attachable", body, request_id=str(uuid.uuid4()))
        return str(created["Id"])

    def list_customer_notes(self, customer_id: str) -> list[dict[str, Any]]:
        terms = [where("AttachableRef.EntityRef.Type", "=", "Customer"),
                 where("AttachableRef.EntityRef.value", "=", customer_id)]
        return [
            {"id": str(raw["Id"]), "message": raw["Note"]}
            for page in self.client.iter_changed("Attachable", terms)
            for raw in page
            if isinstance(raw, dict) and raw.get("Id") and isinstance(raw.get("Note"), str)
        ]

    def api_stats(self) -> dict[str, Any]:
        return self.client.stats()
