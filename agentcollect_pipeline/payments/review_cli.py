"""`agentcollect payments review [resolve|dismiss]`: the needs_review queue from a terminal."""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager

from agentcollect_pipeline.money import MoneyError, from_minor_units


def _amount(cents: int | None, currency: str | None) -> str:
    if cents is None or not currency:
        return "?"
    try:
        return f"{currency} {from_minor_units(cents, currency):,}"
    except MoneyError:
        return f"{cents} minor units {currency}"


@contextmanager
def _poster():
    """A PaymentPoster bound exactly as the code location binds its resources (EnvVar secrets included)."""
    import dagster as dg

    from agentcollect_pipeline.definitions import build_resources
    from agentcollect_pipeline.payments.posting import PaymentPoster

    wanted = ("warehouse", "ar_source", "ar_settings", "payment_settings")
    resources = build_resources()
    with dg.build_resources({name: resources[name] for name in wanted}) as bound:
        yield PaymentPoster(
            bound.warehouse.get_warehouse(),
            bound.ar_source.get_source(bound.ar_settings),
            policy=bound.payment_settings.policy(),
        )


def _list(database_url: str, include_resolved: bool) -> int:
    from agentcollect_pipeline.payments.review import list_items
    from agentcollect_pipeline.resources import _warehouse

    items = list_items(_warehouse(database_url), include_resolved=include_resolved)
    if not items:
        print("no open review items" if not include_resolved else "no review items")
        return 0
    rows = [("ID", "CREATED (UTC)", "REASON", "EVENT", "AMOUNT", "INVOICE", "CUSTOMER", "STATE", "DETAIL")]
    for item in items:
        invoice = " / ".join(v for v in (item["invoice_id"], item["invoice_number"]) if v) or "-"
        state = "open"
        if item["resolved_at"] is not None:
            state = f"{item['resolution']} by {item['resolved_by']} {item['resolved_at']:%Y-%m-%d %H:%M}: {item['resolution_note']}"
        rows.append((
            str(item["review_id"]),
            f"{item['created_at']:%Y-%m-%d %H:%M}",
            item["reason"],
            f"{item['source']}:{item['event_id']}",
            _amount(item["amount_cents"], item["currency"]),
            invoice,
            item["customer_id"] or "-",
            state,
            item["detail"] or "",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def review_command(args: argparse.Namespace, database_url: str) -> int:
    if args.review_command is None:
        return _list(database_url, args.all)

    import dagster as dg

    from agentcollect_pipeline.payments.review import ReviewError, dismiss, resolve_to_invoice

    try:
        with _poster() as poster:
            if args.review_command == "resolve":
                decision = resolve_to_invoice(poster, args.review_id, args.post_to, by=args.by, why=args.why)
            else:
                decision = dismiss(poster, args.review_id, by=args.by, why=args.why)
    except ReviewError as exc:
        print(f"review item {args.review_id}: {exc}", file=sys.stderr)
        return 1
    except dg.DagsterInvalidConfigError as exc:
        # Names the missing variable (e.g. BILLCOM_PASSWORD), never a value.
        print(f"cannot reach Bill.com: {exc}", file=sys.stderr)
        return 2
    outcome = decision.outcome
    if decision.resolution == "dismissed":
        print(f"review item {decision.review_id} dismissed by {args.by}; the payment will not be posted")
        return 0
    invoice = outcome.invoice_number or outcome.invoice_id
    print(
        f"review item {decision.review_id} resolved by {args.by}: {_amount(outcome.amount_cents, outcome.currency)} "
        f"{outcome.status} on {invoice} (ReceivedPay {outcome.received_payment_id}, ref {outcome.posting_key})"
    )
    return 0
