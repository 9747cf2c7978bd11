"""Tables of the collection agent: every reply a debtor sent, what it was understood as, what it changed."""

from __future__ import annotations

import sqlalchemy as sa

from agentcollect_pipeline.warehouse.schema import UTCDateTime, metadata

customer_replies = sa.Table(
    "customer_replies",
    metadata,
    sa.Column("reply_id", sa.Text, primary_key=True, comment="provider message id (Twilio SM…), so a re-delivery is one reply"),
    sa.Column("channel", sa.Text, nullable=False, comment="sms | email"),
    sa.Column("sender", sa.Text, nullable=False, comment="E.164 number or email address (masked in previews)"),
    sa.Column("customer_id", sa.Text, index=True, comment="null when the sender matches no customer"),
    sa.Column("case_id", sa.Text),
    sa.Column("intent", sa.Text, nullable=False,
              comment="paid_already | promise_to_pay | dispute | wrong_contact | invoice_copy | stop | other"),
    sa.Column("promised_date", sa.Date),
    sa.Column("dispute_reason", sa.Text),
    sa.Column("effect", sa.Text, nullable=False, comment="what the reply changed, e.g. opted_out, paused_until:2026-12-03"),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
)
