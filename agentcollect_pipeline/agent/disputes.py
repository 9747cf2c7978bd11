"""Disputes for finance to review: listed with what the customer wrote, and resolved by a person.

A dispute reply opens a `disputes` row per invoice (agent/effects.py); while it is open the invoice is not
collected (eligibility reason `disputed`). Finance reads the list (`agentcollect disputes list`, and the
`customer_replies` asset's metadata) and closes each one with an outcome, who and why
(`agentcollect disputes resolve`): `rejected` (the invoice stands: collection resumes at the next cycle) or
`upheld` (the customer is right: correct or void the invoice in the AR system, which the sync then reads).
Closing writes `disputes.closed_at` and a `dispute_resolutions` row in one transaction; the customer note
"dispute … closed" follows from the status notes.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from agentcollect_pipeline.money import format_money
from agentcollect_pipeline.settings import configured_ar_source
from agentcollect_pipeline.warehouse import collections_schema as cs
from agentcollect_pipeline.warehouse import schema
from agentcollect_pipeline.warehouse.agent_schema import customer_replies, dispute_resolutions
from agentcollect_pipeline.warehouse.store import Warehouse

OUTCOMES = ("upheld", "rejected")


def review_list(store: Warehouse, *, include_closed: bool = False, limit: int | None = None) -> list[dict[str, Any]]:
    """Disputes oldest first: invoice number, customer, amount due, reason, the customer's words, resolution."""
    tables = schema.ar_tables(configured_ar_source())
    invoices, customers, d = tables.invoices, tables.customers, cs.disputes
    query = (
        sa.select(d.c.dispute_id, d.c.invoice_id, d.c.reason, d.c.opened_at, d.c.closed_at,
                  invoices.c.invoice_number, invoices.c.customer_id, invoices.c.amount_due_cents, invoices.c.currency,
                  sa.func.coalesce(customers.c.company_name, customers.c.name).label("customer_name"),
                  dispute_resolutions.c.outcome, dispute_resolutions.c.resolved_by, dispute_resolutions.c.why)
        .select_from(d.outerjoin(invoices, invoices.c.invoice_id == d.c.invoice_id)
                     .outerjoin(customers, customers.c.customer_id == invoices.c.customer_id)
                     .outerjoin(dispute_resolutions, dispute_resolutions.c.dispute_id == d.c.dispute_id))
        .order_by(d.c.opened_at, d.c.dispute_id)
    )
    if not include_closed:
        query = query.where(d.c.closed_at.is_(None))
    if limit:
        query = query.limit(limit)
    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
        for row in rows:
            # The reply that opened it: same customer, same moment (effects writes both with received_at).
            row["customer_wrote"] = conn.execute(
                sa.select(customer_replies.c.body).where(
                    customer_replies.c.customer_id == row["customer_id"], customer_replies.c.intent == "dispute",
                    customer_replies.c.received_at == row["opened_at"]).limit(1)).scalar()
            due = row["amount_due_cents"]
            row["amount_due"] = format_money(int(due), row["currency"]) if due is not None and row["currency"] else ""
    return rows


def resolve(store: Warehouse, dispute_id: str, outcome: str, resolved_by: str, why: str,
            now: datetime | None = None) -> bool:
    """Close an open dispute with its outcome, who and why. False when no open dispute has that id."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}")
    if not resolved_by.strip() or not why.strip():
        raise ValueError("resolving a dispute needs who (--by) and why (--why)")
    now = now or datetime.now(UTC)
    d = cs.disputes
    with store.transaction() as conn:
        closed = conn.execute(d.update().where(d.c.dispute_id == dispute_id.strip(), d.c.closed_at.is_(None))
                              .values(closed_at=now)).rowcount
        if closed != 1:
            return False
        conn.execute(dispute_resolutions.insert(), [{
            "dispute_id": dispute_id.strip(), "outcome": outcome, "resolved_by": resolved_by.strip(),
            "why": why.strip(), "resolved_at": now}])
    return True


# -- `agentcollect disputes …` ------------------------------------------------------------------------


def add_disputes_parser(commands) -> None:
    disputes = commands.add_parser("disputes", help="disputes opened by customer replies: list and resolve them")
    sub = disputes.add_subparsers(dest="disputes_command", required=True)
    listing = sub.add_parser("list", help="open disputes, oldest first, with what the customer wrote")
    listing.add_argument("--all", action="store_true", help="closed ones too, with outcome, who and why")
    done = sub.add_parser("resolve", help="close a dispute: rejected (collect again) or upheld (fix the invoice)")
    done.add_argument("dispute_id", metavar="ID", help="dsp_… from `agentcollect disputes list`")
    done.add_argument("--outcome", required=True, choices=OUTCOMES)
    done.add_argument("--by", required=True, help="who decides (recorded)")
    done.add_argument("--why", required=True, help="why (recorded)")


def disputes_command(args: argparse.Namespace, database_url: str) -> int:
    from agentcollect_pipeline.resources import _warehouse

    store = _warehouse(database_url)
    if args.disputes_command == "list":
        rows = review_list(store, include_closed=args.all)
        if not rows:
            print("no disputes" if args.all else "no open disputes")
            return 0
        for row in rows:
            state = (f"closed {row['closed_at']:%Y-%m-%d} {row['outcome']} by {row['resolved_by']}: {row['why']}"
                     if row["closed_at"] else "open")
            wrote = " ".join(str(row["customer_wrote"] or "").split())
            print(f"{row['dispute_id']}  {row['invoice_number'] or row['invoice_id']}  "
                  f"{row['customer_name'] or row['customer_id'] or '?'}  {row['amount_due']}  "
                  f"opened {row['opened_at']:%Y-%m-%d}  reason {row['reason'] or '-'}  {state}"
                  + (f"\n    customer wrote: {wrote[:160]}" if wrote else ""))
        return 0
    try:
        if not resolve(store, args.dispute_id, args.outcome, args.by, args.why):
            print(f"no open dispute {args.dispute_id}", file=sys.stderr)
            return 1
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    then = ("collection of the invoice resumes at the next cycle" if args.outcome == "rejected" else
            "correct or void the invoice in the AR system: collection resumes on what the next sync reads")
    print(f"dispute {args.dispute_id} closed ({args.outcome}); recorded who and why; {then}")
    return 0
