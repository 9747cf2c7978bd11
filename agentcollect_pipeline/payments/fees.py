"""The success-only fee: which collected money is ours to bill, and how much. No Dagster here.

Rule (README "Fee ledger"): a payment line — money Bill.com shows applied to an invoice, or a payment we
posted that the sync has not brought back yet — is attributed to AgentCollect when

1. the invoice was overdue on the payment date (due date before it), and
2. a collection case for the invoice's customer and currency covers the payment date: opened on or
   before it, and last active (`cases.last_seen_at`) no more than `window_days` before it.

The case stands in for "our outreach" until outreach attempts are recorded: a case is open exactly while
its invoices are eligible to be chased, and `last_seen_at` is the last cycle that chased them. When the
outreach lane lands, the case's dates are replaced by the invoice's first and last outreach attempt.

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

from agentcollect_pipeline.warehouse import collections_schema as cs
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
    timezone: str  # the organisation's: case timestamps become calendar days there, like payment dates


def _payment_lines(warehouse: Warehouse) -> list[dict[str, Any]]:
    lines, paid, inv = schema.billcom_received_payment_lines, schema.billcom_received_payments, schema.billcom_invoices
    synced = (
        sa.select(
            (sa.literal("billcom:") + lines.c.invoice_pay_id).label("line_key"),
            lines.c.received_payment_id,
            lines.c.invoice_id,
            lines.c.amount_cents,
            lines.c.currency,
            paid.c.payment_date.label("paid_on"),
            sa.func.coalesce(inv.c.customer_id, paid.c.customer_id).label("customer_id"),
            inv.c.invoice_number,
            inv.c.due_date,
            sa.literal("billcom").label("source"),
        )
        .select_from(
            lines.join(paid, paid.c.received_payment_id == lines.c.received_payment_id).outerjoin(
                inv, inv.c.invoice_id == lines.c.invoice_id
            )
        )
        .where(lines.c.amount_cents > 0, paid.c.payment_date.is_not(None), lines.c.invoice_id.is_not(None))
    )
    # Our own postings count from the moment Bill.com gave us its id, not from the next sync.
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


def _cases(warehouse: Warehouse, zone: ZoneInfo) -> dict[tuple[str, str], list[dict[str, Any]]]:
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    with warehouse.engine.connect() as conn:
        for r in conn.execute(sa.select(cs.cases).order_by(cs.cases.c.opened_at, cs.cases.c.case_id)):
            by_key[(r.customer_id, r.currency)].append(
                {
                    "case_id": r.case_id,
                    "opened_on": r.opened_at.astimezone(zone).date(),
                    "last_active_on": r.last_seen_at.astimezone(zone).date(),
                }
            )
    return by_key


def compute(warehouse: Warehouse, rule: FeeRule, now: datetime) -> list[dict[str, Any]]:
    """The fee_ledger rows: attributed payment lines only, oldest payment first."""
    zone = ZoneInfo(rule.timezone)
    window = timedelta(days=rule.window_days)
    cases = _cases(warehouse, zone)
    ledger = []
    for line in _payment_lines(warehouse):
        paid_on: date = line["paid_on"]
        due: date | None = line["due_date"]
        if due is None or due >= paid_on or line["customer_id"] is None:
            continue
        for case in cases.get((line["customer_id"], line["currency"]), []):
            until = case["last_active_on"] + window
            if case["opened_on"] <= paid_on <= until:
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
                        "case_id": case["case_id"],
                        "attributed_from": case["opened_on"],
                        "attributed_until": until,
                        "source": line["source"],
                        "computed_at": now,
                    }
                )
                break  # the earliest case covering the payment takes it: a line is billed once
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
