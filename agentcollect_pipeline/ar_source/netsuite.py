"""NetSuite (REST web services + SuiteQL) as the AR source. See shared/reference/qbo-netsuite.md §2.

Reads are SuiteQL over `transaction` (type CustInvc / CustPymt), `customer` (+ its default billing address in
`entityaddress`), `contact` and `nexttransactionlinelink`. Columns the reference does not list for certain
(class, memo, createddate, isperson, the address join...) are optional: when NetSuite (or an emulator)
answers that such a column does not exist, the query is re-sent without it and the row field stays empty.

Writes are idempotent by construction:
- a payment is an upsert by external id (`PUT customerPayment/eid:<reference>`) that sets the applied
  amount, so a retried or duplicated call never creates a second payment nor pays an invoice twice;
- a note is one tagged line merged into a dedicated custom entity field (reference §2.5, option 1).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from agentcollect_pipeline.ar_source import netsuite_records as records
from agentcollect_pipeline.ar_source.base import ARSource, ChangeBatch, CurrencyLookup, PaymentToRecord
from agentcollect_pipeline.clients.netsuite import (
    NetSuiteClient,
    NetSuiteError,
    NetSuiteNotFoundError,
    NetSuiteOutcomeUnknownError,
    suiteql_id,
    suiteql_literal,
)
from agentcollect_pipeline.money import from_minor_units
from agentcollect_pipeline.settings import AR_SOURCE_NAMES

log = logging.getLogger(__name__)

TIMESTAMP_FORMAT = "YYYY-MM-DD HH24:MI:SS"  # what TO_CHAR writes and TO_TIMESTAMP reads back
_PY_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
PAYMENT_METHODS = ("cash", "check", "card", "ach", "paypal", "other")
NOTE_LINE = re.compile(r"^\[ac:([0-9a-f]{12}) (\d{4}-\d{2}-\d{2})\] (.*)$")


# --------------------------------------------------------------------------------------------------------
# Query building


@dataclass(frozen=True)
class Column:
    sql: str  # select expression with its alias
    optional: str | None = None  # the identifier whose absence at the source drops this column


@dataclass(frozen=True)
class Join:
    name: str
    sql: str
    identifiers: tuple[str, ...]  # names an error about this join would mention


@dataclass(frozen=True)
class QuerySpec:
    columns: tuple[Column, ...]
    source: str  # "transaction t"
    where: tuple[str, ...] = ()
    joins: tuple[Join, ...] = ()
    alias: str = "t"

    def optional_names(self) -> dict[str, str]:
        """identifier mentioned in an error -> the optional feature to drop."""
        names = {column.optional: column.optional for column in self.columns if column.optional}
        for join in self.joins:
            names.update({identifier: join.name for identifier in join.identifiers})
        return names

    def sql(self, dropped: set[str], extra_where: Iterable[str] = ()) -> str:
        columns = [c.sql for c in self.columns if c.optional not in dropped]
        joins = [j.sql for j in self.joins if j.name not in dropped]
        where = [*self.where, *extra_where]
        text = f"SELECT {', '.join(columns)} FROM {self.source}"
        if joins:
            text += " " + " ".join(joins)
        if where:
            text += " WHERE " + " AND ".join(where)
        return text + f" ORDER BY {self.alias}.lastmodifieddate, {self.alias}.id"


def _timestamp_column(expr: str, name: str, optional: str | None = None) -> Column:
    return Column(f"TO_CHAR({expr}, '{TIMESTAMP_FORMAT}') AS {name}", optional)


def _date_column(expr: str, name: str) -> Column:
    return Column(f"TO_CHAR({expr}, 'YYYY-MM-DD') AS {name}")


_ADDRESS = Join(
    "billing address",
    "LEFT JOIN entityaddress a ON a.nkey = c.defaultbillingaddress",
    ("entityaddress", "defaultbillingaddress", "nkey", "addr1", "addr2", "city", "state", "zip", "country",
     "join"),
)

INVOICES = QuerySpec(
    columns=(
        Column("t.id AS id"), Column("t.tranid AS tranid"), Column("t.entity AS entity"),
        _date_column("t.trandate", "trandate"), _date_column("t.duedate", "duedate"),
        Column("t.currency AS currency"), Column("t.foreigntotal AS foreigntotal"),
        Column("t.foreignamountpaid AS foreignamountpaid"), Column("t.foreignamountunpaid AS foreignamountunpaid"),
        Column("t.status AS status"), Column("t.voided AS voided"), Column("t.externalid AS externalid"),
        _timestamp_column("t.lastmodifieddate", "lastmodifieddate"),
        Column("t.class AS classid", "class"), Column("t.memo AS memo", "memo"),
        _timestamp_column("t.createddate", "createddate", "createddate"),
    ),
    source="transaction t",
    where=("t.type = 'CustInvc'",),
)

PAYMENTS = QuerySpec(
    columns=(
        Column("t.id AS id"), Column("t.tranid AS tranid"), Column("t.entity AS entity"),
        _date_column("t.trandate", "trandate"), Column("t.currency AS currency"),
        Column("t.foreigntotal AS foreigntotal"), Column("t.status AS status"),
        Column("t.externalid AS externalid"), _timestamp_column("t.lastmodifieddate", "lastmodifieddate"),
        Column("t.memo AS memo", "memo"), _timestamp_column("t.createddate", "createddate", "createddate"),
    ),
    source="transaction t",
    where=("t.type = 'CustPymt'",),
)

CUSTOMERS = QuerySpec(
    columns=(
        Column("c.id AS id"), Column("c.entityid AS entityid"), Column("c.companyname AS companyname"),
        Column("c.email AS email"), Column("c.phone AS phone"), Column("c.altphone AS altphone"),
        Column("c.mobilephone AS mobilephone"), Column("c.isinactive AS isinactive"),
        Column("c.parent AS parent"), Column("c.comments AS comments"),
        _timestamp_column("c.lastmodifieddate", "lastmodifieddate"),
        Column("c.isperson AS isperson", "isperson"), Column("c.firstname AS firstname", "firstname"),
        Column("c.lastname AS lastname", "lastname"), Column("c.currency AS currency", "currency"),
        _timestamp_column("c.datecreated", "datecreated", "datecreated"),
        *(Column(f"a.{name} AS {name}", "billing address")
          for name in ("addr1", "addr2", "city", "state", "zip", "country")),
    ),
    source="customer c",
    joins=(_ADDRESS,),
    alias="c",
)

CONTACTS = QuerySpec(
    columns=(
        Column("ct.id AS id"), Column("ct.company AS company"), Column("ct.firstname AS firstname"),
        Column("ct.lastname AS lastname"), Column("ct.email AS email"), Column("ct.phone AS phone"),
        Column("ct.mobilephone AS mobilephone", "mobilephone"), Column("ct.isinactive AS isinactive"),
        _timestamp_column("ct.lastmodifieddate", "lastmodifieddate"),
        _timestamp_column("ct.datecreated", "datecreated", "datecreated"),
    ),
    source="contact ct",
    where=("ct.company IS NOT NULL",),
    # Contacts of vendors or partners have a company too; only customers' contacts are ours. Without the join
    # (a source that refuses it), a vendor's contact is stored against an id no customer row has: harmless.
    joins=(Join("customer join", "JOIN customer cu ON cu.id = ct.company", ("join", "cu")),),
    alias="ct",
)


def _mentions(detail: str, identifier: str) -> bool:
    quoted = re.search(rf"['\"`]{re.escape(identifier)}['\"`]", detail, re.IGNORECASE)
    return bool(quoted or re.search(rf"\b{re.escape(identifier)}\b", detail, re.IGNORECASE))


def _chunks(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[start:start + size]) for start in range(0, len(items), size)]


def note_id(message: str) -> str:
    return hashlib.sha256(message.encode()).hexdigest()[:12]


def parse_note_lines(text: str | None) -> list[dict[str, str]]:
    """Our tagged lines in a note field, oldest first; other text (people's) is not returned."""
    notes = []
    for line in (text or "").splitlines():
        match = NOTE_LINE.match(line)
        if match:
            notes.append({"id": match.group(1), "written_on": match.group(2), "message": match.group(3)})
    return notes


def merge_note(current: str | None, line: str, limit: int) -> str | None:
    """`current` plus our new line, dropping our oldest lines until it fits; None when people's text alone
    leaves no room (their text is never cut)."""
    lines = (current or "").splitlines() + [line]
    while len("\n".join(lines)) > limit:
        ours = [index for index, text in enumerate(lines[:-1]) if NOTE_LINE.match(text)]
        if not ours:
            return None
        del lines[ours[0]]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------
# The source


class NetSuiteARSource(ARSource):
    name = "netsuite"
    display_name = AR_SOURCE_NAMES[name]

    def __init__(
        self,
        client: NetSuiteClient,
        *,
        default_currency: str = "USD",
        overlap: timedelta = timedelta(minutes=2),
        account_timezone: str = "UTC",
        currency_map: dict[str, str] | None = None,
        note_field: str = "custentity_agentcollect_notes",
        note_fallback_field: str | None = "comments",
        note_field_max_chars: int = 4000,
        comments_max_chars: int = 999,
        read_chunk_size: int = 500,
        deposit_account_id: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        if not 1 <= read_chunk_size <= 1000:
            raise ValueError("read_chunk_size must be between 1 and 1000 (one SuiteQL page per chunk)")
        self.client = client
        self.default_currency = default_currency
        self.overlap = overlap
        self.zone: tzinfo = ZoneInfo(account_timezone)
        self.currency_map = {str(k): v for k, v in (currency_map or {}).items()}
        self.note_field = note_field
        self.note_fallback_field = note_fallback_field
        self.note_limits = {note_field: note_field_max_chars}
        if note_fallback_field:
            self.note_limits.setdefault(note_fallback_field, comments_max_chars)
        self.read_chunk_size = read_chunk_size
        self.deposit_account_id = deposit_account_id
        self._clock = clock
        self._unsupported: set[str] = set()
        self._currencies: records.CurrencyResolver | None = None

    # -- query plumbing -------------------------------------------------------------------------------------

    def _since_clause(self, spec: QuerySpec, since: datetime | None) -> list[str]:
        """`lastmodifieddate > since`, written in the account's local time as SuiteQL reads literals."""
        if since is None:
            return []
        local = since.astimezone(self.zone).strftime(_PY_TIMESTAMP_FORMAT)
        return [f"{spec.alias}.lastmodifieddate > TO_TIMESTAMP({suiteql_literal(local)}, '{TIMESTAMP_FORMAT}')"]

    def _with_fallbacks(self, spec: QuerySpec,
                        pages_of: Callable[[], Iterator[list[dict[str, Any]]]]) -> Iterator[list[dict[str, Any]]]:
        """Read `pages_of()` (which builds its SQL from `spec` without the features in `self._unsupported`);
        when the source says an optional column or join does not exist, drop that feature and read again.

        Only a failure before the first page is retried this way, so no page is ever yielded twice.
        """
        names = spec.optional_names()
        while True:
            first = True
            try:
                for page in pages_of():
                    first = False
                    yield page
                return
            except NetSuiteError as exc:
                if not first or exc.http_status != 400:
                    raise
                feature = next((feature for identifier, feature in names.items()
                                if feature not in self._unsupported and _mentions(exc.message, identifier)), None)
                if feature is None:
                    raise
                log.warning("NetSuite does not offer %r (%s: %s); reading without it", feature, exc.code,
                            exc.message[:200])
                self._unsupported.add(feature)

    def _changed_pages(self, spec: QuerySpec, since: datetime | None,
                       extra_where: Sequence[str] = ()) -> Iterator[list[dict[str, Any]]]:
        """Pages of rows modified after `since` minus the overlap (everything when None), oldest first.

        The overlap re-reads a couple of minutes before the mark: a record modified in the same second as the
        last one seen, or committed late, is not missed; the warehouse upserts make the re-read harmless.
        """
        since_where = self._since_clause(spec, None if since is None else since - self.overlap)

        def build(boundary: str | None) -> str:
            where = [*extra_where, *since_where]
            if boundary is not None:
                # Past the row cap: restart from the last row read; rows sharing its time are read twice.
                where.append(f"{spec.alias}.lastmodifieddate >= TO_TIMESTAMP({suiteql_literal(boundary)}, "
                             f"'{TIMESTAMP_FORMAT}')")
            return spec.sql(self._unsupported, where)

        return self._with_fallbacks(spec, lambda: self.client.suiteql_by_boundary(build, "lastmodifieddate"))

    def _currency_resolver(self) -> records.CurrencyResolver:
        if self._currencies is None:
            table: dict[str, str] | None
            try:
                rows = self.client.suiteql_all("SELECT id, symbol FROM currency ORDER BY id")
                table = {str(r["id"]): str(r["symbol"]) for r in rows if r.get("id") and r.get("symbol")}
            except NetSuiteError as exc:
                if exc.http_status not in (400, 403):
                    raise
                # Without the table (or the permission to read it) every currency id not in the configured
                # map is taken as the organisation's currency: single-currency books, the usual case.
                log.warning("NetSuite currency table unreadable (%s); currency ids outside currency_map are "
                            "taken as %s", exc.code, self.default_currency)
                table = None
            self._currencies = records.CurrencyResolver(self.default_currency, self.currency_map, table)
        return self._currencies

    def _batches(self, pages: Iterator[list[dict]], to_row: Callable[[Any, datetime], dict]) -> Iterator[ChangeBatch]:
        synced_at = self._clock()
        for page in pages:
            batch = ChangeBatch()
            for raw in page:
                try:
                    batch.rows.append(to_row(raw, synced_at))
                except records.RecordRejected as exc:
                    batch.rejected.append(str(exc))
            yield batch

    def _invoice_row(self, currency_of: CurrencyLookup) -> Callable[[Any, datetime], dict[str, Any]]:
        currencies = self._currency_resolver()
        return lambda raw, at: records.invoice_row(
            raw, currency_of=currency_of, currencies=currencies, zone=self.zone, synced_at=at
        )

    # -- incremental reads ----------------------------------------------------------------------------------

    def customers_changed(self, since: datetime | None) -> Iterator[ChangeBatch]:
        currencies = self._currency_resolver()
        return self._batches(
            self._changed_pages(CUSTOMERS, since),
            lambda raw, at: records.customer_row(raw, currencies=currencies, zone=self.zone, synced_at=at),
        )

    def contacts_changed(self, since: datetime | None, customer_regions: dict[str, str | None]) -> Iterator[ChangeBatch]:
        pages = self._changed_pages(CONTACTS, since)
        to_row = lambda raw, at: records.contact_row(  # noqa: E731
            raw, customer_regions=customer_regions, zone=self.zone, synced_at=at
        )
        started = False
        try:
            for batch in self._batches(pages, to_row):
                started = True
                yield batch
        except NetSuiteError as exc:
            # Contacts are extra reach, not required: a role without access to them (or a source without the
            # table) still has each customer's own email and phones. Refused before any page, that is all it is.
            if started or exc.http_status not in (400, 403):
                raise
            log.warning("NetSuite contacts unavailable (%s: %s); syncing no extra contacts", exc.code,
                        exc.message[:200])

    def invoices_changed(self, since: datetime | None, currency_of: CurrencyLookup) -> Iterator[ChangeBatch]:
        return self._batches(self._changed_pages(INVOICES, since), self._invoice_row(currency_of))

    def received_payments_changed(
        self, since: datetime | None, currency_of: CurrencyLookup, customer_id: str | None = None
    ) -> Iterator[ChangeBatch]:
        currencies = self._currency_resolver()
        if customer_id is None:
            pages = self._changed_pages(PAYMENTS, since)
        else:
            pages = self._changed_pages(PAYMENTS, None, extra_where=[f"t.entity = {suiteql_id(customer_id)}"])
        synced_at = self._clock()
        for page in pages:
            batch = ChangeBatch()
            payments = []
            for raw in page:
                try:
                    payments.append(records.received_payment_row(
                        raw, currency_of=currency_of, currencies=currencies, zone=self.zone, synced_at=synced_at
                    ))
                except records.RecordRejected as exc:
                    batch.rejected.append(str(exc))
            applications = self._applications([p["received_payment_id"] for p in payments])
            for payment in payments:
                lines, problems = self._payment_lines(payment, applications.get(payment["received_payment_id"], []),
                                                      synced_at)
                batch.rows.append(records.payment_validation_with_lines(payment, problems))
                batch.children.extend(lines)
            yield batch

    @staticmethod
    def _payment_lines(payment: dict[str, Any], applied: list[tuple[Any, Any]],
                       synced_at: datetime) -> tuple[list[dict[str, Any]], list[str]]:
        lines, problems = [], []
        for invoice_id, amount in applied:
            line, problem = records.payment_line_row(payment["received_payment_id"], invoice_id, amount,
                                                     currency=payment["currency"], synced_at=synced_at)
            if problem:
                problems.append(problem)
            if line is not None:
                lines.append(line)
        return lines, problems

    def _applications(self, payment_ids: Sequence[str]) -> dict[str, list[tuple[Any, Any]]]:
        """payment id -> [(invoice id, amount applied)], from NextTransactionLineLink in batches of ids."""
        if not payment_ids:
            return {}
        if "nexttransactionlinelink" not in self._unsupported:
            try:
                return self._applications_by_links(payment_ids)
            except NetSuiteError as exc:
                # The links query is fixed and simple: a 400 means this source does not offer the table.
                if exc.http_status != 400:
                    raise
                log.warning("NetSuite NextTransactionLineLink unavailable (%s); reading each payment's apply "
                            "sublist instead", exc.code)
                self._unsupported.add("nexttransactionlinelink")
        return self._applications_by_record(payment_ids)

    def _applications_by_links(self, payment_ids: Sequence[str]) -> dict[str, list[tuple[Any, Any]]]:
        found: dict[str, list[tuple[Any, Any]]] = {}
        for chunk in _chunks(payment_ids, self.read_chunk_size):
            query = (
                "SELECT l.nextdoc AS payment, l.previousdoc AS invoice, l.foreignamount AS amount "
                f"FROM nexttransactionlinelink l WHERE l.nextdoc IN ({', '.join(suiteql_id(i) for i in chunk)}) "
                "ORDER BY l.nextdoc, l.previousdoc"
            )
            for row in self.client.suiteql_all(query):
                found.setdefault(str(row.get("payment")), []).append((row.get("invoice"), row.get("amount")))
        return found

    def _applications_by_record(self, payment_ids: Sequence[str]) -> dict[str, list[tuple[Any, Any]]]:
        def applied(payment_id: str) -> list[tuple[Any, Any]]:
            record = self.client.get_record("customerPayment", payment_id, params={"expandSubResources": "true"})
            items = (record.get("apply") or {}).get("items") or []
            return [((item.get("doc") or {}).get("id"), item.get("amount")) for item in items
                    if isinstance(item, dict) and item.get("apply") is True]

        with ThreadPoolExecutor(max_workers=self.client.max_in_flight, thread_name_prefix="netsuite-apply") as pool:
            return dict(zip(payment_ids, pool.map(applied, payment_ids), strict=True))

    def latest_invoice_change(self, since: datetime) -> datetime | None:
        """The newest invoice lastmodifieddate after `since`, or None: ONE SuiteQL call of one row."""
        where = [*INVOICES.where, *self._since_clause(INVOICES, since)]
        query = (f"SELECT t.id AS id, TO_CHAR(t.lastmodifieddate, '{TIMESTAMP_FORMAT}') AS lastmodifieddate "
                 f"FROM transaction t WHERE {' AND '.join(where)} ORDER BY t.lastmodifieddate DESC, t.id DESC")
        page = self.client.suiteql(query, limit=1)
        if not page.items or not page.items[0].get("lastmodifieddate"):
            return None
        newest = records.parse_timestamp(str(page.items[0]["lastmodifieddate"]), self.zone)
        return newest if newest > since else None

    def read_invoices(self, invoice_ids: Sequence[str], currency_of: CurrencyLookup) -> list[dict[str, Any]]:
        """Current state of these invoices, in the order asked: one SuiteQL query per chunk of ids, chunks
        in parallel (a freshness check must not cost one call per invoice)."""
        wanted = list(dict.fromkeys(str(i) for i in invoice_ids))
        if not wanted:
            return []
        to_row = self._invoice_row(currency_of)
        synced_at = self._clock()

        def read_chunk(chunk: list[str]) -> list[dict[str, Any]]:
            where = [f"t.id IN ({', '.join(suiteql_id(i) for i in chunk)})"]
            pages = self._with_fallbacks(INVOICES, lambda: self.client.suiteql_pages(INVOICES.sql(self._unsupported,
                                                                                                    where)))
            return [row for page in pages for row in page]

        chunks = _chunks(wanted, self.read_chunk_size)
        with ThreadPoolExecutor(max_workers=self.client.max_in_flight, thread_name_prefix="netsuite-read") as pool:
            raw_rows = [row for rows in pool.map(read_chunk, chunks) for row in rows]
        by_id: dict[str, dict[str, Any]] = {}
        for raw in raw_rows:
            row = to_row(raw, synced_at)
            by_id[row["invoice_id"]] = row
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise NetSuiteNotFoundError("NONEXISTENT_ID", f"no invoice with id {', '.join(missing)}", "read invoices")
        return [by_id[i] for i in wanted]

    def find_invoices(self, invoice_number: str, customer_id: str, currency_of: CurrencyLookup) -> list[dict[str, Any]]:
        where = [f"t.tranid = {suiteql_literal(invoice_number)}", f"t.entity = {suiteql_id(customer_id)}"]
        to_row = self._invoice_row(currency_of)
        synced_at = self._clock()
        pages = self._with_fallbacks(INVOICES, lambda: self.client.suiteql_pages(INVOICES.sql(self._unsupported, where)))
        return [to_row(raw, synced_at) for page in pages for raw in page]

    # -- writes -----------------------------------------------------------------------------------------------

    def record_payment(self, payment: PaymentToRecord) -> dict[str, Any]:
        """Upsert a customer payment applied to one invoice, keyed by `payment.reference` as external id."""
        self._check_payment(payment)
        existing = self._payment_id_by_reference(payment.reference)
        if existing is not None:
            # Already there (an earlier attempt landed): report it, change nothing.
            return {"id": existing, "external_id": payment.reference, "created": False}
        self._check_invoice_accepts(payment)
        amount = from_minor_units(payment.amount_cents, payment.currency)
        body: dict[str, Any] = {
            "customer": {"id": payment.customer_id},
            "payment": amount,
            "tranDate": payment.payment_date.isoformat(),
            "memo": f"{payment.description} ({payment.method})".strip()[:999],
            "externalId": payment.reference,
            # `amount` is what is applied, not an increment: repeating the upsert cannot pay twice.
            "apply": {"items": [{"doc": {"id": payment.invoice_id}, "apply": True, "amount": amount}]},
        }
        if self.deposit_account_id:
            body["account"] = {"id": self.deposit_account_id}
        payment_id = self.client.upsert_record("customerPayment", payment.reference, body)
        if payment_id is None:
            payment_id = self._payment_id_by_reference(payment.reference)
        if payment_id is None:
            raise NetSuiteOutcomeUnknownError(
                "NetSuite upsert customerPayment", "204 without a Location and not found by its external id yet"
            )
        return {"id": payment_id, "external_id": payment.reference, "created": True}

    @staticmethod
    def _check_payment(payment: PaymentToRecord) -> None:
        if payment.method not in PAYMENT_METHODS:
            raise ValueError(
                f"payment for invoice {payment.invoice_id}: method {payment.method!r} is not one of {PAYMENT_METHODS}"
            )
        if not payment.reference or len(payment.reference) > 100:
            raise ValueError(f"payment for invoice {payment.invoice_id}: reference must be 1-100 characters")
        if payment.amount_cents <= 0:
            raise ValueError(f"payment for invoice {payment.invoice_id}: amount must be positive")

    def _payment_id_by_reference(self, reference: str) -> str | None:
        query = (f"SELECT t.id AS id FROM transaction t WHERE t.type = 'CustPymt' "
                 f"AND t.externalid = {suiteql_literal(reference)} ORDER BY t.id")
        rows = self.client.suiteql_all(query)
        return str(rows[0]["id"]) if rows and rows[0].get("id") else None

    def _check_invoice_accepts(self, payment: PaymentToRecord) -> None:
        """Re-read the invoice just before writing: a definite refusal beats a NetSuite validation error, and
        an invoice paid meanwhile (through the Bill.com sync, say) must not be paid again."""
        (invoice,) = self.read_invoices([payment.invoice_id], lambda customer_id: self.default_currency)
        problem = None
        if invoice["customer_id"] != str(payment.customer_id):
            problem = ("CUSTOMER_MISMATCH", f"invoice {payment.invoice_id} belongs to customer {invoice['customer_id']}")
        elif not invoice["is_active"]:
            problem = ("INVOICE_NOT_OPEN", f"invoice {payment.invoice_id} is voided or not approved")
        elif invoice["currency"] != payment.currency:
            problem = ("CURRENCY_MISMATCH", f"invoice {payment.invoice_id} is in {invoice['currency']}")
        elif invoice["amount_due_cents"] is None or payment.amount_cents > invoice["amount_due_cents"]:
            problem = ("AMOUNT_EXCEEDS_UNPAID",
                       f"invoice {payment.invoice_id} has {invoice['amount_due_cents']} minor units unpaid")
        if problem is not None:
            raise NetSuiteError(problem[0], problem[1], "record payment", None)

    def write_customer_note(self, customer_id: str, text: str) -> str:
        """Append one tagged line to the customer's note field; returns the note's id. Writing the same text
        twice returns the first line's id and writes nothing."""
        message = " ".join(text.split())
        if not message:
            raise ValueError("a customer note needs text")
        identifier = note_id(message)
        line = f"[ac:{identifier} {self._clock().date().isoformat()}] {message}"
        fields = [f for f in (self.note_field, self.note_fallback_field) if f and f not in self._unsupported]
        for position, field_name in enumerate(fields):
            try:
                self._append_note_line(customer_id, field_name, identifier, message, line)
                return identifier
            except NetSuiteError as exc:
                # The request names only this field, so a 400 is the field refused (no such custom field).
                if exc.http_status != 400 or position == len(fields) - 1:
                    raise
                log.warning("NetSuite customer field %s is not available (%s); writing notes to %s instead",
                            field_name, exc.code, fields[position + 1])
                self._unsupported.add(field_name)
        raise NetSuiteError("NO_NOTE_FIELD", "no customer field is available for notes", "write note")

    def _append_note_line(self, customer_id: str, field_name: str, identifier: str, message: str, line: str) -> None:
        current = self._note_fields(customer_id, [field_name]).get(field_name)
        if any(n["id"] == identifier and n["message"] == message for n in parse_note_lines(current)):
            return
        merged = merge_note(current, line, self.note_limits.get(field_name, 999))
        if merged is None:
            raise NetSuiteError(
                "NOTE_TOO_LONG",
                f"customer {customer_id}: {field_name} has no room for a {len(line)}-character note next to "
                f"{len(current or '')} characters written by people",
                "write note",
            )
        self.client.patch_record("customer", customer_id, {field_name: merged})

    def _note_fields(self, customer_id: str, fields: list[str]) -> dict[str, str | None]:
        try:
            record = self.client.get_record("customer", customer_id, params={"fields": ",".join(fields)})
        except NetSuiteError as exc:
            if exc.http_status != 400:
                raise
            # A source that refuses an unknown name in `fields` still shows the whole record.
            record = self.client.get_record("customer", customer_id)
        return {name: record.get(name) if isinstance(record.get(name), str) else None for name in fields}

    def list_customer_notes(self, customer_id: str) -> list[dict[str, Any]]:
        fields = [f for f in (self.note_field, self.note_fallback_field) if f]
        values = self._note_fields(customer_id, fields)
        return [{**note, "field": name} for name in fields for note in parse_note_lines(values.get(name))]

    def api_stats(self) -> dict[str, Any]:
        return self.client.stats()
