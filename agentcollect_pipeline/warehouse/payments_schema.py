"""Tables of the payments lane (issue 6), on the same `schema.metadata` so ensure_schema() creates them.

Every table here is a ledger: rows are appended under a unique key and, for the two claim ledgers, move
once from a claimed state to a final one. Nothing is ever deleted, so a re-run can always see what an
earlier (possibly crashed) run decided.
"""

from __future__ import annotations

import sqlalchemy as sa

from agentcollect_pipeline.warehouse.schema import UTCDateTime, metadata

# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
_SEQUENCE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

payment_events = sa.Table(
    "payment_events",
    metadata,
    sa.Column("sequence", _SEQUENCE, primary_key=True, autoincrement=True, comment="arrival order; the sensor cursor"),
    sa.Column("source", sa.Text, nullable=False, comment="webhook | csv"),
    sa.Column("event_id", sa.Text, nullable=False, comment="the sender's id; replays of it are ignored"),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("occurred_at", UTCDateTime, nullable=False),
    sa.Column("amount_cents", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("invoice_id", sa.Text),
    sa.Column("invoice_number", sa.Text),
    sa.Column("customer_id", sa.Text),
    sa.Column("method", sa.Text, nullable=False, comment="cash | check | card | ach | paypal | other"),
    sa.Column("reference", sa.Text, comment="the sender's reference; never written to notes"),
    sa.Column("payer", sa.Text),
    sa.Column("raw_payload", sa.Text, nullable=False, comment="body or CSV line exactly as received"),
    sa.UniqueConstraint("source", "event_id", name="uq_payment_events_source_event"),
)

payments_posted = sa.Table(
    "payments_posted",
    metadata,
    sa.Column("posting_key", sa.Text, primary_key=True, comment="our idempotency key; Bill.com refNumber"),
    sa.Column("event_sequence", sa.BigInteger, nullable=False, unique=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column(
        "status",
        sa.Text,
        nullable=False,
        comment="reserved | outcome_unknown | posted | already_recorded | needs_review",
    ),
    sa.Column("claim_token", sa.Text, nullable=False, comment="who holds the reservation"),
    sa.Column("claimed_at", UTCDateTime, nullable=False),
    sa.Column("customer_id", sa.Text),
    sa.Column("invoice_id", sa.Text),
    sa.Column("invoice_number", sa.Text),
    sa.Column("amount_cents", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("received_payment_id", sa.Text, comment="Bill.com ReceivedPay id (ours, or the one already there)"),
    sa.Column("reconcile_checks", sa.Integer, nullable=False, default=0),
    sa.Column("detail", sa.Text),
    sa.Column("decided_at", UTCDateTime),
)

needs_review = sa.Table(
    "needs_review",
    metadata,
    sa.Column("review_id", _SEQUENCE, primary_key=True, autoincrement=True),
    sa.Column("posting_key", sa.Text, nullable=False, unique=True),
    sa.Column("event_sequence", sa.BigInteger, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column(
        "reason",
        sa.Text,
        nullable=False,
        comment="invalid_event | unknown_invoice | ambiguous_invoice | overpayment | currency_mismatch | "
        "invoice_already_paid | invoice_inactive | source_rejected | outcome_unknown_not_found | posting_failed",
    ),
    sa.Column("detail", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("resolved_at", UTCDateTime),
    sa.Column("resolved_by", sa.Text),
    sa.Column("resolution", sa.Text, comment="posted | already_recorded | dismissed (agentcollect payments review)"),
    sa.Column("resolution_note", sa.Text, comment="why, in the words of the person who decided"),
)

payment_run_requests = sa.Table(
    "payment_run_requests",
    metadata,
    sa.Column("request_id", _SEQUENCE, primary_key=True, autoincrement=True),
    sa.Column("event_sequence", sa.BigInteger, nullable=False, index=True),
    sa.Column("run_key", sa.Text, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("requested_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("event_sequence", "attempt", name="uq_payment_run_requests_attempt"),
)

customer_notes = sa.Table(
    "customer_notes",
    metadata,
    sa.Column("fact_key", sa.Text, primary_key=True, comment="one note per fact, e.g. payment:<posting key>"),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False, comment="reserved | written"),
    sa.Column("claim_token", sa.Text, nullable=False),
    sa.Column("claimed_at", UTCDateTime, nullable=False),
    sa.Column("message_id", sa.Text, comment="Bill.com Message id"),
    sa.Column("written_at", UTCDateTime),
)

billcom_webhook_events = sa.Table(
    "billcom_webhook_events",
    metadata,
    sa.Column("sequence", _SEQUENCE, primary_key=True, autoincrement=True, comment="arrival order; the sensor cursor"),
    sa.Column("event_id", sa.Text, nullable=False, unique=True, comment="metadata.eventId; re-deliveries are ignored"),
    sa.Column("event_type", sa.Text, nullable=False, comment="e.g. invoice.updated"),
    sa.Column("invoice_id", sa.Text, nullable=False, comment="the invoice to re-read now"),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("raw_payload", sa.Text, nullable=False, comment="body exactly as received (signed)"),
    comment="Signed Bill.com v3 invoice.* notifications: prompts to re-read an invoice, never a source of truth",
)

invoices_paid_in_billcom = sa.Table(
    "invoices_paid_in_billcom",
    metadata,
    sa.Column("invoice_id", sa.Text, primary_key=True),
    sa.Column("invoice_number", sa.Text),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("amount_cents", sa.BigInteger, nullable=False, comment="invoice total in minor units"),
    sa.Column("paid_seen_at", UTCDateTime, nullable=False, comment="Bill.com updatedTime when first seen paid"),
    sa.Column("detected_at", UTCDateTime, nullable=False),
    sa.Column("case_id", sa.Text, nullable=False, comment="the collection case open when it was paid"),
    sa.Column("note_fact_key", sa.Text, nullable=False, comment="customer_notes key of its 'paid in Bill.com' note"),
    comment="Invoices in collection that were paid in Bill.com itself (payment link, by hand), not by our posting",
)

fee_ledger = sa.Table(
    "fee_ledger",
    metadata,
    sa.Column("line_key", sa.Text, primary_key=True, comment="billcom:<invoice_pay_id>, or posted:<posting key> until synced"),
    sa.Column("received_payment_id", sa.Text, nullable=False),
    sa.Column("invoice_id", sa.Text, nullable=False),
    sa.Column("invoice_number", sa.Text),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("paid_on", sa.Date, nullable=False, comment="payment date as Bill.com (or the payment event) states it"),
    sa.Column("amount_cents", sa.BigInteger, nullable=False, comment="amount applied to the invoice, minor units"),
    sa.Column("fee_percent", sa.Text, nullable=False, comment="exact decimal percentage applied, e.g. 10 or 12.5"),
    sa.Column("fee_cents", sa.BigInteger, nullable=False, comment="amount x percent / 100, rounded half-even to a minor unit"),
    sa.Column("case_id", sa.Text, nullable=False, comment="the collection case whose outreach the payment is attributed to"),
    sa.Column("attributed_from", sa.Date, nullable=False, comment="day of the first outreach naming the invoice"),
    sa.Column("attributed_until", sa.Date, nullable=False, comment="day of the last outreach naming the invoice + attribution window"),
    sa.Column("source", sa.Text, nullable=False, comment="billcom (synced received payment) | agentcollect (posted, not yet synced)"),
    sa.Column("computed_at", UTCDateTime, nullable=False),
    comment="Success-only fee: one row per payment line attributed to our collection; rewritten each materialization",
)

PAYMENT_TABLES = (
    payment_events,
    payments_posted,
    needs_review,
    payment_run_requests,
    customer_notes,
    billcom_webhook_events,
    invoices_paid_in_billcom,
    fee_ledger,
)
