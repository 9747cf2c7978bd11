"""The success-only fee: which collected money is ours to bill, and how much. No Dagster here.

Rule (README "Fee ledger"): a payment line — money Bill.com shows applied to an invoice, or a payment we
posted that the sync has not brought back yet — is attributed to AgentCollect when

1. the invoice was overdue on the payment date (due date before it), and
2. our outreach named that invoice before the payment: the payment date lies between the first contact
   about it and `window_days` after the last one. A contact is an outreach attempt that reached, or may
   have reached, the debtor (sent, delivered, opened, a call placed, or unconfirmed — which we count as
   sent); rejected, cancelled, failed, bounced and undelivered attempts reached nobody and earn nothing.

Money: integer minor units plus currency, never float. fee = amount x percent / 100, computed in Decimal
and rounded once per line, half-even (banker's rounding: exact halves go to the even minor unit, so
rounding does not drift one way over many lines), to the currency's minor unit. Totals are sums of the
rounded lines, so the ledger adds up to what is invoiced.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from agentcollect_pipeline.warehouse import outreach_schema as os_
from agentcollect_pipeline.warehouse import schema
from agentcollect_pipeline.warehouse.payments_schema import fee_ledger, payment_events, payments_posted
from agentcollect_pipeline.warehouse.store import Warehouse


def parse_percent(text: str) -> Decimal:
    """A percentage as an exact decimal string ("10", "12.5"); refuses floats' cousins and nonsense."""
    try:
        percent = Decimal(str(text).strip())
    except InvalidOperation:
        raise ValueError(f"fee percent {text!r} is not a decimal number") from None
    if not percent.is_finite() or not Decimal(0) <= percent <= Decimal(100):
        raise ValueError(f"fee percent {text!r} must be between 0 and 100")
    return percent


def fee_cents(amount_cents: int, percent: Decimal) -> int:
    """The fee on `amount_cents` minor units, in minor units, rounded half-even."""
    return int((Decimal(int(amount_cents)) * percent / Decimal(100)).to_integral_value(rounding=ROUND_HALF_EVEN))


@dataclass(frozen=True)
class FeeRule:
    percent: Decimal
    window_days: int
    timezone: str  # the organisation's: contact timestamps become calendar days there, like payment dates


def _payment_lines(warehouse: Warehouse, tables: schema.ARTables) -> list[dict[str, Any]]:
    lines, paid, inv = tables.received_payment_lines, tables.received_payments, tables.invoices
    synced = (
        sa.select(
            (sa.literal(f"{tables.source}:") + lines.c.invoice_pay_id).label("line_key"),
            lines.c.received_payment_id,
            lines.c.invoice_id,
            lines.c.amount_cents,
            lines.c.currency,
            paid.c.payment_date.label("paid_on"),
            sa.func.coalesce(inv.c.customer_id, paid.c.customer_id).label("customer_id"),
            inv.c.invoice_number,
            inv.c.due_date,
            sa.literal(tables.source).label("source"),
        )
        .select_from(
            lines.join(paid, paid.c.received_payment_id == lines.c.received_payment_id).outerjoin(
                inv, inv.c.invoice_id == lines.c.invoice_id
            )
        )
        .where(lines.c.amount_cents > 0, paid.c.payment_date.is_not(None), lines.c.invoice_id.is_not(None))
    )
    # Our own postings count from the moment the source gave us its id, not from the next sync.
    not_synced = ~sa.exists().where(paid.c.received_payment_id == payments_posted.c.received_payment_id)
    posted = (
        sa.select(
            (sa.literal("posted:") + payments_posted.c.posting_key).label("line_key"),
            payments_posted.c.received_payment_id,
            payments_posted.c.invoice_id,
            payments_posted.c.amount_cents,
            payments_posted.c.currency,
            payment_events.c.occurred_at,
            payments_posted.c.customer_id,
            sa.func.coalesce(inv.c.invoice_number, payments_posted.c.invoice_number).label("invoice_number"),
            inv.c.due_date,
        )
        .select_from(
            payments_posted.join(payment_events, payment_events.c.sequence == payments_posted.c.event_sequence)
            .outerjoin(inv, inv.c.invoice_id == payments_posted.c.invoice_id)
        )
        .where(payments_posted.c.status == "posted", payments_posted.c.received_payment_id.is_not(None), not_synced)
    )
    with warehouse.engine.connect() as conn:
        rows = [r._asdict() for r in conn.execute(synced)]
        for r in conn.execute(posted):
            row = r._asdict()
            # The date we posted with (RecordARPayment's paymentDate) is the event's UTC date.
            row["paid_on"] = row.pop("occurred_at").date()
            row["source"] = "agentcollect"
            rows.append(row)
    return rows


