"""People decide what the machine must not: the `needs_review` queue, listed, resolved or dismissed. No Dagster.

Resolving posts the event to an invoice a person chose, through PaymentPoster's exactly-once path (same
posting key, same key search at Bill.com, same refusals); dismissing makes certain the event is never
posted. Either way the item records who decided, why and when, and is never deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from agentcollect_pipeline.ar_source.base import ARRecordNotFoundError
from agentcollect_pipeline.payments.posting import Outcome, PaymentPoster, load_events, payment_note
from agentcollect_pipeline.warehouse.payments_schema import needs_review, payment_events, payments_posted
from agentcollect_pipeline.warehouse.store import Warehouse


class ReviewError(Exception):
    """The decision cannot be taken (unknown or closed item, unknown invoice, a run holds the event)."""


@dataclass(frozen=True)
class Decision:
    review_id: int
    resolution: str  # posted | already_recorded | dismissed
    outcome: Outcome
    note_id: str | None = None


def list_items(warehouse: Warehouse, *, include_resolved: bool = False) -> list[dict[str, Any]]:
    """Review items with their event (amount in minor units + currency) and ledger status, oldest first."""
    query = (
        sa.select(
            needs_review,
            payment_events.c.amount_cents,
            payment_events.c.currency,
            payment_events.c.occurred_at,
            payment_events.c.invoice_id,
            payment_events.c.invoice_number,
            payment_events.c.customer_id,
            payments_posted.c.status.label("ledger_status"),
            payments_posted.c.received_payment_id,
        )
        .select_from(
            needs_review.join(payment_events, payment_events.c.sequence == needs_review.c.event_sequence).outerjoin(
                payments_posted, payments_posted.c.posting_key == needs_review.c.posting_key
            )
        )
        .order_by(needs_review.c.review_id)
    )
    if not include_resolved:
        query = query.where(needs_review.c.resolved_at.is_(None))
    with warehouse.engine.connect() as conn:
        return [r._asdict() for r in conn.execute(query)]


def _open_item(warehouse: Warehouse, review_id: int) -> dict[str, Any]:
    with warehouse.engine.connect() as conn:
        row = conn.execute(sa.select(needs_review).where(needs_review.c.review_id == review_id)).first()
    if row is None:
        raise ReviewError(f"no review item {review_id}")
    if row.resolved_at is not None:
        raise ReviewError(
            f"review item {review_id} was already {row.resolution} by {row.resolved_by} at {row.resolved_at:%Y-%m-%d %H:%M} UTC"
        )
    return row._asdict()


def _event_of(warehouse: Warehouse, item: dict[str, Any]) -> dict[str, Any]:
    events = load_events(warehouse, [f"{item['source']}:{item['event_id']}"])
    if not events:
        raise ReviewError(f"review item {item['review_id']}: its payment event is missing")
    return events[0]


def _close(warehouse: Warehouse, review_id: int, resolution: str, by: str, why: str, now: datetime) -> None:
    with warehouse.transaction() as conn:
        changed = conn.execute(
            needs_review.update()
            .where(needs_review.c.review_id == review_id, needs_review.c.resolved_at.is_(None))
            .values(resolved_at=now, resolved_by=by, resolution=resolution, resolution_note=why)
        ).rowcount
    if changed != 1:
        raise ReviewError(f"review item {review_id} was closed by someone else meanwhile")


def _who_and_why(by: str, why: str) -> tuple[str, str]:
    by, why = (by or "").strip(), (why or "").strip()
    if not by or not why:
        raise ReviewError("say who decides (--by) and why (--why): the decision is recorded")
    return by, why


def resolve_to_invoice(
    poster: PaymentPoster, review_id: int, invoice_id: str, *, by: str, why: str, now: datetime | None = None
) -> Decision:
    """Post the item's event to `invoice_id` exactly once, note the customer, refresh the invoice.

    The usual refusals still hold (overpayment, currency mismatch, nothing due, inactive invoice): then
    nothing is posted, the item stays open, and ReviewError says why, so the person can choose again.
    """
    by, why = _who_and_why(by, why)
    warehouse = poster.warehouse
    item = _open_item(warehouse, review_id)
    event = _event_of(warehouse, item)
    try:
        (invoice,) = poster.source.read_invoices([invoice_id], poster.currency_of)
    except ARRecordNotFoundError:
        raise ReviewError(f"no invoice {invoice_id} at the AR source") from None
    outcome = poster.post_reviewed(event, invoice, resolved_by=by)
    if outcome.status == "pending":
        raise ReviewError(f"review item {review_id}: {outcome.detail}")
    if outcome.status == "needs_review":
        raise ReviewError(f"not posted to {invoice['invoice_number'] or invoice_id}: {outcome.reason}: {outcome.detail}")
    # The item closes only once the note is written too: if the note fails, the same command run again
    # replays the posted outcome from the ledger (nothing is posted twice) and writes the note then.
    try:
        refreshed = poster.refresh_invoices([outcome.invoice_id]) if outcome.invoice_id else []
        if outcome.amount_due_after_cents is None and refreshed:
            # A replayed outcome does not know the balance left; without it a partial payment's note
            # would claim collection stopped.
            outcome.amount_due_after_cents = refreshed[0]["amount_due_cents"]
        note = payment_note(outcome, poster.source.display_name)
        note_id = poster.write_note(note[0], outcome.customer_id, note[1]) if note is not None else None
    except Exception as exc:
        raise ReviewError(
            f"{outcome.status} (payment {outcome.received_payment_id}), but the customer note or the invoice "
            f"refresh failed ({type(exc).__name__}: {exc}); the item stays open: run the same command again"
        ) from exc
    _close(warehouse, review_id, outcome.status, by, why, now or datetime.now(UTC))
    return Decision(review_id, outcome.status, outcome, note_id)


def dismiss(poster: PaymentPoster, review_id: int, *, by: str, why: str, now: datetime | None = None) -> Decision:
    """Close the item without posting, after making certain no run can still post the event."""
    by, why = _who_and_why(by, why)
    warehouse = poster.warehouse
    item = _open_item(warehouse, review_id)
    event = _event_of(warehouse, item)
    outcome = poster.settle_for_dismissal(event)
    if outcome.status == "pending":
        raise ReviewError(f"review item {review_id}: {outcome.detail}")
    if outcome.status in ("posted", "already_recorded"):
        raise ReviewError(
            f"review item {review_id}: the event is {outcome.status} at the AR source "
            f"(ReceivedPay {outcome.received_payment_id}); dismissing would hide real money. "
            f"Resolve it with --post-to {outcome.invoice_id} to record that."
        )
    _close(warehouse, review_id, "dismissed", by, why, now or datetime.now(UTC))
    return Decision(review_id, "dismissed", outcome)
