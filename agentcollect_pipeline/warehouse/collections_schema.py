"""DDL of the collections tables, on the same `metadata` as the synced Bill.com tables.

Two kinds of table:
- state that later issues fill and the rules read: `disputes`, `promises_to_pay`, `opt_outs`,
  `customer_pauses`, and `cases` (stable case ids, opened and closed by the `collection_cases` asset);
- snapshots rewritten each cycle (DELETE + insert in one transaction, never dropped):
  `invoice_eligibility`, `collection_cases`, `ar_aging`; plus `ar_aging_history`, appended each cycle.
Money is `<name>_cents BIGINT` + `currency`; timestamps are aware UTC (`UTCDateTime`).
"""

import sqlalchemy as sa

from agentcollect_pipeline.warehouse.schema import UTCDateTime, metadata

# -- state read by the rules (filled by later issues) ---------------------------------------------------

disputes = sa.Table(
    "disputes",
    metadata,
    sa.Column("dispute_id", sa.Text, primary_key=True),
    sa.Column("invoice_id", sa.Text, nullable=False, index=True),
    sa.Column("reason", sa.Text),
    sa.Column("opened_at", UTCDateTime, nullable=False),
    sa.Column("closed_at", UTCDateTime, comment="null while the dispute is open"),
    comment="An open dispute (closed_at null) stops collection of its invoice",
)

promises_to_pay = sa.Table(
    "promises_to_pay",
    metadata,
    sa.Column("promise_id", sa.Text, primary_key=True),
    sa.Column("invoice_id", sa.Text, index=True, comment="null: the promise covers the customer's invoices"),
    sa.Column("customer_id", sa.Text, nullable=False, index=True),
    sa.Column("promised_date", sa.Date, nullable=False),
    sa.Column("amount_cents", sa.BigInteger, comment="promised amount in minor units"),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False, comment="pending | kept | broken | cancelled"),
    sa.Column("created_at", UTCDateTime, nullable=False),
    comment="A pending promise (until promised_date + policy grace) stops collection",
)

opt_outs = sa.Table(
    "opt_outs",
    metadata,
    sa.Column("opt_out_id", sa.Text, primary_key=True),
    sa.Column("channel", sa.Text, nullable=False, comment="email | sms | voice"),
    sa.Column("address", sa.Text, nullable=False, comment="email address (any case) or E.164 number"),
    sa.Column("opted_out_at", UTCDateTime, nullable=False),
    sa.Column("source", sa.Text, comment="e.g. STOP reply, unsubscribe link, phone request"),
    sa.Index("ix_opt_outs_channel_address", "channel", "address"),
)

customer_pauses = sa.Table(
    "customer_pauses",
    metadata,
    sa.Column("pause_id", sa.Text, primary_key=True),
    sa.Column("customer_id", sa.Text, nullable=False, index=True),
    sa.Column("paused_until", sa.Date, comment="inclusive; null = until lifted"),
    sa.Column("reason", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

cases = sa.Table(
    "cases",
    metadata,
    sa.Column("case_id", sa.Text, primary_key=True),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False, comment="open | closed"),
    sa.Column("opened_at", UTCDateTime, nullable=False),
    sa.Column("closed_at", UTCDateTime),
    sa.Column("last_seen_at", UTCDateTime, nullable=False, comment="last cycle the case had eligible invoices"),
    sa.Index("ix_cases_customer_currency_status", "customer_id", "currency", "status"),
    comment="One open case per (customer, currency) at most; closed cases are kept",
)

# -- snapshots rewritten every cycle -----------------------------------------------------------------

invoice_eligibility = sa.Table(
    "invoice_eligibility",
    metadata,
    sa.Column("invoice_id", sa.Text, primary_key=True),
    sa.Column("invoice_number", sa.Text),
    sa.Column("customer_id", sa.Text, index=True),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("amount_due_cents", sa.BigInteger, comment="open balance in minor units"),
    sa.Column("due_date", sa.Date),
    sa.Column("days_overdue", sa.BigInteger, comment="as_of - due_date; negative when not yet due"),
    sa.Column("eligible", sa.Boolean, nullable=False),
    sa.Column("reason", sa.Text, comment="first reason code in the documented order; null when eligible"),
    sa.Column("reasons", sa.Text, comment="every reason code that applies, comma-separated, in order"),
    sa.Column("reason_detail", sa.Text, comment="which policy rule excluded the customer or class"),
    sa.Column("channels", sa.Text, comment="channels outreach may use: email,sms,voice (after opt-outs)"),
    sa.Column("as_of", sa.Date, nullable=False, comment="'today' in the organisation's timezone"),
    sa.Column("evaluated_at", UTCDateTime, nullable=False),
)

collection_cases = sa.Table(
    "collection_cases",
    metadata,
    sa.Column("case_id", sa.Text, primary_key=True),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("invoice_count", sa.BigInteger, nullable=False),
    sa.Column("invoice_ids", sa.Text, nullable=False, comment="comma-separated, oldest due first"),
    sa.Column("total_due_cents", sa.BigInteger, nullable=False, comment="sum of eligible amounts due"),
    sa.Column("oldest_days_overdue", sa.BigInteger, nullable=False),
    sa.Column("email_contacts", sa.BigInteger, nullable=False),
    sa.Column("sms_contacts", sa.BigInteger, nullable=False),
    sa.Column("voice_contacts", sa.BigInteger, nullable=False),
    sa.Column("priority_score", sa.Float, nullable=False, comment="ranking only, not money; see README"),
    sa.Column("opened_at", UTCDateTime, nullable=False),
    sa.Column("as_of", sa.Date, nullable=False),
)


def _bucket_columns() -> list[sa.Column]:
    return [
        sa.Column("current_cents", sa.BigInteger, nullable=False, comment="not yet due"),
        sa.Column("days_1_30_cents", sa.BigInteger, nullable=False),
        sa.Column("days_31_60_cents", sa.BigInteger, nullable=False),
        sa.Column("days_61_90_cents", sa.BigInteger, nullable=False),
        sa.Column("days_90_plus_cents", sa.BigInteger, nullable=False),
        sa.Column("total_open_cents", sa.BigInteger, nullable=False),
        sa.Column("invoice_count", sa.BigInteger, nullable=False),
    ]


ar_aging = sa.Table(
    "ar_aging",
    metadata,
    sa.Column("row_key", sa.Text, primary_key=True, comment="currency:customer_id, or currency:TOTAL"),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("customer_id", sa.Text, comment="null on the per-currency total row"),
    sa.Column("is_total", sa.Boolean, nullable=False),
    *_bucket_columns(),
    sa.Column("as_of", sa.Date, nullable=False),
)

ar_aging_history = sa.Table(
    "ar_aging_history",
    metadata,
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("currency", sa.Text, primary_key=True),
    sa.Column("as_of", sa.Date, nullable=False),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    *_bucket_columns(),
    sa.Column("sales_90d_cents", sa.BigInteger, nullable=False, comment="invoiced in the 90 days to as_of"),
    sa.Column("dso_days", sa.Float, comment="total_open / sales_90d * 90; null without sales"),
)

SNAPSHOT_TABLES = (invoice_eligibility, collection_cases, ar_aging)
STATE_TABLES = (disputes, promises_to_pay, opt_outs, customer_pauses, cases)