CONTACT_STATUSES = ("sent", "delivered", "opened", "completed", "no-answer", "busy", "unconfirmed")


def _contact_windows(warehouse: Warehouse, zone: ZoneInfo) -> dict[str, dict[str, Any]]:
    """invoice id -> {case_id, first_on, last_on}: the calendar days (org timezone) of the first and the last
    outreach attempt that named the invoice and may have reached the debtor."""
    attempts = os_.outreach_attempts
    windows: dict[str, dict[str, Any]] = {}
    with warehouse.engine.connect() as conn:
        rows = conn.execute(
            sa.select(attempts.c.case_id, attempts.c.invoice_ids, attempts.c.sent_at, attempts.c.reserved_at)
            .where(attempts.c.status.in_(CONTACT_STATUSES))
            .order_by(attempts.c.reserved_at, attempts.c.attempt_id)
        )
        for case_id, invoice_ids, sent_at, reserved_at in rows:
            day = (sent_at or reserved_at).astimezone(zone).date()
            for invoice_id in filter(None, (i.strip() for i in invoice_ids.split(","))):
                window = windows.setdefault(invoice_id, {"case_id": case_id, "first_on": day, "last_on": day})
                window["first_on"] = min(window["first_on"], day)
                window["last_on"] = max(window["last_on"], day)
    return windows


def compute(warehouse: Warehouse, tables: schema.ARTables, rule: FeeRule, now: datetime) -> list[dict[str, Any]]:
    """The fee_ledger rows: attributed payment lines only, oldest payment first."""
    zone = ZoneInfo(rule.timezone)
    window = timedelta(days=rule.window_days)
    contacts = _contact_windows(warehouse, zone)
    ledger = []
    for line in _payment_lines(warehouse, tables):
        paid_on: date = line["paid_on"]
        due: date | None = line["due_date"]
        contact = contacts.get(line["invoice_id"])
        if due is None or due >= paid_on or line["customer_id"] is None or contact is None:
            continue
        until = contact["last_on"] + window
        if not contact["first_on"] <= paid_on <= until:
            continue
        ledger.append(
            {
                "line_key": line["line_key"],
                "received_payment_id": line["received_payment_id"],
                "invoice_id": line["invoice_id"],
                "invoice_number": line["invoice_number"],
                "customer_id": line["customer_id"],
                "currency": line["currency"],
                "paid_on": paid_on,
                "amount_cents": int(line["amount_cents"]),
                "fee_percent": format(rule.percent, "f"),
                "fee_cents": fee_cents(line["amount_cents"], rule.percent),
                "case_id": contact["case_id"],
                "attributed_from": contact["first_on"],
                "attributed_until": until,
                "source": line["source"],
                "computed_at": now,
            }
        )
    return sorted(ledger, key=lambda r: (r["paid_on"], r["line_key"]))


def rewrite(warehouse: Warehouse, rows: list[dict[str, Any]]) -> None:
    """Replace the ledger in one transaction (DELETE + insert; never dropped, so finance's views survive)."""
    with warehouse.transaction() as conn:
        conn.execute(fee_ledger.delete())
        if rows:
            conn.execute(fee_ledger.insert(), rows)


def totals(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """{currency: {"collected_cents", "fee_cents", "lines"}} — integer sums of the rounded lines."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"collected_cents": 0, "fee_cents": 0, "lines": 0})
    for row in rows:
        t = out[row["currency"]]
        t["collected_cents"] += row["amount_cents"]
        t["fee_cents"] += row["fee_cents"]
        t["lines"] += 1
    return dict(out)
