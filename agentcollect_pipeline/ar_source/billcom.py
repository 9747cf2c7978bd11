"""Bill.com (v2) as the AR source."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from agentcollect_pipeline.ar_source import billcom_records as records
from agentcollect_pipeline.ar_source.base import ARSource, ChangeBatch, CurrencyLookup, PaymentToRecord
from agentcollect_pipeline.clients.billcom import (
    BillComClient,
    BillComError,
    BillComNotFoundError,
    format_timestamp,
    parse_timestamp,
)
from agentcollect_pipeline.money import from_minor_units
from agentcollect_pipeline.settings import AR_SOURCE_NAMES

log = logging.getLogger(__name__)

READ_CHUNK = 100  # ids per List/Invoice call of read_invoices: a short request body, few calls
PAYMENT_TYPES = {"cash": "0", "check": "1", "card": "2", "ach": "3", "paypal": "4", "other": "5"}


class BillComARSource(ARSource):
    name = "billcom"
    display_name = AR_SOURCE_NAMES[name]

    def __init__(
        self,
        client: BillComClient,
        *,
        default_currency: str = "USD",
        overlap: timedelta = timedelta(minutes=2),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.client = client
        self.default_currency = default_currency
        self.overlap = overlap
        self._clock = clock

    # -- incremental reads ----------------------------------------------------------------------------

    def _changed_pages(self, entity: str, since: datetime | None, *, nested: bool = False) -> Iterator[list[dict]]:
        """Pages of `entity` updated after `since` (minus the overlap), oldest change first.

        The overlap re-reads a couple of minutes before the mark, so a record written in the same
        millisecond as the last one we saw, or committed late by Bill.com, is not missed; upserts make the
        re-read harmless.
        """
        sort = [{"field": "updatedTime", "asc": True}]
        if since is None:
            yield from self.client.iter_list(entity, sort=sort, nested=nested)
            return
        filters = [{"field": "updatedTime", "op": ">", "value": format_timestamp(since - self.overlap)}]
        try:
            yield from self.client.iter_list(entity, filters=filters, sort=sort, nested=nested)
        except BillComError as exc:
            # Whether updatedTime is filterable on every entity is not documented for certain (UNVERIFIED
            # in the reference): fall back to a full read rather than miss changes.
            if exc.code not in ("BDC_1130", "BDC_1131"):
                raise
            log.warning("Bill.com refused an updatedTime filter on %s (%s); reading everything", entity, exc.code)
            yield from self.client.iter_list(entity, sort=sort, nested=nested)

    def _batches(self, pages: Iterator[list[dict]], to_row: Callable[[Any], dict]) -> Iterator[ChangeBatch]:
        synced_at = self._clock()
        for page in pages:
            batch = ChangeBatch()
            for raw in page:
                try:
                    batch.rows.append(to_row(raw, synced_at))
                except records.RecordRejected as exc:
                    batch.rejected.append(str(exc))
            yield batch

    def customers_changed(self, since: datetime | None) -> Iterator[ChangeBatch]:
        return self._batches(
            self._changed_pages("Customer", since),
            lambda raw, at: records.customer_row(raw, default_currency=self.default_currency, synced_at=at),
        )

    def contacts_changed(self, since: datetime | None, customer_regions: dict[str, str | None]) -> Iterator[ChangeBatch]:
        pages = self._changed_pages("CustomerContact", since)
        try:
            yield from self._batches(
                pages, lambda raw, at: records.contact_row(raw, customer_regions=customer_regions, synced_at=at)
            )
        except BillComError as exc:
            # The List/CustomerContact path is inferred, not documented (UNVERIFIED in the reference). An
            # org whose Bill.com does not offer it still has each customer's own email and phone.
            if exc.code != "BDC_1121":
                raise
            log.warning("Bill.com does not offer List/CustomerContact (%s); syncing no extra contacts", exc.code)

    def invoices_changed(self, since: datetime | None, currency_of: CurrencyLookup) -> Iterator[ChangeBatch]:
        return self._batches(
            self._changed_pages("Invoice", since),
            lambda raw, at: records.invoice_row(
                raw, currency_of=currency_of, default_currency=self.default_currency, synced_at=at
            ),
        )

    def received_payments_changed(
        self, since: datetime | None, currency_of: CurrencyLookup, customer_id: str | None = None
    ) -> Iterator[ChangeBatch]:
        synced_at = self._clock()
        if customer_id is None:
            pages = self._changed_pages("ReceivedPay", since)
        else:
            filters = [{"field": "customerId", "op": "=", "value": customer_id}]
            pages = self.client.iter_list("ReceivedPay", filters=filters)
        for page in pages:
            batch = ChangeBatch()
            for raw in page:
                try:
                    row, lines = records.received_payment_rows(
                        raw, currency_of=currency_of, default_currency=self.default_currency, synced_at=synced_at
                    )
                except records.RecordRejected as exc:
                    batch.rejected.append(str(exc))
                    continue
                batch.rows.append(row)
                batch.children.extend(lines)
            yield batch

    def latest_invoice_change(self, since: datetime) -> datetime | None:
        """The newest invoice updatedTime after `since`, or None: ONE List call (max 1, newest first), so
        a poller that finds nothing changed costs a single request."""
        sort = [{"field": "updatedTime", "asc": False}]
        filters = [{"field": "updatedTime", "op": ">", "value": format_timestamp(since)}]
        try:
            page = self.client.call("List/Invoice", {"start": 0, "max": 1, "filters": filters, "sort": sort})
        except BillComError as exc:
            # updatedTime filtering is UNVERIFIED in the reference: the newest invoice of all, compared
            # here, answers the same question in the same single call.
            if exc.code not in ("BDC_1130", "BDC_1131"):
                raise
            page = self.client.call("List/Invoice", {"start": 0, "max": 1, "sort": sort})
        if not isinstance(page, list) or not page or not page[0].get("updatedTime"):
            return None
        newest = parse_timestamp(page[0]["updatedTime"])
        return newest if newest > since else None

    def read_invoices(self, invoice_ids: Sequence[str], currency_of: CurrencyLookup) -> list[dict[str, Any]]:
        """The invoices by id, in order: List/Invoice with an `id in (…)` filter, READ_CHUNK ids a call (the
        freshness check before every outreach wave must not cost one call per invoice)."""
        synced_at = self._clock()
        wanted = list(dict.fromkeys(invoice_ids))
        found = self._list_by_ids(wanted)
        missing = [i for i in wanted if i not in found]
        if missing:
            error = BillComNotFoundError(
                "BDC_1120", f"No data found for invoice id(s) {', '.join(missing[:10])}", "List/Invoice"
            )
            error.missing_ids = missing
            raise error
        return [
            records.invoice_row(
                found[i], currency_of=currency_of, default_currency=self.default_currency, synced_at=synced_at
            )
            for i in invoice_ids
        ]

    def _list_by_ids(self, ids: list[str]) -> dict[str, dict]:
        found: dict[str, dict] = {}
        try:
            for start in range(0, len(ids), READ_CHUNK):
                chunk = ids[start:start + READ_CHUNK]
                filters = [{"field": "id", "op": "in", "value": ",".join(chunk)}]
                for page in self.client.iter_list("Invoice", filters=filters):
                    found.update((raw["id"], raw) for raw in page if isinstance(raw, dict) and raw.get("id"))
        except BillComError as exc:
            # `in` on ids is documented for List but not confirmed for every org (reference §4, U): read one
            # by one rather than miss a payment made since the sync.
            if exc.code not in ("BDC_1130", "BDC_1131"):
                raise
            log.warning("Bill.com refused an id filter on List/Invoice (%s); reading invoices one by one", exc.code)
            found = {}
            for object_id in ids:
                try:
                    found[object_id] = self.client.read("Invoice", object_id)
                except BillComNotFoundError:
                    continue
        return found

    def find_invoices(
        self, invoice_number: str, customer_id: str, currency_of: CurrencyLookup
    ) -> list[dict[str, Any]]:
        synced_at = self._clock()
        filters = [
            {"field": "invoiceNumber", "op": "=", "value": invoice_number},
            {"field": "customerId", "op": "=", "value": customer_id},
        ]
        return [
            records.invoice_row(raw, currency_of=currency_of, default_currency=self.default_currency, synced_at=synced_at)
            for page in self.client.iter_list("Invoice", filters=filters)
            for raw in page
        ]

    # -- writes ---------------------------------------------------------------------------------------

    def record_payment(self, payment: PaymentToRecord) -> dict[str, Any]:
        try:
            payment_type = PAYMENT_TYPES[payment.method]
        except KeyError:
            raise ValueError(
                f"payment for invoice {payment.invoice_id}: method {payment.method!r} is not one of {sorted(PAYMENT_TYPES)}"
            ) from None
        amount = from_minor_units(payment.amount_cents, payment.currency)
        return self.client.record_ar_payment(
            {
                "customerId": payment.customer_id,
                "paymentDate": payment.payment_date.isoformat(),
                "paymentType": payment_type,
                "amount": amount,
                "refNumber": payment.reference,
                "description": payment.description,
                "invoicePays": [{"invoiceId": payment.invoice_id, "amount": amount}],
            }
        )

    def write_customer_note(self, customer_id: str, text: str) -> str:
        message = self.client.send_message(customer_id, text, is_public=False)
        return str(message.get("id", ""))

    def list_customer_notes(self, customer_id: str) -> list[dict[str, Any]]:
        return self.client.list_messages(customer_id)

    def api_stats(self) -> dict[str, Any]:
        return self.client.stats()
