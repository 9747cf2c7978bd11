"""Exactly-once posting of payment events to the AR source, and notes written once per fact. No Dagster here.

The AR source is Bill.com, QuickBooks Online or NetSuite. Bill.com's RecordARPayment has no idempotency key
(QBO's requestid and NetSuite's external-id upsert are a second line of defence, not the first), so the
guarantee is built from three pieces that hold for every source:

1. `payments_posted` holds one row per event under a unique posting key. A run must *claim* that row
   (insert it, or take over a claim older than the lease) before it may call the source; the database's
   unique constraint, not a read-then-write, decides who holds it.
2. The posting key travels in the payment's reference (Bill.com refNumber, QBO PaymentRefNum, NetSuite
   externalId). Before posting, and whenever a claim is taken over or a write ended in "outcome unknown",
   the customer's received payments at the source are searched
   for that key: found means posted, whatever our own ledger missed.
3. A write whose outcome is unknown is never sent again: it is reconciled by that search only, a bounded
   number of times, and then handed to a person (`needs_review`).

The lease must outlast the longest possible AR source call (timeouts x connect retries), so that a claim is
only taken over from a run that is certainly gone.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from agentcollect_pipeline.ar_source.base import (
    AROutcomeUnknownError,
    ARRecordNotFoundError,
    ARSource,
    ARSourceError,
    ARTransportError,
    CurrencyLookup,
    PaymentToRecord,
)
from agentcollect_pipeline.ar_source.billcom import PAYMENT_TYPES
from agentcollect_pipeline.money import MoneyError, exponent, from_minor_units
from agentcollect_pipeline.warehouse import schema
from agentcollect_pipeline.warehouse.payments_schema import (
    customer_notes,
    needs_review,
    payment_events,
    payments_posted,
)
from agentcollect_pipeline.warehouse.store import Warehouse, dialect_insert

log = logging.getLogger(__name__)

KEY_PREFIX = "AC-"
TERMINAL = ("posted", "already_recorded", "needs_review")
OPEN = ("reserved", "outcome_unknown")
_RELEASED_AT = datetime(1970, 1, 1, tzinfo=UTC)


def posting_key(source: str, event_id: str) -> str:
    """Short and fixed-length (23 chars), because it must fit every source's payment reference field; 80 bits
    make collisions moot."""
    return KEY_PREFIX + hashlib.sha256(f"{source}:{event_id}".encode()).hexdigest()[:20].upper()


def event_ref(event: dict[str, Any]) -> str:
    return f"{event['source']}:{event['event_id']}"


@dataclass(frozen=True)
class PostingPolicy:
    match_window_days: int = 7
    reservation_lease_s: float = 600.0
    outcome_unknown_max_checks: int = 5


@dataclass
class Outcome:
    """What happened to one event in this run. `status` adds `pending` (try again later) to the ledger's."""

    event_sequence: int
    source: str
    event_id: str
    posting_key: str
    status: str
    amount_cents: int
    currency: str
    occurred_on: str
    customer_id: str | None = None
    invoice_id: str | None = None
    invoice_number: str | None = None
    received_payment_id: str | None = None
    amount_due_after_cents: int | None = None
    reason: str | None = None
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Match:
    invoice: dict[str, Any] | None
    reason: str | None = None
    detail: str | None = None



# -- reading events ------------------------------------------------------------------------------------


def load_events(warehouse: Warehouse, refs: Sequence[str]) -> list[dict[str, Any]]:
    """Events by "source:event_id", in sequence order; unknown refs are skipped (logged)."""
    wanted = set(refs)
    by_source: dict[str, list[str]] = defaultdict(list)
    for ref in wanted:
        source, _, event_id = ref.partition(":")
        by_source[source].append(event_id)
    rows: list[dict[str, Any]] = []
    with warehouse.engine.connect() as conn:
        for source, ids in by_source.items():
            query = sa.select(payment_events).where(
                payment_events.c.source == source, payment_events.c.event_id.in_(ids)
            )
            rows.extend(r._asdict() for r in conn.execute(query))
    missing = wanted - {event_ref(r) for r in rows}
    if missing:
        log.warning("payment events not found: %s", ", ".join(sorted(missing)))
    return sorted(rows, key=lambda r: r["sequence"])


