"""Invoices paid in Bill.com itself (its own payment link, or recorded by hand) while we were collecting them.

No Dagster here; the `invoices_paid_in_billcom` asset calls it after billcom_invoices is fresh.

"While we were collecting" is decided from the case register (`cases`, kept by the collection_cases
asset), because the eligibility snapshot is rewritten every cycle and would forget the invoice the moment
it is paid. The rule: Bill.com shows the invoice active, with nothing due; it was overdue on the day
it was last updated (when it turned paid); a case for its customer and currency was open at that
moment (opened before it, closed after it or still open); and no payment event of ours was posted or
found already recorded on it (those get their own payment note). Each such invoice is recorded once in
`invoices_paid_in_billcom` and gets one note, "paid in Bill.com", through PaymentPoster.write_note.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from agentcollect_pipeline.money import from_minor_units
from agentcollect_pipeline.warehouse import collections_schema as cs
from agentcollect_pipeline.warehouse import schema
from agentcollect_pipeline.warehouse.payments_schema import (
    customer_notes,
    invoices_paid_in_billcom,
    payments_posted,
)
from agentcollect_pipeline.warehouse.store import Warehouse, dialect_insert

NOTE_PREFIX = "paid_in_billcom:"


def note_text(row: dict[str, Any], timezone: str, source_name: str) -> str:
    amount = f"{row['currency']} {from_minor_units(row['amount_cents'], row['currency']):,}"
    seen = row["paid_seen_at"].astimezone(ZoneInfo(timezone)).date().isoformat()
    invoice = row["invoice_number"] or row["invoice_id"]
    return f"AgentCollect: invoice {invoice} ({amount}) paid in {source_name}, seen {seen}; collection stopped"


def detect(warehouse: Warehouse, tables: schema.ARTables, *, timezone: str, now: datetime) -> list[dict[str, Any]]:
    """Record the invoices newly found paid at the AR source while in collection; returns the new rows."""
    inv, cases, seen = tables.invoices, cs.cases, invoices_paid_in_billcom
    ours = sa.exists().where(
        payments_posted.c.invoice_id == inv.c.invoice_id,
        payments_posted.c.status.in_(("posted", "already_recorded")),
    )
    recorded = sa.exists().where(seen.c.invoice_id == inv.c.invoice_id)
    query = (
        sa.select(
            inv.c.invoice_id, inv.c.invoice_number, inv.c.customer_id, inv.c.currency, inv.c.amount_cents,
            inv.c.due_date, inv.c.updated_at, cases.c.case_id, cases.c.opened_at,
        )
        .select_from(inv.join(cases, sa.and_(cases.c.customer_id == inv.c.customer_id, cases.c.currency == inv.c.currency)))
        .where(
            inv.c.is_active.is_(True),
            inv.c.amount_due_cents <= 0,
            inv.c.amount_cents > 0,
            inv.c.updated_at.is_not(None),
            inv.c.due_date.is_not(None),
            cases.c.opened_at <= inv.c.updated_at,
            sa.or_(cases.c.closed_at.is_(None), cases.c.closed_at >= inv.c.updated_at),
            ~ours,
            ~recorded,
        )
        .order_by(inv.c.invoice_id, cases.c.opened_at)
    )
    zone = ZoneInfo(timezone)
    with warehouse.engine.connect() as conn:
        candidates = [r._asdict() for r in conn.execute(query)]
    rows: dict[str, dict[str, Any]] = {}
    for c in candidates:
        # Overdue when it turned paid: an invoice not yet due was never chased, so there is nothing to stop.
        if c["invoice_id"] in rows or c["due_date"] >= c["updated_at"].astimezone(zone).date():
            continue
        rows[c["invoice_id"]] = {
            "invoice_id": c["invoice_id"],
            "invoice_number": c["invoice_number"],
            "customer_id": c["customer_id"],
            "currency": c["currency"],
            "amount_cents": c["amount_cents"],
            "paid_seen_at": c["updated_at"],
            "detected_at": now,
            "case_id": c["case_id"],
            "note_fact_key": NOTE_PREFIX + c["invoice_id"],
        }
    if not rows:
        return []
    inserted = []
    with warehouse.transaction() as conn:
        for row in rows.values():
            # Two runs may detect the same invoice at once: the primary key keeps one, and only the
            # winner reports it as new.
            if conn.execute(dialect_insert(conn, seen).values(**row).on_conflict_do_nothing(index_elements=["invoice_id"])).rowcount:
                inserted.append(row)
    return inserted


def unnoted(warehouse: Warehouse) -> list[dict[str, Any]]:
    """Recorded invoices whose note is not written yet (new ones, or a write that failed last time)."""
    seen = invoices_paid_in_billcom
    query = (
        sa.select(seen)
        .select_from(seen.outerjoin(customer_notes, customer_notes.c.fact_key == seen.c.note_fact_key))
        .where(sa.or_(customer_notes.c.status.is_(None), customer_notes.c.status != "written"))
        .order_by(seen.c.detected_at, seen.c.invoice_id)
    )
    with warehouse.engine.connect() as conn:
        return [r._asdict() for r in conn.execute(query)]


def write_notes(
    rows: list[dict[str, Any]], write_note: Callable[[str, str, str], str | None], timezone: str, source_name: str
) -> tuple[list[str], list[str]]:
    """(invoice ids noted, 'invoice: error' for failures). One failure does not stop the others."""
    done, failed = [], []
    for row in rows:
        try:
            write_note(row["note_fact_key"], row["customer_id"], note_text(row, timezone, source_name))
        except Exception as exc:  # the row stays unnoted and the next materialization tries again
            failed.append(f"{row['invoice_id']}: {type(exc).__name__}: {exc}")
            continue
        done.append(row["invoice_id"])
    return done, failed