def validate_event(event: dict[str, Any]) -> str | None:
    """Why a stored event cannot be posted, or None. Intake validated it; this guards older rows."""
    problems = []
    if not isinstance(event.get("amount_cents"), int) or event["amount_cents"] <= 0:
        problems.append("amount must be a positive number of minor units")
    try:
        exponent(event.get("currency") or "")
    except MoneyError as exc:
        problems.append(str(exc))
    if event.get("method") not in PAYMENT_TYPES:
        problems.append(f"method {event.get('method')!r} unknown")
    if not event.get("invoice_id") and not (event.get("invoice_number") and event.get("customer_id")):
        problems.append("no invoice id, and no invoice number with a customer id")
    return "; ".join(problems) or None


class PaymentPoster:
    def __init__(
        self,
        warehouse: Warehouse,
        source: ARSource,
        *,
        policy: PostingPolicy | None = None,
        currency_of: CurrencyLookup | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.warehouse = warehouse
        self.source = source
        self.policy = policy or PostingPolicy()
        self._clock = clock
        if currency_of is None:
            with warehouse.engine.connect() as conn:
                table = schema.ar_tables(source.name).customers
                currencies = dict(conn.execute(sa.select(table.c.customer_id, table.c.currency)).all())
            currency_of = currencies.get
        self.currency_of = currency_of

    # -- the ledger ----------------------------------------------------------------------------------

    def ledger_row(self, key: str) -> dict[str, Any] | None:
        with self.warehouse.engine.connect() as conn:
            row = conn.execute(sa.select(payments_posted).where(payments_posted.c.posting_key == key)).first()
        return row._asdict() if row else None

    def _claim(self, event: dict[str, Any], key: str, invoice: dict[str, Any] | None) -> str | None:
        """A claim token when this run now holds the event's reservation, else None."""
        token, now = uuid.uuid4().hex, self._clock()
        row = {
            "posting_key": key,
            "event_sequence": event["sequence"],
            "source": event["source"],
            "event_id": event["event_id"],
            "status": "reserved",
            "claim_token": token,
            "claimed_at": now,
            "customer_id": (invoice or {}).get("customer_id") or event.get("customer_id"),
            "invoice_id": (invoice or {}).get("invoice_id") or event.get("invoice_id"),
            "invoice_number": (invoice or {}).get("invoice_number") or event.get("invoice_number"),
            "amount_cents": event["amount_cents"],
            "currency": event["currency"],
            "reconcile_checks": 0,
        }
        with self.warehouse.transaction() as conn:
            stmt = dialect_insert(conn, payments_posted).values(**row).on_conflict_do_nothing(index_elements=["posting_key"])
            if conn.execute(stmt).rowcount == 1:
                return token
            # Someone reserved it before. Take over only a reservation older than the lease: its run is
            # gone (crashed before calling the source, or its call certainly ended).
            expired = now - timedelta(seconds=self.policy.reservation_lease_s)
            taken = conn.execute(
                payments_posted.update()
                .where(
                    payments_posted.c.posting_key == key,
                    payments_posted.c.status == "reserved",
                    payments_posted.c.claimed_at <= expired,
                )
                .values(claim_token=token, claimed_at=now, customer_id=row["customer_id"], invoice_id=row["invoice_id"])
            ).rowcount
        return token if taken == 1 else None

    def _release(self, key: str, token: str) -> None:
        """Nothing reached the source: let the next run take the reservation at once instead of after the lease."""
        with self.warehouse.transaction() as conn:
            conn.execute(
                payments_posted.update()
                .where(payments_posted.c.posting_key == key, payments_posted.c.claim_token == token,
                       payments_posted.c.status == "reserved")
                .values(claimed_at=_RELEASED_AT)
            )

    def _finish(
        self, event: dict[str, Any], outcome: Outcome, *, token: str | None, from_status: Sequence[str] = ("reserved",)
    ) -> Outcome:
        """Move the ledger row from an open state to `outcome.status`, once. With token=None the row is
        matched by state only (reconciling an outcome-unknown write, which no run holds)."""
        now = self._clock()
        with self.warehouse.transaction() as conn:
            where = [payments_posted.c.posting_key == outcome.posting_key, payments_posted.c.status.in_(from_status)]
            if token is not None:
                where.append(payments_posted.c.claim_token == token)
            changed = conn.execute(
                payments_posted.update()
                .where(*where)
                .values(
                    status=outcome.status,
                    customer_id=outcome.customer_id,
                    invoice_id=outcome.invoice_id,
                    invoice_number=outcome.invoice_number,
                    received_payment_id=outcome.received_payment_id,
                    detail=_join(outcome.reason, outcome.detail),
                    decided_at=now,
                )
            ).rowcount
            if changed == 1 and outcome.status == "needs_review":
                conn.execute(
                    dialect_insert(conn, needs_review)
                    .values(
                        posting_key=outcome.posting_key,
                        event_sequence=event["sequence"],
                        source=event["source"],
                        event_id=event["event_id"],
                        reason=outcome.reason or "unknown",
                        detail=outcome.detail,
                        created_at=now,
                    )
                    .on_conflict_do_nothing(index_elements=["posting_key"])
                )
        if changed == 1:
            return outcome
        return self._replay(event, outcome.posting_key, "another run decided this event first")

    def _replay(self, event: dict[str, Any], key: str, why: str) -> Outcome:
        row = self.ledger_row(key)
        if row is None or row["status"] not in TERMINAL:
            return self._outcome(event, "pending", detail=why)
        reason, _, detail = (row["detail"] or "").partition(": ")
        return self._outcome(
            event,
            row["status"],
            customer_id=row["customer_id"],
            invoice_id=row["invoice_id"],
            invoice_number=row["invoice_number"],
            received_payment_id=row["received_payment_id"],
            reason=reason if row["status"] == "needs_review" else None,
            detail=detail if row["status"] == "needs_review" else row["detail"],
        )

    def _outcome(self, event: dict[str, Any], status: str, **fields: Any) -> Outcome:
        occurred = event["occurred_at"]
        return Outcome(
            event_sequence=event["sequence"],
            source=event["source"],
            event_id=event["event_id"],
            posting_key=posting_key(event["source"], event["event_id"]),
            status=status,
            amount_cents=event["amount_cents"],
            currency=event["currency"],
            occurred_on=occurred.date().isoformat() if isinstance(occurred, datetime) else str(occurred),
            **fields,
        )

    # -- the steps -----------------------------------------------------------------------------------

    def decided(self, event: dict[str, Any]) -> Outcome | None:
        """The final outcome of an event decided by an earlier run, so a re-run calls nobody."""
        key = posting_key(event["source"], event["event_id"])
        row = self.ledger_row(key)
        return self._replay(event, key, "") if row and row["status"] in TERMINAL else None

    def review(self, event: dict[str, Any], reason: str, detail: str, invoice: dict[str, Any] | None = None) -> Outcome:
        """Hand the event to a person; nothing is posted."""
        key = posting_key(event["source"], event["event_id"])
        token = self._claim(event, key, invoice)
        if token is None:
            return self._replay(event, key, "another run holds this event")
        return self._finish(event, self._decision(event, invoice, "needs_review", reason=reason, detail=detail), token=token)

    def _decision(self, event: dict[str, Any], invoice: dict[str, Any] | None, status: str, **fields: Any) -> Outcome:
        invoice = invoice or {}
        return self._outcome(
            event,
            status,
            customer_id=invoice.get("customer_id") or event.get("customer_id"),
            invoice_id=invoice.get("invoice_id") or event.get("invoice_id"),
            invoice_number=invoice.get("invoice_number") or event.get("invoice_number"),
            **fields,
        )

    def match(self, event: dict[str, Any]) -> Match:
        """The originating invoice, read fresh from the AR source (the warehouse copy may be hours old)."""
        if event.get("invoice_id"):
            try:
                (invoice,) = self.source.read_invoices([event["invoice_id"]], self.currency_of)
            except ARRecordNotFoundError:
                return Match(None, "unknown_invoice", f"no invoice {event['invoice_id']} at the AR source")
            if event.get("customer_id") and event["customer_id"] != invoice["customer_id"]:
                return Match(None, "ambiguous_invoice",
                             f"invoice {invoice['invoice_id']} belongs to another customer than the event names")
            if event.get("invoice_number") and event["invoice_number"] != invoice["invoice_number"]:
                return Match(None, "ambiguous_invoice",
                             f"invoice id and number disagree ({invoice['invoice_number']} vs {event['invoice_number']})")
            return Match(invoice)
        found = self.source.find_invoices(event["invoice_number"], event["customer_id"], self.currency_of)
        active = [i for i in found if i["is_active"]]
        if not found:
            return Match(None, "unknown_invoice",
                         f"no invoice {event['invoice_number']} for customer {event['customer_id']}")
        if len(active) > 1:
            return Match(None, "ambiguous_invoice",
                         f"{len(active)} active invoices numbered {event['invoice_number']} for this customer")
        return Match(active[0] if active else found[0])

    def post(self, event: dict[str, Any], invoice: dict[str, Any]) -> Outcome:
        key = posting_key(event["source"], event["event_id"])
        row = self.ledger_row(key)
        if row is not None and row["status"] in TERMINAL:
            return self._replay(event, key, "")
        if row is not None and row["status"] == "outcome_unknown":
            return self._reconcile_unknown(event, invoice)
        token = self._claim(event, key, invoice)
        if token is None:
            return self._replay(event, key, "another run holds the reservation")
        return self._post_claimed(event, invoice, key, token)

    def post_reviewed(self, event: dict[str, Any], invoice: dict[str, Any], *, resolved_by: str) -> Outcome:
        """A person resolved the event's review item to `invoice`: post it through the same exactly-once path.

        The ledger row (needs_review, or left open by failed runs) is reopened as a fresh reservation under
        the same posting key, so the key search still finds a payment an earlier run may have landed.
        """
        key = posting_key(event["source"], event["event_id"])
        before = self.ledger_row(key)
        token = self._reopen(event, key, invoice)
        if token is None:
            return self._replay(event, key, "another run holds this event; try again after the lease")
        # An earlier run may have posted under this key to the invoice it had matched, of another customer.
        others = [before["customer_id"]] if before and before["customer_id"] not in (None, invoice["customer_id"]) else []
        return self._post_claimed(event, invoice, key, token, also_search=others,
                                  detail=f"posted by review, resolved by {resolved_by}")

    def settle_for_dismissal(self, event: dict[str, Any]) -> Outcome:
        """Make sure nothing will ever post this event, so its review item can be dismissed.

        `needs_review` when that is now certain; `posted` when our key turned up at the AR source (a run
        landed it after all: dismissing would hide real money); `pending` while a run holds the reservation.
        """
        key = posting_key(event["source"], event["event_id"])
        row = self.ledger_row(key)
        if row is not None and row["status"] in TERMINAL:
            return self._replay(event, key, "")
        if row is not None and row["customer_id"]:
            ours = [p for p in self._customer_payments(row["customer_id"]) if p["ref_number"] == key]
            if ours:
                token = self._reopen(event, key, None)
                if token is None:
                    return self._replay(event, key, "another run holds this event; try again after the lease")
                return self._finish(event, self._decision(event, row, "posted", received_payment_id=ours[0]["id"],
                                                          detail="found at the AR source by its key"), token=token)
        token = self._reopen(event, key, None)
        if token is None:
            return self._replay(event, key, "another run holds this event; try again after the lease")
        return self._finish(event, self._decision(event, row, "needs_review", reason="dismissed",
                                                  detail="dismissed in review; never to be posted"), token=token)

    def _reopen(self, event: dict[str, Any], key: str, invoice: dict[str, Any] | None) -> str | None:
        """Hold the event's ledger row for a person's decision: a claim token, or None while a run holds it.

        A needs_review or outcome_unknown row has no live holder (no run touches them), nor has a
        reservation older than the lease; a missing row (a run that never got as far) is claimed anew.
        """
        token, now = uuid.uuid4().hex, self._clock()
        expired = now - timedelta(seconds=self.policy.reservation_lease_s)
        values: dict[str, Any] = {"status": "reserved", "claim_token": token, "claimed_at": now}
        if invoice is not None:
            values.update(customer_id=invoice["customer_id"], invoice_id=invoice["invoice_id"],
                          invoice_number=invoice["invoice_number"])
        with self.warehouse.transaction() as conn:
            taken = conn.execute(
                payments_posted.update()
                .where(
                    payments_posted.c.posting_key == key,
                    sa.or_(
                        payments_posted.c.status.in_(("needs_review", "outcome_unknown")),
                        sa.and_(payments_posted.c.status == "reserved", payments_posted.c.claimed_at <= expired),
                    ),
                )
                .values(**values)
            ).rowcount
        if taken == 1:
            return token
        if self.ledger_row(key) is None:
            return self._claim(event, key, invoice)
        return None

    def _post_claimed(self, event: dict[str, Any], invoice: dict[str, Any], key: str, token: str, *,
                      also_search: Sequence[str] = (), detail: str | None = None) -> Outcome:
        """Post an event whose reservation this run holds: look for our key, then for the money, then post."""
        payments = self._customer_payments(invoice["customer_id"])
        ours = [p for p in payments if p["ref_number"] == key]
        for customer_id in also_search:
            ours += [p for p in self._customer_payments(customer_id) if p["ref_number"] == key]
        if ours:
            # A previous run posted and died before writing it down: the key at the source is the proof.
            return self._finish(event, self._decision(event, invoice, "posted", received_payment_id=ours[0]["id"],
                                                      detail="found at the AR source by its key"), token=token)
        already = self._already_recorded(event, invoice, payments)
        if already is not None:
            return self._finish(event, self._decision(event, invoice, "already_recorded", received_payment_id=already,
                                                      detail="the AR source already shows this money"), token=token)
        problem = self._refusal(event, invoice)
        if problem is not None:
            return self._finish(event, self._decision(event, invoice, "needs_review", reason=problem[0],
                                                      detail=problem[1]), token=token)
        payment = PaymentToRecord(
            customer_id=invoice["customer_id"],
            invoice_id=invoice["invoice_id"],
            amount_cents=event["amount_cents"],
            currency=event["currency"],
            payment_date=_event_date(event),
            method=event["method"],
            reference=key,
            description=f"AgentCollect {event['source']} payment event {event['event_id']}"[:200],
        )
        try:
            received = self.source.record_payment(payment)
        except AROutcomeUnknownError as exc:
            log.warning("posting %s: %s; reconciling by its key, never re-sending", key, exc)
            with self.warehouse.transaction() as conn:
                conn.execute(
                    payments_posted.update()
                    .where(payments_posted.c.posting_key == key, payments_posted.c.claim_token == token)
                    .values(status="outcome_unknown", detail=str(exc))
                )
            return self._reconcile_unknown(event, invoice)
        except ARTransportError:
            # Retried inside the client; raised only when nothing can have been written.
            self._release(key, token)
            raise
        except ARSourceError as exc:
            # An error envelope is a definite refusal: nothing was recorded.
            return self._finish(event, self._decision(event, invoice, "needs_review", reason="source_rejected",
                                                      detail=f"{exc.code}: {exc.message}"), token=token)
        due_after = max(invoice["amount_due_cents"] - event["amount_cents"], 0)
        return self._finish(event, self._decision(event, invoice, "posted", received_payment_id=str(received["id"]),
                                                  amount_due_after_cents=due_after, detail=detail), token=token)

    def _reconcile_unknown(self, event: dict[str, Any], invoice: dict[str, Any]) -> Outcome:
        key = posting_key(event["source"], event["event_id"])
        ours = [p for p in self._customer_payments(invoice["customer_id"]) if p["ref_number"] == key]
        if ours:
            return self._finish(event, self._decision(event, invoice, "posted", received_payment_id=ours[0]["id"],
                                                      detail="outcome-unknown write found by its key"),
                                token=None, from_status=("outcome_unknown",))
        with self.warehouse.transaction() as conn:
            conn.execute(
                payments_posted.update()
                .where(payments_posted.c.posting_key == key, payments_posted.c.status == "outcome_unknown")
                .values(reconcile_checks=payments_posted.c.reconcile_checks + 1)
            )
        row = self.ledger_row(key)
        if row and row["status"] == "outcome_unknown" and row["reconcile_checks"] >= self.policy.outcome_unknown_max_checks:
            return self._finish(
                event,
                self._decision(event, invoice, "needs_review", reason="outcome_unknown_not_found",
                               detail=f"a write timed out and its key was not found after {row['reconcile_checks']} "
                               f"checks; confirm in {self.source.display_name} before posting by hand"),
                token=None, from_status=("outcome_unknown",),
            )
        return self._outcome(event, "pending", customer_id=invoice["customer_id"], invoice_id=invoice["invoice_id"],
                             detail="outcome unknown; not found at the AR source yet")

    def _customer_payments(self, customer_id: str) -> list[dict[str, Any]]:
        rows, lines = [], defaultdict(list)
        for batch in self.source.received_payments_changed(None, self.currency_of, customer_id=customer_id):
            rows.extend(batch.rows)
            for line in batch.children:
                lines[line["received_payment_id"]].append(line)
        return [{**r, "id": r["received_payment_id"], "lines": lines[r["received_payment_id"]]} for r in rows]

    def _already_recorded(self, event: dict[str, Any], invoice: dict[str, Any], payments: list[dict]) -> str | None:
        """A payment on this invoice we did not post, same amount, dated within the window, not yet matched to
        another event: the money is already at the source (paid through its own link, or recorded by hand)."""
        with self.warehouse.engine.connect() as conn:
            claimed = set(
                conn.execute(
                    sa.select(payments_posted.c.received_payment_id).where(
                        payments_posted.c.status == "already_recorded",
                        payments_posted.c.received_payment_id.is_not(None),
                    )
                ).scalars()
            )
        window = timedelta(days=self.policy.match_window_days)
        when = _event_date(event)
        for payment in payments:
            if (payment["ref_number"] or "").startswith(KEY_PREFIX) or payment["id"] in claimed:
                continue
            if payment["payment_date"] is None or abs(payment["payment_date"] - when) > window:
                continue
            if any(line["invoice_id"] == invoice["invoice_id"] and line["amount_cents"] == event["amount_cents"]
                   for line in payment["lines"]):
                return payment["id"]
        return None

    @staticmethod
    def _refusal(event: dict[str, Any], invoice: dict[str, Any]) -> tuple[str, str] | None:
        if not invoice["is_active"]:
            return "invoice_inactive", f"invoice {invoice['invoice_number']} is voided or archived"
        if event["currency"] != invoice["currency"]:
            return "currency_mismatch", f"payment in {event['currency']}, invoice in {invoice['currency']}"
        due = invoice["amount_due_cents"] or 0
        if due <= 0:
            return "invoice_already_paid", f"invoice {invoice['invoice_number']} has nothing due"
        if event["amount_cents"] > due:
            return "overpayment", (
                f"payment {_money(event['amount_cents'], event['currency'])} exceeds the "
                f"{_money(due, invoice['currency'])} due"
            )
        return None

    # -- after posting ---------------------------------------------------------------------------------

    def refresh_invoices(self, invoice_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Re-read invoices and store them in the source's invoices table, so eligibility sees them paid now rather
        than at the next 4-hourly sync."""
        ids = sorted(set(invoice_ids))
        if not ids:
            return []
        rows = self.source.read_invoices(ids, self.currency_of)
        with self.warehouse.transaction() as conn:
            self.warehouse.upsert(conn, schema.ar_tables(self.source.name).invoices, rows)
        return rows

    def write_note(self, fact_key: str, customer_id: str, text: str) -> str | None:
        """Write `text` on the customer once per `fact_key`. Returns the note's id, or None when another
        run holds the fact."""
        token, now = uuid.uuid4().hex, self._clock()
        with self.warehouse.transaction() as conn:
            inserted = conn.execute(
                dialect_insert(conn, customer_notes)
                .values(fact_key=fact_key, customer_id=customer_id, message=text, status="reserved",
                        claim_token=token, claimed_at=now)
                .on_conflict_do_nothing(index_elements=["fact_key"])
            ).rowcount
            taken_over = 0
            if not inserted:
                taken_over = conn.execute(
                    customer_notes.update()
                    .where(customer_notes.c.fact_key == fact_key, customer_notes.c.status == "reserved",
                           customer_notes.c.claimed_at <= now - timedelta(seconds=self.policy.reservation_lease_s))
                    .values(claim_token=token, claimed_at=now)
                ).rowcount
            existing = conn.execute(sa.select(customer_notes).where(customer_notes.c.fact_key == fact_key)).first()
        if not inserted and not taken_over:
            return existing.message_id if existing is not None else None
        message_id = None
        if taken_over:
            # The previous writer may have reached the source before dying: look before writing again.
            for note in self.source.list_customer_notes(customer_id):
                if note.get("message") == existing.message:
                    message_id = str(note.get("id", ""))
                    break
        if message_id is None:
            message_id = self.source.write_customer_note(customer_id, existing.message)
        with self.warehouse.transaction() as conn:
            conn.execute(
                customer_notes.update()
                .where(customer_notes.c.fact_key == fact_key, customer_notes.c.claim_token == token)
                .values(status="written", message_id=message_id, written_at=self._clock())
            )
        return message_id


# -- notes -------------------------------------------------------------------------------------------------


def _money(cents: int, currency: str) -> str:
    return f"{currency} {from_minor_units(cents, currency):,}"


def _event_date(event: dict[str, Any]) -> date:
    occurred = event["occurred_at"]
    return occurred.date() if isinstance(occurred, datetime) else date.fromisoformat(str(occurred)[:10])


def _join(reason: str | None, detail: str | None) -> str | None:
    if reason and detail:
        return f"{reason}: {detail}"
    return reason or detail


def payment_note(outcome: Outcome, source_name: str) -> tuple[str, str] | None:
    """(fact key, text) of the customer note for an outcome, or None when there is nothing to tell.

    Notes are short facts a collector can act on; they never carry the payer's reference, card or bank
    numbers (the sender's `reference` stays in our table only).
    """
    if outcome.status not in ("posted", "already_recorded") or not outcome.customer_id:
        return None
    amount = _money(outcome.amount_cents, outcome.currency)
    invoice = outcome.invoice_number or outcome.invoice_id
    if outcome.status == "posted":
        text = (f"AgentCollect: payment of {amount} received {outcome.occurred_on} for {invoice}, "
                f"posted to {source_name} (ref {outcome.posting_key})")
        if outcome.amount_due_after_cents:
            text += f"; {_money(outcome.amount_due_after_cents, outcome.currency)} remains due"
        else:
            text += "; collection stopped"
    else:
        text = (f"AgentCollect: payment of {amount} received {outcome.occurred_on} for {invoice} was already "
                f"recorded in {source_name}; nothing posted again; collection stopped")
    return f"payment:{outcome.posting_key}", text
